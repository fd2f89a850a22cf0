"""Tests for the flow builders flowkit.maf / flowkit.iaf and the Flow module: structure,
state_dict / dtype / pickle, log_prob consistency, conditional flows, gradients, batch norm
in flows and heavy tails.

Pyro's convention: sampling pushes base noise through the transforms in list order,
scoring inverts them in reverse. MAF scores data in one MADE pass per step and samples
sequentially; IAF samples in one pass per step and scores its own samples from a cache.
"""

import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import flowkit
from flow_helpers import BUILDERS, made_parameters
from flowkit.nn import MADEConfig
from flowkit.transforms import ActNorm, Affine, AffineIAF, AffineMAF, BatchNorm, GatedAffine, Permute
from helpers import perturb_

pytestmark = pytest.mark.usefixtures("clean_param_store")


TOL = dict(atol=1e-10, rtol=1e-10)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def standard_normal_log_prob(x):
    return torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_is_a_module_with_the_requested_layers(kind):
    flow = BUILDERS[kind](3, num_transforms=3, hidden_dims=[8], batch_norm=True, act_norm=True, seed=0)
    assert isinstance(flow, nn.Module) and isinstance(flow, flowkit.Flow)
    step = {"maf": AffineMAF, "iaf": AffineIAF}[kind]
    types = [type(t) for t in flow.transforms]
    assert types == [step, BatchNorm, ActNorm, Permute] * 2 + [step]
    assert len(list(flow.parameters())) > 0
    # every parameter of every step is registered with the flow (so optimisers see it)
    registered = {id(p) for p in flow.parameters()}
    for t in flow.transforms:
        assert {id(p) for p in t.parameters()} <= registered
    assert len(made_parameters(flow)) == 3 * len(list(flow.transforms[0].made.parameters()))


def test_flow_without_permutations_and_in_one_dimension():
    assert [type(t) for t in flowkit.maf(3, num_transforms=2, hidden_dims=[8], permutation=None).transforms] == [
        AffineMAF,
        AffineMAF,
    ]
    # a permutation of one input is pointless, and left out
    assert [type(t) for t in flowkit.iaf(1, num_transforms=2, hidden_dims=[4]).transforms] == [AffineIAF, AffineIAF]


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_starts_near_identity(kind):
    flow = BUILDERS[kind](4, num_transforms=3, hidden_dims=[32, 32], permutation=None, seed=0)
    x = torch.randn(256, 4)
    y = x
    for t in flow.transforms:
        y = t(y)
    assert (y - x).abs().max() < 0.05
    # with the default (reversed) permutations the density starts near the base's
    flow = BUILDERS[kind](4, num_transforms=3, hidden_dims=[32, 32], seed=0)
    assert (flow.log_prob(x) - standard_normal_log_prob(x)).abs().max() < 0.1


# ------------------------------------------------------------ state_dict, dtype, pickle
FLOW_OPTIONS = {
    "plain": {},
    "random_permutation": {"permutation": "random"},
    "stable": {"bijection": "gated"},
    "batch_norm": {"batch_norm": True},
    "act_norm": {"act_norm": True},
    "residual_skip": {"conditioner": MADEConfig([12, 12], activation="tanh", residual=True, skip_connections=True)},
    "conditional": {"context_dim": 2},
}


def _fresh_flow(kind, options, seed):
    """A flow with non-trivial weights, in float64, never called."""
    # tanh and gain 1: non-trivial, yet IAF's sequential inverse of the data stays well
    # conditioned (a perturbed ReLU IAF can blow points 2 away from its samples up to inf)
    options = {"conditioner": MADEConfig(hidden_dims=[12], activation="tanh"), **options}
    torch.manual_seed(seed)
    return perturb_(BUILDERS[kind](3, num_transforms=3, seed=seed, **options).double(), gain=1.0, seed=seed)


def _context(options, n):
    return randn(n, 2, seed=9) if options.get("context_dim") else None


def _used_flow(kind, options, seed):
    """A fresh flow that has scored data in training mode (so batch norm has running
    averages and ActNorm is initialised), then put in eval mode."""
    flow = _fresh_flow(kind, options, seed)
    flow.log_prob(2.0 + randn(64, 3, seed=8), _context(options, 64))
    return flow.eval()


@pytest.mark.parametrize("options", FLOW_OPTIONS.values(), ids=FLOW_OPTIONS.keys())
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_state_dict_round_trip_into_a_fresh_flow_built_with_another_seed(kind, options):
    source = _used_flow(kind, options, seed=0)
    x, context = randn(16, 3, seed=2), _context(options, 16)
    expected = source.log_prob(x, context)
    target = _fresh_flow(kind, options, seed=1).eval()  # other masks, permutations, weights
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.log_prob(x.clone(), context), expected, **TOL)


