"""MADE and MaskedLinear structure: the autoregressive property (by masks and by autograd
Jacobians), hand-checked masks, lost dependencies and their warning, and MaskedLinear itself."""

import re
import warnings

import pytest
import torch
from hypothesis import given, settings

import flowkit
from flowkit import MADE, LostDependencyWarning, MaskedLinear
from flowkit.nn import masks as M
from made_helpers import (
    allowed_pairs,
    build,
    jacobian_dependence,
    made_configs,
    pairs,
    random_points,
    reach_from_layer_masks,
    width_keeping_everything,
)

# ------------------------------------------------ autoregressive property (hypothesis)


@given(made_configs())
@settings(max_examples=40, deadline=None)
def test_no_output_depends_on_its_own_or_later_inputs(config):
    """Structure and behaviour agree, and neither has a forbidden dependency, for every
    mask set; with a smooth activation the Jacobian shows exactly the mask paths."""
    torch.manual_seed(config["seed"])
    made, lost_warnings = build(**config)
    points, context = random_points(config)
    sets_with_lost = 0
    for index in range(made.num_masks):
        made.set_mask(index)
        allowed = allowed_pairs(made)
        reach = made.connectivity()
        assert torch.equal(reach, made.connectivity(index))
        assert torch.equal(reach, reach_from_layer_masks(made)), "layers do not hold the masks of the set"
        assert not (reach & ~allowed).any(), f"forbidden paths in mask set {index}"
        for layer in made.hidden_layers:
            # a unit of degree below every unit of the layer before would see nothing
            assert layer.mask.any(dim=1).all(), "a hidden unit with no input"

        depends, _ = jacobian_dependence(made, points, context)
        assert not (depends & ~allowed).any(), f"forbidden nonzero Jacobian entries in mask set {index}"
        assert not (depends & ~reach).any(), "a dependency without a mask path"
        if config["activation"] != "relu":  # ReLU can zero a real path at a given point
            assert torch.equal(depends, reach)
            assert set(made.lost_dependencies()) == pairs(allowed & ~depends)
        sets_with_lost += bool(made.lost_dependencies())
    assert len(lost_warnings) == sets_with_lost  # one warning per mask set that loses pairs


@given(made_configs(width="wide", activations=("tanh", "elu")))
@settings(max_examples=40, deadline=None)
def test_wide_made_keeps_every_allowed_dependency(config):
    torch.manual_seed(config["seed"])
    made, lost_warnings = build(**config)
    assert lost_warnings == []
    points, context = random_points(config)
    for index in range(made.num_masks):
        made.set_mask(index)
        allowed = allowed_pairs(made)
        assert made.lost_dependencies() == []
        assert torch.equal(made.connectivity(), allowed)
        depends, depends_on_context = jacobian_dependence(made, points, context)
        # exactly the allowed pairs: none forbidden, none missing
        assert torch.equal(depends, allowed), f"mask set {index}"
        if context is not None:
            assert depends_on_context.all(), "some output ignores the context"


@given(made_configs(width="narrow", activations=("tanh", "elu"), skip=False))
@settings(max_examples=40, deadline=None)
def test_narrow_made_reports_exactly_the_lost_dependencies(config):
    torch.manual_seed(config["seed"])
    made, lost_warnings = build(**config)
    points, context = random_points(config)
    lost_per_set = []
    for index in range(made.num_masks):
        made.set_mask(index)
        allowed = allowed_pairs(made)
        depends, _ = jacobian_dependence(made, points, context)
        assert not (depends & ~allowed).any()
        lost = made.lost_dependencies()
        assert lost == sorted(lost)
        assert set(lost) == pairs(allowed & ~depends)
        if config["context_dim"] == 0:
            # a layer narrower than D - 1 misses some degree m, which cuts input m -> output m + 1
            assert lost, "a layer narrower than D - 1 cannot keep every pair"
        lost_per_set.append(lost)

    # one warning per mask set that loses pairs, in order, each with the right count
    allowed_count = made.input_dim * (made.input_dim - 1) // 2
    expected = [(index, len(lost)) for index, lost in enumerate(lost_per_set) if lost]
    assert len(lost_warnings) == len(expected)
    for warning, (index, count) in zip(lost_warnings, expected):
        message = str(warning.message)
        assert f"mask set {index} cannot connect {count} of {allowed_count} allowed" in message
        assert "lost_dependencies()" in message
    if any(lost_per_set):
        with pytest.raises(ValueError, match="hidden_dims"):
            MADE(**config, on_lost_dependencies="raise")


