"""MADE and MaskedLinear: the autoregressive property (by masks and by autograd
Jacobians), lost dependencies, serialisation, Pyro's output layouts, mask sets, the
sequential direction and input validation."""

import copy
import pickle
import re
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import flowkit
from flowkit import MADE, LostDependencyWarning, MaskedLinear
from flowkit.nn import masks as M

PARAM_DIMS = [[1], [2], [1, 1], [1, 3, 2]]
ORDER_KINDS = ["natural", "reversed", "random", "permutation"]

# ----------------------------------------------------------------------- helpers


def build(**kwargs):
    """Builds a MADE and returns it with the LostDependencyWarnings it emitted.

    pyproject turns LostDependencyWarning into an error; recording them here lets a
    test assert exactly when they are emitted.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = MADE(**kwargs)
    return made, [w for w in caught if issubclass(w.category, LostDependencyWarning)]


def width_keeping_everything(input_dim, context_dim):
    """The narrowest hidden layer that can hold every useful degree: 1..D-1, plus
    degree 0 (units that see only the context) when there is a context, because the
    first output in the order can reach the context only through degree-0 units."""
    return max(input_dim - 1 + (1 if context_dim else 0), 1)


def ranks(made):
    """rank[j] = position of input j in the active order."""
    perm = made.permutation
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(len(perm))
    return rank


def allowed_pairs(made):
    """[output, input] is True when the input comes strictly before the output."""
    rank = ranks(made)
    return rank[:, None] > rank[None, :]


def as_param_rows(out, input_dim):
    """Pyro's layouts ((..., D), (..., p, D) or a tuple of them) as one (P, D) tensor."""
    parts = out if isinstance(out, tuple) else (out,)
    return torch.cat([part.reshape(-1, input_dim) for part in parts])


def jacobian_dependence(made, points, context=None):
    """Autograd Jacobians at each point, in float64.

    Returns (depends_on_x, depends_on_context): depends_on_x[i, j] is True when some
    output parameter of input i moves with input j at some point; depends_on_context[i]
    when some output parameter of input i moves with the context.
    """
    net = copy.deepcopy(made).double()
    D = made.input_dim
    dep_x = torch.zeros(D, D, dtype=torch.bool)
    dep_c = torch.zeros(D, dtype=torch.bool)
    for x in points.double():
        if context is None:
            jac_x = torch.autograd.functional.jacobian(lambda x: as_param_rows(net(x), D), x, vectorize=True)
        else:
            jac_x, jac_c = torch.autograd.functional.jacobian(
                lambda x, c: as_param_rows(net(x, c), D), (x, context.double()), vectorize=True
            )
            dep_c |= (jac_c != 0).any(dim=-1).any(dim=0)
        dep_x |= (jac_x != 0).any(dim=0)  # jac_x: (P, D_out, D_in)
    return dep_x, dep_c


def reach_from_layer_masks(made):
    """Which inputs reach which outputs, read from the masks the layers actually hold
    (independent of made.connectivity(), which derives them from the degrees)."""
    reach = made.input_layer.mask.long()
    for layer in made.hidden_layers:
        step = layer.mask.long()
        if made.residual:
            step = step + torch.eye(len(step), dtype=torch.long)
        reach = (step @ reach).clamp(max=1)
    reach = (made.output_layer.mask.long() @ reach).bool()
    if made.skip_layer is not None:
        reach |= made.skip_layer.mask
    return reach.reshape(-1, made.input_dim, made.input_dim).any(dim=0)


def pairs(matrix):
    """The (input, output) pairs where an [output, input] matrix is True."""
    return {(j, i) for i, j in torch.nonzero(matrix).tolist()}


