"""Contract tests for the elementwise bijections of flowkit.transforms.elementwise: identity at
zero, round trips, derivatives and monotonicity, gradients and shapes.

Every contract runs on every bijection (affine, gated affine, a spline with one bound and
a spline with a bound per input), so a new bijection is tested by adding it to
``BIJECTIONS`` (elementwise_helpers.py). Parameters have shape ``(..., num_params, D)``; the
probe points of a spline include its bound, every knot and the floats on either side of each knot.
"""

import math

import pytest
import torch

from elementwise_helpers import BIJECTIONS, D, DTYPES, apply, bound_of, generator, over
from flowkit.transforms.elementwise import GatedAffine, RationalQuadraticSpline

SPLINES = {name: b for name, b in BIJECTIONS.items() if isinstance(b, RationalQuadraticSpline)}


# GatedAffine at zero parameters is y = sigmoid(2) x, as today's stable transforms.
IDENTITY_AT_ZERO = {name: b for name, b in BIJECTIONS.items() if not isinstance(b, GatedAffine)}


PARAM_KINDS = ["zero", "random", "extreme", "minimum"]


def make_params(bijection, kind, dtype, sets=4, dims=D, seed=0):
    """``(sets, 1, P, dims)`` raw parameters: zeros, N(0, 1), N(0, 10^2), or "minimum":
    for a spline one bin takes (almost) all the width and another all the height, so the
    others are at their minimum size, with derivatives near their minimum or large; for
    the affine maps, scales at their smallest or large."""
    shape = (sets, 1, bijection.num_params, dims)
    if kind == "zero":
        return torch.zeros(shape, dtype=dtype)
    noise = torch.randn(shape, generator=generator(seed), dtype=dtype)
    if kind in ("random", "extreme"):
        return noise * (10.0 if kind == "extreme" else 1.0)
    assert kind == "minimum"
    params = noise.clone()
    if isinstance(bijection, RationalQuadraticSpline):
        K = bijection.bins
        params[..., :K, :] = 0.0
        params[..., :K, :][..., 0, :] = 60.0  # the first bin takes the width ...
        params[..., K : 2 * K, :] = 0.0
        params[..., K : 2 * K, :][..., K - 1, :] = 60.0  # ... the last one the height
        params[..., 2 * K :, :] = 30.0 * torch.sign(noise[..., 2 * K :, :])
    else:
        params[..., 1, :] = 30.0 * torch.sign(noise[..., 1, :])
    return params


def probe_points(bijection, params, side="x"):
    """``(sets, N, D)`` points for ``params`` of shape ``(sets, 1, P, D)``: uniform inside
    the bound, exactly at -B and B, at +-1e3, and for a spline every knot on ``side``
    ("x" or "y") with the next float below and above it."""
    sets, dtype = params.shape[0], params.dtype
    bound = bound_of(bijection, dtype)
    inside = (2 * torch.rand(sets, 32, D, generator=generator(1), dtype=dtype) - 1) * bound
    fixed = torch.stack([bound, -bound, torch.full_like(bound, 1e3), torch.full_like(bound, -1e3)])
    points = [inside, fixed.expand(sets, -1, -1)]
    if isinstance(bijection, RationalQuadraticSpline):
        x_knots, y_knots, _ = bijection.knots(params)
        knots = (x_knots if side == "x" else y_knots).squeeze(1).to(dtype)
        points += [knots, torch.nextafter(knots, torch.tensor(math.inf, dtype=dtype))]
        points += [torch.nextafter(knots, torch.tensor(-math.inf, dtype=dtype))]
    return torch.cat(points, dim=1)


def derivative(function, points):
    """d function(points) / d points, elementwise, by autograd (the map is elementwise)."""
    points = points.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(function(points).sum(), points)
    return grad


def other(direction):
    return "inverse" if direction == "forward" else "forward"


