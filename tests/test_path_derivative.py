"""The path-derivative ("sticking the landing") ELBO gradient of flowkit's flow guides.

The checks: when the guide *is* the posterior (a one-step linear IAF set by hand to map
N(0, I) onto a correlated Gaussian), every one-particle gradient is zero with the
path-derivative score and not without it, with each ELBO Pyro offers; away from the
posterior the two estimators have the same mean; the fast score of the guide's own
sample (the flow's Jacobian) equals the fixed-parameter sequential inverse, in float64 to
1e-10; and a draw scored after the parameters changed gets the new answer.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import ClippedAdam

import flowkit.infer.path_derivative as path_derivative
from flowkit.infer import AmortizedIAF, AutoIAF, AutoMAF
from flowkit.nn import MADEConfig
from infer_helpers import latent_site, quiet_jit

MEAN = [0.5, -1.0, 2.0]
COVARIANCE = [[1.0, 0.8, 0.3], [0.8, 1.5, -0.4], [0.3, -0.4, 0.7]]
ELBOS = {"Trace_ELBO": Trace_ELBO, "JitTrace_ELBO": JitTrace_ELBO, "TraceMeanField_ELBO": TraceMeanField_ELBO}


pytestmark = pytest.mark.usefixtures("clean_param_store")


def gaussian_posterior_model():
    """A latent site whose posterior (here the prior: no observations) is N(MEAN, COVARIANCE)."""
    pyro.sample("w", dist.MultivariateNormal(torch.tensor(MEAN), torch.tensor(COVARIANCE)))


def exact_guide(stick_the_landing: bool) -> AutoIAF:
    """A one-step IAF guide set to z = MEAN + L eps, L the Cholesky factor of COVARIANCE:
    the MADE's direct connections carry the strictly lower part of L, its output biases
    the diagonal, and every hidden-to-output weight is zero."""
    guide = AutoIAF(
        gaussian_posterior_model, num_transforms=1, conditioner=MADEConfig(hidden_dims=[8], skip_connections=True),
        stick_the_landing=stick_the_landing,
    )  # fmt: skip
    guide()
    step = guide.flow.transforms[0]
    made, dim = step.made, len(MEAN)
    cholesky = torch.linalg.cholesky(torch.tensor(COVARIANCE))
    with torch.no_grad():
        made.output_layer.weight.zero_()
        made.output_layer.bias.zero_()
        made.skip_layer.weight.zero_()
        made.skip_layer.weight[:dim] = cholesky.tril(-1)  # shift rows, natural order
        # Affine: scale = softplus(u + shift) + floor, so u = softplus^-1(scale - floor) - shift.
        diagonal = cholesky.diagonal() - step.bijection.scale_floor
        made.output_layer.bias[dim:] = torch.log(torch.expm1(diagonal)) - step.bijection._softplus_shift
        guide.loc.copy_(torch.tensor(MEAN))
        guide.scale_unconstrained.zero_()  # scale = exp(0) = 1
    return guide


def trainable(guide) -> list[torch.Tensor]:
    return [p for p in guide.parameters() if p.requires_grad]


def one_particle_gradient(guide, elbo) -> torch.Tensor:
    """The gradient of one single-particle ELBO loss for every guide parameter, flattened."""
    for p in trainable(guide):
        p.grad = None
    with quiet_jit():
        elbo.loss_and_grads(gaussian_posterior_model, guide)
    return torch.cat([p.grad.flatten() for p in trainable(guide)])


@pytest.mark.usefixtures("float64_default")
def test_the_exact_guide_is_the_posterior():
    guide = exact_guide(stick_the_landing=True)
    with torch.no_grad():
        w = guide.get_posterior().sample((20000,))
    torch.testing.assert_close(w.mean(0), torch.tensor(MEAN), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(w.T), torch.tensor(COVARIANCE), atol=0.05, rtol=0)
    loss = Trace_ELBO(num_particles=10, vectorize_particles=True).loss(gaussian_posterior_model, guide)
    assert abs(loss) < 1e-10  # log p(w) - log q(w) = 0 at every draw: log Z = 0, KL = 0


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("elbo_name", list(ELBOS))
def test_gradient_is_zero_when_the_guide_is_the_posterior(elbo_name):
    """Path derivative: every one-particle gradient vanishes at q = p. The usual estimator
    keeps its score-function part, whose variance does not vanish there."""
    with_stl = exact_guide(stick_the_landing=True)
    stl_elbo = ELBOS[elbo_name]()
    stl_grads = torch.stack([one_particle_gradient(with_stl, stl_elbo) for _ in range(10)])
    assert stl_grads.abs().max() < 1e-10

    pyro.clear_param_store()
    without = exact_guide(stick_the_landing=False)
    plain_elbo = ELBOS[elbo_name]()
    plain_grads = torch.stack([one_particle_gradient(without, plain_elbo) for _ in range(10)])
    assert plain_grads.std(0).max() > 0.1


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("kind", [AutoIAF, AutoMAF])
def test_same_mean_gradient_as_the_usual_estimator(kind):
    """Away from the posterior, the two estimators agree in expectation: their mean
    gradients over many particles differ by no more than their Monte Carlo error. (Here,
    far from the posterior, the path derivative is the noisier of the two: it pays off
    near the optimum.)"""

    def mean_gradients(stick_the_landing: bool) -> torch.Tensor:
        pyro.clear_param_store()
        torch.manual_seed(1)
        guide = kind(gaussian_posterior_model, num_transforms=2, hidden_dims=[8], stick_the_landing=stick_the_landing)
        guide()
        with torch.no_grad():
            for p in trainable(guide):
                p.add_(0.2 * torch.randn_like(p))
        elbo = Trace_ELBO(num_particles=2000, vectorize_particles=True)
        return torch.stack([one_particle_gradient(guide, elbo) for _ in range(8)])  # 8 batches of 2000

    stl, plain = mean_gradients(True), mean_gradients(False)
    difference = stl.mean(0) - plain.mean(0)
    standard_error = ((stl.var(0) + plain.var(0)) / len(stl)).sqrt()
    assert (difference.abs() <= 5 * standard_error + 1e-6).all(), (difference, standard_error)


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("kind", [AutoIAF, AutoMAF])
@pytest.mark.parametrize("jacobian", [True, False], ids=["jacobian", "sequential"])
def test_score_of_own_sample_matches_the_fixed_parameter_inverse(kind, jacobian, monkeypatch):
    """The score of the guide's own draw (from the flow's Jacobian, or the sequential
    inverse when the latent vector is too large for it) has the value of log q and the
    gradient of log q with the parameters detached, which the sequential fixed-parameter
    inverse computes for any point."""
    if not jacobian:
        monkeypatch.setattr(path_derivative, "JACOBIAN_MAX_DIM", 1)
    guide = kind(gaussian_posterior_model, num_transforms=2, hidden_dims=[8])
    guide()
    with torch.no_grad():
        for p in trainable(guide):
            p.add_(0.3 * torch.randn_like(p))
    with pyro.plate("particles", 4, dim=-1):
        q, z = latent_site(guide)
    assert isinstance(q, path_derivative.PathDerivativeFlow) and z.shape == (4, 3)
    own, fixed = q.log_prob(z), q.fixed_log_prob(z)
    usual = guide.get_posterior().log_prob(z.detach().clone())
    torch.testing.assert_close(own, usual, atol=1e-10, rtol=0)
    torch.testing.assert_close(fixed, usual, atol=1e-10, rtol=0)
    for left, right in zip(torch.autograd.grad(own.sum(), trainable(guide), retain_graph=True),
                           torch.autograd.grad(fixed.sum(), trainable(guide))):  # fmt: skip
        torch.testing.assert_close(left, right, atol=1e-10, rtol=1e-10)
    assert not q.log_prob(z.detach()).requires_grad  # no path to the parameters but through z


@pytest.mark.usefixtures("float64_default")
def test_draw_scored_after_a_parameter_change_gets_the_new_value():
    """The flow's weights change in place after the draw (loc and scale are the values the
    guide read when it drew, as for Pyro's guides): the draw's noise no longer maps onto it,
    so it is scored afresh."""
    guide = AutoIAF(gaussian_posterior_model, num_transforms=2, hidden_dims=[8])
    guide()
    q, z = latent_site(guide)
    before = q.log_prob(z).detach()
    with torch.no_grad():
        for p in guide.flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    after = q.log_prob(z)
    torch.testing.assert_close(after, guide.get_posterior().log_prob(z.detach().clone()), atol=1e-10, rtol=0)
    assert (after - before).abs() > 1e-3
    with torch.no_grad():  # the value-only path checks the preimage too
        torch.testing.assert_close(q.log_prob(z), after.detach(), atol=1e-10, rtol=0)


@pytest.mark.usefixtures("float64_default")
def test_predictive_and_guide_calls_with_the_path_derivative():
    guide = exact_guide(stick_the_landing=True)
    samples = Predictive(gaussian_posterior_model, guide=guide, num_samples=3000, parallel=True)()
    assert samples["w"].shape == (3000, 3)
    torch.testing.assert_close(samples["w"].mean(0), torch.tensor(MEAN), atol=0.1, rtol=0)
    assert guide()["w"].shape == (3,)


@pytest.mark.usefixtures("float64_default")
def test_amortized_gradient_is_zero_when_the_posterior_is_exact():
    """AmortizedIAF with an affine identity step (zero last layer) is N(loc, scale): against that
    very Gaussian as the model, the path-derivative gradient of the encoder outputs and the
    flow is zero for every draw, the usual one is not."""
    loc = torch.tensor([[0.3, -0.2], [1.0, 0.5]], requires_grad=True)
    scale = torch.tensor([[0.5, 2.0], [1.0, 0.7]], requires_grad=True)
    context = torch.randn(2, 3, requires_grad=True)

    def gradients(stick_the_landing: bool) -> torch.Tensor:
        posterior = AmortizedIAF(
            2, 3, num_transforms=1, hidden_dims=[8], bijection="affine", stick_the_landing=stick_the_landing
        )
        with torch.no_grad():
            posterior.flow.transforms[0].made.output_layer.weight.zero_()
            posterior.flow.transforms[0].made.output_layer.bias.zero_()
        q = posterior(loc, scale, context)
        z = q.rsample()
        log_ratio = dist.Normal(loc.detach(), scale.detach()).log_prob(z).sum(-1) - q.log_prob(z)
        inputs = [loc, scale, context, *posterior.parameters()]
        return torch.cat([g.flatten() for g in torch.autograd.grad(log_ratio.sum(), inputs, allow_unused=True)
                          if g is not None])  # fmt: skip

    assert max(gradients(True).abs().max().item() for _ in range(5)) < 1e-10
    assert max(gradients(False).abs().max().item() for _ in range(5)) > 0.1


@pytest.mark.usefixtures("float64_default")
def test_amortized_score_matches_the_fixed_parameter_inverse():
    posterior = AmortizedIAF(3, 2, num_transforms=2, hidden_dims=[16])
    with torch.no_grad():
        for p in posterior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    loc = torch.randn(4, 3, requires_grad=True)
    scale = (torch.rand(4, 3) + 0.5).requires_grad_()
    context = torch.randn(4, 2, requires_grad=True)
    q = posterior(loc, scale, context)
    z = q.rsample((2,))
    own, fixed = q.log_prob(z), q.fixed_log_prob(z)
    assert own.shape == (2, 4)
    plain = AmortizedIAF(3, 2, num_transforms=2, hidden_dims=[16], stick_the_landing=False)
    plain.load_state_dict(posterior.state_dict())
    torch.testing.assert_close(own, plain(loc, scale, context).log_prob(z.detach().clone()), atol=1e-10, rtol=0)
    inputs = [loc, scale, context, *posterior.parameters()]
    for left, right in zip(torch.autograd.grad(own.sum(), inputs, retain_graph=True),
                           torch.autograd.grad(fixed.sum(), inputs)):  # fmt: skip
        torch.testing.assert_close(left, right, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("make", [
    lambda bad: AutoIAF(gaussian_posterior_model, stick_the_landing=bad),
    lambda bad: AmortizedIAF(2, 3, stick_the_landing=bad),
], ids=["AutoIAF", "AmortizedIAF"])  # fmt: skip
def test_stick_the_landing_must_be_a_bool(make):
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="stick_the_landing"):
            make(bad)


def test_converges_to_a_gaussian_posterior_it_contains():
    """A user's run, in float32, with the guide's defaults (whose full affine map holds this
    posterior). With the path-derivative gradient it gets within 0.05 nats of it in 500
    steps of one particle (0.020 when written); with the usual gradient, whose noise does
    not vanish there, it stays several times further (0.74)."""

    def kl_gap(stick_the_landing: bool) -> float:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = AutoIAF(gaussian_posterior_model, stick_the_landing=stick_the_landing)
        svi = SVI(gaussian_posterior_model, guide, ClippedAdam({"lr": 0.02}), Trace_ELBO())
        for _ in range(500):
            svi.step()
        torch.manual_seed(123)
        with torch.no_grad():  # log Z = 0: the loss is the KL gap
            return Trace_ELBO(num_particles=4000, vectorize_particles=True).loss(gaussian_posterior_model, guide)

    with_stl, without = kl_gap(True), kl_gap(False)
    assert with_stl < 0.05, with_stl
    assert without > 0.2, without


def test_standard_normal_log_prob():
    u = torch.randn(5, 3)
    expected = dist.Normal(0.0, 1.0).log_prob(u).sum(-1)
    torch.testing.assert_close(path_derivative.standard_normal_log_prob(u), expected)
    at_zero = path_derivative.standard_normal_log_prob(torch.zeros(1, dtype=torch.float64)).item()
    assert math.isclose(at_zero, -0.5 * math.log(2 * math.pi), rel_tol=1e-15)


@pytest.mark.usefixtures("float64_default")
def test_score_of_own_sample_of_a_single_latent_coordinate():
    """D = 1, where no MADE output depends on the noise: the Jacobian pass still gives the
    fixed-parameter score (a 1 x 1 Jacobian, a log-determinant of zero gradient)."""

    def scalar_model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(0.5))

    guide = AutoIAF(scalar_model, num_transforms=2, hidden_dims=[4])
    guide()
    with pyro.plate("particles", 3, dim=-1):
        q, z = latent_site(guide)
    own, fixed = q.log_prob(z), q.fixed_log_prob(z)
    torch.testing.assert_close(own, fixed, atol=1e-10, rtol=0)
    (own_grad,) = torch.autograd.grad(own.sum(), z)
    (fixed_grad,) = torch.autograd.grad(fixed.sum(), z)
    torch.testing.assert_close(own_grad, fixed_grad, atol=1e-10, rtol=1e-10)