@st.composite
def made_configs(draw, width="any", activations=("tanh", "elu", "relu"), skip=None):
    """Random MADE keyword arguments.

    width: "any", "wide" (every layer can hold every useful degree) or "narrow"
    (every layer is too narrow to).
    """
    input_dim = draw(st.integers(3 if width == "narrow" else 1, 30))
    context_dim = draw(st.sampled_from([0, 0, 1, 3]))
    needed = width_keeping_everything(input_dim, context_dim)
    if width == "wide":
        widths = st.integers(needed, needed + 10)
    elif width == "narrow":
        widths = st.integers(1, needed - 1)
    else:
        widths = st.integers(1, 2 * input_dim + 2)
    num_layers = draw(st.integers(1, 3))
    residual = draw(st.booleans())
    hidden = [draw(widths)] * num_layers if residual else [draw(widths) for _ in range(num_layers)]
    order = draw(st.sampled_from(ORDER_KINDS))
    if order == "permutation":
        order = draw(st.permutations(range(input_dim)))
    return dict(
        input_dim=input_dim,
        hidden_dims=hidden,
        param_dims=draw(st.sampled_from(PARAM_DIMS)),
        context_dim=context_dim,
        order=order,
        degrees=draw(st.sampled_from(["even", "random"])),
        activation=draw(st.sampled_from(activations)),
        skip_connections=draw(st.booleans()) if skip is None else skip,
        residual=residual,
        num_masks=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def random_points(config, num_points=2):
    generator = torch.Generator().manual_seed(config["seed"])
    points = torch.randn(num_points, config["input_dim"], generator=generator, dtype=torch.float64)
    context = None
    if config["context_dim"]:
        context = torch.randn(config["context_dim"], generator=generator, dtype=torch.float64)
    return points, context


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


# -------------------------------------------------------- serialisation and dtype


def made_outputs_equal(a, b):
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))
    return not isinstance(b, tuple) and torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(order="natural"),
        dict(order="random", degrees="random", num_masks=3, active=2),
        dict(order="random", degrees="random", num_masks=3, active=1, context_dim=2, skip_connections=True),
        dict(order=[3, 1, 0, 4, 2], residual=True, param_dims=[1, 3]),
    ],
)
def test_state_dict_round_trip_into_a_made_with_another_seed(kwargs):
    kwargs = dict(kwargs)
    active = kwargs.pop("active", 0)
    common = {"input_dim": 5, "hidden_dims": [12, 12], "param_dims": [1, 1], **kwargs}
    source = MADE(**common, seed=0)
    source.set_mask(active)
    target = MADE(**common, seed=1)
    x = torch.randn(7, 5)
    context = torch.randn(7, 2) if common.get("context_dim") else None
    assert not made_outputs_equal(source(x, context), target(x, context))  # the test can fail

    target.load_state_dict(source.state_dict())
    assert int(target.mask_index) == active and target.active_mask == active
    assert torch.equal(target.permutation, source.permutation)
    assert made_outputs_equal(target(x, context), source(x, context))

    def sequential(made):  # walks the order the loaded structure gives
        return made.sequential(lambda params, i: torch.tanh(params[..., 0]) + i, (7,), context)[0]

    assert torch.equal(sequential(target), sequential(source))
    # every other mask set comes with the state_dict too
    for index in range(source.num_masks):
        source.set_mask(index)
        target.set_mask(index)
        assert torch.equal(target.permutation, source.permutation)
        assert made_outputs_equal(target(x, context), source(x, context))
        assert torch.equal(sequential(target), sequential(source))


def test_double_gives_float64_and_keeps_masks_bool():
    made = MADE(4, [16, 16], param_dims=[1, 1], context_dim=2, skip_connections=True, seed=0)
    x, context = torch.randn(3, 4), torch.randn(3, 2)
    loc32, _ = made(x, context)
    made.double()
    loc64, scale64 = made(x.double(), context.double())
    assert loc64.dtype == torch.float64 and scale64.dtype == torch.float64
    assert torch.allclose(loc64.float(), loc32, atol=1e-5)
    for layer in [made.input_layer, made.output_layer, made.skip_layer]:
        assert layer.mask.dtype == torch.bool
    assert made.orders.dtype == torch.long and made.mask_index.dtype == torch.long


@pytest.mark.parametrize("duplicate", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy])
def test_pickle_and_deepcopy_give_identical_outputs(duplicate):
    made = MADE(4, [10, 10], param_dims=[1, 3], context_dim=1, order="random", num_masks=2, seed=3)
    made.set_mask(1)
    clone = duplicate(made)
    x, context = torch.randn(5, 4), torch.randn(1)
    assert made_outputs_equal(clone(x, context), made(x, context))
    assert torch.equal(clone.permutation, made.permutation)
    clone.set_mask(0)
    made.set_mask(0)
    assert made_outputs_equal(clone(x, context), made(x, context))


# ------------------------------------------------------------------ output layout


