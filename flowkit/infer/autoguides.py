r"""Pyro autoguides whose posterior is a normalizing flow.

[`AutoIAF`][flowkit.infer.autoguides.AutoIAF] (and
[`AutoMAF`][flowkit.infer.autoguides.AutoMAF], for comparison) put every continuous latent
site of a Pyro model, mapped to the unconstrained space by Pyro's usual ``biject_to``,
into one vector \(z \in \mathbb{R}^D\) with the posterior

\[
    z = \mu + S\, f_K \circ \cdots \circ f_1(\varepsilon), \qquad
    S = \mathrm{diag}(\sigma)\, T, \qquad
    \varepsilon \sim N(0, I),
\]

where the \(f_k\) are autoregressive steps (affine by default, or splines with
``bijection="spline"``) with permutations between them, and \(T\) is lower triangular with
a unit diagonal (``affine="full"``, the default; \(T = I\) with ``affine="diagonal"``; no
\(\mu\) and \(S\) at all with ``affine=None``, as Pyro's ``AutoIAFNormal``).
Every step starts near the identity, so the guide starts as \(\mathcal{N}(\mu, \sigma^2)\)
around the init location of ``init_loc_fn`` with scale ``init_scale``. With the full
affine map every Gaussian posterior is in the family whatever the flow, at the flow's
identity, and the steps are left to model what is not Gaussian. (With
``bijection="gated"`` each gated step starts as \(z \mapsto \mathrm{sigmoid}(2) z \approx 0.88 z\),
so \(K\) steps start with scale about \(0.88^K\) ``init_scale``.) Compared with
Pyro's ``AutoIAFNormal``: the affine map, permutations between steps, a choice of the gated
update or splines, configurable depth and width, and the near-identity start.

For an IAF the ELBO is cheap: a sample and its log-density come from one pass per step.
The guide's latent site does none of ``TransformedDistribution``'s per-step bookkeeping:
with the usual gradient (``stick_the_landing=False``) the log-density of its own draw is
the log-determinant of the pass that drew it, answered while every parameter still holds
the value it held then (checked bit for bit, as the transforms' cache checks its pairs);
with the path derivative it comes from the flow's Jacobian
([`PathDerivativeFlow`][flowkit.infer.path_derivative.PathDerivativeFlow]).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.transforms import AffineTransform, ComposeTransform, LowerCholeskyAffine
from torch.distributions import biject_to
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from pyro.params.param_store import param_with_module_name
from torch import Tensor, nn

from flowkit.distributions.flows import Flow, _inverse_and_log_det, iaf, maf
from flowkit.infer.path_derivative import (
    PathDerivativeFlow,
    _broadcast_to_batch,
    inverse_with_fixed_parameters,
    standard_normal_log_prob,
)
from flowkit.nn import MADEConfig
from flowkit.transforms import ElementwiseBijection, as_bijection
from flowkit.transforms.cache import StateSnapshot

__all__ = ["AFFINES", "GUIDE_CONDITIONER", "AutoIAF", "AutoMAF", "guide_hidden_dims"]

AFFINES = ("full", "diagonal", None)
"""The choices of the flow guides' ``affine`` option."""

GUIDE_CONDITIONER = MADEConfig(activation="tanh")
"""The MADE of every step of a flow guide when no ``conditioner`` is given: tanh units, of
[`guide_hidden_dims`][flowkit.infer.autoguides.guide_hidden_dims]. Smooth, bounded units
bend the Gaussian that the affine map gives only a little, so the last steps of a run sit
still at a Gaussian posterior: on the 5-D posterior of ``examples/vi_gaussian_posterior.py``
(3,000 steps, one particle), two steps of 16 tanh units after the full affine map ended
0.003-0.023 nats from it on seeds 0-4, and two steps of 16 ReLU units 0.017-0.053 nats on
seeds 0-3 of a trial."""


def guide_hidden_dims(latent_dim: int) -> list[int]:
    """One layer of ``3 * latent_dim + 1`` units, the width of Pyro's ``AutoIAFNormal``:
    the flow guides' default ``hidden_dims``."""
    return [3 * latent_dim + 1]


