"""Tests for flowkit.infer's AutoIAF / AutoMAF autoguides: the log density of their own
samples, accuracy on a conjugate linear model, and SVI runs.

The guides' posterior over the unconstrained latent vector is
``z = loc + scale * flow(eps)`` with ``eps ~ N(0, I)``. The checks here are written out
in the test rather than read back from flowkit: log-densities against an autograd
Jacobian, accuracy against the closed-form posterior and evidence of a conjugate
Bayesian linear regression, and MADE passes counted by patching ``MADE.raw_output``.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam, ClippedAdam

from flowkit.infer import AutoIAF
from infer_helpers import (
    CONSTRAINED_DATA,
    assert_jit_elbo_matches_trace_elbo,
    constrained_model,
    gaussian_model,
    log_det_by_autograd,
    make_guide,
    quiet_jit,
)

pytestmark = pytest.mark.usefixtures("clean_param_store")


# (guide class, stable) for the SVI smoke tests
KINDS = [("AutoIAF", False), ("AutoIAF", True), ("AutoMAF", False)]


def flow_parameters(guide):
    return {name: p.detach().clone() for name, p in guide.flow.named_parameters()}


def assert_in_support(sample):
    assert sample["s"].gt(0).all()
    assert sample["p"].gt(0).all() and sample["p"].lt(1).all()
    assert sample["w"].gt(0).all()
    assert torch.allclose(sample["w"].sum(-1), torch.ones(()), atol=1e-5)


# ---------------------------------------------- 1. log density of the guide's own samples
@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("kind, stable", KINDS)
def test_log_prob_of_own_sample_matches_recomputation(kind, stable):
    guide = make_guide(kind, stable=stable, num_transforms=3, hidden_dims=[16])
    guide()  # sets up the prototype
    # move away from the near-identity start, so every step does something
    with torch.no_grad():
        for p in guide.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
        guide.loc.add_(torch.randn_like(guide.loc))
    q = guide.get_posterior()
    z = q.rsample((6,))
    assert z.dtype == torch.float64 and z.shape == (6, 4)
    cached = q.log_prob(z)
    fresh = q.log_prob(z.clone())  # a different object: the caches cannot answer
    assert cached.shape == (6,) and cached.dtype == torch.float64
    assert torch.allclose(cached, fresh, atol=1e-8, rtol=0)

    # From scratch: eps from a fresh inverse, log q(z) = log N(eps) - log |det dz/deps|.
    transform = guide.get_transform()
    eps = transform.inv(z.detach().clone())
    assert torch.allclose(transform(eps.clone()), z.detach(), atol=1e-8)
    log_det = log_det_by_autograd(lambda e: guide.get_transform()(e), eps)
    expected = dist.Normal(0.0, 1.0).log_prob(eps).sum(-1) - log_det
    assert torch.allclose(cached.detach(), expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("stable", [False, True])
def test_scoring_own_sample_needs_no_made_pass(stable, made_passes):
    guide = make_guide("AutoIAF", stable=stable, num_transforms=3)
    guide()
    q = guide.get_posterior()
    made_passes.reset()
    z = q.rsample((5,))
    assert made_passes.raw_output == 3  # one pass per IAF step
    q.log_prob(z)
    assert made_passes.raw_output == 3, "scoring the guide's own sample ran extra MADE passes"
    q.log_prob(z.clone())  # sanity: the counter sees a real recomputation
    assert made_passes.raw_output > 3


@pytest.mark.parametrize("num_transforms", [1, 3])
@pytest.mark.parametrize("stick_the_landing", [False, True])
def test_trace_elbo_made_passes_per_iaf_step(num_transforms, stick_the_landing, made_passes):
    """One pass per IAF step (the sample's; the score from the cache), or with the
    path-derivative score one more over the D + 1 noise copies: no sequential inverse."""
    guide = make_guide("AutoIAF", num_transforms=num_transforms, stick_the_landing=stick_the_landing)
    guide()
    made_passes.reset()
    loss = Trace_ELBO().differentiable_loss(gaussian_model, guide)
    assert torch.isfinite(loss)
    assert made_passes.raw_output == num_transforms * (2 if stick_the_landing else 1)


@pytest.mark.parametrize("options", [{}, {"fused": True}], ids=["Adam", "fused_Adam"])
def test_svi_scores_each_step_from_the_cache_and_never_a_stale_value(options, made_passes):
    """Across SVI steps: one MADE pass per IAF step and SVI step (the sample's), the score
    from the cache. After a step of the same Pyro optimiser (fused: no version counter
    moves), a sample drawn before it gets the new value."""
    guide = make_guide("AutoIAF", constrained_model, num_transforms=2, stick_the_landing=False)
    guide()
    svi = SVI(constrained_model, guide, Adam({"lr": 1e-2, **options}), Trace_ELBO())
    for _ in range(5):
        made_passes.reset()
        assert math.isfinite(svi.step())
        assert made_passes.raw_output == 2
    flow = guide.flow()  # a distribution over the flow's transforms
    z = flow.rsample((4,))
    stale = flow.log_prob(z)
    (-stale.mean()).backward()
    svi.optim(list(guide.flow.parameters()))  # no sample in between: the caches still hold z
    torch.testing.assert_close(flow.log_prob(z), guide.flow.log_prob(z.detach().clone()), atol=1e-5, rtol=1e-5)
    assert (flow.log_prob(z) - stale).abs().max() > 1e-4


# ----------------------------------------------- 2. accuracy on a conjugate linear model
def test_autoiaf_recovers_conjugate_linear_regression_posterior():
    torch.manual_seed(0)
    D, N, sigma = 5, 12, 1.0
    X = torch.randn(N, D)
    X[:, 1] = X[:, 0] + 0.15 * torch.randn(N)  # nearly collinear: strongly correlated w0, w1
    y = X @ torch.tensor([1.0, -0.5, 0.3, 0.8, -1.0]) + sigma * torch.randn(N)

    precision = torch.eye(D) + X.T @ X / sigma**2
    S = torch.linalg.inv(precision)
    m = S @ X.T @ y / sigma**2
    std = S.diagonal().sqrt()
    true_corr = S / torch.outer(std, std)
    log_evidence = dist.MultivariateNormal(torch.zeros(N), sigma**2 * torch.eye(N) + X @ X.T).log_prob(y)
    # the best mean-field Gaussian still misses by KL = (sum log diag(P) - log det P) / 2
    mean_field_gap = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    assert true_corr.abs().fill_diagonal_(0).max() > 0.8 and mean_field_gap > 0.5

    def model():
        w = pyro.sample("w", dist.Normal(torch.zeros(D), 1.0).to_event(1))
        with pyro.plate("obs", N):
            pyro.sample("y", dist.Normal((w * X).sum(-1), sigma), obs=y)  # (w * X): vectorizable

    def log_joint(w):
        return dist.Normal(0.0, 1.0).log_prob(w).sum(-1) + dist.Normal(w @ X.T, sigma).log_prob(y).sum(-1)

    def train(guide, steps=300):
        torch.manual_seed(1)
        optim = ClippedAdam({"lr": 0.03, "lrd": 0.05 ** (1 / steps)})
        svi = SVI(model, guide, optim, Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1))
        for _ in range(steps):
            svi.step()

    def summarise(w, log_q):
        ratio = log_joint(w) - log_q
        cov = torch.cov(w.T)
        corr = cov / torch.outer(cov.diagonal().sqrt(), cov.diagonal().sqrt())
        return ratio.mean(), ratio.std() / math.sqrt(len(w)), cov, corr

    # AutoIAF
    iaf_guide = AutoIAF(model, num_transforms=2, hidden_dims=[32], init_scale=0.5)
    train(iaf_guide)
    torch.manual_seed(2)
    with torch.no_grad():
        q = iaf_guide.get_posterior()
        w = q.sample((5000,))
        elbo, se, cov, corr = summarise(w, q.log_prob(w))
        pyro_elbo = -Trace_ELBO(num_particles=2000, vectorize_particles=True, max_plate_nesting=1).loss(
            model, iaf_guide
        )
    gap = log_evidence - elbo
    assert elbo <= log_evidence + 4 * se + 1e-3, (elbo, log_evidence)  # an ELBO is a lower bound
    assert gap < 0.2, f"AutoIAF ELBO {elbo:.3f} vs log evidence {log_evidence:.3f}"
    assert abs(pyro_elbo - elbo) < 0.05  # Pyro's Trace_ELBO sees the same objective
    assert (w.mean(0) - m).abs().max() < 0.1
    assert torch.linalg.norm(cov - S) / torch.linalg.norm(S) < 0.15
    assert (corr - true_corr).abs().max() < 0.1

    # AutoNormal, trained the same way, cannot express the correlation
    pyro.clear_param_store()
    normal_guide = AutoNormal(model, init_scale=0.5)
    train(normal_guide)
    torch.manual_seed(2)
    with torch.no_grad():
        qn = dist.Normal(normal_guide.locs.w, normal_guide.scales.w).to_event(1)
        wn = qn.sample((5000,))
        elbo_n, se_n, _, corr_n = summarise(wn, qn.log_prob(wn))
    assert (corr_n - torch.eye(D)).abs().max() < 0.1  # ~ identity
    assert (corr_n - true_corr).abs().max() > 0.6
    gap_n = log_evidence - elbo_n
    assert gap_n > mean_field_gap - 4 * se_n - 0.02  # no mean-field Gaussian does better
    assert gap_n > gap + 0.5


# ---------------------------------------------------------------- 3. SVI runs cleanly
@pytest.mark.parametrize("elbo_class", [Trace_ELBO, JitTrace_ELBO], ids=["Trace_ELBO", "JitTrace_ELBO"])
@pytest.mark.parametrize("kind, stable", KINDS)
def test_svi_steps_on_constrained_model(kind, stable, elbo_class):
    guide = make_guide(kind, constrained_model, stable=stable)
    guide()
    before = flow_parameters(guide)
    loc_before = guide.loc.detach().clone()
    svi = SVI(constrained_model, guide, Adam({"lr": 1e-2}), elbo_class())
    with quiet_jit():
        losses = [svi.step() for _ in range(30)]
    assert all(math.isfinite(loss) for loss in losses)
    after = flow_parameters(guide)
    assert all(not torch.equal(before[name], after[name]) for name in before), "some flow weights never trained"
    assert not torch.equal(loc_before, guide.loc.detach())
    with torch.no_grad():
        for _ in range(20):
            assert_in_support(guide())


def test_jit_elbo_matches_trace_elbo():
    guide = make_guide("AutoIAF", constrained_model)
    guide()
    assert_jit_elbo_matches_trace_elbo(constrained_model, guide)


def test_trace_mean_field_elbo_and_other_permutations():
    for permutation in ("reversed", "random", None):
        pyro.clear_param_store()
        guide = make_guide("AutoIAF", constrained_model, permutation=permutation)
        svi = SVI(constrained_model, guide, Adam({"lr": 1e-2}), TraceMeanField_ELBO())
        losses = [svi.step() for _ in range(15)]
        assert all(math.isfinite(loss) for loss in losses)
        q = guide.get_posterior()
        z = q.rsample((4,))
        assert torch.allclose(q.log_prob(z), q.log_prob(z.clone()), atol=1e-4)


@pytest.fixture
def trained_constrained_guide():
    guide = make_guide("AutoIAF", constrained_model, num_transforms=2, hidden_dims=[16])
    svi = SVI(constrained_model, guide, Adam({"lr": 2e-2}), Trace_ELBO())
    for _ in range(20):
        svi.step()
    return guide


def test_predictive_median_and_quantiles(trained_constrained_guide):
    guide = trained_constrained_guide
    samples = Predictive(constrained_model, guide=guide, num_samples=11)()
    # the same shapes as Pyro's own AutoNormal gives
    reference = Predictive(constrained_model, guide=AutoNormal(constrained_model), num_samples=11)()
    assert {k: v.shape for k, v in samples.items()} == {k: v.shape for k, v in reference.items()}
    assert samples["w"].shape == (11, 1, 3) and samples["y"].shape == (11, len(CONSTRAINED_DATA))
    assert_in_support(samples)

    median = guide.median()
    assert isinstance(median, dict) and set(median) == {"mu", "s", "p", "w"}
    assert median["mu"].shape == () and median["w"].shape == (3,)
    assert_in_support(median)

    quantiles = guide.quantiles([0.1, 0.5, 0.9])
    assert set(quantiles) == {"mu", "s", "p", "w"}
    assert quantiles["mu"].shape == (3,) and quantiles["w"].shape == (3, 3)
    for name in ("mu", "s", "p"):  # elementwise bijections keep the order
        q10, q50, q90 = quantiles[name]
        assert q10 <= q50 <= q90 and q10 < q90
    assert_in_support({name: value[1] for name, value in quantiles.items()})
    # the median is the middle quantile (Monte Carlo: a loose match)
    for name in ("mu", "s", "p"):
        assert torch.allclose(median[name], quantiles[name][1], atol=0.1)
    with pytest.raises(ValueError, match="quantiles"):
        guide.quantiles([0.5, 1.5])


def test_single_quantile_keeps_leading_dim(trained_constrained_guide):
    # Pyro's convention (AutoNormal, AutoMultivariateNormal): quantiles(qs) has a leading
    # dim of len(qs), also for qs = [0.5]; only median() drops it.
    reference = AutoNormal(constrained_model)
    reference()
    pyro_shapes = {k: v.shape for k, v in reference.quantiles([0.5]).items()}
    assert pyro_shapes["w"] == (1, 3)
    single = trained_constrained_guide.quantiles([0.5])
    assert {k: v.shape for k, v in single.items()} == pyro_shapes