@pytest.mark.parametrize("batch", [(), (2, 3)])
@pytest.mark.parametrize(
    "param_dims, expected",
    [
        ([1], "tensor"),
        ([3], [3]),
        ([1, 1], [None, None]),
        ([1, 3], [1, 3]),
        ([2, 1, 2], [2, 1, 2]),
    ],
)
def test_output_layout_follows_pyro(param_dims, expected, batch):
    """[1] -> (..., D); [p] -> (..., p, D); [1, 1, ...] -> tuple of (..., D);
    otherwise a tuple of (..., p_i, D)."""
    D = 4
    made = MADE(D, [8], param_dims=param_dims, seed=0)
    x = torch.randn(*batch, D)
    out = made(x)
    raw = made.raw_output(x)
    assert raw.shape == (*batch, sum(param_dims), D)
    if expected == "tensor":
        assert isinstance(out, torch.Tensor) and out.shape == (*batch, D)
        assert torch.equal(out, raw[..., 0, :])
    elif expected == [3]:
        assert isinstance(out, torch.Tensor) and out.shape == (*batch, 3, D)
        assert torch.equal(out, raw)
    else:
        assert isinstance(out, tuple) and len(out) == len(param_dims)
        start = 0
        for part, p, shape in zip(out, param_dims, expected):
            if shape is None:
                assert part.shape == (*batch, D)
                assert torch.equal(part, raw[..., start, :])
            else:
                assert part.shape == (*batch, shape, D)
                assert torch.equal(part, raw[..., start : start + p, :])
            start += p


def test_context_broadcasts_against_the_batch():
    made = MADE(3, [8], param_dims=[1, 1], context_dim=2, seed=0)
    x, context = torch.randn(5, 3), torch.randn(2)
    loc, log_scale = made(x, context)
    assert loc.shape == (5, 3) and log_scale.shape == (5, 3)
    expanded, _ = made(x, context.expand(5, 2))
    assert torch.equal(loc, expanded)
    # and the other way: one x, a batch of contexts
    contexts = torch.randn(4, 2)
    loc, _ = made(x[0], contexts)
    assert loc.shape == (4, 3)
    assert torch.allclose(loc[1], made(x[0], contexts[1])[0])


def test_context_changes_the_output():
    made = MADE(3, [8], context_dim=2, seed=0)
    x = torch.randn(3)
    assert not torch.equal(made(x, torch.zeros(2)), made(x, torch.ones(2)))


# ---------------------------------------------------------------------- mask sets


def test_set_mask_changes_the_permutation_for_random_orders():
    made = MADE(6, [12], order="random", num_masks=5, seed=0)
    assert len({tuple(order.tolist()) for order in made.orders}) > 1
    for index in range(5):
        made.set_mask(index)
        assert int(made.mask_index) == index
        assert torch.equal(made.permutation, made.orders[index])
        assert torch.equal(made.get_permutation(), made.orders[index])
        assert sorted(made.permutation.tolist()) == list(range(6))
        # the layers hold the masks of the active set
        for layer, mask in zip([made.input_layer, made.output_layer], [made.masks()[0], made.masks()[-1]]):
            assert torch.equal(layer.mask, mask)


def test_explicit_order_is_shared_by_every_mask_set():
    made = MADE(4, [8], order=[2, 0, 3, 1], degrees="random", num_masks=3, seed=0)
    for index in range(3):
        assert made.orders[index].tolist() == [2, 0, 3, 1]
    hidden = {tuple(made.degrees(index)[1].tolist()) for index in range(3)}
    assert len(hidden) > 1  # connectivity-agnostic: the hidden degrees differ


def test_next_mask_cycles():
    made = MADE(4, [8], order="random", num_masks=3, seed=0)
    assert int(made.mask_index) == 0
    assert [made.next_mask() for _ in range(4)] == [1, 2, 0, 1]
    assert int(made.mask_index) == 1


def test_same_seed_gives_identical_masks():
    kwargs = dict(input_dim=7, hidden_dims=[9, 9], order="random", degrees="random", num_masks=3)
    a, b = MADE(**kwargs, seed=11), MADE(**kwargs, seed=11)
    c = MADE(**kwargs, seed=torch.Generator().manual_seed(11))  # a Generator works like its seed
    other = MADE(**kwargs, seed=12)
    for index in range(3):
        for made in (b, c):
            assert all(torch.equal(u, v) for u, v in zip(made.masks(index), a.masks(index)))
            assert torch.equal(made.orders[index], a.orders[index])
    assert not all(torch.equal(u, v) for u, v in zip(other.masks(0), a.masks(0)))


def test_masks_are_deterministic_by_index():
    made = MADE(5, [10, 10], param_dims=[1, 1], order="random", degrees="random", num_masks=3, seed=0)
    x = torch.randn(4, 5)
    original = made(x)
    made.set_mask(2)
    assert not made_outputs_equal(made(x), original)
    made.set_mask(0)
    assert made_outputs_equal(made(x), original)


def test_masks_of_an_inactive_set_do_not_change_the_active_one():
    made = MADE(5, [10], order="random", num_masks=3, seed=0)
    x = torch.randn(2, 5)
    before = made(x)
    made.masks(2), made.connectivity(2), made.lost_dependencies(2), made.degrees(2)
    assert int(made.mask_index) == 0
    assert torch.equal(made(x), before)


