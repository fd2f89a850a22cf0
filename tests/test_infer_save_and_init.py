"""flowkit.infer's guides: saving and loading a trained guide, and initialising it at given
values of the latent sites."""

import copy
import io
import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import init_to_value
from pyro.optim import Adam

from flowkit.infer import AutoIAF
from infer_helpers import GUIDES, constrained_model, gaussian_model, make_guide

pytestmark = pytest.mark.usefixtures("clean_param_store")


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
