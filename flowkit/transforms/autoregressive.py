r"""Affine autoregressive transforms: MAF and IAF, as Pyro `TransformModule` objects.

Both follow Pyro's convention: the forward direction maps base noise \(x\) to data
\(y\), elementwise \(y_i = \mu_i + \sigma_i x_i\), with \((\mu_i, \sigma_i)\)
from a [`MADE`][flowkit.nn.MADE]. They differ in which side the MADE reads:

* **MAF** reads the data, \(\mu_i = \mu_i(y_{<i})\): the density of data takes one pass
  (the inverse direction, ``y -> x``), sampling is sequential.
* **IAF** reads the noise, \(\mu_i = \mu_i(x_{<i})\): sampling takes one pass
  (the forward direction, ``x -> y``), the density of outside points is sequential, and
  the density of its own samples is free from the cache.

The sequential direction uses [`MADE.sequential`][flowkit.nn.made.MADE.sequential], which
computes every hidden unit once (about one forward pass of arithmetic) instead of one pass
per input.

Scales are \(\sigma = \mathrm{softplus}(u + c) + \sigma_{\min}\), with \(c\) chosen so
that \(u = 0\) gives \(\sigma = 1\): smooth, never below the floor, never a clamp
whose gradient vanishes. The ``stable`` variant (Kingma et al. 2016) gates instead,
\(y = \sigma x + (1 - \sigma) \mu\) with \(\sigma = \mathrm{sigmoid}(u + b)\).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor

from flowkit._validation import check_tensor
from flowkit.nn import MADE
from flowkit.transforms.cache import CachedTransformModule

__all__ = [
    "AffineIAF",
    "AffineMAF",
    "ConditionalAffineIAF",
    "ConditionalAffineMAF",
    "affine_iaf",
    "affine_maf",
    "conditional_affine_iaf",
    "conditional_affine_maf",
    "default_hidden_dims",
    "init_near_identity",
]


class _AffineAutoregressive(CachedTransformModule):
    """Shared parts of MAF and IAF: the affine map, its parameters and the cache."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1
    autoregressive = True

    def __init__(
        self,
        made: MADE,
        context: Tensor | None = None,
        stable: bool = False,
        scale_floor: float = 1e-3,
        sigmoid_bias: float = 2.0,
    ):
        super().__init__()
        _check_made(made)
        if not 0.0 < scale_floor < 1.0:
            raise ValueError(f"scale_floor: expected a float in (0, 1), got {scale_floor!r}")
        if context is not None:
            _check_context(made, context)
        self.made = made
        self.context = context
        self.stable = stable
        self.scale_floor = scale_floor
        self.sigmoid_bias = sigmoid_bias
        self._softplus_shift = math.log(math.expm1(1.0 - scale_floor))  # u = 0 gives scale 1

    @property
    def input_dim(self) -> int:
        """The event size ``D``, the MADE's."""
        return self.made.input_dim

    def _dtype(self) -> torch.dtype:
        return self.made.output_layer.weight.dtype

    def _extra_watched_tensors(self) -> list[Tensor]:
        return [] if self.context is None else [self.context]

    # The map y = shift + scale * x, from the MADE's two outputs per input.
    def _affine(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(shift, scale, log_scale)`` from MADE outputs of shape ``(..., 2, D)``."""
        loc, unconstrained = params.unbind(-2)
        if self.stable:
            gate = unconstrained + self.sigmoid_bias
            scale, log_scale = torch.sigmoid(gate), F.logsigmoid(gate)
            return (1.0 - scale) * loc, scale, log_scale
        scale = F.softplus(unconstrained + self._softplus_shift) + self.scale_floor
        return loc, scale, scale.log()

    def _step_affine(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Like `_affine` for the ``(..., 2)`` parameters of a single input."""
        return self._affine(params.unsqueeze(-1))

    def _one_pass(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(shift, scale, log_scale)`` from one MADE pass over ``inputs``."""
        return self._affine(self.made.raw_output(inputs, self.context))

    def _sequential(self, step, batch_shape: torch.Size) -> tuple[Tensor, Tensor]:
        def solve(params: Tensor, i: int) -> Tensor:
            shift, scale, _ = self._step_affine(params)
            return step(shift.squeeze(-1), scale.squeeze(-1), i)

        return self.made.sequential(solve, batch_shape, self.context)

    def _log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        r"""\(\sum_i \log \sigma_i\) from one MADE pass over the side the MADE reads."""
        return self._one_pass(self._conditioner_input(x, y))[2].sum(-1)

    def _conditioner_input(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError


class AffineIAF(_AffineAutoregressive):
    r"""Inverse autoregressive flow step: \(y_i = \mu_i(x_{<i}) + \sigma_i(x_{<i}) x_i\).

    Sampling (``x -> y``) is one MADE pass; the log-determinant of a sample it just drew
    comes from the cache with no pass at all, which is what an ELBO needs. Scoring an
    outside ``y`` inverts sequentially (about one pass of arithmetic, in ``D`` steps).

    Args:
        made: A [`MADE`][flowkit.nn.MADE] with two parameters per input
            (``param_dims=[1, 1]``), read as (shift, unconstrained scale).
        context: The context for a conditional MADE (use
            [`ConditionalAffineIAF`][flowkit.transforms.autoregressive.ConditionalAffineIAF]).
        stable: Use the gated update of Kingma et al. (2016).
        scale_floor: The smallest scale (not used when ``stable``).
        sigmoid_bias: The gate's bias when ``stable``; 2 keeps most of ``x`` at first.

    Examples:
        >>> import pyro.distributions as dist
        >>> iaf = affine_iaf(3, hidden_dims=[16], seed=0)
        >>> flow = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), [iaf])
        >>> flow.sample((5,)).shape
        torch.Size([5, 3])
    """

    def _forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One MADE pass over the noise ``x``."""
        shift, scale, log_scale = self._one_pass(x)
        return shift + scale * x, log_scale.sum(-1)

    def _inverse_and_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Sequential: ``x_i = (y_i - mu_i(x_<i)) / sigma_i(x_<i)`` in the MADE's order."""
        x, params = self._sequential(lambda shift, scale, i: (y[..., i] - shift) / scale, y.shape[:-1])
        return x, self._affine(params)[2].sum(-1)

    def _conditioner_input(self, x: Tensor, y: Tensor) -> Tensor:
        return x


