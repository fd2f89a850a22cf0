"""Flow builders: [`maf`][flowkit.distributions.flows.maf], [`iaf`][flowkit.distributions.flows.iaf] and
[`nsf`][flowkit.distributions.flows.nsf] return a
[`Flow`][flowkit.distributions.flows.Flow], an ``nn.Module`` that is also a distribution (``log_prob``,
``sample``, ``rsample``) and hands out the Pyro distribution for ``pyro.sample`` sites."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor, nn
from torch.distributions.utils import _sum_rightmost

from flowkit.transforms import (
    IAF,
    MAF,
    ActNorm,
    Affine,
    AffineIAF,
    AffineMAF,
    BatchNorm,
    ConditionalAffineIAF,
    ConditionalAffineMAF,
    ConditionalIAF,
    ConditionalMAF,
    ElementwiseBijection,
    GatedAffine,
    Permute,
    RationalQuadraticSpline,
    as_bijection,
)
from flowkit.transforms.autoregressive import _near_identity_made
from flowkit.transforms.cache import CachedTransformModule
from flowkit.distributions.made_models import AutoregressiveMADE, MixtureMADE
from flowkit.nn import MADE, MADEConfig
from flowkit.nn.made import default_hidden_dims
from flowkit.nn.masks import make_order
from flowkit._seeding import make_generator
from flowkit._validation import as_shape, check_context, check_int, check_options, check_tensor

if TYPE_CHECKING:  # annotations only: Unpack is in typing from Python 3.11
    from typing_extensions import Unpack

__all__ = ["Flow", "IAFOptions", "iaf", "maf", "nsf"]


class Flow(nn.Module):
    r"""A base distribution pushed through a list of transforms.

    Transforms are applied in list order when sampling (noise to data), in reverse when
    scoring, as in `pyro.distributions.TransformedDistribution`. Base parameters
    are buffers, so the flow follows ``.to()`` and ``.double()``.

    Args:
        transforms: Pyro `TransformModule` or `ConditionalTransformModule` objects.
        input_dim: The event size ``D``.
        context_dim: The context size for conditional transforms; 0 for none.
        base: A MADE density model to use as the base (e.g. a
            [`MixtureMADE`][flowkit.distributions.MixtureMADE], which makes MAF MoG); default a
            standard normal. It gets the context too when the flow is conditional.

    Examples:
        >>> flow = maf(2, num_transforms=2, hidden_dims=[16])
        >>> x = flow.sample((4,))
        >>> flow.log_prob(x).shape
        torch.Size([4])
    """

    def __init__(
        self,
        transforms: Sequence[nn.Module],
        input_dim: int,
        context_dim: int = 0,
        base: AutoregressiveMADE | None = None,
    ):
        super().__init__()
        if base is not None and (base.input_dim != input_dim or base.context_dim != context_dim):
            raise ValueError(
                f"base: expected input_dim={input_dim} and context_dim={context_dim}, "
                f"got {base.input_dim} and {base.context_dim}"
            )
        self.transforms = nn.ModuleList(transforms)
        self.base = base
        self.input_dim = input_dim
        self.context_dim = context_dim
        self.register_buffer("base_loc", torch.zeros(input_dim))
        self.register_buffer("base_scale", torch.ones(input_dim))

    def _check_context(self, context: Tensor | None) -> None:
        check_context(context, self.context_dim, "this flow", self.base_loc.dtype)

    def _check_reparameterised(self) -> None:
        if self.base is not None:
            raise ValueError(
                "base: a MADE density base (such as base='mog') samples sequentially and cannot be "
                "reparameterised; use sample() or a standard normal base"
            )

    def base_distribution(
        self, batch_shape: int | Sequence[int] = (), context: Tensor | None = None
    ) -> dist.Distribution:
        """The base distribution with event shape ``(D,)``: the ``base`` model (given
        ``context``) if there is one, else a standard normal with ``batch_shape`` (an int or
        a shape)."""
        batch_shape = as_shape(batch_shape, "batch_shape")
        if self.base is not None:
            return self.base(context)
        return dist.Normal(self.base_loc, self.base_scale).to_event(1).expand(batch_shape)

    def conditioned_transforms(self, context: Tensor | None = None) -> list:
        """The transforms, with every conditional one conditioned on ``context``."""
        self._check_context(context)
        return [t.condition(context) if isinstance(t, ConditionalTransformModule) else t for t in self.transforms]

    def forward(self, context: Tensor | None = None) -> dist.TransformedDistribution:
        """The flow as a Pyro distribution, for ``pyro.sample`` sites; conditioned on
        ``context`` when the flow is conditional."""
        transforms = self.conditioned_transforms(context)
        batch_shape = context.shape[:-1] if context is not None else ()
        return dist.TransformedDistribution(self.base_distribution(batch_shape, context), transforms)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Log-density of ``x`` (shape ``(..., D)``):
        \(\log p(x) = \log p_0(f^{-1}(x)) - \log |\det \partial f / \partial z|\), walking
        the transforms backwards, each inverse with its log-determinant in one sweep."""
        check_tensor(x, "x", self.input_dim, "input_dim", self.base_loc.dtype)
        # Reading the values back would split a torch.compile graph: checked in eager mode only.
        if not torch.compiler.is_compiling() and not torch.isfinite(x).all():
            raise ValueError("x: holds inf or nan; a density is defined for finite points only")
        log_det = 0.0
        for transform in reversed(self.conditioned_transforms(context)):
            x, ladj = _inverse_and_log_det(transform, x)
            log_det = log_det + ladj
        return self._base_log_prob(x, context) - log_det

    def rsample(self, sample_shape: int | Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Reparameterised samples of shape ``sample_shape + batch + (D,)``; ``sample_shape``
        is an int or a shape (``flow.rsample(5)`` is ``flow.rsample((5,))``)."""
        sample_shape = as_shape(sample_shape)
        self._check_reparameterised()
        transforms = self.conditioned_transforms(context)
        return self._push(self._base_noise(sample_shape, context), transforms)[0]

    def sample(self, sample_shape: int | Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Samples without gradients, of shape ``sample_shape + batch + (D,)``; ``sample_shape``
        is an int or a shape."""
        sample_shape = as_shape(sample_shape)
        with torch.no_grad():
            transforms = self.conditioned_transforms(context)
            if self.base is not None:
                return self._push(self.base.sample(sample_shape, context), transforms)[0]
            return self._push(self._base_noise(sample_shape, context), transforms)[0]

    def rsample_and_log_prob(
        self, sample_shape: int | Sequence[int] = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-density in one sweep: each transform's log-determinant
        comes from the pass that produced the sample (for IAF, no extra MADE pass).
        ``sample_shape`` is an int or a shape."""
        sample_shape = as_shape(sample_shape)
        self._check_reparameterised()
        transforms = self.conditioned_transforms(context)
        noise = self._base_noise(sample_shape, context)
        x, log_det = self._push(noise, transforms)
        return x, self._base_log_prob(noise, context) - log_det

    # The base and the sweep through the transforms, without Pyro's bookkeeping: these are
    # the hot paths, and torch.compile traces them whole.
    def _base_noise(self, sample_shape: torch.Size, context: Tensor | None) -> Tensor:
        batch_shape = context.shape[:-1] if context is not None else torch.Size()
        shape = sample_shape + batch_shape + (self.input_dim,)
        return torch.randn(shape, dtype=self.base_loc.dtype, device=self.base_loc.device)

    def _base_log_prob(self, z: Tensor, context: Tensor | None) -> Tensor:
        if self.base is not None:
            return self.base.log_prob(z, context)
        return -0.5 * z.square().sum(-1) - 0.5 * self.input_dim * math.log(2 * math.pi)

    @staticmethod
    def _push(x: Tensor, transforms: list) -> tuple[Tensor, Tensor]:
        """Noise through the transforms in order: the output and the summed log-determinant."""
        log_det = None  # not 0.0 + ...: each addition is a node in the backward pass
        for transform in transforms:
            x, ladj = _forward_and_log_det(transform, x)
            log_det = ladj if log_det is None else log_det + ladj
        return x, x.new_zeros(x.shape[:-1]) if log_det is None else log_det


def _forward_and_log_det(transform, x: Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(transform, CachedTransformModule):
        return transform.forward_and_log_det(x)
    y = transform(x)  # any other Pyro transform, through its own interface
    return y, _sum_rightmost(transform.log_abs_det_jacobian(x, y), 1 - transform.codomain.event_dim)


def _inverse_and_log_det(transform, y: Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(transform, CachedTransformModule):
        return transform.inverse_and_log_det(y)
    x = transform.inv(y)
    return x, _sum_rightmost(transform.log_abs_det_jacobian(x, y), 1 - transform.codomain.event_dim)


@dataclass(frozen=True)
class _StepFactory:
    """Makes the steps of one kind of flow (MAF or IAF) from a MADE and a bijection,
    conditional when the MADE reads a context. Affine bijections get the Pyro-familiar
    affine classes, with the same numbers and state_dict."""

    plain: type[nn.Module]
    conditional: type[nn.Module]
    affine: type[nn.Module]
    conditional_affine: type[nn.Module]

    def __call__(self, made: MADE, bijection: ElementwiseBijection) -> nn.Module:
        conditional = made.context_dim > 0
        affine = self.conditional_affine if conditional else self.affine
        if isinstance(bijection, Affine):
            return affine(
                made, stable=False, scale_floor=bijection.scale_floor, inverse_scale=bijection.inverse_scale
            )
        if isinstance(bijection, GatedAffine):
            return affine(made, stable=True, sigmoid_bias=bijection.sigmoid_bias)
        return (self.conditional if conditional else self.plain)(made, bijection)


_MAF_STEPS = _StepFactory(MAF, ConditionalMAF, AffineMAF, ConditionalAffineMAF)
_IAF_STEPS = _StepFactory(IAF, ConditionalIAF, AffineIAF, ConditionalAffineIAF)


def _bounds_follow_permutations(make_step: _StepFactory, layers: list[nn.Module], spline: RationalQuadraticSpline) -> list[nn.Module]:
    """Gives each step the per-input bounds of the data columns it sees: the bounds are
    given for the data, which the last step writes, and every ``Permute`` between steps
    reorders the columns (``y = x[..., p]``, so column ``p[j]`` before it is column ``j``
    after it)."""
    bound = spline.bound
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if isinstance(layer, Permute):
            bound = bound[layer.inverse_permutation.cpu()]
        elif isinstance(layer, (MAF, IAF, ConditionalMAF, ConditionalIAF)):
            own = RationalQuadraticSpline(
                spline.bins, bound, spline.min_bin_width, spline.min_bin_height, spline.min_derivative
            )
            layers[index] = make_step(layer.made, own)
    return layers


def _build(
    make_step: _StepFactory,
    input_dim: int,
    *,
    num_transforms: int,
    hidden_dims: Sequence[int] | None,
    context_dim: int,
    permutation: str | None,
    batch_norm: bool,
    act_norm: bool,
    bijection: ElementwiseBijection | str,
    conditioner: MADEConfig | None,
    base: str,
    num_components: int,
    seed: int | None,
) -> Flow:
    """The layers of a MAF or IAF: steps of ``bijection`` on MADEs from ``conditioner``,
    and what goes between them."""
    check_int(num_transforms, "num_transforms")
    if permutation not in ("reversed", "random", None):
        raise ValueError(f"permutation: expected 'reversed', 'random' or None, got {permutation!r}")
    if base not in ("normal", "mog"):
        raise ValueError(f"base: expected 'normal' or 'mog', got {base!r}")
    # A MAF's affine steps put the softplus on the scale of its density direction (see Affine).
    if make_step is _MAF_STEPS and bijection == "affine":
        bijection = Affine(inverse_scale=True)
    else:
        bijection = as_bijection(bijection)
    conditioner = MADEConfig.resolve(conditioner, hidden_dims)
    generator = make_generator(seed)
    layers: list[nn.Module] = []
    for index in range(num_transforms):
        made = _near_identity_made(input_dim, bijection, conditioner, None, context_dim, generator)
        layers.append(make_step(made, bijection))
        if index == num_transforms - 1:
            break
        if batch_norm:
            layers.append(BatchNorm(input_dim))
        if act_norm:
            layers.append(ActNorm(input_dim))
        if permutation is not None and input_dim > 1:
            layers.append(Permute(make_order(input_dim, permutation, generator)))
    if isinstance(bijection, RationalQuadraticSpline) and isinstance(bijection.bound, Tensor):
        layers = _bounds_follow_permutations(make_step, layers, bijection)
    base_model = None
    if base == "mog":
        # The base is a density model of its own: it shares the steps' widths, not their
        # conditioner options (an order or activation chosen for the steps).
        widths = default_hidden_dims(input_dim) if conditioner.hidden_dims is None else list(conditioner.hidden_dims)
        base_model = MixtureMADE(input_dim, widths, num_components, context_dim, seed=generator)
    return Flow(layers, input_dim, context_dim, base_model)


def maf(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] | None = None,
    context_dim: int = 0,
    permutation: str | None = "reversed",
    batch_norm: bool = False,
    act_norm: bool = False,
    *,
    bijection: ElementwiseBijection | str = "affine",
    conditioner: MADEConfig | None = None,
    base: str = "normal",
    num_components: int = 5,
    seed: int | None = None,
) -> Flow:
    r"""A masked autoregressive flow (Papamakarios et al. 2017): ``num_transforms``
    [`MAF`][flowkit.transforms.MAF] steps with permutations (and optionally batch norm
    or ActNorm) between them. Fast density, sequential sampling: the choice for density
    estimation.

    Options come in three groups: the flow's (the first seven and ``base``,
    ``num_components``, ``seed``), the bijection each step applies (``bijection``), and
    the MADE that conditions it (``conditioner``, or just ``hidden_dims``).

    Args:
        input_dim: The event size ``D``.
        num_transforms: The number of MAF steps.
        hidden_dims: MADE hidden widths (or give them in ``conditioner``); default
            [`default_hidden_dims`][flowkit.nn.made.default_hidden_dims].
        context_dim: Context size for conditional density estimation; 0 for none.
        permutation: ``"reversed"`` (the MAF paper's), ``"random"`` or ``None``.
        batch_norm: Put [`BatchNorm`][flowkit.transforms.BatchNorm] between steps.
        act_norm: Put [`ActNorm`][flowkit.transforms.ActNorm] between steps.
        bijection: The elementwise map of every step: an
            [`ElementwiseBijection`][flowkit.transforms.ElementwiseBijection] such as
            ``Affine(scale_floor=0.05)``, ``GatedAffine()`` or
            ``RationalQuadraticSpline(bins=8, bound=5.0)``, or one of the names
            ``"affine"`` (the default), ``"gated"``, ``"spline"``
            ([`as_bijection`][flowkit.transforms.as_bijection]). For a MAF, ``"affine"``
            is ``Affine(inverse_scale=True)``: the softplus gives the factor that scores
            data, \(x = (y - \mu)\,s\), so that it grows linearly, not exponentially, in
            the MADE's output, and a test row far from the training data is not amplified
            a thousandfold per step. Affine bijections give
            [`AffineMAF`][flowkit.transforms.AffineMAF] steps.
        conditioner: The options of every step's MADE, a
            [`MADEConfig`][flowkit.nn.MADEConfig] (``activation``, ``residual``,
            ``skip_connections``, ``order``, ...); default ``MADEConfig()``.
        base: ``"normal"`` (standard normal) or ``"mog"``: a
            [`MixtureMADE`][flowkit.distributions.MixtureMADE] base, which makes MAF MoG.
            It has the steps' hidden widths and otherwise MADE's defaults.
        num_components: Mixture components per conditional of the ``"mog"`` base.
        seed: Fixes masks and permutations (weights follow torch's global seed).

    Examples:
        >>> flow = maf(3, num_transforms=2, hidden_dims=[16, 16], seed=0)
        >>> flow.log_prob(torch.zeros(3)).shape
        torch.Size([])
        >>> from flowkit.nn import MADEConfig
        >>> flow = maf(3, 2, bijection="gated", conditioner=MADEConfig(hidden_dims=[16], activation="tanh"))
        >>> type(flow.transforms[0]).__name__, flow.transforms[0].bijection
        ('AffineMAF', GatedAffine(sigmoid_bias=2.0))
    """
    return _build(
        _MAF_STEPS, input_dim, num_transforms=num_transforms, hidden_dims=hidden_dims, context_dim=context_dim,
        permutation=permutation, batch_norm=batch_norm, act_norm=act_norm, bijection=bijection,
        conditioner=conditioner, base=base, num_components=num_components, seed=seed,
    )  # fmt: skip


class IAFOptions(TypedDict, total=False):
    """The keyword options of [`iaf`][flowkit.distributions.flows.iaf]: those of
    [`maf`][flowkit.distributions.flows.maf] but its ``base`` and ``num_components`` (an
    IAF's base is a standard normal), every one optional with ``maf``'s default. Another
    keyword is a ``TypeError`` that names it.

    Attributes:
        permutation: ``"reversed"`` (the default), ``"random"`` or ``None``.
        batch_norm: Put [`BatchNorm`][flowkit.transforms.BatchNorm] between steps; default ``False``.
        act_norm: Put [`ActNorm`][flowkit.transforms.ActNorm] between steps; default ``False``.
        bijection: As in [`maf`][flowkit.distributions.flows.maf] (default ``"affine"``);
            ``"gated"`` is the update of Kingma et al. (2016). Affine bijections give
            [`AffineIAF`][flowkit.transforms.AffineIAF] steps.
        conditioner: As in [`maf`][flowkit.distributions.flows.maf]; default ``MADEConfig()``.
        seed: Fixes masks and permutations (weights follow torch's global seed); default ``None``.
    """

    permutation: str | None
    batch_norm: bool
    act_norm: bool
    bijection: ElementwiseBijection | str
    conditioner: MADEConfig | None
    seed: int | None


# maf's defaults (tests/test_builders.py checks that they agree)
_IAF_DEFAULTS = IAFOptions(
    permutation="reversed", batch_norm=False, act_norm=False, bijection="affine", conditioner=None, seed=None
)


def iaf(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] | None = None,
    context_dim: int = 0,
    **options: Unpack[IAFOptions],
) -> Flow:
    """An inverse autoregressive flow (Kingma et al. 2016): like [`maf`][flowkit.distributions.flows.maf] with
    [`IAF`][flowkit.transforms.IAF] steps and a standard normal base. One-pass
    sampling, and free density of its own samples
    ([`Flow.rsample_and_log_prob`][flowkit.distributions.flows.Flow.rsample_and_log_prob]): the choice for
    variational posteriors.

    Args:
        input_dim: The event size ``D``.
        num_transforms: The number of IAF steps.
        hidden_dims: MADE hidden widths (or give them in ``conditioner``); default
            [`default_hidden_dims`][flowkit.nn.made.default_hidden_dims].
        context_dim: Context size for amortized posteriors; 0 for none.
        **options: ``permutation``, ``batch_norm``, ``act_norm``, ``bijection``,
            ``conditioner``, ``seed``: the [`IAFOptions`][flowkit.distributions.flows.IAFOptions],
            as in ``maf``.

    Examples:
        >>> flow = iaf(3, num_transforms=2, hidden_dims=[16], seed=0)
        >>> x, log_q = flow.rsample_and_log_prob((5,))
        >>> x.shape, log_q.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    check_options(options, IAFOptions, "iaf")
    return _build(
        _IAF_STEPS, input_dim, num_transforms=num_transforms, hidden_dims=hidden_dims, context_dim=context_dim,
        base="normal", num_components=1, **{**_IAF_DEFAULTS, **options},
    )  # fmt: skip


def nsf(
    input_dim: int,
    num_transforms: int = 5,
    hidden_dims: Sequence[int] | None = None,
    *,
    bins: int = 8,
    bound: float | Sequence[float] | Tensor = 5.0,
    context_dim: int = 0,
    permutation: str | None = "reversed",
    batch_norm: bool = False,
    act_norm: bool = False,
    conditioner: MADEConfig | None = None,
    base: str = "normal",
    num_components: int = 5,
    seed: int | None = None,
) -> Flow:
    r"""A neural spline flow (Durkan et al. 2019), autoregressive: [`maf`][flowkit.distributions.flows.maf]
    whose steps apply a monotone
    [`RationalQuadraticSpline`][flowkit.transforms.RationalQuadraticSpline] with ``bins``
    bins on \([-B, B]\), ``B = bound``, and the identity outside. Density in one MADE pass
    per step, sampling sequential. Each step starts near the identity.

    Args:
        input_dim: The event size ``D``.
        num_transforms: The number of spline steps.
        hidden_dims: MADE hidden widths (or give them in ``conditioner``); default
            [`default_hidden_dims`][flowkit.nn.made.default_hidden_dims].
        bins: The number of spline bins \(K\) (each step's MADE gives \(3K - 1\)
            parameters per input).
        bound: \(B\): a float, or one per input. Data are best standardised to lie mostly
            inside \([-B, B]\).
        context_dim: Context size for conditional density estimation; 0 for none.
        permutation: As in [`maf`][flowkit.distributions.flows.maf].
        batch_norm: As in [`maf`][flowkit.distributions.flows.maf].
        act_norm: As in [`maf`][flowkit.distributions.flows.maf].
        conditioner: As in [`maf`][flowkit.distributions.flows.maf].
        base: As in [`maf`][flowkit.distributions.flows.maf].
        num_components: As in [`maf`][flowkit.distributions.flows.maf].
        seed: As in [`maf`][flowkit.distributions.flows.maf].

    Examples:
        >>> flow = nsf(2, num_transforms=2, hidden_dims=[16], bins=4, seed=0)
        >>> flow.transforms[0].bijection.bins, flow.sample((3,)).shape
        (4, torch.Size([3, 2]))
    """
    return maf(
        input_dim, num_transforms, hidden_dims, context_dim, permutation=permutation, batch_norm=batch_norm,
        act_norm=act_norm, bijection=RationalQuadraticSpline(bins, bound), conditioner=conditioner, base=base,
        num_components=num_components, seed=seed,
    )  # fmt: skip