@pytest.mark.parametrize("options", FLOW_OPTIONS.values(), ids=FLOW_OPTIONS.keys())
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_state_dict_load_invalidates_cached_results(kind, options):
    source = _used_flow(kind, options, seed=0)
    target = _used_flow(kind, options, seed=1)
    x, context = randn(16, 3, seed=2), _context(options, 16)
    expected = source.log_prob(x.clone(), context)
    before = target.log_prob(x, context)
    assert (before - expected).abs().max() > 1e-3  # the flows really differ
    target.load_state_dict(source.state_dict())
    # the same x object as before loading: a stale cached result must not come back
    torch.testing.assert_close(target.log_prob(x, context), expected, **TOL)


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_double_converts_everything(kind):
    flow = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], batch_norm=True, seed=0).eval()
    x = torch.randn(5, 3)
    lp32 = flow.log_prob(x)
    flow.double()
    assert flow.base_loc.dtype == flow.base_scale.dtype == torch.float64
    assert flow.base_distribution().sample().dtype == torch.float64
    lp64 = flow.log_prob(x.double())
    assert lp64.dtype == torch.float64
    torch.testing.assert_close(lp64.float(), lp32, atol=1e-4, rtol=1e-4)
    assert flow.sample((4,)).dtype == torch.float64
    y, log_q = flow.rsample_and_log_prob((4,))
    assert y.dtype == log_q.dtype == torch.float64


@pytest.mark.parametrize("options", FLOW_OPTIONS.values(), ids=FLOW_OPTIONS.keys())
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_pickle_round_trip_of_a_used_flow(kind, options):
    flow = _used_flow(kind, options, seed=0)
    x, context = randn(8, 3, seed=2), _context(options, 8)
    flow.rsample_and_log_prob((8,), context)[1].sum().backward()  # caches now hold graph tensors
    restored = pickle.loads(pickle.dumps(flow))
    torch.testing.assert_close(restored.log_prob(x, context), flow.log_prob(x.clone(), context), **TOL)


# ----------------------------------------------------------------- log_prob consistency
@pytest.mark.parametrize("options", FLOW_OPTIONS.values(), ids=FLOW_OPTIONS.keys())
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_log_prob_agrees_with_distribution_and_rsample_and_log_prob(kind, options):
    flow = _used_flow(kind, options, seed=0)
    x, context = randn(16, 3, seed=2), _context(options, 16)
    log_p = flow.log_prob(x, context)
    assert log_p.shape == (16,)
    torch.testing.assert_close(flow(context).log_prob(x.clone()), log_p, **TOL)
    # the log-density that comes with the samples is the density of those samples
    y, log_q = flow.rsample_and_log_prob((16,) if context is None else (), context)
    assert y.shape == (16, 3) and log_q.shape == (16,)
    torch.testing.assert_close(flow.log_prob(y.detach().clone(), context), log_q.detach(), **TOL)


def _grid_integral(flow, low, high, n):
    """Trapezoid integral of the flow's density over [low, high]^D, D = 1 or 2."""
    g = torch.linspace(low, high, n, dtype=torch.float64)
    if flow.input_dim == 1:
        with torch.no_grad():
            return torch.trapezoid(flow.log_prob(g[:, None]).exp(), g), g[:, None]
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    points = torch.stack([xx, yy], dim=-1).reshape(-1, 2)
    with torch.no_grad():
        density = flow.log_prob(points).exp().reshape(n, n)
    return torch.trapezoid(torch.trapezoid(density, g, dim=1), g), points


@pytest.mark.parametrize("bijection", ["affine", "gated"])
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_density_integrates_to_one_in_1d(kind, bijection):
    flow = perturb_(BUILDERS[kind](1, num_transforms=3, hidden_dims=[8], bijection=bijection, seed=0).double(), seed=1)
    integral, grid = _grid_integral(flow, -12.0, 12.0, 4001)
    assert abs(integral.item() - 1.0) < 1e-3
    with torch.no_grad():  # not the base density: the flow really transforms
        assert (flow.log_prob(grid) - standard_normal_log_prob(grid)).abs().max() > 0.1


@pytest.mark.parametrize("bijection", ["affine", "gated"])
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_density_integrates_to_one_in_2d(kind, bijection):
    # tanh keeps the perturbed density smooth enough for a 301 x 301 grid
    conditioner = MADEConfig(hidden_dims=[16, 16], activation="tanh")
    flow = BUILDERS[kind](2, num_transforms=3, bijection=bijection, conditioner=conditioner, seed=0)
    flow = perturb_(flow.double(), seed=1)
    # [-30, 30]: the perturbed MAF's inverse-scale steps put 6% of the mass beyond 10
    integral, grid = _grid_integral(flow, -30.0, 30.0, 901)
    assert abs(integral.item() - 1.0) < 1e-3
    with torch.no_grad():
        assert (flow.log_prob(grid) - standard_normal_log_prob(grid)).exp().max() > 1.5