# ------------------------------------------------------------------- identity at zero
@over(IDENTITY_AT_ZERO)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_zero_params_give_the_identity(bijection, dtype, direction):
    params = make_params(bijection, "zero", dtype)
    points = probe_points(bijection, params)
    out, log_det = apply(bijection, direction, params, points)
    if isinstance(bijection, RationalQuadraticSpline):
        assert torch.equal(out, points.to(out.dtype))  # exactly, inside, at +-B and in the tails
        assert torch.equal(log_det, torch.zeros_like(log_det))
    else:  # Affine's scale at u = 0 is 1 up to the rounding of its softplus shift
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(out, points, rtol=eps, atol=0)
        torch.testing.assert_close(log_det, torch.zeros_like(log_det), rtol=0, atol=eps)
    bound = bound_of(bijection, dtype)
    edges = torch.stack([bound, -bound])
    for toward in (0.0, math.inf, -math.inf):  # at +-B and on either side of it
        near = torch.nextafter(edges, torch.tensor(toward, dtype=dtype)).expand(4, 2, D)
        slope = derivative(lambda v: apply(bijection, direction, params, v)[0], near)
        torch.testing.assert_close(slope, torch.ones_like(slope), rtol=0, atol=4 * torch.finfo(dtype).eps)


def test_gated_affine_at_zero_params_keeps_sigmoid_of_the_bias():
    x = torch.randn(5, D, dtype=torch.float64)
    y, log_det = GatedAffine(sigmoid_bias=2.0).forward(torch.zeros(2, D, dtype=torch.float64), x)
    torch.testing.assert_close(y, torch.sigmoid(torch.tensor(2.0, dtype=torch.float64)) * x, rtol=1e-15, atol=0)
    torch.testing.assert_close(log_det, torch.full_like(x, math.log(torch.sigmoid(torch.tensor(2.0)).item())))


