"""flowkit.MADE as the ``autoregressive_nn`` of Pyro's rational-spline transforms,
``SplineAutoregressive`` and ``ConditionalSplineAutoregressive``, for linear and
quadratic splines, checked in float64 against autograd Jacobians computed in the test,
and side by side with pyro.nn.AutoRegressiveNN.

Pyro tells conditioner layouts apart by shape: ``ConditionalSpline._params`` transposes
the parameters when the widths' last axis has ``input_dim`` entries (AutoRegressiveNN's
``(..., K, D)``) and otherwise reshapes a flat ``(..., D * K)`` (DenseNN's). A MADE
returns ``(..., K, D)`` like AutoRegressiveNN, whose last axis is ``D`` whatever ``K``
is, so the guess also holds when ``count_bins == input_dim``: the cases below include
K == D, where a parameter axis read as the input axis would break the round trip and
the triangular Jacobian. (A conditioner returning ``(..., D, K)`` is no hidden hazard:
Pyro rejects it with a shape error, at K == D too, because the K - 1
derivatives do not fit.)

Pyro's spline itself needs ``x`` to carry the whole batch shape: a context ``(B, C)``
goes with ``x`` of shape ``(..., B, D)``, not ``(D,)`` or ``(N, 1, D)``, whatever the
conditioner, so the conditional test broadcasts over a leading axis only.
"""

import pyro.distributions as dist
import pytest
import torch
from helpers import batch_jacobian, log_abs_det, perturb_
from pyro.distributions.transforms import ConditionalSplineAutoregressive, SplineAutoregressive
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn

from flowkit import MADE

pytestmark = pytest.mark.usefixtures("float64_default")

D = 3
CONTEXT_DIM = 2
BOUND = 2.0  # inputs are drawn wider than this, so the identity tails are used too
PYRO_ORDER = torch.tensor([2, 0, 1])
ORDERS = ["linear", "quadratic"]
COUNT_BINS = [2, D, 5]  # fewer bins than inputs, as many, more


def spline_param_dims(count_bins, order):
    """Pyro's parameters per input: K widths, K heights, K - 1 inner-knot derivatives,
    and for linear splines K lambdas."""
    return [count_bins, count_bins, count_bins - 1] + ([count_bins] if order == "linear" else [])


def flowkit_made(count_bins, order, context_dim=0):
    hidden_dims = [24] if context_dim else [24, 24]
    made = MADE(
        D,
        hidden_dims,
        param_dims=spline_param_dims(count_bins, order),
        context_dim=context_dim,
        order="random",
        activation="tanh",
        num_masks=2,
        seed=0,
    )
    made.set_mask(1)  # the transform must follow the active mask set's order
    return perturb_(made.double())


def pyro_arn(count_bins, order, context_dim=0):
    options = dict(param_dims=spline_param_dims(count_bins, order), permutation=PYRO_ORDER, nonlinearity=nn.Tanh())
    if context_dim:
        net = ConditionalAutoRegressiveNN(D, context_dim, [24], **options)
    else:
        net = AutoRegressiveNN(D, [24, 24], **options)
    return perturb_(net)


NETS = {"flowkit": flowkit_made, "pyro": pyro_arn}


def standard_normal():
    return dist.Normal(torch.zeros(D), torch.ones(D)).to_event(1)


def spline_flow(net, count_bins, order):
    """A fresh transform around ``net`` each call: nothing comes from another one's cache."""
    return SplineAutoregressive(D, net, count_bins=count_bins, bound=BOUND, order=order)


def assert_autoregressive_in(jacobian, permutation):
    """``jacobian[..., i, j] = dy_i / dx_j`` is lower triangular once inputs and outputs
    are put in ``permutation``'s order, increasing on its diagonal, and not diagonal."""
    ranked = jacobian[..., permutation, :][..., :, permutation]
    assert torch.all(ranked.triu(1) == 0)  # no output depends on a later input
    assert torch.all(ranked.diagonal(dim1=-2, dim2=-1) > 0)  # monotone in its own input
    assert ranked.tril(-1).abs().sum() > 0  # and earlier inputs do matter


