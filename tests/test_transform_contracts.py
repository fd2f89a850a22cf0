"""Contract tests that every public transform keeps: Pyro's conventions, exact round trips
(also far outside the data, on empty batches and for every batch shape), log-determinants
against autograd Jacobians, the structure of the Jacobian, the cache, errors at the entry
points, state_dict round trips and densities that integrate to one.

Every contract runs on every entry of ``CASES`` (transform_contracts.py): a new transform
is tested by adding it there. Where a contract does not apply to an entry, the entry says
why, and a test checks what holds instead. Float64 throughout; tolerances 1e-10.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule

import flowkit.transforms
from elementwise_helpers import BIJECTIONS
from helpers import entry_points
from transform_contracts import (
    CASES,
    DTYPE,
    NOT_IN_THE_REGISTRY,
    SIGN,
    STEP_BIJECTIONS,
    STEP_KINDS,
    D,
    applying,
    context_of,
    generator,
    not_applying,
    over,
    transform_of,
)

TOL = dict(atol=1e-10, rtol=1e-10)
BATCH_SHAPES = [(), (3,), (2, 3)]
EVERY_CASE = over(CASES)


def randn(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=generator(seed), dtype=torch.float64)


def built(case, seed=0):
    """``(module, transform)`` of a case: the module owns the parameters, the transform
    maps (the module itself, or the conditional module conditioned on the context)."""
    module = case.build(D, seed)
    return module, transform_of(case, module)


# ---------------------------------------------------------------------- the registry
def test_the_registry_has_every_public_transform():
    public = {getattr(flowkit.transforms, name) for name in flowkit.transforms.__all__}
    transforms = {
        cls
        for cls in public
        if isinstance(cls, type) and issubclass(cls, (TransformModule, ConditionalTransformModule))
    }
    registered = {type(case.build(D, 0)) for case in CASES.values()}
    assert {cls.__name__ for cls in transforms - registered} == set(NOT_IN_THE_REGISTRY)


def test_every_step_runs_every_bijection_of_the_elementwise_contracts():
    assert set(STEP_BIJECTIONS) == set(BIJECTIONS)
    for kind in STEP_KINDS:
        assert {f"{kind}_{name}" for name in BIJECTIONS} <= set(CASES)


def test_every_reason_against_a_contract_names_a_known_contract():
    for case in CASES.values():
        assert set(case.not_applicable) <= {SIGN, DTYPE}
        assert all(len(reason) > 20 for reason in case.not_applicable.values())
        assert case.structure in ("autoregressive", "diagonal", "permutation")


# ------------------------------------------------------------------ Pyro's conventions
@EVERY_CASE
def test_pyro_attributes(case):
    module, transform = built(case)
    assert isinstance(module, ConditionalTransformModule if case.context_dim else TransformModule)
    assert isinstance(transform, TransformModule)
    if case.context_dim:
        assert isinstance(transform, module.transform_class)  # ConditionalAffineMAF gives an AffineMAF
    for t in (module, transform):  # the same object, unless the case is conditional
        assert t.domain is constraints.real_vector and t.codomain is constraints.real_vector
        assert t.bijective is True
        assert t.event_dim == 1
    if SIGN in case.not_applicable:
        with pytest.raises(NotImplementedError):
            transform.sign  # noqa: B018 (undefined, not wrong)
    else:
        assert transform.sign == +1


@EVERY_CASE
def test_pyro_module_registers_every_parameter(case, clean_param_store):
    module, _ = built(case)
    assert pyro.module("step", module) is module
    expected = {f"step$$${name}" for name, _ in module.named_parameters()}
    assert set(pyro.get_param_store().keys()) == expected


@EVERY_CASE
def test_transformed_distribution_samples_and_scores_by_the_change_of_variables(case):
    module, transform = built(case)
    base = dist.Normal(torch.zeros(D, dtype=torch.float64), 1.0).to_event(1)
    if case.context_dim:
        flow = dist.ConditionalTransformedDistribution(base, [module]).condition(context_of(case))
    else:
        flow = dist.TransformedDistribution(base, [transform])
    assert flow.sample((5,)).shape == (5, D)
    y = randn(5, D, seed=2)
    x, log_det = transform.inverse_and_log_det(y)
    torch.testing.assert_close(flow.log_prob(y), base.log_prob(x) - log_det, **TOL)


# --------------------------------------------------------------------------- round trips
def assert_round_trips(transform, x, y):
    """x -> y -> x and y -> x -> y, each with the log-determinant of both directions equal."""
    y_of_x, log_det = transform.forward_and_log_det(x)
    x_back, log_det_back = transform.inverse_and_log_det(y_of_x)
    torch.testing.assert_close(x_back, x, **TOL)
    torch.testing.assert_close(log_det_back, log_det, **TOL)
    x_of_y, log_det = transform.inverse_and_log_det(y)
    y_back, log_det_back = transform.forward_and_log_det(x_of_y)
    torch.testing.assert_close(y_back, y, **TOL)
    torch.testing.assert_close(log_det_back, log_det, **TOL)


def assert_far_from_the_identity(case, transform):
    """Guards every contract against a trivial map (or one whose directions are the same)."""
    x = randn(16, D, seed=1)
    y, log_det = transform.forward_and_log_det(x)
    assert not torch.equal(y, x)
    assert not torch.equal(transform.inverse_and_log_det(x)[0], y)
    if case.structure != "permutation":  # which moves every point but preserves volume
        assert (y - x).abs().max() > 0.1 and log_det.abs().max() > 0.1


@EVERY_CASE
def test_round_trips_for_every_batch_shape_and_far_outside_the_data(case):
    """For the batch shapes (), (3,) and (2, 3), and at ten times the data's spread (beyond
    a spline's bound, where a MADE extrapolates), of a map far from the identity."""
    _, transform = built(case)
    assert_far_from_the_identity(case, transform)
    for batch_shape in BATCH_SHAPES:
        x, y = randn(*batch_shape, D, seed=1), randn(*batch_shape, D, seed=2)
        assert transform.forward_and_log_det(x)[1].shape == batch_shape
        assert_round_trips(transform, x, y)
    assert_round_trips(transform, randn(8, D, seed=3, scale=10.0), randn(8, D, seed=4, scale=10.0))


