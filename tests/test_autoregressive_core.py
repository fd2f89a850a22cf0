"""Tests of the one masked-autoregressive core beyond the contracts every transform keeps
(test_transform_contracts*.py: round trips, log-determinants, the Jacobian's structure):
the fast sequential pass against the naive one, how many MADE passes each direction takes,
and the spline flows built on the core (flowkit.nsf, maf/iaf with bijection="spline",
AutoIAF and AmortizedIAF with spline steps)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import flowkit
from flowkit.infer import AmortizedIAF, AutoIAF
from flowkit.nn import MADE, MADEConfig
from flowkit.transforms import (
    IAF,
    MAF,
    Affine,
    ConditionalIAF,
    ConditionalMAF,
    GatedAffine,
    RationalQuadraticSpline,
)
from helpers import perturb_

pytestmark = pytest.mark.usefixtures("clean_param_store")  # the guide tests train Pyro parameters

D, C = 4, 2
TOL = dict(atol=1e-10, rtol=1e-10)
BIJECTIONS = {
    "affine": lambda: Affine(),
    "gated": lambda: GatedAffine(),
    "spline": lambda: RationalQuadraticSpline(bins=5, bound=3.0),
    "spline_per_input_bound": lambda: RationalQuadraticSpline(bins=3, bound=[2.0, 2.5, 3.0, 3.5]),
}
KINDS = {"maf": MAF, "iaf": IAF, "conditional_maf": ConditionalMAF, "conditional_iaf": ConditionalIAF}


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def make_step(kind, bijection_name, seed=0, order="random", sequential="fast", batch=6):
    """A float64 step far from the identity; a conditional kind conditioned on a batch of
    contexts. Returns the step and its MADE."""
    bijection = BIJECTIONS[bijection_name]()
    context_dim = C if kind.startswith("conditional") else 0
    made = MADE(D, [16, 16], [bijection.num_params], context_dim=context_dim, order=order, seed=seed)
    perturb_(made.double(), gain=1.0, seed=seed)
    step = KINDS[kind](made, bijection, sequential=sequential)
    if context_dim:
        step = step.condition(randn(batch, C, seed=seed + 7))
    return step, made


# ------------------------------------------------------------ fast vs naive sequential
@pytest.mark.parametrize("kind", ["maf", "conditional_maf", "iaf", "conditional_iaf"])
@pytest.mark.parametrize("bijection", ["spline", "spline_per_input_bound"])
def test_fast_sequential_pass_equals_the_naive_one(kind, bijection):
    """Spline MAF sampling and spline IAF inversion: the fast pass (each hidden unit once)
    against a full MADE pass per input."""
    fast, _ = make_step(kind, bijection, sequential="fast")
    naive, naive_made = make_step(kind, bijection, sequential="naive")
    value = 1.5 * randn(6, D, seed=3)
    sequential = "forward_and_log_det" if "maf" in kind else "inverse_and_log_det"
    got, got_log_det = getattr(fast, sequential)(value)
    passes = []
    hook = naive_made.input_layer.register_forward_hook(lambda *args: passes.append(1))
    expected, expected_log_det = getattr(naive, sequential)(value)
    hook.remove()
    assert len(passes) == D + 1  # really the naive method: a full pass per input, and one at the end
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(got_log_det, expected_log_det, **TOL)


# --------------------------------------------------------------------- MADE passes
@pytest.fixture
def made_forward_calls():
    """Counts MADE passes: calls of any MADE's input layer (one-pass, fast or naive sequential)."""
    calls = []
    hooks = []

    def watch(module):
        for made in (m for m in module.modules() if isinstance(m, MADE)):
            hooks.append(made.input_layer.register_forward_hook(lambda *args: calls.append(1)))

    yield watch, calls
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("conditional", [False, True])
def test_spline_iaf_scores_its_own_samples_from_the_cache_with_no_made_pass(conditional, made_forward_calls):
    watch, calls = made_forward_calls
    context = randn(5, C, seed=4) if conditional else None
    flow = flowkit.iaf(D, 3, [16], context_dim=C if conditional else 0, bijection="spline", seed=0).double()
    perturb_(flow, gain=1.0)
    watch(flow)
    q = flow(context)
    y = q.rsample((5,) if context is None else ())
    calls.clear()
    log_q = q.log_prob(y)
    assert calls == []  # every step answered from its cache
    torch.testing.assert_close(log_q, flow.log_prob(y.detach().clone(), context), atol=1e-8, rtol=1e-8)
    assert len(calls) > 0  # an outside point does need passes: the counter counts


def test_spline_maf_density_takes_one_made_pass_per_step_and_sampling_one_sequential_pass(made_forward_calls):
    watch, calls = made_forward_calls
    flow = flowkit.nsf(D, num_transforms=3, hidden_dims=[16], seed=0)
    watch(flow)
    flow.log_prob(torch.randn(7, D))
    assert len(calls) == 3
    calls.clear()
    flow.sample((7,))
    assert len(calls) == 3  # the fast pass calls each input layer once (on no rows)


