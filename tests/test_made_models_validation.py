"""MADE density models: bad inputs to completion, log_prob and the constructors are named
in clear errors."""

import math

import pytest
import torch

from flowkit import MADE, BernoulliMADE, CategoricalMADE, GaussianMADE, MADEConfig, MixtureMADE
from flowkit.nn import default_hidden_dims
from helpers import perturb_
from made_models_helpers import FAMILIES, K_CLASSES, data_for, make_model

# --------------------------------------------------------------- bad inputs


@pytest.fixture
def gaussian_model():
    return make_model("gaussian")


@pytest.mark.parametrize("observed", [torch.tensor([1, 0, 1, 0]), [True, False, True, False], torch.ones(4)])
def test_complete_observed_must_be_a_bool_tensor(gaussian_model, observed):
    with pytest.raises(TypeError, match="observed"):
        gaussian_model.complete(data_for("gaussian", (3,)), observed)


@pytest.mark.parametrize("shape", [(3,), (5,), (3, 5), ()])
def test_complete_observed_with_a_wrong_shape(gaussian_model, shape):
    with pytest.raises(ValueError, match="observed"):
        gaussian_model.complete(data_for("gaussian", (3,)), torch.zeros(shape, dtype=torch.bool))


def test_complete_unknown_method(gaussian_model):
    with pytest.raises(ValueError, match="method"):
        gaussian_model.complete(data_for("gaussian", (3,)), torch.zeros(4, dtype=torch.bool), method="foo")


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, float("nan")])
def test_bernoulli_rejects_non_binary_data(value):
    model = make_model("bernoulli")
    x = torch.zeros(3, 4, dtype=torch.float64)
    x[1, 2] = value
    with pytest.raises(ValueError, match="x"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="x"):
        model.complete(x, torch.zeros(4, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bool])
def test_categorical_rejects_non_integer_data(dtype):
    model = make_model("categorical")
    with pytest.raises(TypeError, match="x"):
        model.log_prob(torch.zeros(3, 4, dtype=dtype))


@pytest.mark.parametrize("value", [-1, K_CLASSES, 10])
def test_categorical_rejects_out_of_range_classes(value):
    model = make_model("categorical")
    x = torch.zeros(3, 4, dtype=torch.long)
    x[0, 1] = value
    with pytest.raises(ValueError, match="x"):
        model.log_prob(x)


def test_categorical_accepts_other_integer_dtypes():
    model = perturb_(make_model("categorical"), scale=1.0)
    x = data_for("categorical", (5,))
    assert torch.allclose(model.log_prob(x.int()), model.log_prob(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_data_with_a_wrong_last_dimension(family):
    model = make_model(family)
    with pytest.raises(ValueError, match="x"):
        model.log_prob(data_for(family, (3,), input_dim=5))


@pytest.mark.parametrize("family", FAMILIES)
def test_numpy_data_is_a_type_error_that_suggests_torch_as_tensor(family):
    model = make_model(family)
    array = data_for(family, (3,)).numpy()
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got numpy.ndarray; .*torch.as_tensor\(x\)"):
        model.log_prob(array)
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got numpy.ndarray"):
        model.complete(array, torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("family", ["gaussian", "mixture"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_real_data_must_be_finite(family, value):
    model = make_model(family)
    x = data_for(family, (3,))
    x[1, 0] = value
    with pytest.raises(ValueError, match="x: holds inf or nan"):
        model.log_prob(x)


@pytest.mark.parametrize("num_classes", [1, 0, -2, 2.0, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        CategoricalMADE(4, [8], num_classes=num_classes)


@pytest.mark.parametrize("num_components", [0, -1, 2.5, True])
def test_bad_num_components(num_components):
    with pytest.raises(ValueError, match="num_components"):
        MixtureMADE(4, [8], num_components=num_components)


# --------------------------------------------------------------- MADE options: in the conditioner, once

CONSTRUCTORS = {  # each family with its own required options; MADE options go in **options
    "bernoulli": lambda *args, **options: BernoulliMADE(*args, **options),
    "gaussian": lambda *args, **options: GaussianMADE(*args, **options),
    "mixture": lambda *args, **options: MixtureMADE(*args, num_components=2, **options),
    "categorical": lambda *args, **options: CategoricalMADE(*args, num_classes=3, **options),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "option", [dict(order="random"), dict(num_masks=2), dict(skip_connections=True), dict(param_dims=[1])]
)
def test_a_made_option_outside_the_conditioner_is_a_type_error(family, option):
    # formerly **made_kwargs passed them on to MADE; param_dims collided with the family's own
    with pytest.raises(TypeError, match=next(iter(option))):
        CONSTRUCTORS[family](3, [8], **option)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_conditioner_options_reach_the_made(family):
    options = dict(order="reversed", degrees="random", activation="tanh", skip_connections=True, num_masks=2)
    model = CONSTRUCTORS[family](3, [8, 8], context_dim=2, conditioner=MADEConfig(init="orthogonal", **options), seed=0)
    reference = MADE(3, [8, 8], model.made.param_dims, context_dim=2, init="orthogonal", seed=0, **options)
    assert sorted(model.made.state_dict()) == sorted(reference.state_dict())
    for index in range(2):
        model.made.set_mask(index), reference.set_mask(index)
        assert all(torch.equal(a, b) for a, b in zip(model.made.masks(), reference.masks()))
    assert type(model.made.activation) is torch.nn.Tanh and model.made.input_layer.init == "orthogonal"


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_dims_come_from_the_argument_or_the_conditioner_once(family):
    assert CONSTRUCTORS[family](3, [5], seed=0).made.hidden_dims == [5]
    assert CONSTRUCTORS[family](3, None, conditioner=MADEConfig([7]), seed=0).made.hidden_dims == [7]
    assert CONSTRUCTORS[family](3, None, seed=0).made.hidden_dims == default_hidden_dims(3)
    with pytest.raises(ValueError, match="hidden_dims: given both"):
        CONSTRUCTORS[family](3, [5], conditioner=MADEConfig([7]))
    with pytest.raises(TypeError, match="conditioner: expected a flowkit.nn.MADEConfig"):
        CONSTRUCTORS[family](3, [5], conditioner={"order": "random"})
