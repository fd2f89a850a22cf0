"""The builders' options, grouped by what they configure: the conditioner (a MADEConfig),
the bijection, the flow. A state_dict saved from the affine flows before the one
autoregressive core was introduced still loads: its keys are unchanged."""

import pytest
import torch

import flowkit
from flowkit.nn import MADE, MADEConfig
from flowkit.transforms import (
    IAF,
    MAF,
    Affine,
    AffineIAF,
    AffineMAF,
    ConditionalAffineIAF,
    ConditionalAffineMAF,
    ConditionalIAF,
    ConditionalMAF,
    GatedAffine,
    RationalQuadraticSpline,
    affine_iaf,
    affine_maf,
    as_bijection,
    conditional_affine_iaf,
    conditional_affine_maf,
)

# The keys of these modules as the affine-only code (before MaskedAutoregressive) built them.
EXPECTED_STATE_DICT_KEYS = {
    "maf": [
        "base.made.hidden_degrees_0",
        "base.made.input_layer.bias",
        "base.made.input_layer.mask",
        "base.made.input_layer.weight",
        "base.made.mask_index",
        "base.made.orders",
        "base.made.output_layer.bias",
        "base.made.output_layer.mask",
        "base.made.output_layer.weight",
        "base_loc",
        "base_scale",
        "transforms.0.made.hidden_degrees_0",
        "transforms.0.made.input_layer.bias",
        "transforms.0.made.input_layer.mask",
        "transforms.0.made.input_layer.weight",
        "transforms.0.made.mask_index",
        "transforms.0.made.orders",
        "transforms.0.made.output_layer.bias",
        "transforms.0.made.output_layer.mask",
        "transforms.0.made.output_layer.weight",
        "transforms.1.beta",
        "transforms.1.log_gamma",
        "transforms.1.running_mean",
        "transforms.1.running_var",
        "transforms.2.inverse_permutation",
        "transforms.2.permutation",
        "transforms.3.made.hidden_degrees_0",
        "transforms.3.made.input_layer.bias",
        "transforms.3.made.input_layer.mask",
        "transforms.3.made.input_layer.weight",
        "transforms.3.made.mask_index",
        "transforms.3.made.orders",
        "transforms.3.made.output_layer.bias",
        "transforms.3.made.output_layer.mask",
        "transforms.3.made.output_layer.weight",
    ],
    "iaf": [
        "base_loc",
        "base_scale",
        "transforms.0.made.context_layer.weight",
        "transforms.0.made.context_skip_layer.weight",
        "transforms.0.made.hidden_degrees_0",
        "transforms.0.made.input_layer.bias",
        "transforms.0.made.input_layer.mask",
        "transforms.0.made.input_layer.weight",
        "transforms.0.made.mask_index",
        "transforms.0.made.orders",
        "transforms.0.made.output_layer.bias",
        "transforms.0.made.output_layer.mask",
        "transforms.0.made.output_layer.weight",
        "transforms.0.made.skip_layer.mask",
        "transforms.0.made.skip_layer.weight",
        "transforms.1.initialized",
        "transforms.1.log_scale",
        "transforms.1.shift",
        "transforms.2.inverse_permutation",
        "transforms.2.permutation",
        "transforms.3.made.context_layer.weight",
        "transforms.3.made.context_skip_layer.weight",
        "transforms.3.made.hidden_degrees_0",
        "transforms.3.made.input_layer.bias",
        "transforms.3.made.input_layer.mask",
        "transforms.3.made.input_layer.weight",
        "transforms.3.made.mask_index",
        "transforms.3.made.orders",
        "transforms.3.made.output_layer.bias",
        "transforms.3.made.output_layer.mask",
        "transforms.3.made.output_layer.weight",
        "transforms.3.made.skip_layer.mask",
        "transforms.3.made.skip_layer.weight",
    ],
    "affine_maf": [
        "made.hidden_degrees_0",
        "made.input_layer.bias",
        "made.input_layer.mask",
        "made.input_layer.weight",
        "made.mask_index",
        "made.orders",
        "made.output_layer.bias",
        "made.output_layer.mask",
        "made.output_layer.weight",
    ],
    "affine_iaf": [
        "made.hidden_degrees_0",
        "made.input_layer.bias",
        "made.input_layer.mask",
        "made.input_layer.weight",
        "made.mask_index",
        "made.orders",
        "made.output_layer.bias",
        "made.output_layer.mask",
        "made.output_layer.weight",
    ],
    "conditional_affine_maf": [
        "made.context_layer.weight",
        "made.hidden_degrees_0",
        "made.hidden_degrees_1",
        "made.hidden_layers.0.bias",
        "made.hidden_layers.0.mask",
        "made.hidden_layers.0.weight",
        "made.input_layer.bias",
        "made.input_layer.mask",
        "made.input_layer.weight",
        "made.mask_index",
        "made.orders",
        "made.output_layer.bias",
        "made.output_layer.mask",
        "made.output_layer.weight",
    ],
    "conditional_affine_iaf": [
        "made.context_layer.weight",
        "made.context_skip_layer.weight",
        "made.hidden_degrees_0",
        "made.input_layer.bias",
        "made.input_layer.mask",
        "made.input_layer.weight",
        "made.mask_index",
        "made.orders",
        "made.output_layer.bias",
        "made.output_layer.mask",
        "made.output_layer.weight",
        "made.skip_layer.mask",
        "made.skip_layer.weight",
    ],
}

