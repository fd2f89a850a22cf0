"""flowkit.MADE as a drop-in ``autoregressive_nn`` for Pyro's affine autoregressive
transforms, checked in float64 against computations written out in the test, and side
by side with pyro.nn.AutoRegressiveNN."""

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import AffineAutoregressive, ConditionalAffineAutoregressive
from pyro.nn import AutoRegressiveNN
from torch import nn

from flowkit import MADE, check_autoregressive

pytestmark = pytest.mark.usefixtures("float64_default")

D = 4


def make_made(**kwargs):
    options = dict(input_dim=D, hidden_dims=[16, 16], param_dims=[1, 1], order="random", activation="tanh", seed=0)
    return MADE(**{**options, **kwargs}).double()


def standard_normal(dim=D):
    return dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)


def invert_by_hand(net, y, stable=False, sigmoid_bias=2.0, context=None):
    """x from y = loc + scale * x, one input at a time in the net's order.

    Returns x and the log |det dy/dx| = sum log scale, both computed here without Pyro.
    """
    call = (lambda x: net(x)) if context is None else (lambda x: net(x, context))
    x = torch.zeros_like(y)
    for i in net.permutation.tolist():
        loc, raw_scale = call(x)
        scale = torch.sigmoid(raw_scale + sigmoid_bias) if stable else torch.exp(raw_scale)
        if stable:  # y = scale * x + (1 - scale) * loc
            x[..., i] = (y[..., i] - (1 - scale[..., i]) * loc[..., i]) / scale[..., i]
        else:  # y = loc + scale * x
            x[..., i] = (y[..., i] - loc[..., i]) / scale[..., i]
    loc, raw_scale = call(x)
    log_scale = torch.nn.functional.logsigmoid(raw_scale + sigmoid_bias) if stable else raw_scale
    if not stable:
        # Pyro clamps log_scale to [-5, 3]; a small random net stays inside, so no clamp here
        assert (log_scale > -5).all() and (log_scale < 3).all()
    return x, log_scale.sum(-1)


@pytest.mark.parametrize("stable", [False, True])
def test_inverse_round_trip(stable):
    made = make_made()
    x = torch.randn(6, D)
    y = AffineAutoregressive(made, stable=stable)(x)
    assert y.dtype == torch.float64
    # a second transform around the same net has an empty cache: its inverse is computed
    fresh = AffineAutoregressive(made, stable=stable)
    assert torch.allclose(fresh.inv(y), x, atol=1e-10)
    assert torch.allclose(invert_by_hand(made, y, stable)[0], x, atol=1e-10)


@pytest.mark.parametrize("stable", [False, True])
def test_log_prob_matches_a_manual_computation(stable):
    made = make_made(num_masks=2)
    made.set_mask(1)  # the transform must follow the active mask set's order
    flow = dist.TransformedDistribution(standard_normal(), [AffineAutoregressive(made, stable=stable)])
    y = torch.randn(7, D)
    x, log_det = invert_by_hand(made, y, stable)
    expected = standard_normal().log_prob(x) - log_det
    log_prob = flow.log_prob(y)
    assert log_prob.dtype == torch.float64 and log_prob.shape == (7,)
    assert torch.allclose(log_prob, expected, atol=1e-10)


def test_sampling_and_gradients_reach_the_made():
    made = make_made(skip_connections=True)
    flow = dist.TransformedDistribution(standard_normal(), [AffineAutoregressive(made)])
    samples = flow.rsample((5,))
    assert samples.shape == (5, D)
    (flow.log_prob(samples.detach()).sum() + samples.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in made.output_layer.parameters())


def test_conditional_made_in_conditional_affine_autoregressive():
    made = make_made(context_dim=3)
    transform = ConditionalAffineAutoregressive(made)
    context = torch.randn(3)
    x = torch.randn(5, D)
    y = transform.condition(context)(x)
    # a freshly conditioned transform has no cache: the inverse is really computed
    assert torch.allclose(transform.condition(context).inv(y), x, atol=1e-10)
    assert not torch.allclose(transform.condition(torch.randn(3))(x), y)  # the context matters

    flow = dist.ConditionalTransformedDistribution(standard_normal(), [transform])
    x_by_hand, log_det = invert_by_hand(made, y, context=context)
    expected = standard_normal().log_prob(x_by_hand) - log_det
    assert torch.allclose(flow.condition(context).log_prob(y), expected, atol=1e-10)


@pytest.mark.parametrize("param_dims", [[1], [3], [1, 1], [1, 3], [2, 1, 2]])
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_same_output_structure_as_pyro_autoregressive_nn(param_dims, batch):
    permutation = torch.tensor([2, 0, 3, 1])
    ours = MADE(D, [16], param_dims=param_dims, order=permutation, activation="tanh", seed=0)
    pyros = AutoRegressiveNN(D, [16], param_dims=param_dims, permutation=permutation, nonlinearity=nn.Tanh())
    assert torch.equal(ours.permutation, pyros.permutation)
    assert torch.equal(ours.get_permutation(), pyros.get_permutation())
    x = torch.randn(*batch, D)
    a, b = ours(x), pyros(x)
    assert type(a) is type(b)
    if isinstance(a, tuple):
        assert [part.shape for part in a] == [part.shape for part in b]
    else:
        assert a.shape == b.shape
    # both are autoregressive in the same order
    assert check_autoregressive(ours).orders == check_autoregressive(pyros).orders == [permutation.tolist()]


def test_same_behaviour_as_pyro_autoregressive_nn_in_a_flow():
    permutation = torch.tensor([3, 1, 0, 2])
    made = MADE(D, [16], param_dims=[1, 1], order=permutation, activation="tanh", seed=0)
    pyros = AutoRegressiveNN(D, [16], param_dims=[1, 1], permutation=permutation, nonlinearity=nn.Tanh())
    y = torch.randn(3, D)
    for net in (made, pyros):
        transform = AffineAutoregressive(net)
        x = AffineAutoregressive(net).inv(y)
        assert torch.allclose(transform(x), y, atol=1e-10)
        log_prob = dist.TransformedDistribution(standard_normal(), [transform]).log_prob(y)
        assert log_prob.shape == (3,) and torch.isfinite(log_prob).all()