class AffineMAF(_AffineAutoregressive):
    r"""Masked autoregressive flow step: \(y_i = \mu_i(y_{<i}) + \sigma_i(y_{<i}) x_i\).

    The density of data (``y -> x``) takes one MADE pass; sampling is sequential (about
    one pass of arithmetic, in ``D`` steps). Arguments as in [`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF].

    Examples:
        >>> maf = affine_maf(3, hidden_dims=[16], seed=0)
        >>> y = torch.randn(5, 3)
        >>> x = maf.inv(y).clone()  # a new tensor, so the cached pair cannot answer
        >>> torch.allclose(maf(x), y, atol=1e-5)
        True
    """

    def _forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Sequential: ``y_i = mu_i(y_<i) + sigma_i(y_<i) x_i`` in the MADE's order."""
        y, params = self._sequential(lambda shift, scale, i: shift + scale * x[..., i], x.shape[:-1])
        return y, self._affine(params)[2].sum(-1)

    def _inverse_and_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """One MADE pass over the data ``y``."""
        shift, scale, log_scale = self._one_pass(y)
        return (y - shift) / scale, log_scale.sum(-1)

    def _conditioner_input(self, x: Tensor, y: Tensor) -> Tensor:
        return y


class _ConditionalAffineAutoregressive(ConditionalTransformModule):
    transform_class: type[_AffineAutoregressive]
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    event_dim = 1

    def __init__(self, made: MADE, **kwargs):
        super().__init__()
        _check_made(made)
        if made.context_dim == 0:
            raise ValueError("made: a conditional transform needs a MADE built with context_dim > 0")
        self.made = made
        self.kwargs = kwargs
        self.transform_class(made, **kwargs)  # validates kwargs now, not at the first condition()

    def condition(self, context: Tensor) -> _AffineAutoregressive:
        """The transform for this ``context``, of shape ``(..., context_dim)``."""
        return self.transform_class(self.made, context=context, **self.kwargs)


class ConditionalAffineIAF(_ConditionalAffineAutoregressive):
    """[`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF] whose MADE also reads a context:
    ``.condition(context)`` gives the transform (the amortized posteriors of Kingma et al.
    2016).

    Args:
        made: A [`MADE`][flowkit.nn.MADE] with ``param_dims=[1, 1]`` and ``context_dim > 0``.
        **kwargs (Any): ``stable``, ``scale_floor`` and ``sigmoid_bias``, as in
            [`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF].
    """

    transform_class = AffineIAF