# ---------------------------------------------------------- sequential direction


@given(config=made_configs(), batch=st.sampled_from([(), (3,), (2, 3)]), grad=st.booleans(), data=st.data())
@settings(max_examples=40, deadline=None)
def test_sequential_fast_equals_naive(config, batch, grad, data):
    """With gradients the fast pass joins its columns; without, it writes them in place."""
    torch.set_grad_enabled(grad)
    try:
        _check_sequential_fast_equals_naive(config, batch, data)
    finally:
        torch.set_grad_enabled(True)


def _check_sequential_fast_equals_naive(config, batch, data):
    torch.manual_seed(config["seed"])
    made, _ = build(**config)
    made.double()
    made.set_mask(data.draw(st.integers(0, made.num_masks - 1)))
    generator = torch.Generator().manual_seed(config["seed"])
    noise = torch.randn(*batch, config["input_dim"], generator=generator, dtype=torch.float64)
    context = None
    if config["context_dim"]:
        # sometimes one shared context, sometimes a batch of contexts to broadcast
        context_batch = data.draw(st.sampled_from([(), batch]))
        context = torch.randn(*context_batch, config["context_dim"], generator=generator, dtype=torch.float64)

    def run(method):
        visited = []

        def step(params, i):
            visited.append(i)
            assert params.shape == (*batch, sum(config["param_dims"]))
            # an affine step that uses the first and the last parameter, like MAF sampling
            return params[..., 0] + torch.exp(0.5 * torch.tanh(params[..., -1])) * noise[..., i]

        x, params = made.sequential(step, batch_shape=batch, context=context, method=method)
        return x, params, visited

    x_fast, params_fast, visited_fast = run("fast")
    x_naive, params_naive, visited_naive = run("naive")
    assert visited_fast == visited_naive == made.permutation.tolist()
    assert x_fast.shape == (*batch, config["input_dim"])
    assert params_fast.shape == (*batch, sum(config["param_dims"]), config["input_dim"])
    assert torch.allclose(x_fast, x_naive, rtol=0, atol=1e-10)
    assert torch.allclose(params_fast, params_naive, rtol=0, atol=1e-10)
    # the returned params are the MADE outputs at the built x
    assert torch.allclose(params_fast, made.raw_output(x_fast, context), rtol=0, atol=1e-10)


def test_sequential_inverts_an_affine_flow():
    """MAF: x_i = loc_i + exp(log_scale_i) * z_i; then z is recovered in one pass."""
    made = MADE(5, [16, 16], param_dims=[1, 1], order="random", seed=0).double()
    z = torch.randn(8, 5, dtype=torch.float64)
    x, params = made.sequential(lambda p, i: p[..., 0] + torch.exp(p[..., 1]) * z[..., i], batch_shape=(8,))
    loc, log_scale = made(x)
    assert torch.allclose((x - loc) * torch.exp(-log_scale), z, atol=1e-12)


def test_sequential_with_a_single_input_and_context():
    made = MADE(1, [3], param_dims=[2], context_dim=2, seed=0).double()
    context = torch.randn(4, 2, dtype=torch.float64)
    x, params = made.sequential(lambda p, i: p[..., 1], context=context)
    assert x.shape == (4, 1) and params.shape == (4, 2, 1)
    assert torch.equal(x[..., 0], params[..., 1, 0])
    naive_x, _ = made.sequential(lambda p, i: p[..., 1], context=context, method="naive")
    assert torch.allclose(x, naive_x, atol=1e-12)


# ------------------------------------------------------------------- bad inputs


