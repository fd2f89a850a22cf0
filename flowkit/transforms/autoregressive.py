r"""Masked autoregressive transforms, MAF and IAF, as Pyro `TransformModule` objects: one
core that takes a [`MADE`][flowkit.nn.MADE] and any
[`ElementwiseBijection`][flowkit.transforms.elementwise.ElementwiseBijection].

Both follow Pyro's convention: the forward direction maps base noise \(x\) to data
\(y\), elementwise \(y_i = f(x_i; \theta_i)\), with the parameters \(\theta_i\) of input
\(i\) from a MADE. The bijection \(f\) is an
[`Affine`][flowkit.transforms.elementwise.Affine] map (\(y_i = \mu_i + \sigma_i x_i\)),
its [`GatedAffine`][flowkit.transforms.elementwise.GatedAffine] variant, or a
[`RationalQuadraticSpline`][flowkit.transforms.elementwise.RationalQuadraticSpline]
(neural spline flows). [`MAF`][flowkit.transforms.autoregressive.MAF] and
[`IAF`][flowkit.transforms.autoregressive.IAF] differ only in which side the MADE reads:

* **MAF** reads the data, \(\theta_i = \theta_i(y_{<i})\): the density of data takes one
  pass (the inverse direction, ``y -> x``), sampling is sequential.
* **IAF** reads the noise, \(\theta_i = \theta_i(x_{<i})\): sampling takes one pass
  (the forward direction, ``x -> y``), the density of outside points is sequential, and
  the density of its own samples is free from the cache.

The sequential direction uses [`MADE.sequential`][flowkit.nn.made.MADE.sequential], which
computes every hidden unit once (about one forward pass of arithmetic) instead of one pass
per input; each of its steps applies the bijection to one column.

[`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF],
[`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF] and their conditional variants
are the same transforms with an affine bijection, under Pyro-familiar names and arguments
(``stable``, ``sigmoid_bias``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor

from flowkit._validation import broadcast_batch, check_context, check_options
from flowkit.nn import MADE, MADEConfig
from flowkit.nn.made import default_hidden_dims
from flowkit.transforms.cache import CachedTransformModule
from flowkit.transforms.elementwise import Affine, ElementwiseBijection, GatedAffine, RationalQuadraticSpline

if TYPE_CHECKING:  # annotations only: Unpack is in typing from Python 3.11
    from typing_extensions import Unpack

__all__ = [
    "IAF",
    "MAF",
    "AffineIAF",
    "AffineMAF",
    "AffineStepOptions",
    "ConditionalAffineIAF",
    "ConditionalAffineMAF",
    "ConditionalIAF",
    "ConditionalMAF",
    "MaskedAutoregressive",
    "affine_iaf",
    "affine_maf",
    "as_bijection",
    "conditional_affine_iaf",
    "conditional_affine_maf",
    "init_near_identity",
]

SEQUENTIAL_METHODS = ("fast", "naive")


class MaskedAutoregressive(CachedTransformModule):
    r"""What [`MAF`][flowkit.transforms.autoregressive.MAF] and
    [`IAF`][flowkit.transforms.autoregressive.IAF] share: a MADE, an elementwise
    bijection, an optional context, and the two ways to run the bijection through the
    MADE, written once for every bijection.

    * the one-pass direction: one MADE pass over the side the MADE reads gives every
      input's parameters, and the bijection maps all columns at once;
    * the sequential direction: [`MADE.sequential`][flowkit.nn.made.MADE.sequential]
      builds the side the MADE reads one column at a time, in the MADE's order, each
      column by the bijection on that column alone.

    Args:
        made: A [`MADE`][flowkit.nn.MADE] with ``sum(param_dims) == bijection.num_params``.
        bijection: The [`ElementwiseBijection`][flowkit.transforms.elementwise.ElementwiseBijection]
            each input goes through.
        context: The context for a conditional MADE (use the ``Conditional*`` classes,
            whose ``.condition(context)`` passes it).
        sequential: How the sequential direction runs, ``"fast"`` (each hidden unit
            computed once) or ``"naive"`` (a full MADE pass per input; a reference for tests).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1
    autoregressive = True

    def __init__(
        self,
        made: MADE,
        bijection: ElementwiseBijection,
        context: Tensor | None = None,
        *,
        sequential: str = "fast",
    ):
        super().__init__()
        _check_made_and_bijection(made, bijection)
        _check_sequential(sequential)
        if context is not None:
            check_context(context, made.context_dim, "the MADE", made.dtype)
        self._hold(made, bijection, context, sequential)

    def _hold(self, made: MADE, bijection: ElementwiseBijection, context: Tensor | None, sequential: str) -> None:
        self.made = made
        self.bijection = bijection
        self.context = context
        self.sequential = sequential

    @classmethod
    def _conditioned(cls, module: _ConditionalMaskedAutoregressive, context: Tensor) -> MaskedAutoregressive:
        """The transform of a conditional ``module`` (whose parts its constructor checked)
        for ``context``: a conditional flow conditions at every call, so only the context,
        the one new part, is checked here."""
        check_context(context, module.made.context_dim, "the MADE", module.made.dtype)
        transform = cls.__new__(cls)  # the parts are ready: no subclass constructor to rebuild them
        CachedTransformModule.__init__(transform)
        transform._hold(module.made, module.bijection, context, module.sequential)
        return transform

    @property
    def input_dim(self) -> int:
        """The event size ``D``, the MADE's."""
        return self.made.input_dim

    def _dtype(self) -> torch.dtype:
        return self.made.dtype

    def _check_input(self, value: Tensor, name: str) -> None:
        """The input, and the context's batch shape against it: checked here, at the entry
        of each direction, so that the MADE passes inside need no checks of their own."""
        super()._check_input(value, name)
        if self.context is not None:
            broadcast_batch(self.context, value.shape[:-1], f"{name}'s batch shape")

    def _extra_watched_tensors(self) -> list[Tensor]:
        return [] if self.context is None else [self.context]

    # MAF's MADE reads the output y, IAF's the input x (``_made_reads_output``): the direction
    # that starts from the side the MADE reads is one pass, the other is sequential.
    _made_reads_output: bool

    def _forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        run = self._sequential_pass if self._made_reads_output else self._one_pass
        return run(x, inverse=False)

    def _inverse_and_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        run = self._one_pass if self._made_reads_output else self._sequential_pass
        return run(y, inverse=True)

    def _log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        if self._made_reads_output:
            return self._one_pass(y, inverse=True)[1]
        return self._one_pass(x, inverse=False)[1]

    def _one_pass(self, value: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        r"""The bijection (or its inverse) on every column of ``value``, the side the MADE
        reads, with parameters from one MADE pass over it; returns the other side and
        \(\log |\det \partial y / \partial x|\). The entry checked ``value`` and the
        constructor the bijection's options, so the bijection's own checks are skipped."""
        params = self.made.raw_output(value, self.context, check=False)
        if inverse:
            x, log_dx_dy = self.bijection._inverse(params, value, None)
            return x, -log_dx_dy.sum(-1)
        y, log_dy_dx = self.bijection._forward(params, value, None)
        return y, log_dy_dx.sum(-1)

    def _sequential_pass(self, value: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        r"""Builds the side the MADE reads from the other side, ``value``, one column at a
        time; returns it and \(\log |\det \partial y / \partial x|\), summed from
        the log-derivatives of the column steps (no pass over the finished side)."""
        log_dets: dict[int, Tensor] = {}

        def step(params: Tensor, i: int) -> Tensor:
            # (*batch, P) parameters of input i against its (*batch,) column
            column, log_dets[i] = self.bijection._column(params, value[..., i], i, inverse)
            return column

        built, _ = self.made.sequential(step, value.shape[:-1], self.context, method=self.sequential)
        log_det = torch.stack([log_dets[i] for i in range(self.input_dim)], dim=-1).sum(-1)
        return built, -log_det if inverse else log_det


class MAF(MaskedAutoregressive):
    r"""Masked autoregressive flow step: \(y_i = f(x_i; \theta_i(y_{<i}))\) for an
    elementwise bijection \(f\).

    The density of data (``y -> x``) takes one MADE pass; sampling is sequential (about
    one pass of arithmetic, in ``D`` steps). Arguments as in
    [`MaskedAutoregressive`][flowkit.transforms.autoregressive.MaskedAutoregressive].

    Examples:
        >>> from flowkit.transforms import RationalQuadraticSpline
        >>> spline = RationalQuadraticSpline(bins=4, bound=3.0)
        >>> maf = MAF(MADE(3, [16], param_dims=[spline.num_params], seed=0), spline)
        >>> y = torch.randn(5, 3)
        >>> x, log_det = maf.inverse_and_log_det(y)  # one MADE pass
        >>> torch.allclose(maf.forward_and_log_det(x)[0], y, atol=1e-5)  # sequential
        True
    """

    _made_reads_output = True  # y: the density of data is the one-pass direction


class IAF(MaskedAutoregressive):
    r"""Inverse autoregressive flow step: \(y_i = f(x_i; \theta_i(x_{<i}))\) for an
    elementwise bijection \(f\).

    Sampling (``x -> y``) is one MADE pass; the log-determinant of a sample it just drew
    comes from the cache with no pass at all, which is what an ELBO needs. Scoring an
    outside ``y`` inverts sequentially (about one pass of arithmetic, in ``D`` steps).
    Arguments as in [`MaskedAutoregressive`][flowkit.transforms.autoregressive.MaskedAutoregressive].

    Examples:
        >>> from flowkit.transforms import RationalQuadraticSpline
        >>> spline = RationalQuadraticSpline()
        >>> iaf = IAF(MADE(3, [16], param_dims=[spline.num_params], seed=0), spline)
        >>> y = iaf(torch.randn(5, 3))  # one MADE pass
        >>> iaf.log_abs_det_jacobian(iaf.inv(y), y).shape  # both from the cache
        torch.Size([5])
    """

    _made_reads_output = False  # x: sampling is the one-pass direction


class _ConditionalMaskedAutoregressive(ConditionalTransformModule):
    """A MADE with a context and a bijection; ``.condition(context)`` gives the transform."""

    transform_class: type[MaskedAutoregressive]
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    event_dim = 1

    def __init__(self, made: MADE, bijection: ElementwiseBijection, *, sequential: str = "fast"):
        super().__init__()
        _check_made_and_bijection(made, bijection)
        _check_sequential(sequential)
        if made.context_dim == 0:
            raise ValueError("made: a conditional transform needs a MADE built with context_dim > 0")
        self.made = made
        self.bijection = bijection
        self.sequential = sequential

    def condition(self, context: Tensor) -> MaskedAutoregressive:
        """The transform for this ``context``, of shape ``(..., context_dim)``; it shares
        this module's MADE."""
        return self.transform_class._conditioned(self, context)


class ConditionalMAF(_ConditionalMaskedAutoregressive):
    """[`MAF`][flowkit.transforms.autoregressive.MAF] whose MADE also reads a context:
    ``.condition(context)`` gives the transform (conditional density estimation).

    Args:
        made: A [`MADE`][flowkit.nn.MADE] with ``context_dim > 0`` and
            ``sum(param_dims) == bijection.num_params``.
        bijection: The elementwise bijection, as in [`MAF`][flowkit.transforms.autoregressive.MAF].
        sequential: ``"fast"`` or ``"naive"``, as in [`MAF`][flowkit.transforms.autoregressive.MAF].
    """

    transform_class = MAF


class ConditionalIAF(_ConditionalMaskedAutoregressive):
    """[`IAF`][flowkit.transforms.autoregressive.IAF] whose MADE also reads a context:
    ``.condition(context)`` gives the transform (the amortized posteriors of Kingma et
    al. 2016). Arguments as in [`ConditionalMAF`][flowkit.transforms.autoregressive.ConditionalMAF]."""

    transform_class = IAF


# ------------------------------------------------------------ the affine flows, by name
def _affine_bijection(
    stable: bool, scale_floor: float, sigmoid_bias: float, inverse_scale: bool = False
) -> ElementwiseBijection:
    if not isinstance(stable, bool):
        raise TypeError(f"stable: expected a bool, got {type(stable).__name__}")
    # checks scale_floor even when stable, as these classes always did
    affine = Affine(scale_floor, inverse_scale=inverse_scale)
    return GatedAffine(sigmoid_bias) if stable else affine


class _PlainAffine:
    """Pyro's affine arguments on a plain step class (``class AffineMAF(_PlainAffine, MAF)``):
    the bijection is made from ``stable``, ``scale_floor``, ``sigmoid_bias`` and ``inverse_scale``."""

    def __init__(
        self,
        made: MADE,
        context: Tensor | None = None,
        stable: bool = False,
        scale_floor: float = 1e-3,
        sigmoid_bias: float = 2.0,
        *,
        inverse_scale: bool = False,
    ):
        super().__init__(made, _affine_bijection(stable, scale_floor, sigmoid_bias, inverse_scale), context)


class AffineMAF(_PlainAffine, MAF):
    r"""[`MAF`][flowkit.transforms.autoregressive.MAF] with an affine map,
    \(y_i = \mu_i(y_{<i}) + \sigma_i(y_{<i}) x_i\), under the arguments of Pyro's
    ``AffineAutoregressive``.

    Args:
        made: A [`MADE`][flowkit.nn.MADE] with two parameters per input
            (``param_dims=[1, 1]``), read as (shift, unconstrained scale).
        context: The context for a conditional MADE (use
            [`ConditionalAffineMAF`][flowkit.transforms.autoregressive.ConditionalAffineMAF]).
        stable: Use the gated update of Kingma et al. (2016),
            [`GatedAffine`][flowkit.transforms.elementwise.GatedAffine], instead of
            [`Affine`][flowkit.transforms.elementwise.Affine].
        scale_floor: The smallest scale (not used when ``stable``).
        sigmoid_bias: The gate's bias when ``stable``; 2 keeps most of ``x`` at first.
        inverse_scale: The softplus gives \(1 / \sigma\) instead of \(\sigma\) (see
            [`Affine`][flowkit.transforms.elementwise.Affine]; not used when ``stable``).

    Examples:
        >>> maf = affine_maf(3, hidden_dims=[16], seed=0)
        >>> y = torch.randn(5, 3)
        >>> x = maf.inv(y).clone()  # a new tensor, so the cached pair cannot answer
        >>> torch.allclose(maf(x), y, atol=1e-5)
        True
    """


class AffineIAF(_PlainAffine, IAF):
    r"""[`IAF`][flowkit.transforms.autoregressive.IAF] with an affine map,
    \(y_i = \mu_i(x_{<i}) + \sigma_i(x_{<i}) x_i\). Arguments as in
    [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF].

    Examples:
        >>> import pyro.distributions as dist
        >>> iaf = affine_iaf(3, hidden_dims=[16], seed=0)
        >>> flow = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), [iaf])
        >>> flow.sample((5,)).shape
        torch.Size([5, 3])
    """


class _ConditionalAffine(_ConditionalMaskedAutoregressive):
    def __init__(
        self,
        made: MADE,
        stable: bool = False,
        scale_floor: float = 1e-3,
        sigmoid_bias: float = 2.0,
        inverse_scale: bool = False,
    ):
        super().__init__(made, _affine_bijection(stable, scale_floor, sigmoid_bias, inverse_scale))


class ConditionalAffineMAF(_ConditionalAffine):
    """[`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF] whose MADE also reads a context:
    ``.condition(context)`` gives the transform (conditional density estimation).

    Args:
        made: A [`MADE`][flowkit.nn.MADE] with ``param_dims=[1, 1]`` and ``context_dim > 0``.
        stable: As in [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF].
        scale_floor: As in [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF].
        sigmoid_bias: As in [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF].
        inverse_scale: As in [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF].
    """

    transform_class = AffineMAF


class ConditionalAffineIAF(_ConditionalAffine):
    """[`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF] whose MADE also reads a context:
    ``.condition(context)`` gives the transform (the amortized posteriors of Kingma et al.
    2016). Arguments as in [`ConditionalAffineMAF`][flowkit.transforms.autoregressive.ConditionalAffineMAF].
    """

    transform_class = AffineIAF


# ---------------------------------------------------------------------------- builders
BIJECTION_NAMES = {"affine": Affine, "gated": GatedAffine, "spline": RationalQuadraticSpline}


def as_bijection(bijection: ElementwiseBijection | str) -> ElementwiseBijection:
    """``bijection`` itself, or the bijection a name stands for with its default options:
    ``"affine"`` ([`Affine`][flowkit.transforms.elementwise.Affine]), ``"gated"``
    ([`GatedAffine`][flowkit.transforms.elementwise.GatedAffine]) or ``"spline"``
    ([`RationalQuadraticSpline`][flowkit.transforms.elementwise.RationalQuadraticSpline]).

    Examples:
        >>> as_bijection("spline")
        RationalQuadraticSpline(bins=8, bound=5.0, min_bin_width=0.001, min_bin_height=0.001, min_derivative=0.001)
    """
    if isinstance(bijection, ElementwiseBijection):
        return bijection
    if isinstance(bijection, str) and bijection in BIJECTION_NAMES:
        return BIJECTION_NAMES[bijection]()
    raise ValueError(
        f"bijection: expected an ElementwiseBijection or one of {sorted(BIJECTION_NAMES)}, got {bijection!r}"
    )


def _param_dims_for(bijection: ElementwiseBijection) -> list[int]:
    """The MADE ``param_dims`` for ``bijection``: ``[1, 1]`` for the affine maps (shift
    and scale, as Pyro's ``AffineAutoregressive`` reads them), ``[num_params]`` otherwise."""
    return [1, 1] if isinstance(bijection, (Affine, GatedAffine)) else [bijection.num_params]


def init_near_identity(made: MADE, scale: float = 1e-2) -> MADE:
    """Shrinks the last layer of ``made`` (and zeros its bias) so that its outputs start
    near zero; returns ``made``.

    Every bijection whose zero parameters are the identity
    ([`Affine`][flowkit.transforms.elementwise.Affine],
    [`RationalQuadraticSpline`][flowkit.transforms.elementwise.RationalQuadraticSpline])
    then starts close to the identity. [`GatedAffine`][flowkit.transforms.elementwise.GatedAffine]
    starts close to \\(y = \\mathrm{sigmoid}(b)\\, x\\) instead.

    Args:
        made: The MADE to change in place.
        scale: The factor for the weights of the output (and direct) layers.
    """
    return made.scale_outputs_(scale)


def _near_identity_made(
    input_dim: int,
    bijection: ElementwiseBijection,
    conditioner: MADEConfig | None,
    hidden_dims: Sequence[int] | None,
    context_dim: int = 0,
    seed: int | torch.Generator | None = None,
) -> MADE:
    """A fresh MADE for one step with ``bijection``, built from ``conditioner`` (widths from
    ``hidden_dims`` when given there instead), its outputs shrunk by
    [`init_near_identity`][flowkit.transforms.autoregressive.init_near_identity]."""
    config = MADEConfig.resolve(conditioner, hidden_dims)
    return init_near_identity(config.build(input_dim, _param_dims_for(bijection), context_dim, seed))


class AffineStepOptions(TypedDict, total=False):
    """The keyword options of the ``affine_*`` builders
    ([`affine_iaf`][flowkit.transforms.autoregressive.affine_iaf],
    [`affine_maf`][flowkit.transforms.autoregressive.affine_maf] and their ``conditional_``
    variants), every one optional, as Pyro's ``affine_autoregressive`` passes its keywords
    on to the transform. Another keyword is a ``TypeError`` that names it.

    Attributes:
        conditioner: The MADE's options other than ``hidden_dims``, a
            [`MADEConfig`][flowkit.nn.made.MADEConfig]; default ``MADEConfig()``.
        stable: As in [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF]; default ``False``.
        scale_floor: As in [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF]; default ``1e-3``.
        sigmoid_bias: As in [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF]; default ``2.0``.
        seed: Fixes the MADE's masks (weights follow torch's global seed); default ``None``.
    """

    conditioner: MADEConfig | None
    stable: bool
    scale_floor: float
    sigmoid_bias: float
    seed: int | torch.Generator | None


_AFFINE_STEP_DEFAULTS = AffineStepOptions(
    conditioner=None, stable=False, scale_floor=1e-3, sigmoid_bias=2.0, seed=None
)  # the defaults of the affine classes' own arguments


def _affine_step(
    cls: type[MaskedAutoregressive] | type[_ConditionalAffine],
    builder: str,
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None,
    options: AffineStepOptions,
):
    """An affine step of class ``cls`` (plain or conditional) on a fresh near-identity MADE,
    for the public ``builder`` that was given ``options``."""
    check_options(options, AffineStepOptions, builder)
    options = {**_AFFINE_STEP_DEFAULTS, **options}
    affine = dict(stable=options["stable"], scale_floor=options["scale_floor"], sigmoid_bias=options["sigmoid_bias"])
    bijection = _affine_bijection(**affine)  # checked before the MADE is built
    made = _near_identity_made(input_dim, bijection, options["conditioner"], hidden_dims, context_dim, options["seed"])
    return cls(made, **affine)


def affine_iaf(
    input_dim: int, hidden_dims: Sequence[int] | None = None, **options: Unpack[AffineStepOptions]
) -> AffineIAF:
    """Builds an [`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF] on a fresh near-identity MADE.

    Args:
        input_dim: The event size ``D``.
        hidden_dims: MADE hidden widths (or give them in ``conditioner``); default
            [`default_hidden_dims`][flowkit.nn.made.default_hidden_dims].
        **options: ``conditioner``, ``stable``, ``scale_floor``, ``sigmoid_bias``, ``seed``:
            the [`AffineStepOptions`][flowkit.transforms.autoregressive.AffineStepOptions].
    """
    return _affine_step(AffineIAF, "affine_iaf", input_dim, 0, hidden_dims, options)


def affine_maf(
    input_dim: int, hidden_dims: Sequence[int] | None = None, **options: Unpack[AffineStepOptions]
) -> AffineMAF:
    """Builds an [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF] on a fresh near-identity MADE;
    arguments as in [`affine_iaf`][flowkit.transforms.autoregressive.affine_iaf]."""
    return _affine_step(AffineMAF, "affine_maf", input_dim, 0, hidden_dims, options)


def conditional_affine_iaf(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **options: Unpack[AffineStepOptions]
) -> ConditionalAffineIAF:
    """Builds a [`ConditionalAffineIAF`][flowkit.transforms.autoregressive.ConditionalAffineIAF]; arguments as in
    [`affine_iaf`][flowkit.transforms.autoregressive.affine_iaf], plus ``context_dim``, the size of the context."""
    return _affine_step(ConditionalAffineIAF, "conditional_affine_iaf", input_dim, context_dim, hidden_dims, options)


def conditional_affine_maf(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **options: Unpack[AffineStepOptions]
) -> ConditionalAffineMAF:
    """Builds a [`ConditionalAffineMAF`][flowkit.transforms.autoregressive.ConditionalAffineMAF]; arguments as in
    [`affine_iaf`][flowkit.transforms.autoregressive.affine_iaf], plus ``context_dim``, the size of the context."""
    return _affine_step(ConditionalAffineMAF, "conditional_affine_maf", input_dim, context_dim, hidden_dims, options)


def _check_sequential(sequential: str) -> None:
    if sequential not in SEQUENTIAL_METHODS:
        raise ValueError(f"sequential: expected one of {SEQUENTIAL_METHODS}, got {sequential!r}")


def _check_made_and_bijection(made: object, bijection: object) -> None:
    if not isinstance(made, MADE):
        raise TypeError(f"made: expected a flowkit.MADE, got {type(made).__name__}")
    if not isinstance(bijection, ElementwiseBijection):
        raise TypeError(
            f"bijection: expected a flowkit.transforms.ElementwiseBijection, got {type(bijection).__name__}"
        )
    if sum(made.param_dims) != bijection.num_params:
        raise ValueError(
            f"made: {bijection!r} takes {bijection.num_params} parameters per input, but the MADE gives "
            f"sum(param_dims) = {sum(made.param_dims)} (param_dims={made.param_dims})"
        )
    bound = getattr(bijection, "bound", None)
    if isinstance(bound, Tensor) and len(bound) != made.input_dim:
        raise ValueError(
            f"bijection: a per-input bound needs one value per input, input_dim={made.input_dim}, got {len(bound)}"
        )
