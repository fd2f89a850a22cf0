r"""MADE density models: one MADE pass gives every conditional, so

\[
\log p(x \mid c) = \sum_d \log p(x_d \mid x_{<d}, c)
\]

is exact and cheap; sampling and completion are sequential (and use the fast path of
[`MADE.sequential`][flowkit.nn.made.MADE.sequential]).

Each model is an ``nn.Module`` with ``log_prob``, ``sample`` and ``complete``; calling
it, ``model(context)``, gives a Pyro distribution with event shape ``(D,)`` for
``pyro.sample`` sites. The conditionals come from a *family*:

* [`BernoulliMADE`][flowkit.distributions.made_models.BernoulliMADE]: binary data, one logit per input;
* [`GaussianMADE`][flowkit.distributions.made_models.GaussianMADE]: a Gaussian per conditional;
* [`MixtureMADE`][flowkit.distributions.made_models.MixtureMADE]: a mixture of Gaussians per conditional
  (MADE MoG, Papamakarios et al. 2017);
* [`CategoricalMADE`][flowkit.distributions.made_models.CategoricalMADE]: ``K`` classes per input (discrete
  pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import Tensor, nn

from flowkit._seeding import make_generator
from flowkit._validation import as_shape, check_int, check_is_tensor, check_last_dim
from flowkit.nn import MADEConfig
from flowkit.transforms.elementwise import softplus_scale

__all__ = [
    "AutoregressiveMADE",
    "BernoulliMADE",
    "CategoricalMADE",
    "GaussianMADE",
    "MADEDistribution",
    "MixtureMADE",
]

SCALE_FLOOR = 1e-3  # the smallest scale of a Gaussian conditional


def _compiling() -> bool:
    """Inside ``torch.compile`` the value checks of data are skipped: reading a tensor's
    values back to decide whether to raise would split the graph (and sync the device)."""
    return torch.compiler.is_compiling()


class AutoregressiveMADE(nn.Module):
    """A density model whose conditionals are parameterised by one MADE.

    Subclasses name the family: ``param_dims``,
    [`conditional_log_prob`][flowkit.distributions.made_models.AutoregressiveMADE.conditional_log_prob],
    [`sample_conditional`][flowkit.distributions.made_models.AutoregressiveMADE.sample_conditional],
    [`mode_conditional`][flowkit.distributions.made_models.AutoregressiveMADE.mode_conditional], and how data enters the
    MADE ([`to_input`][flowkit.distributions.made_models.AutoregressiveMADE.to_input],
    [`from_input`][flowkit.distributions.made_models.AutoregressiveMADE.from_input]).

    Args:
        input_dim: The number of dimensions ``D``.
        hidden_dims: MADE hidden widths, or ``None`` to take them from ``conditioner``
            (default [`default_hidden_dims`][flowkit.nn.made.default_hidden_dims]).
        param_dims: The parameters per input of each of the family's parts.
        context_dim: Size of a conditioning input; 0 for none.
        conditioner: The MADE's other options, a [`MADEConfig`][flowkit.nn.MADEConfig]
            (``order``, ``num_masks``, ``degrees``, ``activation``, ``skip_connections``, ...);
            default ``MADEConfig()``.
        seed: Fixes the MADE's masks and orders (weights follow torch's global seed).
    """

    support = constraints.real_vector

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None,
        param_dims: Sequence[int],
        context_dim: int = 0,
        *,
        conditioner: MADEConfig | None = None,
        seed: int | torch.Generator | None = None,
    ):
        super().__init__()
        check_int(input_dim, "input_dim", type_error=True)  # before default_hidden_dims reads it
        self.made = MADEConfig.resolve(conditioner, hidden_dims).build(input_dim, param_dims, context_dim, seed)
        self.input_dim = input_dim
        self.context_dim = context_dim

    # -- family interface -----------------------------------------------------
    def conditional_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p(x_d | x_<d)`` for every ``d``: params ``(..., P, D)``, x ``(..., D)``."""
        raise NotImplementedError

    def sample_conditional(self, params: Tensor) -> Tensor:
        """One draw per batch element from the conditional with params ``(..., P)``."""
        raise NotImplementedError

    def mode_conditional(self, params: Tensor) -> Tensor:
        """The most likely value of the conditional with params ``(..., P)``."""
        raise NotImplementedError

    def check_data(self, x: Tensor) -> None:
        """Raises a clear error for data outside the support."""
        check_is_tensor(x, "x")
        check_last_dim(x, "x", self.input_dim)
        if x.is_floating_point() and not _compiling() and not torch.isfinite(x).all():
            raise ValueError("x: holds inf or nan; a density is defined for finite points only")

    def to_input(self, x: Tensor) -> Tensor:
        """Data to the MADE's (floating-point) input."""
        return x.to(self.made.dtype)

    def from_input(self, v: Tensor) -> Tensor:
        """The MADE's input back to data."""
        return v

    # -- densities ----------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density (or log-mass) of ``x``, shape ``x.shape[:-1]``, with the
        active mask set."""
        self.check_data(x)
        params = self.made.raw_output(self.to_input(x), context)
        x = x.expand(params.shape[:-2] + x.shape[-1:])  # broadcast against the context's batch
        return self.conditional_log_prob(params, x).sum(-1)

    def log_prob_ensemble(
        self,
        x: Tensor,
        context: Tensor | None = None,
        mask_indices: Sequence[int] | None = None,
        *,
        num_masks: int | None = None,
        seed: int | torch.Generator | None = None,
        order: bool = True,
        sort: bool = False,
    ) -> Tensor:
        r"""The MADE paper's ensemble: the probability averaged over masks,
        \(\log \frac1K \sum_k p_k(x)\) (log-mean-exp).

        By default the ``K`` masks are the mask sets (all of them, or ``mask_indices``).
        With ``num_masks=K``, they are ``K`` fresh structures drawn by
        [`MADE.resample_masks`][flowkit.nn.made.MADE.resample_masks] from ``seed`` (the same
        seed gives the same masks; ``order=False`` keeps the active order; ``sort=True``
        sorts each hidden layer's degrees, for a MADE trained on sorted draws), as the paper
        evaluates a MADE trained with mask sampling. Either way, the masks are changed in
        place one after another and summed into a running log-sum-exp, nothing else is
        rebuilt, and the masks from before are restored afterwards. Gradients are recorded
        only when the caller records them (call it under ``torch.no_grad()`` to evaluate).

        Examples:
            >>> model = BernoulliMADE(3, [8], seed=0)
            >>> x = torch.tensor([[0.0, 1.0, 1.0]])
            >>> a = model.log_prob_ensemble(x, num_masks=4, seed=0)
            >>> torch.equal(a, model.log_prob_ensemble(x, num_masks=4, seed=0))
            True
        """
        if num_masks is not None:
            if mask_indices is not None:
                raise ValueError("mask_indices: give mask_indices or num_masks, not both")
            check_int(num_masks, "num_masks", type_error=True)
            if not isinstance(sort, bool):
                raise ValueError(f"sort: expected a bool, got {sort!r}")
            generator = make_generator(seed)
            # Each call draws the next structure of the one stream.
            draws = [lambda: self.made.resample_masks(generator, order, sort=sort)] * num_masks
        else:
            indices = list(range(self.made.num_masks)) if mask_indices is None else list(mask_indices)
            if not indices:
                raise ValueError("mask_indices: expected at least one mask index")
            draws = [lambda index=index: self.made.set_mask(index) for index in indices]
        total = None
        with self.made.preserving_masks():
            for draw in draws:
                draw()
                log_prob = self.log_prob(x, context)
                total = log_prob if total is None else torch.logaddexp(total, log_prob)
        return total - math.log(len(draws))

    # -- sampling and completion --------------------------------------------------
    def sample(self, sample_shape: int | Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Ancestral samples of shape ``sample_shape + context batch + (D,)``; ``sample_shape``
        is an int or a shape."""
        batch_shape = as_shape(sample_shape) + (context.shape[:-1] if context is not None else torch.Size())
        with torch.no_grad():
            x, _ = self.made.sequential(
                lambda params, i: self.to_input(self.sample_conditional(params)), batch_shape, context
            )
        return self.from_input(x)

    def complete(
        self,
        x: Tensor,
        observed: Tensor,
        context: Tensor | None = None,
        method: str = "sample",
        choose_mask: bool = True,
    ) -> Tensor:
        r"""Fills in the unobserved entries of ``x`` from the model's conditionals.

        Walks the order of the active mask set: observed entries are kept, the others are
        drawn (``method="sample"``) or set to the conditional's most likely value
        (``method="mode"``) given everything before them. This is exact sampling from
        \(p(x_{\text{unobserved}} \mid x_{\text{observed}})\) when the observed
        dimensions all come before the unobserved ones in the order (see
        [`is_exact_completion`][flowkit.distributions.made_models.AutoregressiveMADE.is_exact_completion]);
        otherwise an unobserved dimension that comes before an observed one ignores it.

        With several mask sets (an order-agnostic MADE) and ``choose_mask=True``, the mask
        set whose order puts the observed dimensions earliest is used for this call.

        Args:
            x: Data of shape ``(..., D)``; unobserved entries may hold anything valid.
            observed: Boolean, shape ``(D,)`` or broadcastable to ``x``.
            context: The context, if the model has one.
            method: ``"sample"`` or ``"mode"``.
            choose_mask: Pick the best mask set for ``observed`` (needs shape ``(D,)``).
        """
        self.check_data(x)
        if not isinstance(observed, Tensor) or observed.dtype != torch.bool:
            raise TypeError("observed: expected a boolean tensor")
        check_last_dim(observed, "observed", self.input_dim)
        if method not in ("sample", "mode"):
            raise ValueError(f"method: expected 'sample' or 'mode', got {method!r}")
        pick = self.sample_conditional if method == "sample" else self.mode_conditional
        values = self.to_input(x)
        observed = observed.to(values.device)
        batch_shape = torch.broadcast_shapes(values.shape[:-1], observed.shape[:-1])

        def step(params: Tensor, i: int) -> Tensor:
            return torch.where(observed[..., i], values[..., i], self.to_input(pick(params)))

        with self.made.preserving_masks(), torch.no_grad():
            if choose_mask and observed.dim() == 1 and self.made.num_masks > 1:
                self.made.set_mask(self.best_mask_for(observed))
            completed, _ = self.made.sequential(step, batch_shape, context)
        return self.from_input(completed)

    def best_mask_for(self, observed: Tensor) -> int:
        """The mask set whose order has the fewest (unobserved before observed) pairs."""
        observed = observed.cpu()
        costs = []
        for order in self.made.orders.cpu():
            in_order = observed[order].long()
            # For every observed dimension, count the unobserved ones before it.
            costs.append(int(((1 - in_order).cumsum(0) * in_order).sum()))
        return min(range(len(costs)), key=costs.__getitem__)

    def is_exact_completion(self, observed: Tensor, choose_mask: bool = True) -> bool:
        """Whether [`complete`][flowkit.distributions.made_models.AutoregressiveMADE.complete] is exact for this
        ``observed`` mask of shape ``(D,)``: in the order it would use (the best mask set
        when ``choose_mask`` and there are several, else the active one), every observed
        dimension precedes every unobserved one."""
        observed = observed.cpu()
        choose = choose_mask and self.made.num_masks > 1
        in_order = observed[(self.made.orders[self.best_mask_for(observed)] if choose else self.made.permutation).cpu()]
        count = int(in_order.sum())
        return bool(in_order[:count].all())

    def forward(self, context: Tensor | None = None) -> MADEDistribution:
        """The model as a Pyro distribution (conditioned on ``context``)."""
        return MADEDistribution(self, context)


class MADEDistribution(dist.TorchDistribution):
    """A Pyro distribution view of an [`AutoregressiveMADE`][flowkit.distributions.made_models.AutoregressiveMADE],
    with event shape ``(D,)`` and the context's batch shape. Sampling is not
    reparameterised."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, model: AutoregressiveMADE, context: Tensor | None = None, validate_args: bool | None = None):
        self.model = model
        self.context = context
        batch_shape = context.shape[:-1] if context is not None else torch.Size()
        super().__init__(batch_shape, torch.Size([model.input_dim]), validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return self.model.support

    def log_prob(self, value: Tensor) -> Tensor:
        """The model's exact log-density (or log-mass), given this distribution's context."""
        return self.model.log_prob(value, self.context)

    def sample(self, sample_shape: int | Sequence[int] = torch.Size()) -> Tensor:
        """Ancestral samples from the model (``sample_shape`` an int or a shape); not
        reparameterised."""
        return self.model.sample(sample_shape, self.context)

    def expand(self, batch_shape, _instance=None):
        """Expands the batch shape by expanding the context (as Pyro's plates ask)."""
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        if self.context is None:
            return super().expand(batch_shape)
        return MADEDistribution(self.model, self.context.expand(batch_shape + self.context.shape[-1:]))


class _FixedParamsMADE(AutoregressiveMADE):
    """A family whose parameters per input do not depend on options: the subclass names
    them in ``family_param_dims``, and its signature has no ``param_dims``."""

    family_param_dims: tuple[int, ...]

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None,
        context_dim: int = 0,
        *,
        conditioner: MADEConfig | None = None,
        seed: int | torch.Generator | None = None,
    ):
        super().__init__(
            input_dim, hidden_dims, list(self.family_param_dims), context_dim, conditioner=conditioner, seed=seed
        )


class BernoulliMADE(_FixedParamsMADE):
    r"""Binary data: \(p(x_d = 1 \mid x_{<d}) = \sigma(a_d)\), one logit per input
    (the MADE paper's model).

    Args:
        input_dim: The number of dimensions ``D``.
        hidden_dims: MADE hidden widths, or ``None`` to take them from ``conditioner``
            (default [`default_hidden_dims`][flowkit.nn.made.default_hidden_dims]).
        context_dim: Size of a conditioning input; 0 for none.
        conditioner: The MADE's other options, a [`MADEConfig`][flowkit.nn.MADEConfig]
            (``order``, ``num_masks``, ``degrees``, ``activation``, ``skip_connections``, ...);
            default ``MADEConfig()``.
        seed: Fixes the MADE's masks and orders (weights follow torch's global seed).

    Examples:
        >>> model = BernoulliMADE(4, [16], seed=0)
        >>> x = model.sample((3,))
        >>> model.log_prob(x).shape
        torch.Size([3])
    """

    support = constraints.independent(constraints.boolean, 1)
    family_param_dims = (1,)

    def check_data(self, x: Tensor) -> None:
        super().check_data(x)
        if not _compiling() and not ((x == 0) | (x == 1)).all():
            raise ValueError("x: BernoulliMADE expects binary data (0 or 1)")

    def conditional_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params.squeeze(-2)
        return -F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")

    def sample_conditional(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params[..., 0]))

    def mode_conditional(self, params: Tensor) -> Tensor:
        return (params[..., 0] > 0).to(params.dtype)