@given(made_configs(activations=("tanh", "elu")).filter(lambda c: c["context_dim"] > 0))
@settings(max_examples=40, deadline=None)
def test_every_output_depends_on_the_context(config):
    """Including the first output in the order, which sees no input: it reaches the
    context only through degree-0 hidden units. Narrow layers included: a MADE that
    loses a context dependency must at least say so."""
    torch.manual_seed(config["seed"])
    made, lost_warnings = build(**config)
    points, context = random_points(config)
    for index in range(made.num_masks):
        made.set_mask(index)
        _, depends_on_context = jacobian_dependence(made, points, context)
        first = int(made.permutation[0])
        if not lost_warnings:
            assert depends_on_context[first], f"mask set {index}: the first output ignores the context silently"
        if width_keeping_everything(made.input_dim, made.context_dim) <= min(made.hidden_dims):
            assert depends_on_context.all()


def test_narrow_random_degrees_keep_the_context_for_the_first_output():
    """A width-2 layer for D = 3 with context cannot hold degrees 0, 1 and 2. The even
    scheme keeps degree 0 (and warns about the lost input pair); whatever the random
    scheme drops, the first output must not lose the context without a warning."""
    silent = {}
    for seed in range(10):
        made, lost_warnings = build(
            input_dim=3, hidden_dims=[2], context_dim=1, degrees="random", activation="tanh", seed=seed
        )
        _, depends_on_context = jacobian_dependence(made, torch.randn(2, 3), torch.randn(1))
        if not depends_on_context[int(made.permutation[0])] and not lost_warnings:
            silent[seed] = made.degrees()[1].tolist()
    assert not silent, f"first output ignores the context and nothing warned (seed: hidden degrees): {silent}"


# ------------------------------------------------------- hand-checked structure


def test_made_masks_hand_checked_three_inputs():
    made = MADE(3, [4], order="natural", seed=0)
    input_degrees, hidden = made.degrees()
    assert input_degrees.tolist() == [1, 2, 3]
    assert hidden.tolist() == [1, 1, 2, 2]
    first, last = made.masks()
    assert first.int().tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]]
    assert last.int().tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert torch.equal(made.input_layer.mask, first)
    assert torch.equal(made.output_layer.mask, last)
    assert made.connectivity().int().tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]


def test_made_output_mask_repeats_for_every_parameter():
    made = MADE(3, [4], param_dims=[1, 2], order="reversed", seed=0)
    last = made.masks()[-1]
    assert last.shape == (3 * 3, 4)
    # row p * D + d is the p-th parameter of input d: the same mask for every p
    assert torch.equal(last[0:3], last[3:6]) and torch.equal(last[3:6], last[6:9])


def test_skip_connections_add_a_strict_direct_mask():
    made = MADE(3, [4], skip_connections=True, order=[1, 2, 0], seed=0)
    skip = made.masks()[-1]
    assert torch.equal(made.skip_layer.mask, skip)
    degrees = M.degrees_from_order(torch.tensor([1, 2, 0]))  # [3, 1, 2]
    assert torch.equal(skip, degrees[:, None] > degrees[None, :])


def test_context_allows_degree_zero_hidden_units():
    made = MADE(3, [6], context_dim=2, seed=0)
    hidden = made.degrees()[1]
    assert hidden.tolist() == [0, 0, 1, 1, 2, 2]
    # degree-0 units see no input (only the context) but feed every output
    assert not made.input_layer.mask[:2].any()
    assert made.output_layer.mask[:, :2].all()