GOOD = dict(input_dim=3, hidden_dims=[8])


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(input_dim=0), ValueError, "input_dim"),
        (dict(input_dim=-1), ValueError, "input_dim"),
        (dict(input_dim=2.5), TypeError, "input_dim"),
        (dict(input_dim=True), TypeError, "input_dim"),
        (dict(hidden_dims=[]), ValueError, "hidden_dims"),
        (dict(hidden_dims=[0]), ValueError, "hidden_dims"),
        (dict(hidden_dims=[-3]), ValueError, "hidden_dims"),
        (dict(hidden_dims=[8, 2.0]), (TypeError, ValueError), "hidden_dims"),  # either is clear
        (dict(hidden_dims="abc"), TypeError, "hidden_dims"),
        (dict(hidden_dims=8), TypeError, "hidden_dims"),
        (dict(param_dims=[]), ValueError, "param_dims"),
        (dict(param_dims=[1, 0]), ValueError, "param_dims"),
        (dict(context_dim=-1), ValueError, "context_dim"),
        (dict(order=[0, 0, 1]), ValueError, "order"),
        (dict(order=[0, 1]), ValueError, "order"),
        (dict(order=[0, 1, 5]), ValueError, "order"),
        (dict(order=[0.0, 1.0, 2.0]), TypeError, "order"),
        (dict(order=torch.tensor([0.0, 1.0, 2.0])), TypeError, "order"),
        (dict(order="sideways"), ValueError, "order"),
        (dict(degrees="foo"), ValueError, "degrees"),
        (dict(activation="foo"), ValueError, "activation"),
        (dict(activation=3), TypeError, "activation"),
        (dict(hidden_dims=[8, 9], residual=True), ValueError, "residual"),
        (dict(num_masks=0), ValueError, "num_masks"),
        (dict(num_masks=1.5), TypeError, "num_masks"),
        (dict(seed="abc"), TypeError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(seed=True), TypeError, "seed"),
        (dict(on_lost_dependencies="ignore"), ValueError, "on_lost_dependencies"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, error, name):
    with pytest.raises(error, match=name):
        MADE(**{**GOOD, **kwargs})


@pytest.mark.parametrize("activation", ["tanh", nn.Tanh(), nn.Tanh, torch.tanh])
def test_activation_can_be_a_name_module_class_or_callable(activation):
    made = MADE(3, [8], activation=activation, seed=0)
    reference = MADE(3, [8], activation="tanh", seed=0)
    reference.load_state_dict(made.state_dict())
    x = torch.randn(2, 3)
    assert torch.allclose(made(x), reference(x))


@pytest.fixture
def plain_made():
    return MADE(3, [8], seed=0)


@pytest.fixture
def conditional_made():
    return MADE(3, [8], context_dim=2, seed=0)


def test_x_with_wrong_last_dim(plain_made):
    with pytest.raises(ValueError, match=r"\bx\b"):
        plain_made(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"\bx\b"):
        plain_made(torch.tensor(1.0))  # a scalar has no last dim


def test_x_integer_dtype(plain_made):
    with pytest.raises(TypeError, match=r"\bx\b"):
        plain_made(torch.ones(5, 3, dtype=torch.long))


def test_x_not_a_tensor(plain_made):
    with pytest.raises(TypeError, match=r"\bx\b"):
        plain_made([[0.0, 1.0, 2.0]])


def test_x_dtype_must_match_the_made(plain_made):
    with pytest.raises(TypeError, match=r"\bx\b"):
        plain_made(torch.randn(5, 3, dtype=torch.float64))


def test_context_dtype_must_match_x(conditional_made):
    with pytest.raises(TypeError, match="context"):
        conditional_made(torch.randn(5, 3), torch.randn(5, 2, dtype=torch.float64))


def test_context_given_to_a_made_without_context(plain_made):
    with pytest.raises(ValueError, match="context"):
        plain_made(torch.randn(5, 3), torch.randn(5, 2))


def test_context_missing(conditional_made):
    with pytest.raises(ValueError, match="context"):
        conditional_made(torch.randn(5, 3))


def test_context_wrong_last_dim(conditional_made):
    with pytest.raises(ValueError, match="context"):
        conditional_made(torch.randn(5, 3), torch.randn(5, 3))


def test_context_integer_dtype(conditional_made):
    with pytest.raises(TypeError, match="context"):
        conditional_made(torch.randn(5, 3), torch.ones(5, 2, dtype=torch.long))


def test_context_batch_shape_not_broadcastable(conditional_made):
    with pytest.raises(ValueError, match="context"):
        conditional_made(torch.randn(5, 3), torch.randn(4, 2))


@pytest.mark.parametrize("index", [3, -1, True, 1.0, "0"])
def test_set_mask_out_of_range(index):
    made = MADE(3, [8], num_masks=3, seed=0)
    with pytest.raises(ValueError, match="index"):
        made.set_mask(index)
    assert int(made.mask_index) == 0


def test_sequential_batch_shape_may_be_an_int(plain_made):
    step = lambda p, i: p[..., 0]  # noqa: E731
    x, _ = plain_made.sequential(step, batch_shape=4)
    assert x.shape == (4, plain_made.input_dim)
    with pytest.raises(TypeError, match="batch_shape: expected"):
        plain_made.sequential(step, batch_shape=4.0)


def test_numpy_input_is_a_type_error_that_suggests_torch_as_tensor(plain_made):
    array = torch.zeros(2, plain_made.input_dim).numpy()
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got numpy.ndarray; .*torch.as_tensor\(x\)"):
        plain_made(array)