class AutoFlow(AutoContinuous):
    """Shared parts of [`AutoIAF`][flowkit.infer.autoguides.AutoIAF] and
    [`AutoMAF`][flowkit.infer.autoguides.AutoMAF]."""

    builder: Callable = staticmethod(iaf)

    def __init__(
        self,
        model: Callable,
        num_transforms: int = 2,
        hidden_dims: Sequence[int] | None = None,
        permutation: str | None = "reversed",
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        seed: int | None = 0,
        *,
        bijection: ElementwiseBijection | str = "affine",
        conditioner: MADEConfig | None = None,
        stick_the_landing: bool = True,
        affine: str | None = "full",
    ):
        if affine not in AFFINES:
            raise ValueError(f"affine: expected one of {AFFINES}, got {affine!r}")
        if not init_scale > 0:
            raise ValueError(f"init_scale: expected a positive float, got {init_scale!r}")
        if not isinstance(stick_the_landing, bool):
            raise TypeError(f"stick_the_landing: expected a bool, got {type(stick_the_landing).__name__}")
        self.stick_the_landing = stick_the_landing
        self.affine = affine
        self._flow_options = dict(
            num_transforms=num_transforms,
            permutation=permutation,
            seed=seed,
            bijection=as_bijection(bijection),  # checked here, not at the first call
            conditioner=MADEConfig.resolve(GUIDE_CONDITIONER if conditioner is None else conditioner, hidden_dims),
        )
        self._init_scale = init_scale
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._draw_memory = _DrawMemory()

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        init_loc = self._init_loc()
        if self.affine is not None:
            self.loc = nn.Parameter(init_loc)
            self.scale = PyroParam(torch.full_like(init_loc, self._init_scale), constraint=constraints.positive)
        if self.affine == "full":
            identity = torch.eye(self.latent_dim, dtype=init_loc.dtype, device=init_loc.device)
            self.scale_tril = PyroParam(identity, constraint=constraints.unit_lower_cholesky)
        options = dict(self._flow_options)
        if options["conditioner"].hidden_dims is None:
            options["conditioner"] = options["conditioner"].replace(hidden_dims=guide_hidden_dims(self.latent_dim))
        with torch.device(init_loc.device):  # the model's device, whatever torch's default is
            self.flow = type(self).builder(self.latent_dim, **options).to(init_loc.dtype)
        # Pyro registers a plain nn.Module child without loading stored values into it, so
        # a param store restored with set_state() would never reach the flow: load them.
        _check_stored_shapes(self._pyro_get_fullname("flow"), self.flow)
        pyro.module(self._pyro_get_fullname("flow"), self.flow, update_module_params=True)

    def _affine_map(self) -> _AffineMap | None:
        """The affine map after the flow, its parameters read once (a PyroParam is looked up at every read)."""
        if self.affine is None:
            return None
        return _AffineMap(self.loc, self.scale, self.scale_tril if self.affine == "full" else None)

    def get_base_dist(self) -> dist.Distribution:
        zeros = self.flow.base_loc.new_zeros(self.latent_dim)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def _transforms(self) -> list:
        # cache_size=1: the guide's own sample then passes back through every step as the
        # very tensors that step produced, so each IAF answers log_prob from its cache.
        affine = self._affine_map()
        if affine is None:
            return list(self.flow.transforms)
        if affine.unit_tril is None:
            last = AffineTransform(affine.loc, affine.scale, event_dim=1, cache_size=1)
        else:
            last = LowerCholeskyAffine(affine.loc, affine.scale.unsqueeze(-1) * affine.unit_tril).with_cache(1)
        return [*self.flow.transforms, last]

    def get_transform(self, *args, **kwargs) -> ComposeTransform:
        return ComposeTransform(self._transforms())

    def get_posterior(self, *args, **kwargs) -> dist.TransformedDistribution:
        """The posterior over the unconstrained latent vector, with the usual ``log_prob``
        (the ELBO's fixed-parameter score is [`sample_latent`][flowkit.infer.autoguides.AutoFlow.sample_latent]'s)."""
        # A list, not a ComposeTransform, so each step keeps its own cache.
        return dist.TransformedDistribution(self.get_base_dist(), self._transforms())

    def sample_latent(self, *args, **kwargs) -> Tensor:
        """Samples the unconstrained latent vector at the guide's latent site. With
        ``stick_the_landing``, the site's distribution is a
        [`PathDerivativeFlow`][flowkit.infer.path_derivative.PathDerivativeFlow], whose
        ``log_prob`` holds the parameters fixed: the ELBO gets the path-derivative gradient.
        Without it, the usual gradient: the site's ``log_prob`` of its own sample is the
        log-determinant of the pass that drew it, while no parameter changed since."""
        flow, affine = self.flow, self._affine_map()
        prototype = flow.base_loc  # the flow's dtype and device
        push = functools.partial(_push_through, list(flow.transforms), affine)
        if not self.stick_the_landing:
            log_prob = functools.partial(_log_prob, flow, affine)
            watched = (flow, [] if affine is None else affine.tensors(), self._draw_memory)
            posterior = _OwnSampleFlow(push, log_prob, torch.Size(), self.latent_dim, prototype, *watched)
        else:
            fixed_affine = None if affine is None else affine.detach()
            fixed_log_prob = functools.partial(_fixed_parameter_log_prob, flow, fixed_affine)
            posterior = PathDerivativeFlow(push, fixed_log_prob, torch.Size(), self.latent_dim, prototype)
        return pyro.sample(f"_{self._pyro_name}_latent", posterior, infer={"is_auxiliary": True})

    def _unconstrained_samples(self, num_samples: int, *args, **kwargs) -> Tensor:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return self.get_posterior(*args, **kwargs).sample((num_samples,))

    @torch.no_grad()
    def median(self, *args, num_samples: int = 1000, **kwargs) -> dict[str, Tensor]:
        """Monte Carlo posterior median of each latent site: the median of
        ``num_samples`` draws per unconstrained coordinate, mapped to the site's
        support (a flow has no closed-form median)."""
        quantiles = self.quantiles([0.5], *args, num_samples=num_samples, **kwargs)
        return {name: value[0] for name, value in quantiles.items()}

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float], *args, num_samples: int = 1000, **kwargs) -> dict[str, Tensor]:
        """Monte Carlo quantiles of each latent site (per unconstrained coordinate,
        mapped to the support), stacked along a leading dimension as in Pyro."""
        samples = self._unconstrained_samples(num_samples, *args, **kwargs)
        levels = torch.as_tensor(list(quantiles), dtype=samples.dtype, device=samples.device)
        if levels.dim() != 1 or ((levels < 0) | (levels > 1)).any():
            raise ValueError(f"quantiles: expected numbers in [0, 1], got {quantiles!r}")
        latents = torch.quantile(samples, levels, dim=0)
        result: dict[str, list[Tensor]] = {}
        for latent in latents:
            for site, unconstrained in self._unpack_latent(latent):
                result.setdefault(site["name"], []).append(biject_to(site["fn"].support)(unconstrained))
        return {name: torch.stack(values) for name, values in result.items()}