# --------------------------------------------------------------------------- round trips
@over(BIJECTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", PARAM_KINDS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_round_trips(bijection, dtype, kind, direction):
    """``direction`` then its inverse gives the points back, at knots, at +-B and far out.
    The tolerance scales with the conditioning: the first map's output is rounded, and the
    second multiplies that error by its own derivative."""
    params = make_params(bijection, kind, dtype)
    points = probe_points(bijection, params, side="x" if direction == "forward" else "y")
    there, log_det = apply(bijection, direction, params, points)
    back, log_det_back = apply(bijection, other(direction), params, there)
    assert torch.isfinite(there).all() and torch.isfinite(back).all()
    assert torch.isfinite(log_det).all() and torch.isfinite(log_det_back).all()
    size = 1 + points.abs() + there.abs() + params.abs().amax(dim=-2)  # an affine map's shift adds error too
    condition = torch.exp(-log_det).clamp(min=1)  # d back / d there
    error = (back - points).abs() / (size * condition)
    assert error.max() <= 200 * torch.finfo(dtype).eps


@over(SPLINES)
def test_spline_knots_are_pinned_to_the_bound_and_respect_the_minimum_sizes(bijection):
    params = make_params(bijection, "minimum", torch.float64)
    bound = bound_of(bijection, torch.float64)
    for knots, minimum in zip(bijection.knots(params)[:2], (bijection.min_bin_width, bijection.min_bin_height)):
        assert torch.equal(knots[..., 0, :], (-bound).expand_as(knots[..., 0, :]))
        assert torch.equal(knots[..., -1, :], bound.expand_as(knots[..., -1, :]))
        sizes = knots.diff(dim=-2) / (2 * bound)
        assert sizes.min() >= minimum * (1 - 1e-9)
        torch.testing.assert_close(sizes.amin(dim=-2), torch.full_like(sizes.amin(dim=-2), minimum))
    derivatives = bijection.knots(params)[2]
    assert torch.equal(derivatives[..., [0, -1], :], torch.ones_like(derivatives[..., [0, -1], :]))
    assert derivatives.min() > bijection.min_derivative


# ----------------------------------------------------------------- derivatives, monotone
# With N(0, 10^2) raw parameters a spline's derivative can change by a factor 1e5 within a
# bin of width 0.006, so a log-derivative taken at an inverse's computed x (rounded with a
# condition number of 1e3) moves by up to 1e-5 there.
LOG_DERIVATIVE_TOLERANCE = {"random": 1e-12, "minimum": 1e-8, "extreme": 1e-4}


@over(BIJECTIONS)
@pytest.mark.parametrize("kind", list(LOG_DERIVATIVE_TOLERANCE))
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_log_derivatives_match_autograd(bijection, kind, direction):
    params = make_params(bijection, kind, torch.float64)
    points = probe_points(bijection, params, side="x" if direction == "forward" else "y")
    _, log_det = apply(bijection, direction, params, points)
    slope = derivative(lambda v: apply(bijection, direction, params, v)[0], points)
    tolerance = LOG_DERIVATIVE_TOLERANCE[kind]
    torch.testing.assert_close(slope.log(), log_det, atol=tolerance, rtol=0)


@over(BIJECTIONS)
def test_jacobian_is_diagonal(bijection):
    params = make_params(bijection, "random", torch.float64)[0, 0]
    for point in probe_points(bijection, params[None, None])[0, ::7]:
        jacobian = torch.autograd.functional.jacobian(lambda v: bijection.forward(params, v)[0], point)
        assert torch.equal(jacobian, torch.diag(torch.diagonal(jacobian)))


@over(SPLINES)
def test_spline_is_continuously_differentiable_at_the_bound(bijection):
    """The boundary derivatives are exactly 1, whatever the parameters: the slope at and
    just outside +-B is 1, and just inside it tends to 1."""
    bound = bound_of(bijection, torch.float64)
    for kind, offset, tolerance in [("extreme", 0.0, 1e-12), ("extreme", 1e-9, 0.0), ("random", -1e-13, 1e-9)]:
        params = make_params(bijection, kind, torch.float64)
        for edge in (bound, -bound):
            point = (edge * (1 + offset)).expand(4, 1, D)
            slope = derivative(lambda v: bijection.forward(params, v)[0], point)
            torch.testing.assert_close(slope, torch.ones_like(slope), rtol=0, atol=tolerance)


@over(BIJECTIONS)
@pytest.mark.parametrize(
    "dtype,kind", [(torch.float32, "random"), (torch.float64, "random"), (torch.float64, "extreme")]
)
def test_strictly_increasing_on_a_fine_grid(bijection, dtype, kind):
    params = make_params(bijection, kind, dtype)
    bound = bound_of(bijection, dtype)
    grid = torch.linspace(-1.5, 1.5, 4001, dtype=dtype)[:, None] * bound  # (4001, D), tails included
    for direction in ("forward", "inverse"):
        out, _ = apply(bijection, direction, params, grid)
        assert (out.diff(dim=-2) > 0).all(), direction


# --------------------------------------------------------------------- gradients, shapes
@over(BIJECTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_gradients_are_finite_far_outside_the_bound(bijection, dtype, direction):
    params = make_params(bijection, "extreme", dtype).requires_grad_(True)
    points = probe_points(bijection, params.detach())  # +-1e3 included
    if isinstance(bijection, RationalQuadraticSpline):  # and, in the identity tails, +-1e30
        far = torch.tensor([1e30, -1e30], dtype=dtype)[None, :, None].expand(len(points), -1, D)
        points = torch.cat([points, far], dim=1)
    points.requires_grad_(True)
    out, log_det = apply(bijection, direction, params, points)
    grads = torch.autograd.grad((out.sum() + log_det.sum()), (params, points))
    for tensor in (out, log_det, *grads):
        assert torch.isfinite(tensor).all()


@over(SPLINES)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_a_batch_entirely_in_the_tails_is_the_identity_with_zero_parameter_gradients(bijection, direction):
    params = make_params(bijection, "extreme", torch.float32).requires_grad_(True)
    bound = bound_of(bijection, torch.float32)
    points = torch.stack([bound * 1.001, -bound * 1.001, torch.full_like(bound, 1e30), torch.full_like(bound, -1e30)])
    points = points.expand(4, -1, -1).clone().requires_grad_(True)
    out, log_det = apply(bijection, direction, params, points)
    assert torch.equal(out, points) and torch.equal(log_det, torch.zeros_like(log_det))
    grad_params, grad_points = torch.autograd.grad(out.sum() + log_det.sum(), (params, points))
    assert torch.equal(grad_params, torch.zeros_like(grad_params))
    assert torch.equal(grad_points, torch.ones_like(grad_points))


def test_spline_inverse_gradients_are_finite_where_one_root_formula_cancels_to_zero():
    """Just above a knot, in a flat bin whose upper derivative is huge, b < 0 and
    b + sqrt(b^2 - 4ac) rounds to 0 in float32: the root that formula would give is not
    used there, and must not turn the gradient into NaN."""
    spline = RationalQuadraticSpline(bins=3, bound=1.0)
    params = torch.zeros(spline.num_params, 1)
    params[1] = 60.0  # bin 1 takes the width ...
    params[3] = 60.0  # ... and bin 0 the height, so bin 1 is flat (slope 1e-3)
    params[6], params[7] = -60.0, 1e5  # the derivatives at its ends: the minimum, and huge
    params.requires_grad_(True)
    y = [spline.knots(params.detach())[1][1]]
    for _ in range(6):
        y.append(torch.nextafter(y[-1], torch.tensor(math.inf)))
    y = torch.stack(y).requires_grad_(True)
    x, log_det = spline.inverse(params, y)
    grads = torch.autograd.grad(x.sum() + log_det.sum(), (params, y))
    for tensor in (x, log_det, *grads):
        assert torch.isfinite(tensor).all()


@over(BIJECTIONS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_empty_batches(bijection, direction):
    params = torch.zeros(0, bijection.num_params, D, requires_grad=True)
    points = torch.zeros(0, D, requires_grad=True)
    out, log_det = apply(bijection, direction, params, points)
    assert out.shape == log_det.shape == (0, D)
    (out.sum() + log_det.sum()).backward()
    assert params.grad.shape == params.shape


@over(BIJECTIONS)
def test_batch_shapes_broadcast(bijection):
    params = torch.randn(4, 1, bijection.num_params, D, generator=generator())
    x = torch.randn(5, D, generator=generator(1))
    y, log_det = bijection.forward(params, x)
    assert y.shape == log_det.shape == (4, 5, D)
    torch.testing.assert_close(y[2, 3], bijection.forward(params[2, 0], x[3])[0])


@over(BIJECTIONS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_one_column_with_its_index_equals_that_column_of_the_whole(bijection, direction):
    """How a sequential pass calls a bijection: one input's parameters ``(..., P, 1)``."""
    params = make_params(bijection, "random", torch.float64)
    points = probe_points(bijection, params)
    out, log_det = apply(bijection, direction, params, points)
    for i in range(D):
        column = apply(bijection, direction, params[..., i : i + 1], points[..., i : i + 1], column=i)
        # Equal to rounding, not bit for bit: vectorised log and exp kernels may round a
        # single column differently from a whole row on some CPUs.
        torch.testing.assert_close(column[0], out[..., i : i + 1], atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(column[1], log_det[..., i : i + 1], atol=1e-12, rtol=1e-12)


@over(BIJECTIONS)
@pytest.mark.parametrize("kind", ["zero", "random", "extreme", "minimum"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_the_unchecked_column_step_equals_the_public_column_call(bijection, kind, dtype, direction):
    """The core's sequential passes call ``_column`` (a spline's own cheaper path), with
    ``(*batch, P)`` parameters and a ``batch``-shaped column, at every knot and in the tails."""
    params = make_params(bijection, kind, dtype)
    points = probe_points(bijection, params, side="x" if direction == "forward" else "y")
    for i in range(D):
        expected = apply(bijection, direction, params[..., i : i + 1], points[..., i : i + 1], column=i)
        out, log_det = bijection._column(params[..., i], points[..., i], i, inverse=direction == "inverse")
        assert out.shape == log_det.shape == points.shape[:-1]
        torch.testing.assert_close(out, expected[0].squeeze(-1), rtol=0, atol=0)
        torch.testing.assert_close(log_det, expected[1].squeeze(-1), rtol=0, atol=0)
