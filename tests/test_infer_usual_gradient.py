"""The guide's latent site with ``stick_the_landing=False`` (the usual ELBO gradient): the
log-density of its own draw comes from the pass that drew it, with no MADE pass and no
inverse, has the value and the gradient that scoring it afresh gives, and is never an
answer that scoring afresh would not give (the parameters checked bit for bit, as the
transforms' cache checks them)."""

import pyro
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO
from pyro.optim import Adam

from flowkit.infer import AutoIAF, AutoMAF
from infer_helpers import assert_jit_elbo_matches_trace_elbo, constrained_model, gaussian_model, quiet_jit

pytestmark = pytest.mark.usefixtures("clean_param_store")


def usual_gradient_guide(kind=AutoIAF, model=gaussian_model):
    """A guide of the usual gradient, moved away from its near-identity start."""
    guide = kind(model, num_transforms=2, hidden_dims=[8], stick_the_landing=False)
    guide()
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return guide


def latent_site(guide, particles=4):
    """The distribution and value of the guide's latent site, from one trace."""
    with pyro.plate("particles", particles, dim=-1):
        site = pyro.poutine.trace(guide).get_trace().nodes[f"_{guide._pyro_name}_latent"]
    return site["fn"], site["value"]


def fresh_log_prob(guide, z):
    """log q(z) through Pyro's TransformedDistribution, for a new tensor: no cache answers."""
    return guide.get_posterior().log_prob(z.detach().clone())


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("kind", [AutoIAF, AutoMAF])
def test_own_draw_is_scored_from_its_pass_with_the_fresh_value_and_gradient(kind, made_passes):
    guide = usual_gradient_guide(kind)
    q, z = latent_site(guide)
    made_passes.reset()
    own = q.log_prob(z)
    assert made_passes.raw_output == made_passes.sequential == 0, "scoring the own draw ran a MADE pass"
    torch.testing.assert_close(own, fresh_log_prob(guide, z), atol=1e-10, rtol=0)
    # The gradient of log q(z(theta)) through the draw, and through an inverse of the same z.
    inverted = q.log_prob_fn(z)
    assert made_passes.raw_output + made_passes.sequential > 0  # the inverse is a real recomputation
    parameters = list(guide.parameters())  # loc among them: log q(z(theta)) does not depend on it
    for left, right in zip(torch.autograd.grad(own.sum(), parameters, retain_graph=True, materialize_grads=True),
                           torch.autograd.grad(inverted.sum(), parameters)):  # fmt: skip
        torch.testing.assert_close(left, right, atol=1e-10, rtol=1e-10)


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("write", ["data_add", "fused_adam", "in_place_on_z"])
def test_own_draw_after_a_change_is_scored_afresh(write):
    """``p.data.add_`` and a fused Adam step move no version counter: the values are checked."""
    guide = usual_gradient_guide()
    q, z = latent_site(guide)
    before = q.log_prob(z).detach()
    if write == "data_add":
        for p in guide.flow.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    elif write == "fused_adam":
        q.log_prob(z).sum().backward()
        torch.optim.Adam(guide.flow.parameters(), lr=0.1, fused=True).step()
    else:
        with torch.no_grad():
            z.add_(0.1)
    after = q.log_prob(z)
    torch.testing.assert_close(after, fresh_log_prob(guide, z), atol=1e-10, rtol=0)
    assert (after.detach() - before).abs().max() > 1e-3


@pytest.mark.usefixtures("float64_default")
def test_earlier_draw_is_scored_afresh_after_a_later_draw_reuses_its_copies():
    """Each draw reuses the memory of the previous draw's copies of the parameters: the
    previous draw, whose copies now hold the later values, must not answer from its pass."""
    guide = usual_gradient_guide()
    first, z = latent_site(guide)
    for p in guide.flow.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    latent_site(guide)  # the next draw takes over the copies
    torch.testing.assert_close(first.log_prob(z), fresh_log_prob(guide, z), atol=1e-10, rtol=0)


def test_draw_without_gradients_is_scored_afresh_with_them():
    """``sample()`` draws under ``no_grad``: its log-density with gradients on has a graph."""
    guide = usual_gradient_guide()
    q, _ = latent_site(guide)
    z = q.sample((3,))
    log_q = q.log_prob(z)
    assert log_q.requires_grad
    torch.testing.assert_close(log_q, fresh_log_prob(guide, z), atol=1e-5, rtol=1e-5)


def test_jit_elbo_matches_trace_elbo_with_the_usual_gradient():
    guide = AutoIAF(constrained_model, num_transforms=2, hidden_dims=[8], stick_the_landing=False)
    guide()
    assert_jit_elbo_matches_trace_elbo(constrained_model, guide)
    svi = SVI(constrained_model, guide, Adam({"lr": 1e-2}), JitTrace_ELBO())
    with quiet_jit():
        assert all(torch.isfinite(torch.tensor(svi.step())) for _ in range(5))