# ------------------------------------------------------------------------ conditional
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_conditional_flow_shapes(kind):
    flow = BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], context_dim=2, seed=0)
    context = torch.randn(5, 2)
    assert flow.sample(context=context).shape == (5, 3)
    assert flow.rsample(context=context).shape == (5, 3)
    assert flow.sample((4,), context=context).shape == (4, 5, 3)
    assert flow.log_prob(torch.randn(5, 3), context).shape == (5,)
    # a single context broadcasts over a batch of x
    assert flow.log_prob(torch.randn(7, 3), torch.randn(2)).shape == (7,)
    y, log_q = flow.rsample_and_log_prob((), context)
    assert y.shape == (5, 3) and log_q.shape == (5,)


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_conditional_flow_density_depends_on_context(kind):
    flow = perturb_(BUILDERS[kind](3, num_transforms=2, hidden_dims=[8], context_dim=2, seed=0).double())
    x = randn(6, 3, seed=1)
    a = flow.log_prob(x, randn(2, seed=2))
    b = flow.log_prob(x.clone(), randn(2, seed=3))
    assert (a - b).abs().max() > 1e-2
    # and a batch of contexts gives each row its own
    contexts = randn(6, 2, seed=4)
    rows = torch.stack([flow.log_prob(x[n].clone(), contexts[n]) for n in range(6)])
    torch.testing.assert_close(flow.log_prob(x.clone(), contexts), rows, **TOL)


# ------------------------------------------------------------------------- gradients
def test_maf_rsample_gradients_reach_every_made_parameter():
    flow = flowkit.maf(3, num_transforms=2, hidden_dims=[16], seed=0)
    flow.rsample((8,)).sum().backward()
    for name, p in made_parameters(flow):
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------- batch norm in flows
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_eval_after_training_on_the_same_batch(kind):
    # scoring a batch in training mode, then the same tensor in eval mode, must use the
    # running averages (not a cached training-mode result)
    flow = _used_flow(kind, {"batch_norm": True}, seed=0)
    y = 2.0 + randn(64, 3, seed=8)
    flow.train()
    flow.log_prob(y)
    flow.eval()
    torch.testing.assert_close(flow.log_prob(y), flow.log_prob(y.clone()), **TOL)


# ---------------------------------------------------------------------- heavy tails
@pytest.mark.parametrize("bijection", ["affine", "gated"])
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_training_on_heavy_tailed_data_stays_finite(kind, bijection):
    torch.manual_seed(0)
    flow = BUILDERS[kind](2, num_transforms=2, hidden_dims=[8], bijection=bijection, seed=0)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    student = torch.distributions.StudentT(2.0)  # infinite variance: rare huge points
    for step in range(2000):
        loss = -flow.log_prob(student.sample((64, 2))).mean()
        assert torch.isfinite(loss), f"step {step}: loss {loss}"
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, p in flow.named_parameters():
        assert torch.isfinite(p).all(), name


def test_mog_base_samples_but_refuses_reparameterised_sampling():
    flow = flowkit.maf(2, num_transforms=2, hidden_dims=[8], base="mog", num_components=3, seed=0)
    assert flow.sample((4,)).shape == (4, 2)
    with pytest.raises(ValueError, match="base"):
        flow.rsample((4,))
    with pytest.raises(ValueError, match="base"):
        flow.rsample_and_log_prob((4,))


def test_flow_of_pyro_transforms_scores_and_samples_like_pyro(float64_default):
    """Transforms that are not flowkit's go through Pyro's interface; an elementwise one
    (a spline, event_dim 0) has its log-determinant summed over the event."""
    torch.manual_seed(0)
    arn = pyro.nn.AutoRegressiveNN(3, [8], param_dims=[1, 1])
    transforms = [
        dist.transforms.AffineAutoregressive(arn),
        dist.transforms.spline(3, count_bins=4),  # elementwise
        Permute([2, 0, 1]),
    ]
    flow = flowkit.Flow(transforms, input_dim=3)
    reference = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), transforms)
    x = torch.randn(5, 3)
    torch.testing.assert_close(flow.log_prob(x), reference.log_prob(x.clone()))
    y, log_q = flow.rsample_and_log_prob((5,))
    torch.testing.assert_close(log_q, reference.log_prob(y.detach().clone()))


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_builders_pass_step_options_to_every_step(kind):
    for bijection in (Affine(scale_floor=0.2), GatedAffine(sigmoid_bias=1.0)):
        flow = BUILDERS[kind](2, num_transforms=3, hidden_dims=[8], bijection=bijection, seed=0)
        steps = [t for t in flow.transforms if isinstance(t, (AffineMAF, AffineIAF))]
        assert len(steps) == 3
        assert all(repr(step.bijection) == repr(bijection) for step in steps)
