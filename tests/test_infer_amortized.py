"""flowkit.infer.AmortizedIAF: an amortized IAF guide, its densities, its MADE passes and a
tiny VAE."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from flowkit.infer import AmortizedIAF
from infer_helpers import log_det_by_autograd

pytestmark = pytest.mark.usefixtures("clean_param_store")


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