class ConditionalAffineMAF(_ConditionalAffineAutoregressive):
    """[`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF] whose MADE also reads a context:
    ``.condition(context)`` gives the transform (conditional density estimation).

    Args:
        made: A [`MADE`][flowkit.nn.MADE] with ``param_dims=[1, 1]`` and ``context_dim > 0``.
        **kwargs (Any): ``stable``, ``scale_floor`` and ``sigmoid_bias``, as in
            [`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF].
    """

    transform_class = AffineMAF


def init_near_identity(made: MADE, scale: float = 1e-2) -> MADE:
    """Shrinks the last layer of ``made`` (and zeros its bias) so that an affine transform
    built on it starts close to the identity. Returns ``made``.

    Args:
        made: The MADE to change in place.
        scale: The factor for the weights of the output (and direct) layers.
    """
    with torch.no_grad():
        made.output_layer.weight.mul_(scale)
        made.output_layer.bias.zero_()
        for layer in (made.skip_layer, made.context_skip_layer):
            if layer is not None:
                layer.weight.mul_(scale)
    return made


def _made(input_dim: int, hidden_dims: Sequence[int] | None, context_dim: int, **made_kwargs) -> MADE:
    if hidden_dims is None:
        hidden_dims = default_hidden_dims(input_dim)
    made = MADE(input_dim, hidden_dims, param_dims=[1, 1], context_dim=context_dim, **made_kwargs)
    return init_near_identity(made)


def default_hidden_dims(input_dim: int) -> list[int]:
    """Two layers of ``max(64, 3 * input_dim + 1)`` units: wide enough for every
    dependency, like Pyro's ``3 * input_dim + 1``, and at least zuko's 64."""
    return [max(64, 3 * input_dim + 1)] * 2


def _split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    transform_keys = {"stable", "scale_floor", "sigmoid_bias"}
    transform = {k: v for k, v in kwargs.items() if k in transform_keys}
    made = {k: v for k, v in kwargs.items() if k not in transform_keys}
    return made, transform


def affine_iaf(input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs) -> AffineIAF:
    """Builds an [`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF] on a fresh near-identity MADE.

    Keyword arguments ``stable``, ``scale_floor`` and ``sigmoid_bias`` go to the transform,
    the rest (``order``, ``activation``, ``seed``, ...) to [`MADE`][flowkit.nn.MADE].
    ``hidden_dims`` defaults to [`default_hidden_dims`][flowkit.transforms.autoregressive.default_hidden_dims].
    """
    made_kwargs, transform_kwargs = _split_kwargs(kwargs)
    return AffineIAF(_made(input_dim, hidden_dims, 0, **made_kwargs), **transform_kwargs)


def affine_maf(input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs) -> AffineMAF:
    """Builds an [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF] on a fresh near-identity MADE; arguments
    as in [`affine_iaf`][flowkit.transforms.autoregressive.affine_iaf]."""
    made_kwargs, transform_kwargs = _split_kwargs(kwargs)
    return AffineMAF(_made(input_dim, hidden_dims, 0, **made_kwargs), **transform_kwargs)


def conditional_affine_iaf(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalAffineIAF:
    """Builds a [`ConditionalAffineIAF`][flowkit.transforms.autoregressive.ConditionalAffineIAF]; arguments as in
    [`affine_iaf`][flowkit.transforms.autoregressive.affine_iaf], plus ``context_dim``, the size of the context."""
    made_kwargs, transform_kwargs = _split_kwargs(kwargs)
    return ConditionalAffineIAF(_made(input_dim, hidden_dims, context_dim, **made_kwargs), **transform_kwargs)


def conditional_affine_maf(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalAffineMAF:
    """Builds a [`ConditionalAffineMAF`][flowkit.transforms.autoregressive.ConditionalAffineMAF]; arguments as in
    [`affine_iaf`][flowkit.transforms.autoregressive.affine_iaf], plus ``context_dim``, the size of the context."""
    made_kwargs, transform_kwargs = _split_kwargs(kwargs)
    return ConditionalAffineMAF(_made(input_dim, hidden_dims, context_dim, **made_kwargs), **transform_kwargs)


def _check_context(made: MADE, context: Tensor) -> None:
    if made.context_dim == 0:
        raise ValueError("context: the MADE was built with context_dim=0 and takes no context")
    check_tensor(context, "context", made.context_dim, "context_dim", made.output_layer.weight.dtype)


def _check_made(made: object) -> None:
    if not isinstance(made, MADE):
        raise TypeError(f"made: expected a flowkit.MADE, got {type(made).__name__}")
    if sum(made.param_dims) != 2:
        raise ValueError(f"made: expected two parameters per input (param_dims=[1, 1]), got {made.param_dims}")