def _check_stored_shapes(module_name: str, flow: nn.Module) -> None:
    """Raises a ``ValueError`` when Pyro's param store holds a value of another shape
    under the name of one of ``flow``'s parameters: a guide of the same class (the same
    name) built earlier with other sizes, whose values would otherwise be loaded into this
    one and fail inside torch at the first pass."""
    store = pyro.get_param_store()
    for name, parameter in flow.named_parameters():
        key = param_with_module_name(module_name, name)
        if key in store and store[key].shape != parameter.shape:
            raise ValueError(
                f"{key}: Pyro's param store holds a value of shape {tuple(store[key].shape)} under this "
                f"guide's name, but this guide's has shape {tuple(parameter.shape)} (a guide of the same class "
                "was built with other sizes): call pyro.clear_param_store() first, or use a subclass, whose "
                "parameters get its own name"
            )


@dataclass
class _AffineMap:
    r"""\(z = \mu + \mathrm{diag}(\sigma)\, T y\), with \(T\) unit lower triangular
    (``unit_tril``; the identity when ``None``)."""

    loc: Tensor
    scale: Tensor
    unit_tril: Tensor | None

    def tensors(self) -> list[Tensor]:
        return [self.loc, self.scale] + ([] if self.unit_tril is None else [self.unit_tril])

    def detach(self) -> _AffineMap:
        return _AffineMap(*(None if t is None else t.detach() for t in (self.loc, self.scale, self.unit_tril)))

    def forward(self, y: Tensor) -> Tensor:
        mixed = y if self.unit_tril is None else y @ self.unit_tril.mT
        return self.loc + self.scale * mixed

    def inverse(self, z: Tensor) -> Tensor:
        mixed = (z - self.loc) / self.scale
        if self.unit_tril is None:
            return mixed
        solve = torch.linalg.solve_triangular
        return solve(self.unit_tril, mixed.unsqueeze(-1), upper=False, unitriangular=True).squeeze(-1)

    def log_abs_det(self) -> Tensor:
        return self.scale.log().sum(-1)


