"""Contract tests for the elementwise bijections: densities integrate to one, low precision,
today's affine maps written with the bijections, and errors."""

import math

import pytest
import torch
from torch import nn

from elementwise_helpers import BIJECTIONS, D, DTYPES, apply, bound_of, generator, over
from flowkit.transforms import AffineIAF, AffineMAF, affine_iaf, affine_maf
from flowkit.transforms.elementwise import Affine, GatedAffine, RationalQuadraticSpline
from helpers import perturb_

# ---------------------------------------------------------------------------- densities
def normal_log_density(x):
    return -0.5 * x.square() - 0.5 * math.log(2 * math.pi)


def grid_around(bound, inside, tail_step=0.04, reach=12.0):
    """A grid of [-reach, reach], denser inside [-bound, bound] where a spline varies."""
    tails = torch.linspace(bound, reach, math.ceil((reach - bound) / tail_step) + 1, dtype=torch.float64)[1:]
    return torch.cat([-tails.flip(0), torch.linspace(-bound, bound, inside, dtype=torch.float64), tails])


@over(BIJECTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_density_of_a_pushed_normal_integrates_to_one_in_1d(bijection, seed):
    params = torch.randn(bijection.num_params, 1, generator=generator(seed), dtype=torch.float64)
    y = grid_around(bound_of(bijection, torch.float64)[0].item(), inside=20001)[:, None]
    x, log_det = bijection.inverse(params, y, column=0)
    density = (normal_log_density(x) + log_det).exp().squeeze(-1)
    assert abs(torch.trapezoid(density, y.squeeze(-1)).item() - 1) < 1e-3


TWO_D = {
    "affine": Affine(),
    "affine_inverse_scale": Affine(inverse_scale=True),
    "gated": GatedAffine(),
    "spline": RationalQuadraticSpline(bins=5, bound=3.0),
    "spline_per_input": RationalQuadraticSpline(bins=6, bound=[2.0, 3.5]),
}


@over(TWO_D)
def test_density_of_a_pushed_normal_integrates_to_one_in_2d(bijection):
    params = torch.randn(bijection.num_params, 2, generator=generator(3), dtype=torch.float64) * 0.5
    axes = [grid_around(b.item(), inside=401) for b in bound_of(bijection, torch.float64, dims=2)]
    y = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (n0, n1, 2)
    x, log_det = bijection.inverse(params, y)
    density = (normal_log_density(x) + log_det).sum(-1).exp()
    mass = torch.trapezoid(torch.trapezoid(density, axes[1], dim=1), axes[0])
    assert abs(mass.item() - 1) < 1e-3


# -------------------------------------------------------------------------- low precision
@over(BIJECTIONS)
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_bfloat16_autocast_runs_and_stays_finite(bijection, input_dtype):
    conditioner = nn.Linear(4, bijection.num_params * D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        params = conditioner(torch.randn(16, 4, generator=generator())).unflatten(-1, (bijection.num_params, D))
        assert params.dtype == torch.bfloat16
        x = (torch.randn(16, D, generator=generator(1)) * 3).to(input_dtype)
        y, log_det = bijection.forward(params, x)
        x_back, log_det_back = bijection.inverse(params, y)
    if isinstance(bijection, RationalQuadraticSpline):  # computed, and returned, in float32
        assert y.dtype == log_det.dtype == x_back.dtype == torch.float32
    (y.sum() + log_det.sum() + x_back.sum() + log_det_back.sum()).backward()
    for tensor in (y, log_det, x_back, log_det_back, conditioner.weight.grad):
        assert torch.isfinite(tensor).all()


# ------------------------------------------------------------------- today's affine maps
AFFINE_OPTIONS = [
    Affine(), Affine(scale_floor=0.05), Affine(inverse_scale=True), GatedAffine(), GatedAffine(sigmoid_bias=-0.5)
]


def transform_options(bijection):
    if isinstance(bijection, GatedAffine):
        return {"stable": True, "sigmoid_bias": bijection.sigmoid_bias}
    return {"stable": False, "scale_floor": bijection.scale_floor}


def affine_transforms(bijection, options):
    """An AffineMAF and an AffineIAF for ``bijection`` (the builders, then the class itself
    for ``inverse_scale``, which the builders leave at its default)."""
    maf = affine_maf(D, hidden_dims=[16], seed=0, **options)
    iaf = affine_iaf(D, hidden_dims=[16], seed=1, **options)
    if getattr(bijection, "inverse_scale", False):
        maf = AffineMAF(maf.made, inverse_scale=True)
        iaf = AffineIAF(iaf.made, inverse_scale=True)
    return maf, iaf


@pytest.mark.parametrize("bijection", AFFINE_OPTIONS, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_maps_equal_todays_maf_and_iaf_bit_for_bit(bijection, dtype):
    """The one-pass directions of AffineMAF (inverse) and AffineIAF (forward) on the same
    MADE output; the sequential MAF forward to 1e-12 (its MADE outputs are summed in
    another order)."""
    maf, iaf = (t.to(dtype) for t in affine_transforms(bijection, transform_options(bijection)))
    perturb_(maf.made), perturb_(iaf.made, seed=1)
    y = torch.randn(6, D, generator=generator(2), dtype=dtype)
    x_ref, log_det_ref = maf.inverse_and_log_det(y)
    x, log_det = bijection.inverse(maf.made.raw_output(y), y)
    assert torch.equal(x, x_ref) and torch.equal(-log_det.sum(-1), log_det_ref)

    y_ref, log_det_ref = iaf.forward_and_log_det(x)
    y, log_det = bijection.forward(iaf.made.raw_output(x), x)
    assert torch.equal(y, y_ref) and torch.equal(log_det.sum(-1), log_det_ref)

    if dtype == torch.float64:
        y_ref, log_det_ref = maf.forward_and_log_det(x)
        y, log_det = bijection.forward(maf.made.raw_output(y_ref), x)
        torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(log_det.sum(-1), log_det_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bijection", AFFINE_OPTIONS, ids=repr)
def test_affine_maps_follow_their_documented_formulas(bijection):
    params = torch.randn(5, 2, D, generator=generator(), dtype=torch.float64) * 3
    x = torch.randn(5, D, generator=generator(1), dtype=torch.float64)
    mu, u = params[:, 0], params[:, 1]
    if isinstance(bijection, GatedAffine):
        scale = 1 / (1 + torch.exp(-(u + bijection.sigmoid_bias)))
        expected = scale * x + (1 - scale) * mu
    else:
        c = math.log(math.expm1(1 - bijection.scale_floor))
        scale = torch.log1p(torch.exp(u + c)) + bijection.scale_floor
        if bijection.inverse_scale:  # the softplus gives 1 / sigma
            scale = 1 / scale
        expected = mu + scale * x
    y, log_det = bijection.forward(params, x)
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(log_det, scale.log(), atol=1e-12, rtol=1e-12)


def test_inverse_scale_amplifies_scored_points_linearly_not_exponentially_in_the_raw_scale():
    """A MAF scores data by the inverse, x = (y - mu) / sigma. The default's factor 1 / sigma
    reaches its cap 1 / floor = 1000 already at u = -20; with inverse_scale, the factor at
    u = -20 is the floor (it shrinks) and at u = +20 about 20: linear in u."""
    y = torch.ones(1, dtype=torch.float64)
    def factor(bijection, u):
        return bijection.inverse(torch.tensor([[0.0], [u]], dtype=torch.float64), y)[0].item()
    assert factor(Affine(), -20.0) == pytest.approx(1000, rel=1e-5)
    assert factor(Affine(inverse_scale=True), -20.0) == pytest.approx(1e-3, rel=1e-4)
    c = math.log(math.expm1(1 - 1e-3))
    assert factor(Affine(inverse_scale=True), 20.0) == pytest.approx(20 + c + 1e-3, rel=1e-6)


def test_inverse_scale_must_be_a_bool():
    with pytest.raises(TypeError, match="^inverse_scale:"):
        Affine(inverse_scale=1)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "build,argument",
    [
        (lambda: Affine(scale_floor=0.0), "scale_floor"),
        (lambda: Affine(scale_floor=1.0), "scale_floor"),
        (lambda: Affine(scale_floor="0.1"), "scale_floor"),
        (lambda: GatedAffine(sigmoid_bias=math.inf), "sigmoid_bias"),
        (lambda: GatedAffine(sigmoid_bias=None), "sigmoid_bias"),
        (lambda: RationalQuadraticSpline(bins=0), "bins"),
        (lambda: RationalQuadraticSpline(bins=2.0), "bins"),
        (lambda: RationalQuadraticSpline(bins=True), "bins"),
        (lambda: RationalQuadraticSpline(bound=0.0), "bound"),
        (lambda: RationalQuadraticSpline(bound=-1.0), "bound"),
        (lambda: RationalQuadraticSpline(bound=math.inf), "bound"),
        (lambda: RationalQuadraticSpline(bound=[]), "bound"),
        (lambda: RationalQuadraticSpline(bound=[1.0, -2.0]), "bound"),
        (lambda: RationalQuadraticSpline(bound=[[1.0, 2.0]]), "bound"),
        (lambda: RationalQuadraticSpline(bound="5"), "bound"),
        (lambda: RationalQuadraticSpline(bound=None), "bound"),
        (lambda: RationalQuadraticSpline(bins=8, min_bin_width=0.0), "min_bin_width"),
        (lambda: RationalQuadraticSpline(bins=8, min_bin_width=1 / 8), "min_bin_width"),
        (lambda: RationalQuadraticSpline(bins=4, min_bin_height=0.3), "min_bin_height"),
        (lambda: RationalQuadraticSpline(min_derivative=0.0), "min_derivative"),
        (lambda: RationalQuadraticSpline(min_derivative=1.0), "min_derivative"),
    ],
)
def test_bad_options_raise_naming_the_argument(build, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        build()


@over(BIJECTIONS)
@pytest.mark.parametrize("direction,name", [("forward", "x"), ("inverse", "y")])
def test_bad_arguments_raise_naming_the_argument(bijection, direction, name):
    P = bijection.num_params
    good_params, good = torch.zeros(5, P, D), torch.zeros(5, D)
    cases = [
        (ValueError, "params", torch.zeros(5, P + 1, D), good, {}),
        (ValueError, "params", torch.zeros(P), good, {}),
        (ValueError, "params", good_params, torch.zeros(4, D), {}),
        (ValueError, name, good_params, torch.tensor(0.0), {}),
        (TypeError, "params", good_params.long(), good, {}),
        (TypeError, name, good_params, good.tolist(), {}),
        (ValueError, "column", good_params[..., :1], good[..., :1], {"column": -1}),
        (ValueError, name, good_params[..., :1], good, {"column": 0}),
    ]
    if isinstance(getattr(bijection, "bound", None), torch.Tensor):
        cases += [
            (ValueError, name, good_params, torch.zeros(5, 1), {}),
            (ValueError, "params", good_params[..., :2], good[..., :2], {}),
            (ValueError, "column", good_params[..., :1], good[..., :1], {"column": D}),
        ]
    for error, argument, params, value, kwargs in cases:
        with pytest.raises(error, match=f"^{argument}:"):
            apply(bijection, direction, params, value, **kwargs)


def test_repr_lists_the_options():
    assert repr(RationalQuadraticSpline(bins=3, bound=[1.0, 2.0])) == (
        "RationalQuadraticSpline(bins=3, bound=[1.0, 2.0], min_bin_width=0.001, min_bin_height=0.001, "
        "min_derivative=0.001)"
    )
    assert repr(Affine()) == "Affine(scale_floor=0.001)"
    assert repr(Affine(inverse_scale=True)) == "Affine(scale_floor=0.001, inverse_scale=True)"
