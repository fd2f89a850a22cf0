"""Tests for the affine autoregressive transforms (MAF and IAF): round trips and log-dets on
random MADE architectures, the fast sequential path against a naive loop, near identity and
the scale floor. The attributes and errors every transform shares are checked by the
contract tests (test_transform_contracts*.py).

Conventions (Pyro's): a transform's forward maps base noise ``x`` to data ``y``. MAF's
MADE reads ``y`` (inverse in one pass, forward sequential); IAF's MADE reads ``x``
(forward in one pass, inverse sequential). Exactness checks run in float64 on MADEs
whose weights are perturbed away from the builders' near-identity initialisation.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.nn import MADE
from flowkit.transforms import (
    MAF,
    AffineIAF,
    AffineMAF,
    ConditionalAffineIAF,
    ConditionalAffineMAF,
    affine_iaf,
    affine_maf,
    conditional_affine_iaf,
)
from helpers import batch_jacobian, log_abs_det, perturb_

TOL = dict(atol=1e-10, rtol=1e-10)


PLAIN = {"maf": AffineMAF, "iaf": AffineIAF}


CONDITIONAL = {"maf": ConditionalAffineMAF, "iaf": ConditionalAffineIAF}


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference_shift_scale(raw, stable, scale_floor=1e-3, sigmoid_bias=2.0):
    """The documented affine parametrisation, written independently of flowkit:
    scale = softplus(u + c) + floor with softplus(c) + floor = 1, or the sigmoid gate."""
    loc, u = raw[..., 0, :], raw[..., 1, :]
    if stable:
        gate = torch.sigmoid(u + sigmoid_bias)
        return (1 - gate) * loc, gate
    c = math.log(math.expm1(1.0 - scale_floor))
    return loc, torch.logaddexp(torch.zeros_like(u), u + c) + scale_floor


def naive_solve(made, context, batch_shape, dtype, values):
    """The textbook sequential loop, one full MADE pass per input: for each input ``i`` in
    the MADE's order, run the MADE on the inputs so far (the rest still 0) and set
    ``v[..., i] = values(params)[..., i]``. The reference for the fast sequential path."""
    if context is not None:
        batch_shape = torch.broadcast_shapes(batch_shape, context.shape[:-1])
    v = torch.zeros(batch_shape + (made.input_dim,), dtype=dtype)
    for i in made.permutation.tolist():
        params = made.raw_output(v, context)
        v = v.clone()
        v[..., i] = values(params)[..., i]
    return v


def naive_maf_forward(made, x, context, stable):
    """y with y = shift(y) + scale(y) * x, the sequential direction of MAF."""

    def values(params):
        shift, scale = reference_shift_scale(params, stable)
        return shift + scale * x

    return naive_solve(made, context, x.shape[:-1], x.dtype, values)


def naive_iaf_inverse(made, y, context, stable):
    """x with y = shift(x) + scale(x) * x, the sequential direction of IAF."""

    def values(params):
        shift, scale = reference_shift_scale(params, stable)
        return (y - shift) / scale

    return naive_solve(made, context, y.shape[:-1], y.dtype, values)


@st.composite
def made_configs(draw, conditional=False):
    """Random MADE architectures for affine transforms (all wide enough to keep every
    dependency, so no LostDependencyWarning)."""
    input_dim = draw(st.integers(1, 8))
    num_layers = draw(st.integers(1, 2))
    residual = draw(st.booleans())

    def width():
        return draw(st.integers(max(input_dim, 2), 3 * input_dim + 2))

    hidden_dims = [width()] * num_layers if residual else [width() for _ in range(num_layers)]
    return dict(
        input_dim=input_dim,
        hidden_dims=hidden_dims,
        param_dims=[1, 1],
        context_dim=draw(st.integers(1, 3)) if conditional else 0,
        order=draw(st.sampled_from(["natural", "reversed", "random"])),
        activation=draw(st.sampled_from(["relu", "tanh", "elu"])),
        skip_connections=draw(st.booleans()),
        residual=residual,
        seed=draw(st.integers(0, 2**16)),
    )


def build_made(config, perturb_seed=0):
    return perturb_(MADE(**config).double(), seed=perturb_seed)


# derandomize: the same 25 configurations on every run (a stress run of 300 random ones passed)
CONFIG_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


# ------------------------------------------------------------------ round trips, log-det
def check_transform(make, x, x_other, jacobian_rows):
    """Round trips and log-determinants of a transform built by ``make()``; ``make``
    builds a fresh object on the same MADE each time, so nothing comes from a cache.

    ``x`` and ``x_other`` are noise; ``y_data = make()(x_other)`` stands for data (data
    in the range of typical samples: the inverse of an arbitrary point of a random
    network can be ill-conditioned). ``jacobian_rows(v)`` gives ``(transform, v_n)``
    pairs to differentiate per sample (conditional transforms need each row's context).
    """
    y_data = make()(x_other).detach()

    # noise -> data -> noise, through a second object (no cache)
    y = make()(x)
    torch.testing.assert_close(make().inv(y.clone()), x, **TOL)
    # data -> noise -> data
    x_data = make().inv(y_data.clone())
    torch.testing.assert_close(x_data, x_other, **TOL)
    torch.testing.assert_close(make()(x_data.clone()), y_data, **TOL)
    # the same object, asked about a copy (which its cache cannot answer)
    t = make()
    y = t(x)
    torch.testing.assert_close(t.inv(y.clone()), x, **TOL)

    # log|det dy/dx| from autograd, through the uncached forward map
    expected = torch.stack([log_abs_det(batch_jacobian(tn._call, xn)) for tn, xn in jacobian_rows(x)])
    expected_data = torch.stack([log_abs_det(batch_jacobian(tn._call, xn)) for tn, xn in jacobian_rows(x_data)])
    assert expected.shape == x.shape[:-1]

    t = make()
    y = t(x)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), expected, **TOL)  # pair cached by forward
    torch.testing.assert_close(make().log_abs_det_jacobian(x.clone(), y.clone()), expected, **TOL)  # uncached
    t = make()
    x_data = t.inv(y_data)
    torch.testing.assert_close(t.log_abs_det_jacobian(x_data, y_data), expected_data, **TOL)  # cached by inverse
    torch.testing.assert_close(make().log_abs_det_jacobian(x_data.clone(), y_data.clone()), expected_data, **TOL)

    # both directions with their log-determinant in one call, as Flow uses them
    y_direct, log_det = make().forward_and_log_det(x)
    torch.testing.assert_close(y_direct, y, **TOL)
    torch.testing.assert_close(log_det, expected, **TOL)
    x_direct, log_det = make().inverse_and_log_det(y_data)
    torch.testing.assert_close(x_direct, x_data, **TOL)
    torch.testing.assert_close(log_det, expected_data, **TOL)


@CONFIG_SETTINGS
@given(config=made_configs(), kind=st.sampled_from(["maf", "iaf"]), stable=st.booleans())
def test_round_trip_and_log_det_match_autograd(config, kind, stable):
    made = build_made(config)
    D = config["input_dim"]
    make = lambda: PLAIN[kind](made, stable=stable)  # noqa: E731
    check_transform(make, randn(4, D, seed=1), randn(4, D, seed=2), lambda v: [(make(), v[n]) for n in range(len(v))])


@CONFIG_SETTINGS
@given(config=made_configs(conditional=True), kind=st.sampled_from(["maf", "iaf"]), stable=st.booleans())
def test_conditional_round_trip_and_log_det_with_batched_context(config, kind, stable):
    made = build_made(config)
    D, C = config["input_dim"], config["context_dim"]
    context = randn(4, C, seed=3)
    conditional = CONDITIONAL[kind](made, stable=stable)
    # each row's Jacobian uses that row's own context
    rows = lambda v: [(conditional.condition(context[n]), v[n]) for n in range(len(v))]  # noqa: E731
    check_transform(lambda: conditional.condition(context), randn(4, D, seed=1), randn(4, D, seed=2), rows)


@CONFIG_SETTINGS
@given(config=made_configs(conditional=True), kind=st.sampled_from(["maf", "iaf"]), stable=st.booleans())
def test_conditional_single_context_broadcasts_over_batch(config, kind, stable):
    made = build_made(config)
    D, C = config["input_dim"], config["context_dim"]
    context = randn(C, seed=3)
    conditional = CONDITIONAL[kind](made, stable=stable)
    x = randn(4, D, seed=1)
    # The same as giving every row the context explicitly (checked above on every
    # architecture), both directions; the contract tests check round trips and
    # log-determinants with a single context for every transform.
    t, expanded = conditional.condition(context), conditional.condition(context.expand(4, C))
    y = t(x)
    assert y.shape == (4, D)
    torch.testing.assert_close(y, expanded(x.clone()), **TOL)
    torch.testing.assert_close(conditional.condition(context).inv(y.clone()), expanded.inv(y.clone()), **TOL)
    log_det = t.log_abs_det_jacobian(x, y)
    assert log_det.shape == (4,)
    torch.testing.assert_close(log_det, expanded.log_abs_det_jacobian(x.clone(), y.clone()), **TOL)


def test_context_changes_the_map():
    # guards the conditional tests against a MADE that ignores its context
    made = build_made(dict(input_dim=3, hidden_dims=[8], param_dims=[1, 1], context_dim=2, seed=0))
    conditional = ConditionalAffineMAF(made)
    x = randn(5, 3, seed=1)
    y0 = conditional.condition(randn(2, seed=2))(x)
    y1 = conditional.condition(randn(2, seed=3))(x)
    assert (y0 - y1).abs().max() > 1e-2


def test_perturbed_map_is_far_from_identity():
    # guards the exactness tests against a trivial (identity-like) map
    made = build_made(dict(input_dim=4, hidden_dims=[12, 12], param_dims=[1, 1], seed=0))
    x = randn(16, 4, seed=1)
    for cls in (AffineMAF, AffineIAF):
        assert (cls(made)(x) - x).abs().max() > 0.5


# ---------------------------------------------------- fast sequential path vs naive loop
@CONFIG_SETTINGS
@given(config=made_configs(), stable=st.booleans())
def test_sequential_directions_match_naive_loop(config, stable):
    made = build_made(config)
    D = config["input_dim"]
    x = randn(5, D, seed=1)
    y = AffineIAF(made, stable=stable)(randn(5, D, seed=2)).detach()  # a typical IAF sample
    torch.testing.assert_close(AffineMAF(made, stable=stable)(x), naive_maf_forward(made, x, None, stable), **TOL)
    torch.testing.assert_close(AffineIAF(made, stable=stable).inv(y), naive_iaf_inverse(made, y, None, stable), **TOL)
    # and the library's own naive method agrees too
    t = AffineMAF(made, stable=stable)
    naive = MAF(made, t.bijection, sequential="naive")
    torch.testing.assert_close(t(x.clone()), naive(x.clone()), **TOL)


@CONFIG_SETTINGS
@given(config=made_configs(conditional=True), stable=st.booleans(), broadcast=st.booleans())
def test_sequential_directions_match_naive_loop_with_context(config, stable, broadcast):
    made = build_made(config)
    D, C = config["input_dim"], config["context_dim"]
    context = randn(C, seed=3) if broadcast else randn(5, C, seed=3)
    x = randn(5, D, seed=1)
    y = ConditionalAffineIAF(made, stable=stable).condition(context)(randn(5, D, seed=2)).detach()
    maf = ConditionalAffineMAF(made, stable=stable).condition(context)
    iaf = ConditionalAffineIAF(made, stable=stable).condition(context)
    torch.testing.assert_close(maf(x), naive_maf_forward(made, x, context, stable), **TOL)
    torch.testing.assert_close(iaf.inv(y), naive_iaf_inverse(made, y, context, stable), **TOL)


def test_one_pass_directions_match_reference_formula():
    # MAF inverse and IAF forward read the MADE once: check the affine formula itself
    made = build_made(dict(input_dim=5, hidden_dims=[15], param_dims=[1, 1], order="random", seed=4))
    x, y = randn(6, 5, seed=1), randn(6, 5, seed=2)
    for stable in (False, True):
        shift, scale = reference_shift_scale(made.raw_output(y), stable)
        torch.testing.assert_close(AffineMAF(made, stable=stable).inv(y), (y - shift) / scale, **TOL)
        shift, scale = reference_shift_scale(made.raw_output(x), stable)
        torch.testing.assert_close(AffineIAF(made, stable=stable)(x), shift + scale * x, **TOL)


# ------------------------------------------------------------------------ attributes
def test_conditioned_transforms_share_the_made():
    # .condition() must not copy the network: training through it trains the module
    conditional = conditional_affine_iaf(3, 2, [8], seed=0)
    t = conditional.condition(torch.zeros(2))
    assert t.made is conditional.made
    assert {id(p) for p in t.parameters()} == {id(p) for p in conditional.parameters()}


# ---------------------------------------------------------- near identity, scale floor
@pytest.mark.parametrize("builder", [affine_maf, affine_iaf])
def test_builders_start_near_identity(builder):
    x = torch.randn(256, 4)
    t = builder(4, [32, 32], seed=0)
    assert (t(x) - x).abs().max() < 0.05
    assert (t.inv(x) - x).abs().max() < 0.05
    assert t.log_abs_det_jacobian(x.clone(), t(x).clone()).abs().max() < 0.05


@pytest.mark.parametrize("builder", [affine_maf, affine_iaf])
def test_stable_builders_start_as_the_gate_bias_says(builder):
    # stable: y = s x + (1 - s) mu with s = sigmoid(bias + u), u ~ 0 and mu ~ 0 at init
    x = torch.randn(256, 4)
    t = builder(4, [32, 32], stable=True, sigmoid_bias=3.0, seed=0)
    assert (t(x) - torch.sigmoid(torch.tensor(3.0)) * x).abs().max() < 0.05


def _affine_of(u, kind="maf", **kwargs):
    """The transform's (shift, scale, log_scale) for unconstrained scale outputs u and
    zero shift outputs, read from its bijection at x = 0 and x = 1."""
    t = PLAIN[kind](MADE(u.shape[-1], [2 * u.shape[-1]], [1, 1], seed=0).double(), **kwargs)
    params = torch.stack([torch.zeros_like(u), u], dim=-2)
    shift, _ = t.bijection.forward(params, torch.zeros_like(u))
    shifted_by_scale, log_scale = t.bijection.forward(params, torch.ones_like(u))
    return shift, shifted_by_scale - shift, log_scale


def test_zero_output_gives_unit_scale():
    for scale_floor in (1e-3, 0.2):
        _, scale, log_scale = _affine_of(torch.zeros(3, dtype=torch.float64), scale_floor=scale_floor)
        torch.testing.assert_close(scale, torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(log_scale, torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scale_floor_holds_for_extreme_outputs(dtype):
    u = torch.tensor([-1e30, -1e4, -100.0, 0.0, 100.0, 1e4], dtype=dtype)
    for scale_floor in (1e-3, 0.1):
        _, scale, log_scale = _affine_of(u, scale_floor=scale_floor)
        assert (scale >= torch.tensor(scale_floor, dtype=dtype)).all()
        assert torch.isfinite(scale).all() and torch.isfinite(log_scale).all()
        torch.testing.assert_close(scale[:2], torch.full((2,), scale_floor, dtype=dtype))


def test_scale_gradient_never_vanishes_like_a_clamp():
    # softplus, not a hard clamp: far below the floor's knee the scale still responds
    u = torch.tensor([-30.0, -10.0, -3.0, 0.0, 3.0, 30.0], dtype=torch.float64, requires_grad=True)
    _, scale, _ = _affine_of(u)
    (grad,) = torch.autograd.grad(scale.sum(), u)
    assert (grad > 0).all()
    torch.testing.assert_close(grad, torch.sigmoid(u.detach() + math.log(math.expm1(1 - 1e-3))))
    # same for the stable gate, and through log_scale
    _, _, log_scale = _affine_of(u, stable=True)
    (grad,) = torch.autograd.grad(log_scale.sum(), u)
    assert (grad > 0).all()


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_log_det_finite_when_made_pushes_scale_to_floor(kind):
    made = MADE(3, [8], [1, 1], seed=0).double()
    with torch.no_grad():  # unconstrained scale output = -1e4 everywhere
        made.output_layer.weight.zero_()
        made.output_layer.bias.copy_(torch.tensor([0.0] * 3 + [-1e4] * 3, dtype=torch.float64))
    t = PLAIN[kind](made)
    x = randn(5, 3)
    y = t(x)
    log_det = t.log_abs_det_jacobian(x, y)
    assert torch.isfinite(y).all() and torch.isfinite(log_det).all()
    torch.testing.assert_close(log_det, torch.full((5,), 3 * math.log(1e-3), dtype=torch.float64))
    torch.testing.assert_close(PLAIN[kind](made).inv(y.clone()), x, **TOL)