def _push_through(transforms: list, affine: _AffineMap | None, noise: Tensor) -> tuple[Tensor, Tensor]:
    """``z = affine(flow(noise))`` and its log-determinant, without Pyro's caches."""
    y, log_det = Flow._push(noise, transforms)
    if affine is None:
        return y, log_det
    return affine.forward(y), log_det + affine.log_abs_det()


def _undo_affine(affine: _AffineMap | None, z: Tensor) -> tuple[Tensor, Tensor | float]:
    """The flow's output for ``z`` and the affine map's log-determinant (none without one)."""
    return (z, 0.0) if affine is None else (affine.inverse(z), affine.log_abs_det())


def _log_prob(flow: Flow, affine: _AffineMap | None, z: Tensor) -> Tensor:
    """log q(z) through ``flow`` and ``affine``, inverting the flow (no cache)."""
    noise, log_det = _undo_affine(affine, z)
    for transform in reversed(flow.transforms):
        noise, step_log_det = _inverse_and_log_det(transform, noise)
        log_det = log_det + step_log_det
    return standard_normal_log_prob(noise) - log_det


@dataclass
class _Draw:
    """The last draw of an ``_OwnSampleFlow``, with what its log-density depends on."""

    z: Tensor
    version: int  # z._version right after the draw: an in-place change makes it an outside point
    log_prob: Tensor
    state: StateSnapshot


class _DrawMemory:
    """The memory of the last draw's state copies, handed from each ``_OwnSampleFlow``
    draw of a guide to the next (reusing it is about twice as fast as new copies); the
    draw that gives it up is then scored afresh, as an outside point."""

    def __init__(self):
        self.holder: _OwnSampleFlow | None = None

    def hand_over(self, to: _OwnSampleFlow) -> StateSnapshot | None:
        """The holder's state (its draw forgotten), for ``to``'s draw to reuse; ``to`` holds it next."""
        holder, self.holder = self.holder, to
        draw = holder._draw if holder is not None else None
        if draw is None:
            return None
        holder._draw = None
        return draw.state

    def __getstate__(self) -> dict:
        return {"holder": None}  # a draw belongs to an autograd graph: never pickled or deep-copied


