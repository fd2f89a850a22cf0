"""MADE inputs and outputs: serialisation and dtype, Pyro's output layouts, the context, and
input validation (constructor arguments, forward and sequential inputs)."""

import copy
import pickle

import pytest
import torch
from torch import nn

from flowkit import MADE
from made_helpers import made_outputs_equal

# -------------------------------------------------------- serialisation and dtype


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


def graph_node_names(tensor: torch.Tensor) -> set[str]:
    """The names of every node of the autograd graph that produced ``tensor``."""
    names, seen, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(child for child, _ in node.next_functions)
    return names


@pytest.mark.parametrize("shape", [(5,), (3, 5)], ids=["unbatched", "batched"])
def test_relu_is_never_applied_in_place_on_a_view(shape):
    """An unbatched input's layer output is a view of the product; an in-place ReLU on it
    would make autograd copy the gradient back into the viewed tensor (CopySlices)."""
    made = MADE(5, [16, 16], param_dims=[1, 1], seed=0)
    x = torch.randn(shape)
    names = graph_node_names(made(x)[0])
    assert "ReluBackward0" in names
    assert "CopySlices" not in names and "AsStridedBackward0" not in names
