r"""One-dimensional monotone bijections with raw parameters, applied elementwise.

An autoregressive step transforms each input by a monotone map whose parameters come from
a conditioner (a [`MADE`][flowkit.nn.MADE]), \(y_i = f(x_i; \theta_i)\). This module
holds the maps \(f\) and nothing else, so that one autoregressive core can take any of
them:

* [`Affine`][flowkit.transforms.elementwise.Affine]: \(y = \mu + \sigma x\), the map of
  today's MAF and IAF;
* [`GatedAffine`][flowkit.transforms.elementwise.GatedAffine]: the gated update of
  Kingma et al. (2016), today's ``stable=True``;
* [`RationalQuadraticSpline`][flowkit.transforms.elementwise.RationalQuadraticSpline]:
  the monotone rational-quadratic spline of Durkan et al. (2019), identity outside
  \([-B, B]\).

**Parameter layout.** ``params`` has shape ``(..., num_params, D)``: the parameter axis
comes before the data axis, as in [`MADE.raw_output`][flowkit.nn.made.MADE.raw_output]
of a MADE with ``param_dims=[num_params]`` (or any ``param_dims`` summing to it) and in
the ``params`` that [`MADE.sequential`][flowkit.nn.made.MADE.sequential] returns, so
neither needs a copy or a transpose. A sequential step's ``(..., num_params)`` parameters
for input ``i`` are ``params.unsqueeze(-1)``, with ``x[..., i:i + 1]`` and ``column=i``.
``x`` and ``y`` have shape ``(..., D)`` (broadcasting with ``params`` without its
parameter axis), and both directions return elementwise log-derivatives of the output's
shape: \(\log |dy/dx|\) from ``forward``, \(\log |dx/dy|\) from ``inverse``.

Raw parameters that are all zero give the identity: exactly for the spline, and for
``Affine`` up to the rounding of its softplus shift (a scale of \(1 - 2^{-24}\) in
float32 with the default floor), kept so that its numbers equal today's MAF and IAF bit
for bit. ``GatedAffine`` is the exception: zero parameters give \(y = \mathrm{sigmoid}(b) x\),
as today's ``stable`` transforms do.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit._validation import check_float_tensor, check_int

__all__ = ["Affine", "ElementwiseBijection", "GatedAffine", "RationalQuadraticSpline"]


def softplus_scale(unconstrained: Tensor, floor: float, offset: float = 0.0) -> Tensor:
    r"""The positive scale \(\sigma = \mathrm{softplus}(u + c) + \sigma_{\min}\) of an
    unconstrained \(u\), never below the floor \(\sigma_{\min}\): the scale map of
    [`Affine`][flowkit.transforms.elementwise.Affine] (whose offset \(c\) makes
    \(u = 0\) give 1) and of the Gaussian MADE density models (\(c = 0\)).

    Examples:
        >>> softplus_scale(torch.tensor([-50.0, 0.0]), floor=1e-3)
        tensor([0.0010, 0.6941])
    """
    return F.softplus(unconstrained + offset if offset else unconstrained) + floor


def affine_map(
    value: Tensor, shift: Tensor, scale: Tensor, log_scale: Tensor, inverse: bool
) -> tuple[Tensor, Tensor]:
    r"""The elementwise affine map \(y = \mu + \sigma x\) (or, with ``inverse``, its inverse
    \(x = (y - \mu) / \sigma\)) of ``value``, with its log-derivative
    (\(\log \sigma\), or \(-\log \sigma\)) of the output's shape: the map of
    [`Affine`][flowkit.transforms.elementwise.Affine],
    [`GatedAffine`][flowkit.transforms.elementwise.GatedAffine] and the normalisation layers."""
    out = (value - shift) / scale if inverse else shift + scale * value
    log_derivative = -log_scale if inverse else log_scale
    # An expand that changes nothing would still cost a node in the backward pass.
    return out, log_derivative if log_derivative.shape == out.shape else log_derivative.expand(out.shape)


class ElementwiseBijection(ABC):
    r"""A monotone increasing map \(y = f(x; \theta)\) of one variable, applied to every
    input with that input's raw (unconstrained) parameters \(\theta \in \mathbb{R}^P\).

    Subclasses set [`num_params`][flowkit.transforms.elementwise.ElementwiseBijection.num_params]
    and implement ``_forward`` and ``_inverse``; the public methods check the arguments
    once. The bijection holds options only, no learnable state: it is not an
    ``nn.Module``, and a module that owns one needs no ``.to()`` for it.
    """

    @property
    @abstractmethod
    def num_params(self) -> int:
        """The number of raw parameters per input, ``P``."""

    def forward(self, params: Tensor, x: Tensor, *, column: int | None = None) -> tuple[Tensor, Tensor]:
        r"""``(y, log|dy/dx|)``, both of shape ``(..., D)``.

        Args:
            params: Raw parameters of shape ``(..., num_params, D)``.
            x: Inputs of shape ``(..., D)``.
            column: When ``x`` is one column (``D = 1``) of a wider input, its index: a
                bijection with per-input options (a spline's per-dimension ``bound``)
                uses it; the others ignore it.
        """
        self._check(params, x, "x", column)
        return self._forward(params, x, column)

    def inverse(self, params: Tensor, y: Tensor, *, column: int | None = None) -> tuple[Tensor, Tensor]:
        r"""``(x, log|dx/dy|)``, both of shape ``(..., D)``; arguments as in
        [`forward`][flowkit.transforms.elementwise.ElementwiseBijection.forward]."""
        self._check(params, y, "y", column)
        return self._inverse(params, y, column)

    @abstractmethod
    def _forward(self, params: Tensor, x: Tensor, column: int | None) -> tuple[Tensor, Tensor]: ...

    def _column(self, params: Tensor, value: Tensor, column: int, inverse: bool) -> tuple[Tensor, Tensor]:
        """One column of a sequential pass, unchecked: ``(out, log-derivative)`` of
        ``forward`` (or ``inverse``) for ``params`` of shape ``(*batch, num_params)``
        against ``value`` of shape ``batch``, both results of the broadcast batch shape.

        The autoregressive core builds these arguments itself and calls this ``D`` times
        per pass, so it skips the checks of the public methods; a subclass may override
        it with a cheaper path for one column that gives the same numbers.
        """
        apply = self._inverse if inverse else self._forward
        out, log_det = apply(params.unsqueeze(-1), value.unsqueeze(-1), column)
        return out.squeeze(-1), log_det.squeeze(-1)

    @abstractmethod
    def _inverse(self, params: Tensor, y: Tensor, column: int | None) -> tuple[Tensor, Tensor]: ...

    def _check(self, params: Tensor, value: Tensor, name: str, column: int | None) -> None:
        """Checks types and shapes at the public entry points."""
        self._check_params(params, column)
        check_float_tensor(value, name)
        if value.dim() == 0:
            raise ValueError(f"{name}: expected shape (..., D), got a 0-d tensor")
        per_input = params.shape[:-2] + params.shape[-1:]
        try:
            torch.broadcast_shapes(per_input, value.shape)
        except RuntimeError:
            raise ValueError(
                f"params: shape {tuple(params.shape)} (without its parameter axis, {tuple(per_input)}) "
                f"does not broadcast with {name}'s shape {tuple(value.shape)}"
            ) from None
        self._check_inputs(value, name, column)

    def _check_params(self, params: Tensor, column: int | None) -> None:
        check_float_tensor(params, "params")
        if params.dim() < 2 or params.shape[-2] != self.num_params:
            raise ValueError(
                f"params: expected shape (..., {self.num_params}, D) for {self!r} (num_params={self.num_params}), "
                f"got {tuple(params.shape)}"
            )
        check_int(column, "column", minimum=0, or_none=True)
        self._check_inputs(params, "params", column)

    def _check_inputs(self, tensor: Tensor, name: str, column: int | None) -> None:
        """Checks the number of inputs, ``tensor.shape[-1]``: one when ``column`` is given."""
        if column is not None and tensor.shape[-1] != 1:
            raise ValueError(
                f"{name}: column={column} needs one input in the last dimension, got shape {tuple(tensor.shape)}"
            )

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self._options().items())
        return f"{type(self).__name__}({options})"

    def _options(self) -> dict[str, object]:
        return {}


class Affine(ElementwiseBijection):
    r"""\(y = \mu + \sigma x\) with \(\sigma = \mathrm{softplus}(u + c) + \sigma_{\min}\)
    and \(c = \log(e^{1 - \sigma_{\min}} - 1)\), so that \(u = 0\) gives \(\sigma = 1\);
    \(\log |dy/dx| = \log \sigma\).

    Raw parameters ``(mu, u) = params[..., 0, :], params[..., 1, :]``: a MADE's
    ``param_dims=[1, 1]`` read as (shift, unconstrained scale). The numbers equal today's
    [`AffineMAF`][flowkit.transforms.autoregressive.AffineMAF] and
    [`AffineIAF`][flowkit.transforms.autoregressive.AffineIAF]
    (``stable=False``) bit for bit, in the dtype of the arguments.

    With ``inverse_scale=True`` the softplus gives \(1 / \sigma\) instead,
    \(x = (y - \mu)\,(\mathrm{softplus}(u + c) + \sigma_{\min})\), as nflows' and
    zuko's masked affine steps parameterise their data-to-noise direction. The two differ
    in which side of the softplus is exponential. A MAF scores data by \(x = (y - \mu) /
    \sigma\): with the default, \(1 / \sigma\) reaches its cap \(1 / \sigma_{\min}\)
    exponentially fast as \(u \to -\infty\) (\(u \approx -7\) multiplies a deviation by
    about 1000), so a conditioner that learns a near-deterministic relation between columns
    amplifies every test row that breaks it a thousandfold per step. With
    ``inverse_scale=True`` that factor grows only linearly in \(u\), while the shrinking
    side, whose cost in log-density is bounded, is the fast one.

    Args:
        scale_floor: \(\sigma_{\min}\), the smallest scale (of \(1 / \sigma\) with
            ``inverse_scale``), in (0, 1).
        inverse_scale: Whether the softplus gives \(1 / \sigma\) rather than \(\sigma\);
            [`maf`][flowkit.distributions.flows.maf]'s default ``"affine"`` steps use it.

    Examples:
        >>> params = torch.tensor([[1.0], [0.0]])  # mu = 1, u = 0: scale 1 (up to rounding)
        >>> y, log_det = Affine().forward(params, torch.tensor([2.0]))
        >>> torch.allclose(y, torch.tensor([3.0])), torch.allclose(Affine().inverse(params, y)[0], torch.tensor([2.0]))
        (True, True)
    """

    def __init__(self, scale_floor: float = 1e-3, *, inverse_scale: bool = False):
        if isinstance(scale_floor, bool) or not isinstance(scale_floor, (int, float)) or not 0 < scale_floor < 1:
            raise ValueError(f"scale_floor: expected a float in (0, 1), got {scale_floor!r}")
        if not isinstance(inverse_scale, bool):
            raise TypeError(f"inverse_scale: expected a bool, got {type(inverse_scale).__name__}")
        self.scale_floor = float(scale_floor)
        self.inverse_scale = inverse_scale
        self._softplus_shift = math.log(math.expm1(1.0 - self.scale_floor))  # u = 0 gives scale 1

    @property
    def num_params(self) -> int:
        return 2

    def _shift_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, softplus(u + c) + floor)``: the scale, or its inverse with ``inverse_scale``."""
        loc, unconstrained = params.unbind(-2)
        return loc, softplus_scale(unconstrained, self.scale_floor, self._softplus_shift)

    def _forward(self, params: Tensor, x: Tensor, column: int | None) -> tuple[Tensor, Tensor]:
        shift, scale = self._shift_scale(params)
        if self.inverse_scale:  # sigma = 1 / scale, applied as a division (one rounding)
            y = shift + x / scale
            return y, (-scale.log()).expand(y.shape)
        return affine_map(x, shift, scale, scale.log(), inverse=False)

    def _inverse(self, params: Tensor, y: Tensor, column: int | None) -> tuple[Tensor, Tensor]:
        shift, scale = self._shift_scale(params)
        if self.inverse_scale:  # x = (y - mu) * scale, without dividing by its reciprocal
            x = (y - shift) * scale
            return x, scale.log().expand(x.shape)
        return affine_map(y, shift, scale, scale.log(), inverse=True)

    def _options(self) -> dict[str, object]:
        options: dict[str, object] = {"scale_floor": self.scale_floor}
        if self.inverse_scale:
            options["inverse_scale"] = True
        return options


class GatedAffine(ElementwiseBijection):
    r"""The gated update of Kingma et al. (2016), \(y = \sigma x + (1 - \sigma) \mu\) with
    \(\sigma = \mathrm{sigmoid}(u + b)\); \(\log |dy/dx| = \log \sigma\).

    Raw parameters ``(mu, u)`` as in [`Affine`][flowkit.transforms.elementwise.Affine].
    The numbers equal today's ``stable=True`` MAF and IAF bit for bit. Zero parameters
    give \(y = \mathrm{sigmoid}(b) x\), not the identity: the gate keeps most of ``x``
    at first and never all of it.

    Args:
        sigmoid_bias: The gate's bias \(b\); the default 2 keeps 88% of ``x`` at first.

    Examples:
        >>> params = torch.tensor([[0.5], [0.0]])
        >>> y, log_det = GatedAffine(sigmoid_bias=0.0).forward(params, torch.tensor([1.5]))
        >>> y, log_det.exp()  # half of x plus half of mu
        (tensor([1.]), tensor([0.5000]))
    """

    def __init__(self, sigmoid_bias: float = 2.0):
        if isinstance(sigmoid_bias, bool) or not isinstance(sigmoid_bias, (int, float)) or not math.isfinite(
            sigmoid_bias
        ):
            raise ValueError(f"sigmoid_bias: expected a finite float, got {sigmoid_bias!r}")
        self.sigmoid_bias = float(sigmoid_bias)

    @property
    def num_params(self) -> int:
        return 2

    def _shift_scale(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        loc, unconstrained = params.unbind(-2)
        gate = unconstrained + self.sigmoid_bias
        scale = torch.sigmoid(gate)
        return (1.0 - scale) * loc, scale, F.logsigmoid(gate)

    def _forward(self, params: Tensor, x: Tensor, column: int | None) -> tuple[Tensor, Tensor]:
        return affine_map(x, *self._shift_scale(params), inverse=False)

    def _inverse(self, params: Tensor, y: Tensor, column: int | None) -> tuple[Tensor, Tensor]:
        return affine_map(y, *self._shift_scale(params), inverse=True)

    def _options(self) -> dict[str, object]:
        return {"sigmoid_bias": self.sigmoid_bias}


class RationalQuadraticSpline(ElementwiseBijection):
    r"""A monotone rational-quadratic spline with \(K\) bins on \([-B, B]\) and the
    identity outside (Durkan et al. 2019, Neural Spline Flows).

    Knots \((x_k, y_k)\), \(k = 0, \dots, K\), run from \((-B, -B)\) to \((B, B)\); bin
    \(k\) has width \(w_k\), height \(h_k\), slope \(s_k = h_k / w_k\) and derivatives
    \(\delta_k, \delta_{k+1}\) at its ends. With \(\xi = (x - x_k) / w_k \in [0, 1]\),

    \[
    y = y_k + h_k \frac{s_k \xi^2 + \delta_k \xi (1 - \xi)}{s_k + (\delta_{k+1} + \delta_k - 2 s_k) \xi (1 - \xi)},
    \qquad
    \frac{dy}{dx} = \frac{s_k^2 \left(\delta_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + \delta_k (1 - \xi)^2\right)}
    {\left(s_k + (\delta_{k+1} + \delta_k - 2 s_k) \xi (1 - \xi)\right)^2}.
    \]

    The inverse solves \(a \xi^2 + b \xi + c = 0\) for \(\xi\) by the root
    \(\xi = 2c / (-b - \sqrt{b^2 - 4ac})\) where \(b > 0\) and by
    \(\xi = (-b + \sqrt{b^2 - 4ac}) / 2a\) elsewhere: each free of cancellation where
    it is used (the first alone loses every digit near the top of a bin whose upper
    derivative exceeds twice its slope, where \(b < 0\)).

    Raw parameters ``params[..., :K, :]``, ``params[..., K:2K, :]`` and
    ``params[..., 2K:, :]`` (``num_params = 3K - 1``, Pyro's ``[K, K, K - 1]`` order):

    * widths \(w = 2B\,(m_w + (1 - K m_w)\,\mathrm{softmax}(\theta^w))\), heights likewise,
      knots cumulated and pinned to exactly \(\pm B\);
    * interior derivatives \(\delta = 1 + (1 - m_\delta)\,\mathrm{elu}(\theta^\delta) > m_\delta\),
      exactly 1 at \(\theta^\delta = 0\) (a shifted softplus misses 1 by the rounding of its
      shift); the boundary derivatives \(\delta_0 = \delta_K = 1\), so the map is
      \(C^1\) where it meets the identity tails.

    Zero parameters give equal widths and heights and unit derivatives: exactly the
    identity, values and log-derivatives both, since the formulas are evaluated as
    corrections to it. Points outside \([-B, B]\) go through the spline clamped to the
    bound and are then replaced by the identity (``torch.where``), so neither values nor
    gradients of far-away points (``1e30``) can be NaN or infinite.

    The arithmetic runs in at least float32: bfloat16 and float16 arguments (autocast)
    are upcast, and the results have the promoted dtype of ``params`` and the input, but
    never less than float32.

    Args:
        bins: The number of bins \(K\), a positive int.
        bound: \(B > 0\): a float, or one value per input (a sequence or 1-D tensor of
            length ``D``).
        min_bin_width: \(m_w\), the smallest width as a fraction of \(2B\), in (0, 1/K).
        min_bin_height: \(m_h\), the same for heights, in (0, 1/K).
        min_derivative: \(m_\delta\), the infimum of the interior derivatives, in (0, 1).

    Examples:
        >>> spline = RationalQuadraticSpline(bins=4, bound=3.0)
        >>> params = torch.zeros(spline.num_params, 2)
        >>> spline.forward(params, torch.tensor([0.5, 7.0]))  # zeros: the identity
        (tensor([0.5000, 7.0000]), tensor([0., 0.]))
        >>> params = torch.randn(spline.num_params, 2)
        >>> y, log_det = spline.forward(params, torch.tensor([0.5, 7.0]))
        >>> torch.allclose(spline.inverse(params, y)[0], torch.tensor([0.5, 7.0]), atol=1e-5)
        True
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float | Sequence[float] | Tensor = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ):
        check_int(bins, "bins")
        self.bins = bins
        self.bound = _check_bound(bound)
        for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1 / bins:
                raise ValueError(f"{name}: expected a float in (0, 1/bins) = (0, {1 / bins:g}), got {value!r}")
        if isinstance(min_derivative, bool) or not isinstance(min_derivative, (int, float)) or not (
            0 < min_derivative < 1
        ):
            raise ValueError(f"min_derivative: expected a float in (0, 1), got {min_derivative!r}")
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)
        self._bound_cache: Tensor | None = None
        self._constants_cache: dict[tuple[torch.dtype, torch.device], tuple[Tensor, ...]] = {}

    @property
    def num_params(self) -> int:
        return 3 * self.bins - 1

    def knots(self, params: Tensor, *, column: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_knots, y_knots, derivatives)`` for raw ``params`` of shape
        ``(..., num_params, D)``, each of shape ``(..., K + 1, D)``, in the dtype the
        spline computes in (at least float32). ``column`` as in
        [`forward`][flowkit.transforms.elementwise.ElementwiseBijection.forward].

        Examples:
            >>> spline = RationalQuadraticSpline(bins=2, bound=1.0)
            >>> spline.knots(torch.zeros(spline.num_params, 1))[0].squeeze(-1)
            tensor([-1.,  0.,  1.])
        """
        self._check_params(params, column)
        params = params.to(_compute_dtype(params, params))
        return self._knots(params, self._bound_like(params, column))

    def _knots(self, params: Tensor, bound: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        K = self.bins
        x_knots = _pinned_knots(params[..., :K, :], self.min_bin_width, bound)
        y_knots = _pinned_knots(params[..., K : 2 * K, :], self.min_bin_height, bound)
        interior = 1.0 + (1.0 - self.min_derivative) * F.elu(params[..., 2 * K :, :])
        ends = torch.ones_like(interior[..., :1, :])  # C1 where the spline meets the identity tails
        return x_knots, y_knots, torch.cat([ends, interior, ends], dim=-2)

    def _forward(self, params: Tensor, x: Tensor, column: int | None) -> tuple[Tensor, Tensor]:
        return self._apply(params, x, column, inverse=False)

    def _inverse(self, params: Tensor, y: Tensor, column: int | None) -> tuple[Tensor, Tensor]:
        return self._apply(params, y, column, inverse=True)

    def _apply(self, params: Tensor, value: Tensor, column: int | None, inverse: bool) -> tuple[Tensor, Tensor]:
        """Both directions: find each point's bin, evaluate that bin's rational
        quadratic (or its inverse) on the point clamped into [-B, B], and keep the
        identity for points outside."""
        dtype = _compute_dtype(params, value)
        params = params.to(dtype)
        value = value.to(dtype).expand(torch.broadcast_shapes(params.shape[:-2] + params.shape[-1:], value.shape))
        bound = self._bound_like(value, column)
        x_knots, y_knots, derivatives = self._knots(params, bound)
        inside = (value >= -bound) & (value <= bound)
        clamped = torch.clamp(value, -bound, bound)  # the unused branch sees finite values only

        # The bin of each point: the number of interior knots at or below it (0 to K - 1),
        # so a point exactly at a knot starts the next bin, and B is in the last one.
        knots_in = y_knots if inverse else x_knots
        bin_index = (clamped.unsqueeze(-2) >= knots_in[..., 1:-1, :]).sum(dim=-2, keepdim=True)

        def bin_value(table: Tensor, offset: int = 0) -> Tensor:
            table = table.expand(*value.shape[:-1], table.shape[-2], value.shape[-1])
            return table.gather(-2, bin_index + offset).squeeze(-2)

        x_low, x_high = bin_value(x_knots), bin_value(x_knots, 1)
        y_low, y_high = bin_value(y_knots), bin_value(y_knots, 1)
        bin_ = _Bin(x_low, x_high - x_low, y_low, y_high - y_low, bin_value(derivatives), bin_value(derivatives, 1))
        out, log_det = bin_.inverse(clamped) if inverse else bin_.forward(clamped)
        return torch.where(inside, out, value), torch.where(inside, log_det, torch.zeros_like(log_det))

    def _column(self, params: Tensor, value: Tensor, column: int, inverse: bool) -> tuple[Tensor, Tensor]:
        """The arithmetic of ``_apply`` for one column, in fewer and smaller operations
        (a sequential pass is bound by their count, not their size): widths and heights
        share one softmax and one cumsum, the outer knots are pinned by one pad and one
        add, and one gather per table reads both ends of each point's bin. The numbers
        equal ``_apply``'s on that column exactly (tested)."""
        dtype = _compute_dtype(params, value)
        params, value = params.to(dtype), value.to(dtype)
        bound = self._bound_like(value, column)
        if isinstance(bound, Tensor):  # (1,) for one input; value has no input axis, so a
            bound = bound[0]  # 0-d bound keeps an unbatched point's shape ()
        K = self.bins
        # (*batch, 2, K): the fractions of 2B of each bin's width (row 0) and height (row 1)
        floors, spans, ends_pattern = self._column_constants(params)
        fractions = floors + spans * _softmax(params[..., : 2 * K].unflatten(-1, (2, K)), dim=-1)
        interior = 2.0 * bound * torch.cumsum(fractions[..., :-1], dim=-1) - bound  # knots 1 to K - 1
        knots = F.pad(interior, (1, 1)) + bound * ends_pattern  # pinned to exactly -B and B
        slopes = 1.0 + (1.0 - self.min_derivative) * F.elu(params[..., 2 * K :])
        derivatives = F.pad(slopes, (1, 1), value=1.0)  # C1 where the spline meets the identity tails

        inside = value.abs() <= bound
        clamped = torch.clamp(value, -bound, bound)  # the unused branch sees finite values only
        # The bin of each point as in _apply; ends holds the indices of its two knots.
        bin_index = (clamped.unsqueeze(-1) >= interior[..., int(inverse), :]).sum(dim=-1, keepdim=True)
        ends = torch.cat([bin_index, bin_index + 1], dim=-1)  # (*batch, 2)
        batch = ends.shape[:-1]
        knot_ends = knots.expand(*batch, 2, K + 1).gather(-1, ends.unsqueeze(-2).expand(*batch, 2, 2))
        x_ends, y_ends = knot_ends.unbind(-2)
        d_ends = derivatives.expand(*batch, K + 1).gather(-1, ends)
        x_low, x_high = x_ends.unbind(-1)
        y_low, y_high = y_ends.unbind(-1)
        d_low, d_high = d_ends.unbind(-1)
        bin_ = _Bin(x_low, x_high - x_low, y_low, y_high - y_low, d_low, d_high)
        out, log_det = bin_.inverse(clamped) if inverse else bin_.forward(clamped)
        return torch.where(inside, out, value), torch.where(inside, log_det, 0.0)

    def _column_constants(self, reference: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(floors, spans, ends_pattern)`` in ``reference``'s dtype and device, converted
        once per dtype and device: ``m`` and ``1 - K m`` for widths and heights, shape
        ``(2, 1)``, and ``[-1, 0, ..., 0, 1]``, shape ``(K + 1,)``, which times the bound
        pins the outer knots."""
        key = (reference.dtype, reference.device)
        if key not in self._constants_cache:
            floors = torch.tensor([[self.min_bin_width], [self.min_bin_height]], dtype=torch.float64)
            ends_pattern = torch.zeros(self.bins + 1, dtype=torch.float64)
            ends_pattern[0], ends_pattern[-1] = -1.0, 1.0
            constants = (floors, 1.0 - self.bins * floors, ends_pattern)
            self._constants_cache[key] = tuple(c.to(reference.device, reference.dtype) for c in constants)
        return self._constants_cache[key]

    def _bound_like(self, reference: Tensor, column: int | None) -> Tensor | float:
        """The bound in ``reference``'s dtype and device (a float when it is shared). A
        per-input bound is converted once per device and dtype: a copy to a GPU would
        otherwise synchronise at every call of a sequential pass."""
        if isinstance(self.bound, float):
            return self.bound
        cached = self._bound_cache
        if cached is None or cached.device != reference.device or cached.dtype != reference.dtype:
            cached = self._bound_cache = self.bound.to(reference.device, reference.dtype)
        return cached if column is None else cached[column : column + 1]

    def _check_inputs(self, tensor: Tensor, name: str, column: int | None) -> None:
        super()._check_inputs(tensor, name, column)
        if isinstance(self.bound, float):
            return
        size = len(self.bound)
        if column is not None and column >= size:
            raise ValueError(f"column: expected an index below len(bound) = {size}, got {column}")
        if column is None and tensor.shape[-1] != size:
            raise ValueError(
                f"{name}: expected {size} inputs (the length of bound) in the last dimension, "
                f"got shape {tuple(tensor.shape)}"
            )

    def _options(self) -> dict[str, object]:
        bound = self.bound if isinstance(self.bound, float) else self.bound.tolist()
        return {
            "bins": self.bins,
            "bound": bound,
            "min_bin_width": self.min_bin_width,
            "min_bin_height": self.min_bin_height,
            "min_derivative": self.min_derivative,
        }


class _Bin:
    r"""The rational quadratic of one bin per point: its lower knot, width, height and
    end derivatives, each of the points' shape.

    The formulas are rearranged as corrections to the identity (terms that vanish when
    \(s = \delta_k = \delta_{k+1} = 1\) and \(x_k = y_k\)), so zero raw parameters give
    exactly \(y = x\) and a log-derivative of exactly 0, and into sums of positive terms
    (``torch.lerp`` between \(s\) and \(\delta\)), so a derivative far below the slope
    keeps its relative precision.
    """

    def __init__(self, x_low: Tensor, width: Tensor, y_low: Tensor, height: Tensor, d_low: Tensor, d_high: Tensor):
        self.x_low, self.width, self.y_low, self.height = x_low, width, y_low, height
        self.d_low, self.d_high = d_low, d_high
        self.slope = height / width
        self.curvature = d_low + d_high - 2.0 * self.slope  # the coefficient of xi (1 - xi)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        offset = x - self.x_low
        xi = offset / self.width  # in [0, 1]: the bin search puts x_low <= x <= x_high
        denominator = self.slope + self.curvature * xi * (1.0 - xi)
        # (y - y_k) / (x - x_k) = s (s xi + delta_k (1 - xi)) / denominator
        ratio = self.slope * torch.lerp(self.slope, self.d_low, 1.0 - xi) / denominator
        y = x + (self.y_low - self.x_low) + offset * (ratio - 1.0)
        return y, self.log_derivative(xi, denominator)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        offset = y - self.y_low
        s, h = self.slope, self.height
        # a xi^2 + b xi + c = 0 for the point's xi, with a + b = h s.
        b = h * self.d_low - offset * self.curvature
        a = h * s - b
        c = -s * offset
        root = torch.sqrt((b * b - 4.0 * a * c).clamp(min=0.0))
        # The root in [0, 1] without cancellation: 2c / (-b - root) when b > 0, and
        # (root - b) / 2a otherwise (where a = h s - b >= h s > 0). Each branch's
        # denominator is replaced by 1 where it is not used, so that neither can give a
        # NaN gradient (b + root rounds to 0 where b < 0 and 4ac is below b^2's rounding).
        positive_b = b > 0
        q = torch.where(positive_b, b + root, 1.0)
        two_a = torch.where(positive_b, 1.0, 2.0 * a)
        # chord = x - x_k = w xi; written 2 h (y - y_k) / q (as w s = h) so that zero
        # parameters give chord = y - y_k exactly.
        chord = torch.where(positive_b, offset * (2.0 * h / q), self.width * (root - b) / two_a)
        xi = torch.where(positive_b, -2.0 * c / q, (root - b) / two_a)
        xi = xi.clamp(0.0, 1.0)  # rounding can leave [0, 1] where the map is ill-conditioned
        x = y + (self.x_low - self.y_low) + (chord - offset)
        denominator = s + self.curvature * xi * (1.0 - xi)
        return x, -self.log_derivative(xi, denominator)

    def log_derivative(self, xi: Tensor, denominator: Tensor) -> Tensor:
        r"""\(\log dy/dx\), with its numerator's bracket
        \(\delta_{k+1} \xi^2 + 2 s \xi (1 - \xi) + \delta_k (1 - \xi)^2\) written as
        \(\xi\,\mathrm{lerp}(s, \delta_{k+1}, \xi) + (1 - \xi)\,\mathrm{lerp}(s, \delta_k, 1 - \xi)\)."""
        s, rest = self.slope, 1.0 - xi
        bracket = xi * torch.lerp(s, self.d_high, xi) + rest * torch.lerp(s, self.d_low, rest)
        return 2.0 * s.log() + bracket.log() - 2.0 * denominator.log()


def _pinned_knots(logits: Tensor, min_size: float, bound: Tensor | float) -> Tensor:
    """``K + 1`` increasing knots from ``-bound`` to ``bound`` (exactly), for bins whose
    fractions of ``2 bound`` are ``min_size + (1 - K min_size) softmax(logits)``."""
    K = logits.shape[-2]
    fractions = min_size + (1.0 - K * min_size) * _softmax(logits, dim=-2)
    inner = 2.0 * bound * torch.cumsum(fractions[..., :-1, :], dim=-2) - bound
    zeros = torch.zeros_like(inner[..., :1, :])
    return torch.cat([zeros - bound, inner, zeros + bound], dim=-2)


def _softmax(logits: Tensor, dim: int) -> Tensor:
    """``torch.softmax`` in elementary operations: on CPU, torch's kernel takes about
    three times as long over a few bins as these five (and the spline's sequential pass
    runs one per column). Shifted by the maximum, so large logits cannot overflow."""
    weights = torch.exp(logits - logits.amax(dim=dim, keepdim=True))
    return weights / weights.sum(dim=dim, keepdim=True)


def _compute_dtype(params: Tensor, value: Tensor) -> torch.dtype:
    """The promoted dtype of the arguments, at least float32."""
    return torch.promote_types(torch.promote_types(params.dtype, value.dtype), torch.float32)


def _check_bound(bound: float | Sequence[float] | Tensor) -> float | Tensor:
    """A positive finite float, or a 1-D float64 CPU tensor of them."""
    if isinstance(bound, bool):
        raise ValueError(f"bound: expected a positive float or a sequence of them, got {bound!r}")
    if isinstance(bound, (int, float)):
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"bound: expected a positive finite float, got {bound!r}")
        return float(bound)
    if isinstance(bound, Tensor) or (isinstance(bound, Sequence) and not isinstance(bound, (str, bytes))):
        try:
            values = torch.as_tensor(bound, dtype=torch.float64, device="cpu").detach().clone()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"bound: expected a sequence of positive floats, got {bound!r}") from None
        if values.dim() != 1 or len(values) == 0 or not (torch.isfinite(values).all() and (values > 0).all()):
            raise ValueError(f"bound: expected a non-empty 1-D sequence of positive finite floats, got {bound!r}")
        return values
    raise ValueError(f"bound: expected a positive float or a sequence of them, got {type(bound).__name__}")