def test_sequential_bad_method(plain_made):
    with pytest.raises(ValueError, match="method"):
        plain_made.sequential(lambda p, i: p[..., 0], batch_shape=(2,), method="foo")


def test_sequential_context_errors(plain_made, conditional_made):
    step = lambda p, i: p[..., 0]  # noqa: E731
    with pytest.raises(ValueError, match="context"):
        plain_made.sequential(step, batch_shape=(2,), context=torch.randn(2))
    with pytest.raises(ValueError, match="context"):
        conditional_made.sequential(step, batch_shape=(2,))
    with pytest.raises(ValueError, match="context"):
        conditional_made.sequential(step, batch_shape=(2,), context=torch.randn(3))


def test_sequential_context_batch_shape_not_broadcastable(conditional_made):
    with pytest.raises(ValueError, match="context"):
        conditional_made.sequential(lambda p, i: p[..., 0], batch_shape=(4,), context=torch.randn(3, 2))


@given(config=made_configs(), data=st.data())
@settings(max_examples=25, deadline=None)
def test_sequential_fast_reads_no_weight_outside_its_masks(config, data):
    """The fast pass reads the raw weights: every slice it reads lies inside its mask, so
    huge weights where the masks are False change nothing."""
    torch.manual_seed(config["seed"])
    made, _ = build(**config)
    made.double()
    made.set_mask(data.draw(st.integers(0, made.num_masks - 1)))
    context = torch.randn(3, config["context_dim"], dtype=torch.float64) if config["context_dim"] else None

    def step(params, i):
        return params[..., 0] + torch.tanh(params[..., -1])

    reference = made.sequential(step, (3,), context, method="naive")
    with torch.no_grad():
        for layer in made._masked_layers():
            layer.weight.masked_fill_(~layer.mask, 1e6)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            fast = made.sequential(step, (3,), context, method="fast")
        for got, want in zip(fast, reference):
            assert torch.allclose(got, want, rtol=0, atol=1e-10)


def test_sequential_fast_gradients_equal_the_naive_ones():
    torch.manual_seed(0)
    made = MADE(5, [12, 12], param_dims=[1, 1], context_dim=2, skip_connections=True, seed=0).double()
    context = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(4, 5, dtype=torch.float64)

    def gradients(method):
        x, params = made.sequential(lambda p, i: p[..., 0] + p[..., 1].exp() * noise[..., i], (4,), context, method)
        inputs = [*made.parameters(), context]
        return torch.autograd.grad(x.square().sum() + params.sum(), inputs)

    for fast, naive in zip(gradients("fast"), gradients("naive")):
        assert torch.allclose(fast, naive, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ masked products
@pytest.mark.parametrize("product", ["blocked", "dense"])
def test_every_product_gives_the_auto_products_outputs_and_gradients(product):
    torch.manual_seed(0)
    auto = MADE(6, [40, 40], param_dims=[1, 1], skip_connections=True, seed=0).double()
    forced = copy.deepcopy(auto)
    forced.product = product
    assert {layer.product.method for layer in forced._masked_layers()} == {product}
    assert auto.product == "auto" and forced.product == product
    x = torch.randn(300, 6, dtype=torch.float64)
    outputs = [made.raw_output(x) for made in (auto, forced)]
    assert torch.allclose(outputs[0], outputs[1], rtol=0, atol=1e-12)
    grads = [torch.autograd.grad(out.square().sum(), list(made.parameters())) for out, made in zip(outputs, (auto, forced))]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_the_product_option_reaches_every_layer_and_is_checked():
    made = MADE(4, [16], skip_connections=True, product="blocked", seed=0)
    assert [layer.product.method for layer in made._masked_layers()] == ["blocked"] * 3
    config = flowkit.nn.MADEConfig(hidden_dims=[8], product="dense")
    assert config.build(3, param_dims=[1]).product == "dense"
    for bad in ("fast", None):
        with pytest.raises(ValueError, match="product: expected one of"):
            MADE(4, [16], product=bad)
        with pytest.raises(ValueError, match="product: expected one of"):
            flowkit.nn.MADEConfig(product=bad)
        with pytest.raises(ValueError, match="product: expected one of"):
            made.product = bad
        with pytest.raises(ValueError, match="product: expected one of"):
            MaskedLinear(torch.ones(2, 2, dtype=torch.bool), product=bad)
    assert made.product == "blocked"


def test_switching_mask_sets_hands_each_set_its_blocks(monkeypatch):
    """Cycling mask sets per minibatch searches each set's blocks once, not at every switch,
    and the blocks the layers use are always those of their current masks."""
    from flowkit.nn import _blocked

    made = MADE(6, [32, 32], param_dims=[1, 1], order="random", num_masks=3, product="blocked", seed=0)
    searches = []
    search = _blocked.MaskBlocks.of
    monkeypatch.setattr(_blocked.MaskBlocks, "of", staticmethod(lambda mask, *a: searches.append(1) or search(mask, *a)))
    x = torch.randn(5, 6)
    for _ in range(3):
        for index in range(3):
            made.set_mask(index)
            made(x)
            for layer in made._masked_layers():
                assert layer.product.known_blocks(layer.mask) == search(layer.mask)
    assert len(searches) == 3 * 3
    made.load_state_dict(made.state_dict())  # the masks may be others: searched again
    made.set_mask(1)
    made(x)
    assert len(searches) == 3 * 3 + 3


# ------------------------------------------------------------ mask resampling, orthogonal init


def resampling_made(**kwargs):
    kwargs = {"input_dim": 5, "hidden_dims": [12, 12], "param_dims": [1, 2], "order": "random", "seed": 0, **kwargs}
    return MADE(kwargs.pop("input_dim"), kwargs.pop("hidden_dims"), **kwargs)


def test_resample_masks_is_reproducible_from_a_seed():
    a, b = resampling_made(), resampling_made()
    a.resample_masks(torch.Generator().manual_seed(7))
    b.resample_masks(torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a.masks(), b.masks()))
    assert torch.equal(a.permutation, b.permutation)
    b.resample_masks(torch.Generator().manual_seed(8))
    assert not all(torch.equal(x, y) for x, y in zip(a.masks(), b.masks()))


