"""Bad inputs to the flow builders and to flows are named in clear errors."""

import math

import pytest
import torch

import flowkit
from flow_helpers import BUILDERS

pytestmark = pytest.mark.usefixtures("clean_param_store")


# -------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_context_errors_name_context(kind):
    conditional = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], context_dim=2, seed=0)
    plain = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], seed=0)
    x = torch.randn(4, 3)
    calls = [
        lambda: conditional.log_prob(x),  # missing
        lambda: conditional.sample((2,)),
        lambda: conditional.rsample_and_log_prob((2,)),
        lambda: conditional(),
        lambda: plain.log_prob(x, torch.randn(4, 2)),  # unexpected
        lambda: plain.sample((2,), context=torch.randn(2)),
        lambda: conditional.log_prob(x, torch.randn(4, 3)),  # wrong size
        lambda: conditional.sample(context=torch.randn(4, 1)),
        lambda: conditional.log_prob(x, torch.tensor(1.0)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="context"):
            call()


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_x_errors_name_x(kind):
    flow = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], seed=0)
    for bad in (torch.randn(4, 2), torch.randn(4, 4), torch.tensor(1.0)):
        with pytest.raises(ValueError, match="x"):
            flow.log_prob(bad)
    for bad in ([0.0, 1.0, 2.0], torch.ones(4, 3, dtype=torch.long)):
        with pytest.raises(TypeError, match="x"):
            flow.log_prob(bad)
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got list; convert it with torch.as_tensor"):
        flow.log_prob([0.0, 1.0, 2.0])
    for value in (math.nan, math.inf):
        with pytest.raises(ValueError, match="x: holds inf or nan"):
            flow.log_prob(torch.tensor([[0.0, value, 1.0]]))


@pytest.mark.parametrize(
    "model_dtype, input_dtype",
    [(torch.float32, torch.float64), (torch.float64, torch.float32), (torch.float64, torch.float16)],
)
def test_x_and_context_of_another_dtype_get_one_message(model_dtype, input_dtype):
    """The same TypeError for MAF and IAF, for x and for the context of every entry,
    raised before any arithmetic (a .double() IAF once promoted float32 silently)."""
    def message(name):
        return f"{name}: dtype {input_dtype} does not match the model's {model_dtype}; convert one of them"

    for kind in ("maf", "iaf"):
        plain = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], seed=0).to(model_dtype)
        conditional = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], context_dim=2, seed=0).to(model_dtype)
        x, context = torch.zeros(4, 3, dtype=model_dtype), torch.zeros(4, 2, dtype=input_dtype)
        with pytest.raises(TypeError) as error:
            plain.log_prob(x.to(input_dtype))
        assert str(error.value) == message("x")
        calls = [
            lambda: conditional.log_prob(x, context),
            lambda: conditional.sample(context=context),
            lambda: conditional.rsample(context=context),
            lambda: conditional.rsample_and_log_prob(context=context),
            lambda: conditional(context),
        ]
        for call in calls:
            with pytest.raises(TypeError) as error:
                call()
            assert str(error.value) == message("context")


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_numpy_data_and_context_are_type_errors_that_suggest_torch_as_tensor(kind):
    np = pytest.importorskip("numpy")
    conditional = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], context_dim=2, seed=0)
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got numpy.ndarray; .*torch.as_tensor\(x\)"):
        conditional.log_prob(np.zeros((4, 3)), torch.zeros(4, 2))
    with pytest.raises(TypeError, match=r"context: expected a torch.Tensor, got numpy.ndarray; .*as_tensor"):
        conditional.log_prob(torch.zeros(4, 3), np.zeros((4, 2)))


SAMPLERS = ["sample", "rsample", "rsample_and_log_prob"]


@pytest.mark.parametrize("method", SAMPLERS)
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_sample_shape_may_be_an_int_or_any_shape(kind, method):
    flow = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], seed=0)

    def draw(sample_shape):
        out = getattr(flow, method)(sample_shape)
        return out[0] if method == "rsample_and_log_prob" else out

    for sample_shape in (5, (5,), [5], torch.Size([5])):
        assert draw(sample_shape).shape == (5, 3), sample_shape
    assert draw([2, 4]).shape == (2, 4, 3)
    assert draw(()).shape == (3,)


def test_sample_shape_int_works_for_a_mog_base_and_a_conditional_flow():
    assert flowkit.maf(2, num_transforms=1, hidden_dims=[8], base="mog", seed=0).sample(4).shape == (4, 2)
    conditional = flowkit.maf(2, num_transforms=1, hidden_dims=[8], context_dim=1, seed=0)
    assert conditional.sample(4, context=torch.zeros(3, 1)).shape == (4, 3, 2)


@pytest.mark.parametrize("method", SAMPLERS)
def test_bad_sample_shapes_name_sample_shape(method):
    flow = flowkit.iaf(2, num_transforms=1, hidden_dims=[8], seed=0)
    for bad in (2.0, "5", None, (2.0,), (True,)):
        with pytest.raises(TypeError, match="sample_shape: expected"):
            getattr(flow, method)(bad)
    with pytest.raises(ValueError, match=r"sample_shape: expected sizes >= 0, got \(-1,\)"):
        getattr(flow, method)(-1)


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_builder_argument_errors(kind):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_transforms"):
            BUILDERS[kind](3, num_transforms=bad, hidden_dims=[8])
    with pytest.raises(ValueError, match="permutation"):
        BUILDERS[kind](3, hidden_dims=[8], permutation="foo")