BUILT_TODAY = {
    "maf": lambda: flowkit.maf(3, num_transforms=2, hidden_dims=[8], batch_norm=True, base="mog", seed=0),
    "iaf": lambda: flowkit.iaf(
        3, 2, context_dim=2, act_norm=True, conditioner=MADEConfig([8], skip_connections=True), seed=0
    ),
    "affine_maf": lambda: affine_maf(3, [8], seed=0),
    "affine_iaf": lambda: affine_iaf(3, [8], seed=0, stable=True),
    "conditional_affine_maf": lambda: conditional_affine_maf(3, 2, [8, 8], seed=0),
    "conditional_affine_iaf": lambda: conditional_affine_iaf(
        3, 2, [8], conditioner=MADEConfig(skip_connections=True), seed=0
    ),
}


@pytest.mark.parametrize("name", sorted(BUILT_TODAY))
def test_affine_state_dict_keys_are_those_of_the_affine_only_code(name):
    assert sorted(BUILT_TODAY[name]().state_dict()) == EXPECTED_STATE_DICT_KEYS[name]


@pytest.mark.parametrize("name", sorted(BUILT_TODAY))
def test_an_affine_state_dict_loads_strictly_into_a_flow_built_with_another_seed(name):
    saved = BUILT_TODAY[name]().state_dict()
    torch.manual_seed(123)
    fresh = BUILT_TODAY[name]()
    fresh.load_state_dict(saved)  # strict: every key present, none unexpected
    assert all(torch.equal(fresh.state_dict()[key], value) for key, value in saved.items())


def test_spline_state_dicts_hold_no_bound_or_bijection_tensor():
    spline = RationalQuadraticSpline(bins=4, bound=[2.0, 3.0, 4.0])
    flow = flowkit.maf(3, num_transforms=2, hidden_dims=[8], bijection=spline, seed=0)
    flow.log_prob(torch.zeros(3))  # the bound's per-device copy is made now
    assert all(".made." in key or key.startswith(("base_", "transforms.1.")) for key in flow.state_dict())


# ------------------------------------------------------------------------ the builders
def test_builders_take_no_made_keyword_arguments_any_more():
    # formerly routed to MADE by **made_kwargs, where param_dims collided with the builder's own
    for builder in (flowkit.maf, flowkit.iaf, flowkit.nsf):
        with pytest.raises(TypeError, match="param_dims"):
            builder(2, param_dims=[1])
        with pytest.raises(TypeError, match="activation"):
            builder(2, activation="tanh")
    with pytest.raises(TypeError, match="order"):
        affine_maf(2, [8], order="random")