@pytest.mark.parametrize("skip_connections", [False, True])
@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("residual", [False, True])
def test_resampled_masks_are_autoregressive(skip_connections, context_dim, residual):
    made = resampling_made(skip_connections=skip_connections, context_dim=context_dim, residual=residual)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        made.resample_masks(generator)
        report = flowkit.check_autoregressive(made)
        assert report.autoregressive, report
        assert made.active_mask == -1 and int(made.mask_index) == -1


def test_resampled_structure_is_what_the_made_reports():
    made = resampling_made()
    made.resample_masks(torch.Generator().manual_seed(2))
    input_degrees, *hidden = made.degrees()
    assert torch.equal(made.permutation, M.order_from_degrees(input_degrees))
    assert torch.equal(made.masks()[0], M.hidden_mask(input_degrees, hidden[0]))
    assert any(not bool((h[1:] >= h[:-1]).all()) for h in hidden)  # units come unsorted
    assert made.connectivity().shape == (5, 5) and made.lost_dependencies() == []


def test_resampling_connectivity_only_keeps_the_order():
    made = resampling_made()
    made.set_mask(0)
    order = made.permutation.clone()
    first = [m.clone() for m in made.masks()]
    made.resample_masks(torch.Generator().manual_seed(3), order=False)
    assert torch.equal(made.permutation, order)
    assert not all(torch.equal(x, y) for x, y in zip(first, made.masks()))