@EVERY_CASE
def test_empty_batches(case):
    _, transform = built(case)
    for batch_shape in [(0,), (2, 0)]:
        empty = torch.zeros(*batch_shape, D, dtype=torch.float64)
        for direction in (transform.forward_and_log_det, transform.inverse_and_log_det):
            out, log_det = direction(empty)
            assert out.shape == empty.shape and log_det.shape == batch_shape, (batch_shape, direction.__name__)
        assert transform.inv(transform(empty)).shape == empty.shape


# ------------------------------------------------------------------------ the cache
@EVERY_CASE
def test_the_cache_returns_the_very_tensors_of_the_last_pair(case):
    _, transform = built(case)
    x, y = randn(4, D, seed=1), randn(4, D, seed=2)
    y_of_x = transform(x)
    assert transform.inv(y_of_x) is x
    log_det = transform.log_abs_det_jacobian(x, y_of_x)
    assert transform.log_abs_det_jacobian(x, y_of_x) is log_det  # answered, not recomputed
    torch.testing.assert_close(log_det, transform.forward_and_log_det(x)[1], **TOL)
    x_of_y = transform.inv(y)
    assert transform(x_of_y) is y
    assert transform.inv(y.clone()) is not x_of_y  # a copy is computed afresh


# --------------------------------------------------------------- the state_dict
@EVERY_CASE
def test_state_dict_round_trip(case):
    source, source_transform = built(case, seed=0)
    target, target_transform = built(case, seed=1)
    x = randn(4, D, seed=1)
    assert not torch.equal(source_transform.forward_and_log_det(x)[0], target_transform.forward_and_log_det(x)[0])
    target.load_state_dict(source.state_dict())  # strict: every key present, none unexpected
    target_transform = transform_of(case, target)
    for direction in ("forward_and_log_det", "inverse_and_log_det"):
        for got, expected in zip(getattr(target_transform, direction)(x), getattr(source_transform, direction)(x)):
            assert torch.equal(got, expected), direction