class GaussianMADE(_FixedParamsMADE):
    r"""Real data: \(p(x_d \mid x_{<d}) = \mathcal{N}(\mu_d, \sigma_d^2)\) with
    \(\sigma_d = \mathrm{softplus}(u_d) + 10^{-3}\). Arguments as in
    [`BernoulliMADE`][flowkit.distributions.made_models.BernoulliMADE].

    Examples:
        >>> model = GaussianMADE(3, [16], seed=0)
        >>> model.log_prob(torch.zeros(2, 3)).shape
        torch.Size([2])
    """

    family_param_dims = (1, 1)  # the mean and the unconstrained scale

    def conditional_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        loc, unconstrained = params.unbind(-2)
        return dist.Normal(loc, softplus_scale(unconstrained, SCALE_FLOOR), validate_args=False).log_prob(x)

    def sample_conditional(self, params: Tensor) -> Tensor:
        return torch.normal(params[..., 0], softplus_scale(params[..., 1], SCALE_FLOOR))

    def mode_conditional(self, params: Tensor) -> Tensor:
        return params[..., 0]


class MixtureMADE(AutoregressiveMADE):
    """Real data, a mixture of ``K`` Gaussians per conditional (MADE MoG of
    Papamakarios et al. 2017): the MADE emits, per input, ``K`` logits, means and
    unconstrained scales.

    Other arguments as in [`BernoulliMADE`][flowkit.distributions.made_models.BernoulliMADE].

    Args:
        num_components: The number of Gaussians ``K`` per conditional.

    Examples:
        >>> model = MixtureMADE(2, [16], num_components=3, seed=0)
        >>> model.sample((4,)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None,
        num_components: int = 5,
        context_dim: int = 0,
        *,
        conditioner: MADEConfig | None = None,
        seed: int | torch.Generator | None = None,
    ):
        check_int(num_components, "num_components")
        super().__init__(
            input_dim, hidden_dims, [num_components] * 3, context_dim, conditioner=conditioner, seed=seed
        )
        self.num_components = num_components

    def _parts(self, params: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
        logits, loc, unconstrained = params.split(self.num_components, dim=dim)
        return logits, loc, softplus_scale(unconstrained, SCALE_FLOOR)

    def conditional_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits, loc, scale = self._parts(params, dim=-2)  # each (..., K, D)
        component = dist.Normal(loc, scale, validate_args=False).log_prob(x.unsqueeze(-2))
        return torch.logsumexp(logits.log_softmax(-2) + component, dim=-2)

    def sample_conditional(self, params: Tensor) -> Tensor:
        logits, loc, scale = self._parts(params, dim=-1)  # each (..., K)
        k = torch.distributions.Categorical(logits=logits).sample().unsqueeze(-1)
        return torch.normal(loc.gather(-1, k), scale.gather(-1, k)).squeeze(-1)

    def mode_conditional(self, params: Tensor) -> Tensor:
        """The mean of the most probable component (the exact mode of a mixture has no
        closed form)."""
        logits, loc, _ = self._parts(params, dim=-1)
        return loc.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)


class CategoricalMADE(AutoregressiveMADE):
    """Discrete data with ``K`` classes per input (e.g. pixel intensities): the MADE
    emits ``K`` logits per input and reads each class ``k`` as the number
    ``2 k / (K - 1) - 1`` in ``[-1, 1]``.

    Other arguments as in [`BernoulliMADE`][flowkit.distributions.made_models.BernoulliMADE].

    Args:
        num_classes: The number of classes ``K`` (at least 2).

    Examples:
        >>> model = CategoricalMADE(4, [16], num_classes=3, seed=0)
        >>> x = model.sample((2,))
        >>> x.dtype, model.log_prob(x).shape
        (torch.int64, torch.Size([2]))
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None,
        num_classes: int,
        context_dim: int = 0,
        *,
        conditioner: MADEConfig | None = None,
        seed: int | torch.Generator | None = None,
    ):
        check_int(num_classes, "num_classes", minimum=2)
        super().__init__(input_dim, hidden_dims, [num_classes], context_dim, conditioner=conditioner, seed=seed)
        self.num_classes = num_classes
        self.support = constraints.independent(constraints.integer_interval(0, num_classes - 1), 1)

    def check_data(self, x: Tensor) -> None:
        super().check_data(x)
        if x.is_floating_point() or x.dtype == torch.bool:
            raise TypeError(f"x: CategoricalMADE expects integer classes, got dtype {x.dtype}")
        if not _compiling() and ((x < 0) | (x >= self.num_classes)).any():
            raise ValueError(f"x: classes must lie in [0, {self.num_classes - 1}]")

    def to_input(self, x: Tensor) -> Tensor:
        return super().to_input(x) * (2.0 / (self.num_classes - 1)) - 1.0

    def from_input(self, v: Tensor) -> Tensor:
        return torch.round((v + 1.0) * ((self.num_classes - 1) / 2.0)).long()

    def conditional_log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return params.log_softmax(-2).gather(-2, x.unsqueeze(-2)).squeeze(-2)

    def sample_conditional(self, params: Tensor) -> Tensor:
        return torch.distributions.Categorical(logits=params).sample()

    def mode_conditional(self, params: Tensor) -> Tensor:
        return params.argmax(-1)