def test_without_context_hidden_degrees_start_at_one():
    made = MADE(4, [9, 9], seed=0)
    for hidden in made.degrees()[1:]:
        assert int(hidden.min()) == 1 and int(hidden.max()) == 3


def test_single_input_made_outputs_do_not_depend_on_x():
    made = MADE(1, [4], param_dims=[1, 1], seed=0)
    loc, log_scale = made(torch.randn(5, 1))
    assert loc.shape == (5, 1)
    assert torch.equal(loc, loc[:1].expand(5, 1))  # a constant: the first conditional has no inputs


def test_lost_dependencies_hand_checked_narrow_layer():
    # D = 4, natural order: useful hidden degrees are 1..3, but a width-2 layer gets the
    # evenly spread distinct degrees [1, 3]
    with pytest.warns(LostDependencyWarning, match="cannot connect 1 of 6"):
        made = MADE(4, [2], seed=0)
    assert made.degrees()[1].tolist() == [1, 3]
    # degree 2 is missing: output 2 (degree 3) sees only the degree-1 unit, which sees
    # only input 0, so input 1 -> output 2 is lost; output 3 sees both units
    assert made.lost_dependencies() == [(1, 2)]
    assert made.connectivity().int().tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]


def test_lost_dependency_warning_points_at_the_caller():
    with pytest.warns(LostDependencyWarning) as record:
        MADE(5, [2], seed=0)
    assert record[0].filename == __file__


# Every way a user builds a MADE too narrow for 5 inputs: directly and through flowkit's
# builders, each of which calls MADE from a different depth.
NARROW_BUILDERS = {
    "MADE": lambda: MADE(5, [2], seed=0),
    "maf": lambda: flowkit.maf(5, num_transforms=2, hidden_dims=[2], seed=0),
    "iaf": lambda: flowkit.iaf(5, num_transforms=2, hidden_dims=[2], seed=0),
    "maf-mog-base": lambda: flowkit.maf(5, num_transforms=1, hidden_dims=[2], base="mog", seed=0),
    "GaussianMADE": lambda: flowkit.GaussianMADE(5, [2], seed=0),
    "CategoricalMADE": lambda: flowkit.CategoricalMADE(5, [2], num_classes=3, seed=0),
    "affine_maf": lambda: flowkit.transforms.affine_maf(5, [2], seed=0),
    "AmortizedIAF": lambda: flowkit.infer.AmortizedIAF(5, context_dim=2, hidden_dims=[2]),
}


@pytest.mark.parametrize("path", NARROW_BUILDERS)
def test_lost_dependency_warning_points_at_the_callers_line_whatever_the_builder(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NARROW_BUILDERS[path]()
    lost = [w for w in caught if issubclass(w.category, LostDependencyWarning)]
    assert lost, f"{path} built a narrow MADE without a LostDependencyWarning"
    assert {w.filename for w in lost} == {__file__}
    assert {w.lineno for w in lost} == {NARROW_BUILDERS[path].__code__.co_firstlineno}


def test_lost_dependency_warning_says_its_indices_are_0_based():
    with pytest.warns(LostDependencyWarning) as record:
        MADE(4, [2], seed=0)  # loses input 1 -> output 2 (see the hand-checked test above)
    message = str(record[0].message)
    assert "(0-based indices): input 1 -> output 2." in message, message


def test_on_lost_dependencies_raise():
    with pytest.raises(ValueError, match="hidden_dims"):
        MADE(5, [2], seed=0, on_lost_dependencies="raise")
    MADE(5, [4], seed=0, on_lost_dependencies="raise")  # wide enough: no error


@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("input_dim", [3, 6])
def test_lost_dependency_warning_names_a_width_that_suffices(input_dim, context_dim):
    """The warning tells the user which width keeps every dependency; that width must
    really build a MADE without the warning."""
    with pytest.warns(LostDependencyWarning) as record:
        MADE(input_dim, [1], context_dim=context_dim, seed=0)
    advertised = int(re.search(r"width >= (\d+)", str(record[0].message)).group(1))
    made, lost_warnings = build(input_dim=input_dim, hidden_dims=[advertised], context_dim=context_dim, seed=0)
    assert lost_warnings == [], f"width {advertised} still warns: {lost_warnings[0].message}"


# ---------------------------------------------------------------- MaskedLinear


def test_masked_linear_mask_is_a_bool_buffer():
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]])  # ints are accepted and stored as bool
    layer = MaskedLinear(mask)
    assert layer.mask.dtype == torch.bool
    assert "mask" in layer.state_dict()
    assert "mask" in dict(layer.named_buffers())
    assert all(p is not layer.mask for p in layer.parameters())
    mask[0, 1] = 1
    assert not layer.mask[0, 1], "the layer must copy the mask, not alias it"
    layer.double()
    assert layer.weight.dtype == torch.float64
    assert layer.mask.dtype == torch.bool
    assert layer(torch.randn(4, 3, dtype=torch.float64)).dtype == torch.float64


