"""Tests for flowkit.infer: the AutoIAF / AutoMAF autoguides and AmortizedIAF.

The guides' posterior over the unconstrained latent vector is
``z = loc + scale * flow(eps)`` with ``eps ~ N(0, I)``. The checks here are written out
in the test rather than read back from flowkit: log-densities against an autograd
Jacobian, accuracy against the closed-form posterior and evidence of a conjugate
Bayesian linear regression, and MADE passes counted by patching ``MADE.raw_output``.
"""

import contextlib
import copy
import io
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal, init_to_value
from pyro.optim import Adam, ClippedAdam
from torch import nn

from flowkit.infer import AmortizedIAF, AutoIAF, AutoMAF

GUIDES = {"AutoIAF": AutoIAF, "AutoMAF": AutoMAF}
# (guide class, stable) for the SVI smoke tests
KINDS = [("AutoIAF", False), ("AutoIAF", True), ("AutoMAF", False)]


pytestmark = pytest.mark.usefixtures("clean_param_store")


# ----------------------------------------------------------------------------- models
def gaussian_model():
    """Four unconstrained latent coordinates: a 3-vector and a positive scalar."""
    a = pyro.sample("a", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    s = pyro.sample("s", dist.LogNormal(torch.tensor(0.0), 1.0))
    pyro.sample("y", dist.Normal(a.sum() + s, 1.0), obs=torch.tensor(1.5))


CONSTRAINED_DATA = [0.3, 0.9, 0.7, 0.2, 0.5, 1.1]


def constrained_model():
    """Sites on R, (0, inf), (0, 1) and the 3-simplex."""
    data = torch.tensor(CONSTRAINED_DATA)
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    s = pyro.sample("s", dist.HalfNormal(1.0))
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    w = pyro.sample("w", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("data", len(data)):
        pyro.sample("y", dist.Normal(mu + p * w[0], s), obs=data)


def make_guide(kind, model=gaussian_model, stable=False, **kwargs):
    options = dict(num_transforms=2, hidden_dims=[8], bijection="gated" if stable else "affine")
    return GUIDES[kind](model, **{**options, **kwargs})


def flow_parameters(guide):
    return {name: p.detach().clone() for name, p in guide.flow.named_parameters()}


def assert_in_support(sample):
    assert sample["s"].gt(0).all()
    assert sample["p"].gt(0).all() and sample["p"].lt(1).all()
    assert sample["w"].gt(0).all()
    assert torch.allclose(sample["w"].sum(-1), torch.ones(()), atol=1e-5)


@contextlib.contextmanager
def quiet_jit():
    """torch.jit.trace warns about traced Python control flow and its own deprecation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=DeprecationWarning)
        yield


def log_det_by_autograd(fn, x):
    """Per-row log |det d fn(x) / dx| for a row-wise map of ``x`` of shape ``(N, D)``."""
    jacobian = torch.autograd.functional.jacobian(fn, x)  # (N, D, N, D)
    rows = range(x.shape[0])
    return torch.stack([torch.linalg.slogdet(jacobian[i, :, i, :])[1] for i in rows])


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
    jit_elbo, elbo = JitTrace_ELBO(), Trace_ELBO()
    with quiet_jit():
        jit_elbo.loss_and_grads(constrained_model, guide)  # compiles
        for seed in (3, 4):
            torch.manual_seed(seed)
            expected = elbo.loss_and_grads(constrained_model, guide)
            torch.manual_seed(seed)
            actual = jit_elbo.loss_and_grads(constrained_model, guide)
            assert actual == pytest.approx(expected, rel=1e-5, abs=1e-4)


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


# ------------------------------------------------------------------------ 4. save / load
def trained(kind):
    guide = make_guide(kind, constrained_model, hidden_dims=[16])
    svi = SVI(constrained_model, guide, Adam({"lr": 2e-2}), Trace_ELBO())
    for _ in range(5):
        svi.step()
    return guide


def draw(guide, seed=123):
    torch.manual_seed(seed)
    with torch.no_grad():
        z = guide.get_posterior().sample((5,))
        sites = guide()
    return z, sites


def assert_same_draws(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])


@pytest.mark.parametrize("kind", ["AutoIAF", "AutoMAF"])
def test_state_dict_round_trip(kind, tmp_path):
    guide = trained(kind)
    path = tmp_path / "guide.pt"
    torch.save(guide.state_dict(), path)
    expected = draw(guide)

    pyro.clear_param_store()
    torch.manual_seed(99)  # different initial weights
    fresh = make_guide(kind, constrained_model, hidden_dims=[16])
    fresh()  # sets up the prototype
    assert not torch.equal(draw(fresh)[0], expected[0])
    fresh.load_state_dict(torch.load(path))
    assert_same_draws(draw(fresh), expected)


def test_param_store_round_trip(tmp_path):
    guide = trained("AutoIAF")
    path = tmp_path / "params.pt"
    torch.save(pyro.get_param_store().get_state(), path)
    expected = draw(guide)
    assert any("flow" in name for name in pyro.get_param_store().keys())  # the flow weights are saved

    pyro.clear_param_store()
    pyro.get_param_store().set_state(torch.load(path, weights_only=False))
    torch.manual_seed(99)
    fresh = make_guide("AutoIAF", constrained_model, hidden_dims=[16])
    fresh()
    assert torch.equal(fresh.loc.detach(), guide.loc.detach())
    saved = dict(guide.flow.named_parameters())
    not_restored = [
        name for name, value in fresh.flow.named_parameters() if not torch.equal(value.detach(), saved[name].detach())
    ]
    assert not not_restored, f"flow weights not restored from the param store: {not_restored}"
    assert_same_draws(draw(fresh), expected)


@pytest.mark.parametrize("kind", ["AutoIAF", "AutoMAF"])
def test_deepcopy_and_pickle_after_use(kind):
    guide = trained(kind)
    guide.get_posterior().rsample()  # leaves graph tensors in the caches
    expected = draw(guide)
    copied = copy.deepcopy(guide)
    assert_same_draws(draw(copied), expected)
    buffer = io.BytesIO()
    torch.save(guide, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert_same_draws(draw(loaded), expected)


# ------------------------------------------------------------------------ 5. AmortizedIAF
@pytest.mark.parametrize("stable", [True, False])
def test_amortized_shapes(stable):
    posterior = AmortizedIAF(latent_dim=3, context_dim=4, num_transforms=2, hidden_dims=[16], bijection="gated" if stable else "affine")
    loc, scale, context = torch.randn(6, 3), torch.rand(6, 3) + 0.5, torch.randn(6, 4)
    q = posterior(loc, scale, context)
    assert q.batch_shape == (6,) and q.event_shape == (3,)
    z = q.rsample()
    assert z.shape == (6, 3) and q.log_prob(z).shape == (6,)
    zs = q.rsample((2,))
    assert zs.shape == (2, 6, 3) and q.log_prob(zs).shape == (2, 6)
    assert z.requires_grad  # reparameterised


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("stable", [True, False])
def test_amortized_log_prob_matches_recomputation(stable):
    posterior = AmortizedIAF(latent_dim=3, context_dim=2, num_transforms=2, hidden_dims=[16], bijection="gated" if stable else "affine")
    with torch.no_grad():
        for p in posterior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    loc, scale, context = torch.randn(4, 3), torch.rand(4, 3) + 0.5, torch.randn(4, 2)
    q = posterior(loc, scale, context)
    z = q.rsample()
    assert z.dtype == torch.float64
    cached = q.log_prob(z)
    fresh = posterior(loc, scale, context).log_prob(z.clone())
    assert torch.allclose(cached, fresh, atol=1e-8, rtol=0)

    # From scratch for a point we build ourselves: x0 ~ N(loc, scale), z = flow(x0 | h).
    x0 = loc + scale * torch.randn(4, 3)

    def flow(x):
        for transform in posterior.flow.conditioned_transforms(context):
            x = transform(x)
        return x

    z_ref = flow(x0)
    expected = dist.Normal(loc, scale).log_prob(x0).sum(-1) - log_det_by_autograd(flow, x0)
    actual = posterior(loc, scale, context).log_prob(z_ref.detach().clone())
    assert torch.allclose(actual, expected, atol=1e-8, rtol=0)


def test_amortized_scoring_own_sample_needs_no_made_pass(made_passes):
    posterior = AmortizedIAF(latent_dim=3, context_dim=4, num_transforms=2, hidden_dims=[16], stick_the_landing=False)
    q = posterior(torch.randn(5, 3), torch.ones(5, 3), torch.randn(5, 4))
    made_passes.reset()
    z = q.rsample()
    assert made_passes.raw_output == 2
    q.log_prob(z)
    assert made_passes.raw_output == 2


def test_amortized_validation():
    posterior = AmortizedIAF(latent_dim=3, context_dim=4, num_transforms=1, hidden_dims=[8])
    loc, scale, context = torch.zeros(5, 3), torch.ones(5, 3), torch.zeros(5, 4)
    with pytest.raises(ValueError, match="loc"):
        posterior(torch.zeros(5, 2), scale, context)
    with pytest.raises(ValueError, match="loc"):
        posterior(torch.tensor(0.0), scale, context)
    with pytest.raises(ValueError, match="scale"):
        posterior(loc, torch.ones(5, 4), context)
    with pytest.raises(ValueError, match="context"):
        posterior(loc, scale, torch.zeros(5, 3))
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="context_dim"):
            AmortizedIAF(latent_dim=3, context_dim=bad)


@pytest.mark.parametrize("stick_the_landing", [False, True])
def test_amortized_iaf_in_a_tiny_vae(stick_the_landing, made_passes):
    torch.manual_seed(0)
    x_dim, z_dim, c_dim, n = 8, 2, 4, 64
    prototypes = torch.tensor([[1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4])
    flips = torch.rand(n, x_dim) < 0.1
    data = (prototypes[torch.randint(0, 2, (n,))] + flips.float()) % 2

    encoder = nn.Linear(x_dim, 2 * z_dim + c_dim)
    decoder = nn.Linear(z_dim, x_dim)
    posterior = AmortizedIAF(
        latent_dim=z_dim, context_dim=c_dim, num_transforms=2, hidden_dims=[16], stick_the_landing=stick_the_landing
    )

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        pyro.module("posterior", posterior)
        loc, log_scale, h = encoder(x).split([z_dim, z_dim, c_dim], dim=-1)
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("z", posterior(loc, log_scale.exp(), h))

    made_passes.reset()
    assert torch.isfinite(Trace_ELBO().differentiable_loss(model, guide, data))
    # One pass per IAF step (the score from the cache), or one more over the noise copies.
    assert made_passes.raw_output == (4 if stick_the_landing else 2)

    before = {k: v.detach().clone() for k, v in posterior.named_parameters()}
    svi = SVI(model, guide, Adam({"lr": 3e-2}), Trace_ELBO())
    losses = [svi.step(data) for _ in range(30)]
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 10
    assert all(not torch.equal(before[k], v) for k, v in posterior.named_parameters()), "the flow did not train"


# -------------------------------------------------------------------------------- 6. init
INIT_VALUES = {
    "mu": torch.tensor(1.5),
    "s": torch.tensor(2.0),
    "p": torch.tensor(0.25),
    "w": torch.tensor([0.2, 0.3, 0.5]),
}


def init_unconstrained():
    """The init values mapped to the unconstrained space, in the model's site order."""
    return torch.cat(
        [
            INIT_VALUES["mu"].reshape(1),
            torch.log(INIT_VALUES["s"]).reshape(1),
            torch.logit(INIT_VALUES["p"]).reshape(1),
            torch.distributions.biject_to(torch.distributions.constraints.simplex).inv(INIT_VALUES["w"]),
        ]
    )


@pytest.mark.parametrize("kind", ["AutoIAF", "AutoMAF"])
@pytest.mark.parametrize("init_scale", [0.1, 0.3])
def test_near_identity_start_at_init_loc(kind, init_scale):
    guide = GUIDES[kind](
        constrained_model,
        num_transforms=4,
        hidden_dims=[16],
        init_scale=init_scale,
        init_loc_fn=init_to_value(values=INIT_VALUES),
    )
    guide()
    expected_loc = init_unconstrained()
    assert torch.allclose(guide.loc.detach(), expected_loc, atol=1e-5)
    with torch.no_grad():
        z = guide.get_posterior().sample((4000,))
    assert torch.allclose(z.mean(0), expected_loc, atol=4 * init_scale / math.sqrt(4000) + 1e-3)
    assert torch.allclose(z.std(0), torch.full((5,), init_scale), rtol=0.05)
    corr = torch.corrcoef(z.T)
    assert (corr - torch.eye(5)).abs().max() < 0.1  # no correlation yet
    median = guide.median(num_samples=2000)
    for name in ("mu", "s", "p"):
        assert torch.allclose(median[name], INIT_VALUES[name], rtol=0.05, atol=0.02)


def test_stable_start_is_centred_at_init_loc():
    # The gated step keeps sigmoid(2) ~ 0.88 of its input at first (documented), so
    # only the location and an upper bound on the spread are checked here.
    init = init_to_value(values=INIT_VALUES)
    guide = AutoIAF(constrained_model, num_transforms=4, hidden_dims=[16], bijection="gated", init_loc_fn=init)
    guide()
    with torch.no_grad():
        z = guide.get_posterior().sample((4000,))
    assert torch.allclose(z.mean(0), init_unconstrained(), atol=0.01)
    assert (z.std(0) > 0.03).all() and (z.std(0) < 0.105).all()


@pytest.mark.parametrize("kind", ["AutoIAF", "AutoMAF"])
@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan")])
def test_init_scale_must_be_positive(kind, bad):
    with pytest.raises(ValueError, match="init_scale"):
        GUIDES[kind](gaussian_model, init_scale=bad)