@pytest.mark.parametrize("option", ["stable", "scale_floor", "sigmoid_bias"])
def test_flow_builders_take_affine_options_only_as_a_bijection(option):
    with pytest.raises(TypeError, match=option):
        flowkit.maf(2, **{option: True if option == "stable" else 0.1})


def test_conditioner_options_reach_every_step_and_not_the_mixture_base():
    conditioner = MADEConfig(hidden_dims=[6, 6], activation="tanh", residual=True, order="reversed")
    flow = flowkit.maf(3, num_transforms=2, conditioner=conditioner, permutation=None, base="mog", seed=0)
    steps = [t for t in flow.transforms if isinstance(t, AffineMAF)]
    assert len(steps) == 2
    for step in steps:
        assert step.made.hidden_dims == [6, 6] and step.made.residual
        assert isinstance(step.made.activation, torch.nn.Tanh)
        assert step.made.permutation.tolist() == [2, 1, 0]
    assert flow.base.made.hidden_dims == [6, 6]  # the steps' widths ...
    assert not flow.base.made.residual and flow.base.made.permutation.tolist() == [0, 1, 2]  # ... only


def test_hidden_dims_may_be_given_once():
    assert flowkit.maf(2, 1, [5], seed=0).transforms[0].made.hidden_dims == [5]
    assert flowkit.maf(2, 1, conditioner=MADEConfig([7]), seed=0).transforms[0].made.hidden_dims == [7]
    with pytest.raises(ValueError, match="hidden_dims: given both"):
        flowkit.maf(2, 1, [5], conditioner=MADEConfig([7]))


@pytest.mark.parametrize(
    "options, argument",
    [
        (dict(hidden_dims=[0]), "hidden_dims"),
        (dict(hidden_dims=[4, 6], residual=True), "hidden_dims"),
        (dict(degrees="odd"), "degrees"),
        (dict(activation="swish"), "activation"),
        (dict(num_masks=0), "num_masks"),
        (dict(on_lost_dependencies="ignore"), "on_lost_dependencies"),
        (dict(residual=1), "residual"),
    ],
)
def test_a_bad_conditioner_option_fails_when_the_config_is_made(options, argument):
    with pytest.raises((TypeError, ValueError), match=argument):
        MADEConfig(**options)


def test_conditioner_must_be_a_made_config():
    with pytest.raises(TypeError, match="conditioner: expected a flowkit.nn.MADEConfig"):
        flowkit.iaf(2, conditioner={"activation": "tanh"})


def test_made_config_builds_the_made_it_describes():
    config = MADEConfig([8, 8], order="reversed", skip_connections=True, num_masks=2)
    made = config.build(3, [1, 1], context_dim=2, seed=0)
    reference = MADE(3, [8, 8], [1, 1], context_dim=2, order="reversed", skip_connections=True, num_masks=2, seed=0)
    assert sorted(made.state_dict()) == sorted(reference.state_dict())
    assert all(torch.equal(made.masks()[i], reference.masks()[i]) for i in range(len(made.masks())))
    assert MADEConfig().build(4, [2]).hidden_dims == flowkit.transforms.default_hidden_dims(4)


@pytest.mark.parametrize("name, cls", [("affine", Affine), ("gated", GatedAffine), ("spline", RationalQuadraticSpline)])
def test_bijection_names(name, cls):
    assert type(as_bijection(name)) is cls
    flow = flowkit.iaf(2, 1, [8], bijection=name, seed=0)
    assert type(flow.transforms[0].bijection) is cls


@pytest.mark.parametrize("bijection", ["splines", 3, None])
def test_bad_bijection_raises_naming_it(bijection):
    with pytest.raises(ValueError, match="bijection: expected an ElementwiseBijection or one of"):
        flowkit.maf(2, bijection=bijection)