# ------------------------------------------------------------------- bad input
def bad_calls(transform, value):
    """``(name, call)`` for every entry point, given ``value``; the other argument is good."""
    return entry_points(transform, value, torch.zeros(4, D, dtype=torch.float64))


@EVERY_CASE
def test_a_wrong_last_dimension_is_a_value_error_naming_the_argument(case):
    _, transform = built(case)
    for name, call in bad_calls(transform, torch.zeros(4, D - 1, dtype=torch.float64)):
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == f"{name}: expected shape (..., {D}) with input_dim={D}, got (4, {D - 1})"


@EVERY_CASE
def test_a_numpy_array_or_an_integer_tensor_is_a_type_error_naming_the_argument(case):
    _, transform = built(case)
    for name, call in bad_calls(transform, torch.zeros(4, D, dtype=torch.float64).numpy()):
        with pytest.raises(TypeError, match=rf"^{name}: expected a torch.Tensor, got numpy.ndarray"):
            call()
    for name, call in bad_calls(transform, torch.zeros(4, D, dtype=torch.long)):
        with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point tensor"):
            call()


@over(applying(DTYPE))
def test_another_dtype_is_a_type_error_naming_the_argument(case):
    _, transform = built(case)
    for name, call in bad_calls(transform, torch.zeros(4, D, dtype=torch.float32)):
        with pytest.raises(TypeError) as error:
            call()
        expected = f"{name}: dtype torch.float32 does not match the model's torch.float64; convert one of them"
        assert str(error.value) == expected


@over(not_applying(DTYPE))
def test_a_transform_without_parameters_keeps_the_dtype_it_is_given(case):
    _, transform = built(case)
    x = randn(4, D, seed=1).float()
    y, log_det = transform.forward_and_log_det(x)
    assert y.dtype == log_det.dtype == torch.float32
    assert torch.equal(transform.inverse_and_log_det(y)[0], x)


@over(name for name, case in CASES.items() if case.context_dim)
def test_condition_checks_the_context_it_is_given(case):
    module, _ = built(case)
    with pytest.raises(TypeError, match=r"^context: expected a torch.Tensor, got numpy.ndarray"):
        module.condition(context_of(case).numpy())
    with pytest.raises(ValueError, match=rf"^context: expected shape \(\.\.\., {case.context_dim}\)"):
        module.condition(torch.zeros(case.context_dim + 1, dtype=torch.float64))


# ------------------------------------------------------------------------ densities
# Every bijection and every class at least once, each spline once (a fine grid costs
# most for them).
DENSITY_CASES = [
    "maf_affine",
    "maf_affine_inverse_scale",
    "conditional_maf_gated",
    "maf_spline_per_input",
    "iaf_spline",
    "conditional_iaf_affine",
    "affine_maf",
    "affine_iaf_stable",
    "conditional_affine_maf",
    "conditional_affine_iaf_stable",
    "permute",
    "act_norm",
    "batch_norm",
]


@over(DENSITY_CASES)
def test_density_of_a_transformed_normal_integrates_to_one_in_2d(case):
    module = case.build(2, 0)
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    if case.context_dim:
        flow = dist.ConditionalTransformedDistribution(base, [module]).condition(context_of(case))
    else:
        flow = dist.TransformedDistribution(base, [module])
    grid = torch.linspace(-8.0, 8.0, 301, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        log_p = flow.log_prob(points)
    mass = torch.trapezoid(torch.trapezoid(log_p.exp().reshape(len(grid), len(grid)), grid, dim=1), grid)
    assert abs(mass.item() - 1) < 2e-3
    normal = -0.5 * points.square().sum(-1) - math.log(2 * math.pi)
    assert (log_p - normal).abs().max() > 0.1 or case.structure == "permutation"
