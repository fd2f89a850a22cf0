"""The affine map that ends the flow guides' posterior, ``affine="full"`` (the default),
``"diagonal"`` or ``None``: z = loc + diag(scale) T flow(eps), T unit lower triangular.

Densities are checked against an autograd Jacobian of Pyro's own transforms, the
path-derivative gradient at a guide whose affine map alone is the posterior, and the
parameters each choice puts in Pyro's parameter store.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from flowkit.infer import AutoIAF, AutoMAF
from flowkit.infer.autoguides import AFFINES
from flowkit.nn import MADEConfig
from infer_helpers import gaussian_model, latent_site, log_det_by_autograd

pytestmark = pytest.mark.usefixtures("clean_param_store")

MEAN = [0.5, -1.0, 2.0]
COVARIANCE = [[1.0, 0.8, 0.3], [0.8, 1.5, -0.4], [0.3, -0.4, 0.7]]


def perturbed_guide(kind, affine, stick_the_landing):
    """A two-step guide moved away from its start, so that every part of it matters."""
    guide = kind(gaussian_model, num_transforms=2, hidden_dims=[8], affine=affine, stick_the_landing=stick_the_landing)
    guide()
    with torch.no_grad():
        for parameter in guide.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return guide


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("kind", [AutoIAF, AutoMAF])
@pytest.mark.parametrize("affine", AFFINES)
@pytest.mark.parametrize("stick_the_landing", [True, False])
def test_log_prob_matches_an_autograd_jacobian(kind, affine, stick_the_landing):
    """The latent site's log q at its own draws and at outside points, and the posterior
    that Pyro's transforms give, all equal log N(eps) - log |det dz/deps| by autograd."""
    torch.manual_seed(0)
    guide = perturbed_guide(kind, affine, stick_the_landing)
    with pyro.plate("particles", 5, dim=-1):
        site, z = latent_site(guide)
    transform = guide.get_transform()
    eps = transform.inv(z.detach().clone())
    torch.testing.assert_close(transform(eps.clone()), z.detach(), atol=1e-10, rtol=0)
    expected = dist.Normal(0.0, 1.0).log_prob(eps).sum(-1) - log_det_by_autograd(transform, eps)
    torch.testing.assert_close(site.log_prob(z).detach(), expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(site.log_prob(z.detach().clone()).detach(), expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(guide.get_posterior().log_prob(z.detach().clone()), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "affine, names", [("full", {"loc", "scale", "scale_tril"}), ("diagonal", {"loc", "scale"}), (None, set())]
)
def test_parameters_of_each_affine_map(affine, names):
    guide = AutoIAF(gaussian_model, num_transforms=1, hidden_dims=[8], affine=affine)
    guide()
    prefix = "AutoIAF."
    stored = {name[len(prefix):] for name in pyro.get_param_store() if not name.startswith(prefix + "flow$$$")}
    assert stored == names
    if affine == "full":  # starts as the identity, and stays unit lower triangular
        assert torch.equal(guide.scale_tril, torch.eye(4))


def test_without_an_affine_map_the_guide_starts_at_the_standard_normal():
    """``affine=None`` is Pyro's AutoIAFNormal's architecture: the flow alone on N(0, I),
    which starts near the identity whatever ``init_loc_fn`` says."""
    torch.manual_seed(0)
    guide = AutoIAF(gaussian_model, num_transforms=2, hidden_dims=[8], affine=None)
    guide()
    with torch.no_grad():
        z = guide.get_posterior().sample((20000,))
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(4), atol=0.05, rtol=0)


def test_affine_must_be_one_of_the_choices():
    for bad in ("lower", "Full", 1):
        with pytest.raises(ValueError, match="affine"):
            AutoIAF(gaussian_model, affine=bad)


def gaussian_posterior_model():
    """A latent site whose posterior (the prior: no observations) is N(MEAN, COVARIANCE)."""
    pyro.sample("w", dist.MultivariateNormal(torch.tensor(MEAN), torch.tensor(COVARIANCE)))


@pytest.mark.usefixtures("float64_default")
def test_path_derivative_is_zero_when_the_full_affine_map_is_the_posterior():
    """With the flow at the identity and loc + diag(scale) T = MEAN + Cholesky factor, the
    guide is the posterior, and every one-particle path-derivative gradient vanishes."""
    guide = AutoIAF(gaussian_posterior_model, num_transforms=2, hidden_dims=[8])
    guide()
    cholesky = torch.linalg.cholesky(torch.tensor(COVARIANCE))
    with torch.no_grad():
        for step in guide.flow.transforms:
            if hasattr(step, "made"):
                step.made.scale_outputs_(0.0)  # outputs 0: each step the identity
        guide.loc.copy_(torch.tensor(MEAN))
    guide.scale = cholesky.diagonal()
    guide.scale_tril = cholesky / cholesky.diagonal().unsqueeze(-1)
    loss = Trace_ELBO(num_particles=10, vectorize_particles=True).loss(gaussian_posterior_model, guide)
    assert abs(loss) < 1e-10  # log p(w) - log q(w) = 0 at every draw
    parameters = [p for p in guide.parameters() if p.requires_grad]
    for _ in range(5):
        for p in parameters:
            p.grad = None
        Trace_ELBO().loss_and_grads(gaussian_posterior_model, guide)
        assert max(p.grad.abs().max().item() for p in parameters if p.grad is not None) < 1e-10


def test_default_steps_are_two_of_one_layer_of_3d_plus_1_tanh_units():
    guide = AutoIAF(gaussian_model)
    guide()
    mades = [step.made for step in guide.flow.transforms if hasattr(step, "made")]
    assert len(mades) == 2
    for made in mades:
        assert made.hidden_dims == [3 * 4 + 1] and isinstance(made.activation, torch.nn.Tanh)
    pyro.clear_param_store()  # the same guide name: Pyro would load the first guide's values
    mine = AutoIAF(gaussian_model, conditioner=MADEConfig(hidden_dims=[8], activation="relu"))
    mine()
    assert not isinstance(mine.flow.transforms[0].made.activation, torch.nn.Tanh)


def test_a_guide_of_the_same_name_and_other_sizes_is_a_clear_error():
    AutoIAF(gaussian_model, hidden_dims=[8])()
    with pytest.raises(ValueError, match=r"AutoIAF\.flow.*shape.*clear_param_store"):
        AutoIAF(gaussian_model, hidden_dims=[16])()
    pyro.clear_param_store()
    assert AutoIAF(gaussian_model, hidden_dims=[16])()["a"].shape == (3,)