def test_masked_linear_state_dict_carries_the_mask():
    source = MaskedLinear(torch.tensor([[True, False], [True, True]]))
    target = MaskedLinear(torch.ones(2, 2, dtype=torch.bool))
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.mask, source.mask)
    x = torch.randn(3, 2)
    assert torch.equal(target(x), source(x))


def test_masked_weights_have_no_effect():
    mask = torch.rand(6, 5, generator=torch.Generator().manual_seed(1)) < 0.5
    layer = MaskedLinear(mask)
    x = torch.randn(4, 5, requires_grad=True)
    before = layer(x)
    with torch.no_grad():
        layer.weight[~mask] = 1e6
    after = layer(x)
    assert torch.equal(before, after)
    assert torch.equal(layer.masked_weight() == 0, ~mask | (layer.weight == 0))
    after.sum().backward()
    assert (layer.weight.grad[~mask] == 0).all(), "masked weights must get no gradient"
    assert torch.allclose(x.grad, layer.masked_weight().sum(0).expand(4, 5))


def test_masked_linear_set_mask_replaces_in_place():
    layer = MaskedLinear(torch.ones(2, 3, dtype=torch.bool))
    buffer = layer.mask
    layer.set_mask(torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.bool))
    assert layer.mask is buffer
    assert layer.mask.int().tolist() == [[1, 0, 0], [0, 0, 1]]
    out = layer(torch.tensor([[1.0, 100.0, 1000.0]]))
    assert torch.allclose(out, torch.stack([layer.weight[0, 0], 1000 * layer.weight[1, 2]])[None] + layer.bias)


def test_masked_linear_init_bound_uses_the_masked_fan_in():
    """nn.Linear's bound is 1/sqrt(in_features); a row with fan-in n after masking must
    get 1/sqrt(n), so a row seeing one input gets weights up to 1."""
    in_features, sparse_rows, dense_rows = 64, 300, 300
    mask = torch.zeros(sparse_rows + dense_rows, in_features, dtype=torch.bool)
    mask[torch.arange(sparse_rows), torch.arange(sparse_rows) % in_features] = True  # fan-in 1
    mask[sparse_rows:] = True  # fan-in 64
    layer = MaskedLinear(mask)
    sparse_w = layer.weight[:sparse_rows][mask[:sparse_rows]]
    dense_w = layer.weight[sparse_rows:]
    sparse_b, dense_b = layer.bias[:sparse_rows], layer.bias[sparse_rows:]
    dense_bound = 1 / in_features**0.5
    assert sparse_w.abs().max() <= 1.0 and sparse_b.abs().max() <= 1.0
    # 300 uniform(-1, 1) draws all below 0.9 in size has probability 0.9**300 ~ 2e-14
    assert sparse_w.abs().max() > 0.9 and sparse_b.abs().max() > 0.9
    assert dense_w.abs().max() <= dense_bound and dense_b.abs().max() <= dense_bound
    assert dense_w.abs().max() > 0.9 * dense_bound