# ---------------------------------------------------------------------- flows, shapes
@pytest.mark.parametrize("builder", ["nsf", "spline_iaf"])
def test_conditional_spline_flow_shapes(builder):
    S, B = 3, 5
    flow = {
        "nsf": lambda: flowkit.nsf(D, 2, [16], context_dim=C, seed=0),
        "spline_iaf": lambda: flowkit.iaf(D, 2, [16], context_dim=C, bijection="spline", seed=0),
    }[builder]()
    context = torch.randn(B, C)
    x = flow.sample((S,), context)
    assert x.shape == (S, B, D)
    assert flow.log_prob(x, context).shape == (S, B)
    assert flow.log_prob(torch.randn(B, D), context).shape == (B,)
    if builder == "spline_iaf":
        z, log_q = flow.rsample_and_log_prob((S,), context)
        assert z.shape == (S, B, D) and log_q.shape == (S, B)
    assert flow(context).sample().shape == (B, D)


def _grid_log_prob(flow, dims, n, low=-8.0, high=8.0):
    g = torch.linspace(low, high, n, dtype=torch.float64)
    if dims == 1:
        points = g[:, None]
    else:
        points = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        return g, points, flow.log_prob(points)


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_spline_density_integrates_to_one_in_1d(kind):
    flow = flowkit.maf if kind == "maf" else flowkit.iaf
    flow = perturb_(flow(1, 3, [8], bijection=RationalQuadraticSpline(bins=6, bound=3.0), seed=0).double(), seed=1)
    g, points, log_p = _grid_log_prob(flow, 1, 8001)
    assert abs(torch.trapezoid(log_p.exp(), g).item() - 1.0) < 1e-3
    normal = -0.5 * points.square().sum(-1) - 0.5 * math.log(2 * math.pi)
    assert (log_p - normal).abs().max() > 0.1  # the flow really transforms


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_spline_density_integrates_to_one_in_2d(kind):
    flow = flowkit.maf if kind == "maf" else flowkit.iaf
    conditioner = MADEConfig(hidden_dims=[16, 16], activation="tanh")
    flow = flow(2, 2, bijection=RationalQuadraticSpline(bins=4, bound=3.0), conditioner=conditioner, seed=0)
    flow = perturb_(flow.double(), gain=1.0, seed=1)
    g, points, log_p = _grid_log_prob(flow, 2, 401)
    density = log_p.exp().reshape(len(g), len(g))
    assert abs(torch.trapezoid(torch.trapezoid(density, g, dim=1), g).item() - 1.0) < 2e-3
    normal = -0.5 * points.square().sum(-1) - math.log(2 * math.pi)
    assert (log_p - normal).abs().max() > 0.1


def test_nsf_is_maf_with_a_spline():
    flow = flowkit.nsf(3, 2, [8], bins=6, bound=4.0, seed=0)
    steps = [t for t in flow.transforms if isinstance(t, MAF)]
    assert len(steps) == 2
    for step in steps:
        assert type(step.bijection) is RationalQuadraticSpline
        assert (step.bijection.bins, step.bijection.bound) == (6, 4.0)
        assert step.made.param_dims == [3 * 6 - 1]
    x = torch.randn(16, 3)
    normal = -0.5 * x.square().sum(-1) - 1.5 * math.log(2 * math.pi)
    assert (flow.log_prob(x) - normal).abs().max() < 0.2  # near-identity steps: near N(0, I)
    with pytest.raises(ValueError, match="bins"):
        flowkit.nsf(3, bins=0)
    with pytest.raises(ValueError, match="bound"):
        flowkit.nsf(3, bound=-1.0)


def test_a_short_fit_of_nsf_on_moons_reduces_the_nll():
    torch.manual_seed(0)
    data = flowkit.datasets.toy_2d("moons", 512, seed=0)
    flow = flowkit.nsf(2, num_transforms=3, hidden_dims=[32, 32], bins=8, bound=4.0, seed=0)
    with torch.no_grad():
        before = -flow.log_prob(data).mean().item()
    history = flowkit.fit(flow, data, epochs=15, batch_size=128, lr=3e-3, progress=False, seed=0)
    with torch.no_grad():
        after = -flow.log_prob(data).mean().item()
    assert after < before - 0.3, (before, after, history.train_nll)


# ----------------------------------------------------------------------- guides
def test_auto_iaf_with_spline_steps_trains_and_scores_its_samples():
    def model():
        pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    guide = AutoIAF(model, num_transforms=2, hidden_dims=[16], bijection=RationalQuadraticSpline(bins=4))
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step() for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    assert all(type(t) is IAF for t in guide.flow.transforms if hasattr(t, "made"))
    posterior = guide.get_posterior()
    z = posterior.rsample((4,))
    torch.testing.assert_close(posterior.log_prob(z), posterior.log_prob(z.detach().clone()), atol=1e-5, rtol=1e-5)


def test_amortized_iaf_with_spline_steps():
    posterior = AmortizedIAF(latent_dim=3, context_dim=2, num_transforms=2, hidden_dims=[16], bijection="spline")
    assert all(type(t) is ConditionalIAF for t in posterior.flow.transforms if hasattr(t, "made"))
    q = posterior(torch.zeros(5, 3), torch.ones(5, 3), torch.randn(5, 2))
    z = q.rsample()
    assert z.shape == (5, 3)
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.detach().clone()), atol=1e-5, rtol=1e-5)
    # the default stays the gated update of Kingma et al. (2016)
    default = AmortizedIAF(latent_dim=3, context_dim=2, hidden_dims=[16])
    assert type(default.flow.transforms[0].bijection) is GatedAffine
