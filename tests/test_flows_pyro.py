"""Flows in Pyro (a flow as a distribution, sample sites, converted modules) and IAF's
cache: IAF samples in one MADE pass per step and scores its own samples from a cache;
the conftest fixture made_passes counts the passes."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn.module import PyroModule, to_pyro_module_
from pyro.optim import Adam

import flowkit
from flow_helpers import BUILDERS, made_parameters

pytestmark = pytest.mark.usefixtures("clean_param_store")


# ------------------------------------------------------------------------------- Pyro
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_as_observed_site_with_pyro_module(kind):
    flow = BUILDERS[kind](2, num_transforms=2, hidden_dims=[8], seed=0)
    data = torch.randn(50, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0])

    def model(data):
        pyro.module("flow", flow)
        with pyro.plate("data", len(data)):
            pyro.sample("x", flow(), obs=data)

    trace = pyro.poutine.trace(model).get_trace(data)
    torch.testing.assert_close(trace.log_prob_sum(), flow.log_prob(data.clone()).sum())
    names = set(pyro.get_param_store().keys())
    assert names == {f"flow$$${name}" for name, _ in flow.named_parameters()}
    # maximum likelihood through SVI with an empty guide
    svi = SVI(model, lambda data: None, Adam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(data) for _ in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5])


def _trace_converted_flow(flow, data=None):
    """Converts ``flow`` with to_pyro_module_ and traces one site using it: an observed
    site when ``data`` is given (scoring), a latent one otherwise (sampling)."""
    to_pyro_module_(flow)
    assert isinstance(flow, PyroModule)

    def model():
        pyro.sample("x", flow(), obs=data)

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    return trace


# (conditional flows cannot be converted: Pyro's ConditionalTransformModule is an ABC and
# PyroModule[...] of it is a metaclass conflict, in Pyro itself; wrapping works, below)
@pytest.mark.parametrize("observe", [True, False], ids=["score", "sample"])
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_converted_to_pyro_module_registers_its_parameters(kind, observe):
    # both directions: the one-pass one and the sequential one (MAF sampling, IAF scoring)
    flow = BUILDERS[kind](2, num_transforms=2, hidden_dims=[8], seed=0)
    data = torch.randn(10, 2) if observe else None
    expected = flow.log_prob(data.clone()).sum() if observe else None
    trace = _trace_converted_flow(flow, data)
    if observe:
        torch.testing.assert_close(trace.log_prob_sum(), expected)
    assert set(pyro.get_param_store().keys()) == {name for name, _ in flow.named_parameters()}


@pytest.mark.parametrize("layer", ["batch_norm", "act_norm"])
def test_flow_converted_to_pyro_module_registers_normalisation_parameters(layer):
    flow = flowkit.maf(2, num_transforms=2, hidden_dims=[8], seed=0, **{layer: True}).eval()
    _trace_converted_flow(flow, torch.randn(10, 2))  # MAF scoring: the one-pass direction
    assert set(pyro.get_param_store().keys()) == {name for name, _ in flow.named_parameters()}


@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_inside_a_pyro_module(kind, context_dim):
    class Model(PyroModule):
        def __init__(self, flow):
            super().__init__()
            self.flow = flow

        def forward(self, data, context):
            return pyro.sample("x", self.flow(context), obs=data)

    flow = BUILDERS[kind](2, num_transforms=2, hidden_dims=[8], context_dim=context_dim, seed=0)
    data, context = torch.randn(10, 2), (torch.randn(10, 2) if context_dim else None)
    trace = pyro.poutine.trace(Model(flow)).get_trace(data, context)
    torch.testing.assert_close(trace.log_prob_sum(), flow.log_prob(data.clone(), context).sum())
    assert set(pyro.get_param_store().keys()) == {f"flow$$${name}" for name, _ in flow.named_parameters()}


# ---------------------------------------------------------------------- IAF and caching
def test_iaf_rsample_and_log_prob_makes_one_pass_per_step(made_passes):
    flow = flowkit.iaf(3, num_transforms=4, hidden_dims=[16], batch_norm=True, seed=0)
    made_passes.reset()
    flow.rsample_and_log_prob((32,))
    assert made_passes.counts == (4, 0)


def test_iaf_log_prob_of_its_own_samples_is_free(made_passes):
    flow = flowkit.iaf(3, num_transforms=4, hidden_dims=[16], seed=0)
    d = flow()
    y = d.rsample((32,))
    assert made_passes.counts == (4, 0)
    made_passes.reset()
    log_q = d.log_prob(y)
    assert made_passes.counts == (0, 0)
    # and it is the right value
    torch.testing.assert_close(log_q, flow.log_prob(y.detach().clone()), atol=1e-5, rtol=1e-5)


def test_pass_counts_of_the_other_directions(made_passes):
    # MAF scores data in one pass per step; IAF scores outside points sequentially
    maf, iaf = (b(3, num_transforms=3, hidden_dims=[16], seed=0) for b in (flowkit.maf, flowkit.iaf))
    x = torch.randn(8, 3)
    made_passes.reset()
    maf.log_prob(x)
    assert made_passes.counts == (3, 0)
    made_passes.reset()
    iaf.log_prob(x.clone())
    assert made_passes.sequential == 3


def test_iaf_cached_log_prob_keeps_gradients():
    flow = flowkit.iaf(3, num_transforms=2, hidden_dims=[16], seed=0)
    d = flow()
    y = d.rsample((64,))
    d.log_prob(y).sum().backward()
    for name, p in made_parameters(flow):
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_iaf_cache_is_dropped_after_an_optimizer_step():
    flow = flowkit.iaf(3, num_transforms=2, hidden_dims=[16], seed=0)
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.05)
    d = flow()
    y = d.rsample((32,))
    stale = d.log_prob(y)
    (-stale.mean()).backward()
    optimizer.step()
    again = d.log_prob(y)  # the same y object: a cache hit would return stale values
    fresh = flow.log_prob(y.detach().clone())
    torch.testing.assert_close(again, fresh, atol=1e-5, rtol=1e-5)
    assert (again - stale).abs().max() > 1e-3


def test_iaf_guide_in_svi_trains_for_many_steps():
    flow = flowkit.iaf(2, num_transforms=2, hidden_dims=[16], seed=0)
    target = dist.Normal(torch.tensor([3.0, -2.0]), torch.tensor([1.0, 0.5])).to_event(1)

    def model():
        pyro.sample("z", target)

    def guide():
        pyro.module("flow", flow)
        pyro.sample("z", flow())

    svi = SVI(model, guide, Adam({"lr": 0.02}), Trace_ELBO())
    losses = [svi.step() for _ in range(40)]  # would raise "backward through the graph a second time"
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0