def test_resample_masks_emits_no_lost_dependency_warning():
    made = MADE(30, [8], skip_connections=True, seed=0, on_lost_dependencies="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made.resample_masks(torch.Generator().manual_seed(0))


def test_set_mask_goes_back_from_a_resampled_structure():
    made = resampling_made(num_masks=2)
    expected = [m.clone() for m in made.masks(1)]
    made.resample_masks(torch.Generator().manual_seed(4))
    made.set_mask(1)
    assert made.active_mask == 1 and all(torch.equal(x, y) for x, y in zip(expected, made.masks()))
    assert torch.equal(made.permutation, made.orders[1])


def test_resampled_structure_survives_state_dict_and_deepcopy():
    made = resampling_made()
    made.resample_masks(torch.Generator().manual_seed(5))
    target = resampling_made(seed=1)
    target.load_state_dict(made.state_dict())
    assert target.active_mask == -1 and torch.equal(target.permutation, made.permutation)
    x = torch.randn(3, 5)
    assert torch.equal(target.raw_output(x), made.raw_output(x))
    copied = copy.deepcopy(made)
    step = lambda p, i: p[..., 0]  # noqa: E731
    assert torch.equal(copied.sequential(step, (2,))[0], made.sequential(step, (2,))[0])


@pytest.mark.parametrize("context_dim", [0, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_fast_sequential_matches_naive_after_resampling(context_dim, residual):
    """Resampled units are unsorted: the fast pass must reorder them."""
    made = resampling_made(input_dim=6, hidden_dims=[16, 16], skip_connections=True, context_dim=context_dim,
                           residual=residual).double()  # fmt: skip
    context = torch.randn(4, context_dim, dtype=torch.float64) if context_dim else None
    step = lambda params, i: torch.tanh(params[..., 0] + 0.5 * params[..., 1])  # noqa: E731
    generator = torch.Generator().manual_seed(6)
    for _ in range(3):
        made.resample_masks(generator)
        fast_x, fast_params = made.sequential(step, (4,), context, method="fast")
        naive_x, naive_params = made.sequential(step, (4,), context, method="naive")
        assert torch.allclose(fast_x, naive_x, atol=1e-10, rtol=0)
        assert torch.allclose(fast_params, naive_params, atol=1e-10, rtol=0)
        assert torch.allclose(fast_params, made.raw_output(fast_x, context), atol=1e-10, rtol=0)


def test_preserving_masks_restores_a_resampled_structure():
    made = resampling_made(num_masks=2)
    made.resample_masks(torch.Generator().manual_seed(8))
    before, order = [m.clone() for m in made.masks()], made.permutation.clone()
    with made.preserving_masks():
        made.set_mask(1)
        made.resample_masks(torch.Generator().manual_seed(9))
    assert made.active_mask == -1 and torch.equal(made.permutation, order)
    assert all(torch.equal(x, y) for x, y in zip(before, made.masks()))


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
def test_orthogonal_init_is_orthogonal_with_zero_bias(shape):
    torch.manual_seed(0)
    layer = MaskedLinear(torch.rand(shape) > 0.5, init="orthogonal")
    w = layer.weight.detach().double()
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T  # the fewer of rows and columns are orthonormal
    assert torch.allclose(gram, torch.eye(min(shape), dtype=torch.float64), atol=1e-5)
    assert torch.all(layer.bias == 0)


def test_made_init_orthogonal_reaches_every_masked_layer():
    torch.manual_seed(0)
    made = MADE(4, [16, 16], skip_connections=True, init="orthogonal", seed=0)
    for layer in [made.input_layer, *made.hidden_layers, made.output_layer, made.skip_layer]:
        w = layer.weight.detach().double()
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        assert torch.allclose(gram, torch.eye(min(w.shape), dtype=torch.float64), atol=1e-5)
    assert flowkit.MADEConfig(hidden_dims=[8], init="orthogonal").build(3, [1]).input_layer.init == "orthogonal"


def test_bad_init_is_rejected():
    with pytest.raises(ValueError, match="init: expected one of"):
        MADE(3, [8], init="xavier")
    with pytest.raises(ValueError, match="init: expected one of"):
        flowkit.MADEConfig(init="xavier")
    with pytest.raises(ValueError, match="init: expected one of"):
        MaskedLinear(torch.ones(2, 2, dtype=torch.bool), init="xavier")


def test_state_dict_keys_change_only_once_masks_are_resampled():
    made = resampling_made()
    keys = set(made.state_dict())
    assert not any(key.startswith("sampled_") for key in keys)
    made.resample_masks(torch.Generator().manual_seed(0))
    assert set(made.state_dict()) - keys == {"sampled_order", "sampled_hidden_degrees_0", "sampled_hidden_degrees_1"}
    resampled = made.state_dict()
    fresh = resampling_made(seed=1)
    fresh.load_state_dict(resampled)  # strict: the buffers are added
    assert fresh.active_mask == -1 and torch.equal(fresh.permutation, made.permutation)
    fresh.load_state_dict(resampling_made(seed=2).state_dict())  # strict: and dropped again
    assert set(fresh.state_dict()) == keys and fresh.active_mask == 0


def test_resampled_masks_take_the_dense_product_without_a_search(monkeypatch):
    """Resampled units are unsorted, so their masks have no blocks worth skipping: each layer
    is handed one whole block and "auto" multiplies densely, with no search per update."""
    from flowkit.nn import _blocked

    made = MADE(6, [64, 64], order="random", seed=0)
    made.resample_masks(torch.Generator().manual_seed(1))

    def no_search(*args, **kwargs):
        raise AssertionError("MaskBlocks.of was called after resample_masks")

    monkeypatch.setattr(_blocked.MaskBlocks, "of", staticmethod(no_search))
    x = torch.randn(4096, 6)
    for layer in made._masked_layers():
        assert layer.product.known_blocks(layer.mask) is not None
        assert layer.product.choice(torch.randn(4096, layer.in_features), layer.mask) is None
    made(x)  # the whole forward pass runs without a search