def assert_bijection_checks(make_transform, x, y, permutation):
    """Round trips both ways, log|det| against autograd and the triangular Jacobian, with
    ``make_transform()`` building a fresh transform for every computation."""
    assert torch.allclose(make_transform().inv(make_transform()(x)), x, atol=1e-10)
    assert torch.allclose(make_transform()(make_transform().inv(y)), y, atol=1e-10)
    transform = make_transform()
    log_det = transform.log_abs_det_jacobian(x, transform(x))
    jacobian = batch_jacobian(make_transform(), x)
    assert log_det.shape == x.shape[:-1]
    assert torch.allclose(log_det, log_abs_det(jacobian), atol=1e-10)
    assert_autoregressive_in(jacobian, permutation)


def expected_log_prob(make_transform, y):
    """Change of variables written out: log p(x) + log|det dx/dy| at x = inverse(y), with
    the Jacobian of the inverse from autograd through Pyro's step-by-step inversion."""
    x = make_transform().inv(y)
    inverse_jacobian = batch_jacobian(make_transform().inv, y)
    return standard_normal().log_prob(x) + log_abs_det(inverse_jacobian)


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("count_bins", COUNT_BINS)
@pytest.mark.parametrize("order", ORDERS)
def test_spline_autoregressive_is_a_correct_bijection(net_name, count_bins, order):
    net = NETS[net_name](count_bins, order)
    x, y = 1.5 * torch.randn(2, 8, D)
    assert_bijection_checks(lambda: spline_flow(net, count_bins, order), x, y, net.permutation)


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("count_bins", COUNT_BINS)
@pytest.mark.parametrize("order", ORDERS)
def test_log_prob_is_the_change_of_variables(net_name, count_bins, order):
    net = NETS[net_name](count_bins, order)
    flow = dist.TransformedDistribution(standard_normal(), [spline_flow(net, count_bins, order)])
    y = 1.5 * torch.randn(8, D)
    log_prob = flow.log_prob(y)
    assert log_prob.dtype == torch.float64 and log_prob.shape == (8,)
    assert torch.allclose(log_prob, expected_log_prob(lambda: spline_flow(net, count_bins, order), y), atol=1e-10)


@pytest.mark.parametrize("count_bins", [D, 5])
@pytest.mark.parametrize("order", ORDERS)
def test_sampling_is_the_transform_of_base_draws_and_trains_the_made(count_bins, order):
    made = flowkit_made(count_bins, order)
    flow = dist.TransformedDistribution(standard_normal(), [spline_flow(made, count_bins, order)])
    torch.manual_seed(1)
    samples = flow.rsample((6,))
    torch.manual_seed(1)
    base_draws = standard_normal().sample((6,))
    assert samples.shape == (6, D)
    assert torch.allclose(samples, spline_flow(made, count_bins, order)(base_draws), atol=1e-12)
    (flow.log_prob(samples.detach()).sum() + samples.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in made.output_layer.parameters())


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("count_bins", [D, 5])
@pytest.mark.parametrize("order", ORDERS)
def test_conditional_spline_autoregressive(net_name, count_bins, order):
    net = NETS[net_name](count_bins, order, context_dim=CONTEXT_DIM)
    transform = ConditionalSplineAutoregressive(D, net, count_bins=count_bins, bound=BOUND, order=order)
    context = torch.randn(4, CONTEXT_DIM)  # one context per column of the batch
    x, y = 1.5 * torch.randn(2, 5, 4, D)  # broadcast against the context over the first axis

    def make_transform():
        return transform.condition(context)

    assert_bijection_checks(make_transform, x, y, net.permutation)
    assert not torch.allclose(transform.condition(torch.randn(4, CONTEXT_DIM))(x), make_transform()(x))

    flow = dist.ConditionalTransformedDistribution(standard_normal(), [transform]).condition(context)
    log_prob = flow.log_prob(y)
    assert log_prob.shape == (5, 4)
    assert torch.allclose(log_prob, expected_log_prob(make_transform, y), atol=1e-10)

    torch.manual_seed(1)
    samples = flow.sample((5, 4))
    torch.manual_seed(1)
    assert torch.allclose(samples, make_transform()(standard_normal().sample((5, 4))), atol=1e-12)