def test_affine_bijections_give_the_affine_classes_and_others_the_generic_ones():
    assert type(flowkit.maf(2, 1, [8], bijection=GatedAffine()).transforms[0]) is AffineMAF
    assert type(flowkit.iaf(2, 1, [8], bijection="affine").transforms[0]) is AffineIAF
    assert type(flowkit.maf(2, 1, [8], bijection="spline").transforms[0]) is MAF
    assert type(flowkit.iaf(2, 1, [8], bijection="spline").transforms[0]) is IAF
    assert type(flowkit.maf(2, 1, [8], context_dim=1, bijection="gated").transforms[0]) is ConditionalAffineMAF
    assert type(flowkit.iaf(2, 1, [8], context_dim=1).transforms[0]) is ConditionalAffineIAF
    assert type(flowkit.maf(2, 1, [8], context_dim=1, bijection="spline").transforms[0]) is ConditionalMAF
    assert type(flowkit.iaf(2, 1, [8], context_dim=1, bijection="spline").transforms[0]) is ConditionalIAF


# ------------------------------------------------------------------------- the core
@pytest.mark.parametrize("cls", [MAF, IAF, ConditionalMAF, ConditionalIAF])
def test_core_checks_the_made_against_the_bijection(cls):
    spline = RationalQuadraticSpline(bins=4)
    with pytest.raises(ValueError, match=r"made: RationalQuadraticSpline\(bins=4.* takes 11 parameters per input"):
        cls(MADE(3, [8], [1, 1], context_dim=2, seed=0), spline)
    with pytest.raises(TypeError, match="bijection: expected a flowkit.transforms.ElementwiseBijection"):
        cls(MADE(3, [8], [2], context_dim=2, seed=0), "affine")
    with pytest.raises(TypeError, match="made: expected a flowkit.MADE"):
        cls(torch.nn.Linear(3, 6), Affine())
    with pytest.raises(ValueError, match="bijection: a per-input bound needs one value per input"):
        cls(MADE(3, [8], [11], context_dim=2, seed=0), RationalQuadraticSpline(bins=4, bound=[1.0, 2.0]))
    with pytest.raises(ValueError, match="sequential: expected one of"):
        cls(MADE(3, [8], [2], context_dim=2, seed=0), Affine(), sequential="slow")


def test_stable_must_be_a_bool():
    with pytest.raises(TypeError, match="stable: expected a bool"):
        AffineMAF(MADE(3, [8], [1, 1], seed=0), stable="yes")


@pytest.mark.parametrize("cls", [AffineMAF, AffineIAF])
def test_scale_floor_is_checked_even_when_stable_as_before(cls):
    with pytest.raises(ValueError, match="scale_floor"):
        cls(MADE(3, [8], [1, 1], seed=0), stable=True, scale_floor=2.0)


def test_gated_affine_builders_start_at_the_gate_not_the_identity():
    # init_near_identity zeros the MADE's outputs: the identity for Affine and splines, the gate for GatedAffine
    x = torch.randn(64, 3)
    for bijection, factor in (("affine", 1.0), ("spline", 1.0), ("gated", torch.sigmoid(torch.tensor(2.0)))):
        step = flowkit.iaf(3, 1, [16], bijection=bijection, seed=0).transforms[0]
        assert (step(x) - factor * x).abs().max() < 0.05


@pytest.mark.parametrize("builder", [flowkit.maf, flowkit.iaf])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_per_input_bounds_follow_the_permutations_between_steps(builder, context_dim):
    """A per-input bound is given for the data's columns: each step sees the columns the
    permutations after it bring to the data, so it gets their bounds in its own order."""
    bounds = torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)
    spline = RationalQuadraticSpline(bins=4, bound=bounds)
    flow = builder(3, num_transforms=3, context_dim=context_dim, permutation="random", bijection=spline, seed=0)
    to_data = torch.arange(3)  # which data column each of the current layer's columns becomes
    for layer in reversed(flow.transforms):
        if isinstance(layer, flowkit.transforms.Permute):
            to_data = to_data[layer.inverse_permutation]
        else:
            assert torch.equal(layer.bijection.bound, bounds[to_data]), layer
    assert not torch.equal(to_data, torch.arange(3))  # the test saw a reordering
    unpermuted = builder(3, num_transforms=2, context_dim=context_dim, permutation=None, bijection=spline, seed=0)
    assert all(torch.equal(step.bijection.bound, bounds) for step in unpermuted.transforms)