class _OwnSampleFlow(TorchDistribution):
    """The guide's posterior ``z = push(u)``, ``u ~ N(0, I)``, for the usual ELBO gradient:
    ``log_prob`` of its own last draw is ``log N(u)`` minus the log-determinant of the pass
    that drew it (no pass at all), while nothing that pass read changed (checked as the
    transforms' cache checks its pairs: the watched tensors bit for bit, modes, gradient
    mode); any other point, or a stale draw, is scored by ``log_prob_fn``. What
    ``TransformedDistribution`` and the transforms' caches give, without their per-step
    bookkeeping (one state check instead of two per transform, no input re-checks)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        push,
        log_prob_fn,
        batch_shape,
        event_size,
        prototype: Tensor,
        module: nn.Module,
        extra: list[Tensor],
        memory: _DrawMemory,
    ):
        self.push, self.log_prob_fn, self.prototype = push, log_prob_fn, prototype
        self.module, self.extra = module, extra  # what the push reads: the flow and the affine map
        self.memory = memory
        self._draw: _Draw | None = None
        super().__init__(torch.Size(batch_shape), torch.Size([event_size]), validate_args=False)

    def expand(self, batch_shape, _instance=None) -> _OwnSampleFlow:
        return _OwnSampleFlow(
            self.push,
            self.log_prob_fn,
            batch_shape,
            self.event_shape[0],
            self.prototype,
            self.module,
            self.extra,
            self.memory,
        )

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape, prototype = self._extended_shape(sample_shape), self.prototype
        noise = torch.randn(shape, dtype=prototype.dtype, device=prototype.device)
        z, log_det = self.push(noise)
        self._draw = None
        # An inference tensor keeps no version counter; compiled code keeps no Python state.
        if not (z.is_inference() or torch.compiler.is_compiling()):
            state = StateSnapshot.take(self.module, self.extra, self.memory.hand_over(self))
            self._draw = _Draw(z, z._version, standard_normal_log_prob(noise) - log_det, state)
        return z

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        log_q = self._draw.log_prob if self._is_current_draw(value) else self.log_prob_fn(value)
        return _broadcast_to_batch(log_q, self.batch_shape)

    def _is_current_draw(self, value: Tensor) -> bool:
        """Whether ``value`` is the last draw, unchanged, and the pass that drew it would
        draw it again now."""
        draw = self._draw
        if draw is None or value is not draw.z or value._version != draw.version:
            return False
        return draw.state.holds(self.module, self.extra)


def _fixed_parameter_log_prob(flow: Flow, affine: _AffineMap | None, z: Tensor) -> Tensor:
    """log q(z) through ``flow`` (detached) and the detached ``affine``."""
    y, affine_log_det = _undo_affine(affine, z)
    noise, log_det = inverse_with_fixed_parameters(flow, y)
    return standard_normal_log_prob(noise) - log_det - affine_log_det


class AutoIAF(AutoFlow):
    r"""An inverse-autoregressive-flow posterior over all continuous latent sites.

    Args:
        model: A Pyro model.
        num_transforms: The number of IAF steps (default 2: one per order, with the
            default reversing permutation).
        hidden_dims: MADE widths; default
            [`guide_hidden_dims`][flowkit.infer.autoguides.guide_hidden_dims], one layer of
            3D + 1 units.
        permutation: ``"reversed"``, ``"random"`` or ``None`` between steps.
        init_loc_fn: Pyro's per-site init strategy for the location.
        init_scale: The initial posterior scale in the unconstrained space.
        seed: Fixes masks and permutations.
        bijection: The elementwise map of every step, as in
            [`iaf`][flowkit.distributions.flows.iaf]: ``"affine"`` (the default),
            ``"gated"`` (the update of Kingma et al. 2016), ``"spline"`` or an
            [`ElementwiseBijection`][flowkit.transforms.ElementwiseBijection].
        conditioner: The options of every step's MADE, a [`MADEConfig`][flowkit.nn.MADEConfig];
            default [`GUIDE_CONDITIONER`][flowkit.infer.autoguides.GUIDE_CONDITIONER]
            (tanh units).
        stick_the_landing: Score the guide's own sample with the parameters held fixed,
            the path-derivative ELBO gradient of Roeder et al. (2017)
            ([`path_derivative`][flowkit.infer.path_derivative]): its variance vanishes as
            the guide reaches the posterior. It costs one more pass of the flow (over D + 1
            copies of the noise) and its backward per step. Switch it off for
            importance-weighted objectives such as ``RenyiELBO``, for which it is biased.
        affine: The affine map after the flow: ``"full"`` (the default), a location
            ``loc``, a scale ``scale`` and a unit lower-triangular ``scale_tril`` (the
            parameters of Pyro's ``AutoMultivariateNormal``), so the guide starts as a
            Gaussian whose correlations are learned with the flow; ``"diagonal"``, a
            location and a scale; ``None``, the flow alone on \(\mathcal{N}(0, I)\), as Pyro's
            ``AutoIAFNormal`` (``init_loc_fn`` and ``init_scale`` then have no effect).

    Examples:
        >>> import pyro
        >>> def model():
        ...     pyro.sample("x", pyro.distributions.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> guide = AutoIAF(model, num_transforms=2, hidden_dims=[8])
        >>> guide()["x"].shape
        torch.Size([2])
    """

    builder = staticmethod(iaf)


class AutoMAF(AutoFlow):
    """Like [`AutoIAF`][flowkit.infer.AutoIAF] with MAF steps: the same family of
    posteriors, but sampling (which the ELBO needs) is sequential. For comparison."""

    builder = staticmethod(maf)
