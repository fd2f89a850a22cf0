"""MADE density models: mask ensembles (log-mean-exp over mask sets, over freshly drawn masks)
and that they restore the active masks."""

import copy
import math

import pytest
import torch

from flowkit import BernoulliMADE, MADEConfig
from helpers import perturb_
from made_models_helpers import FAMILIES, all_configurations, context_batch, data_for, make_model

# ------------------------------------------------------------------- ensembles


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_ensemble_is_the_log_mean_exp_over_mask_sets(family):
    model = perturb_(make_model(family, order="random", num_masks=4), scale=0.7)
    x = data_for(family, (6,))
    per_mask = []
    for index in range(4):
        model.made.set_mask(index)
        per_mask.append(model.log_prob(x))
    model.made.set_mask(2)
    expected = torch.log(torch.stack(per_mask).exp().mean(0))
    assert torch.allclose(model.log_prob_ensemble(x), expected, atol=1e-12)
    assert int(model.made.mask_index) == 2
    # the mask sets really differ, so averaging is not a no-op
    assert not torch.allclose(per_mask[0], per_mask[1])

    subset = [3, 1]
    expected_subset = torch.log((per_mask[3].exp() + per_mask[1].exp()) / 2)
    assert torch.allclose(model.log_prob_ensemble(x, mask_indices=subset), expected_subset, atol=1e-12)
    assert torch.allclose(model.log_prob_ensemble(x, mask_indices=[1]), per_mask[1], atol=1e-12)
    assert int(model.made.mask_index) == 2


def test_log_prob_ensemble_with_a_context():
    model = perturb_(make_model("gaussian", context_dim=2, order="random", num_masks=3), scale=0.7)
    x, context = data_for("gaussian", (5,)), context_batch(5)
    per_mask = []
    for index in range(3):
        model.made.set_mask(index)
        per_mask.append(model.log_prob(x, context))
    model.made.set_mask(0)
    expected = torch.logsumexp(torch.stack(per_mask), 0) - math.log(3)
    assert torch.allclose(model.log_prob_ensemble(x, context), expected, atol=1e-12)


def test_bernoulli_ensemble_is_normalised():
    model = perturb_(make_model("bernoulli", input_dim=4, order="random", num_masks=3), scale=1.5)
    log_prob = model.log_prob_ensemble(all_configurations(4, 2).double())
    assert abs(torch.logsumexp(log_prob, 0).exp().item() - 1) < 1e-10


def test_log_prob_ensemble_restores_the_active_mask_on_error():
    model = make_model("bernoulli", order="random", num_masks=3)
    model.made.set_mask(1)
    with pytest.raises(ValueError, match="x"):
        model.log_prob_ensemble(torch.full((2, 4), 0.5, dtype=torch.float64))
    assert int(model.made.mask_index) == 1


def test_log_prob_ensemble_empty_mask_indices():
    model = make_model("gaussian", order="random", num_masks=3)
    with pytest.raises(ValueError, match="mask_indices"):
        model.log_prob_ensemble(data_for("gaussian", (2,)), mask_indices=[])


# ------------------------------------------------------- ensembles over freshly drawn masks


@pytest.mark.parametrize("sort", [False, True])
def test_ensemble_of_fresh_masks_is_the_log_mean_exp_of_each_masks_log_prob(sort):
    model = BernoulliMADE(5, [16], conditioner=MADEConfig(skip_connections=True, order="random"), seed=0).double()
    perturb_(model, scale=1.0)
    x = data_for("bernoulli", (7,), input_dim=5).double()
    ensemble = model.log_prob_ensemble(x, num_masks=6, seed=3, sort=sort)
    generator, each = torch.Generator().manual_seed(3), []
    reference = copy.deepcopy(model)
    for _ in range(6):
        reference.made.resample_masks(generator, sort=sort)
        each.append(reference.log_prob(x))
    expected = torch.logsumexp(torch.stack(each), 0) - math.log(6)
    assert torch.allclose(ensemble, expected, atol=1e-10, rtol=0)
    assert torch.equal(ensemble, model.log_prob_ensemble(x, num_masks=6, seed=3, sort=sort))  # reproducible
    assert not torch.allclose(ensemble, model.log_prob_ensemble(x, num_masks=6, seed=4, sort=sort))
    assert not torch.allclose(ensemble, model.log_prob_ensemble(x, num_masks=6, seed=3, sort=not sort))


def test_ensemble_of_fresh_masks_restores_the_masks():
    model = BernoulliMADE(5, [16], conditioner=MADEConfig(num_masks=2, order="random"), seed=0)
    model.made.set_mask(1)
    before, keys = [m.clone() for m in model.made.masks()], set(model.state_dict())
    model.log_prob_ensemble(data_for("bernoulli", (3,), input_dim=5), num_masks=4, seed=0)
    assert model.made.active_mask == 1 and set(model.state_dict()) == keys
    assert all(torch.equal(a, b) for a, b in zip(before, model.made.masks()))


def test_ensemble_connectivity_only_keeps_the_order():
    model = BernoulliMADE(4, [16], conditioner=MADEConfig(order="random"), seed=0)
    x = data_for("bernoulli", (3,), input_dim=4)
    order = model.made.permutation.clone()
    seen = []
    original = model.made.resample_masks

    def recording(generator, order=True, sort=False):
        original(generator, order, sort=sort)
        seen.append(model.made.permutation.clone())

    model.made.resample_masks = recording
    model.log_prob_ensemble(x, num_masks=3, seed=0, order=False)
    assert len(seen) == 3 and all(torch.equal(o, order) for o in seen)


def test_ensemble_options_are_checked():
    model = BernoulliMADE(3, [8], seed=0)
    x = data_for("bernoulli", (2,), input_dim=3)
    with pytest.raises(ValueError, match="mask_indices: give mask_indices or num_masks"):
        model.log_prob_ensemble(x, mask_indices=[0], num_masks=2)
    with pytest.raises(ValueError, match="num_masks"):
        model.log_prob_ensemble(x, num_masks=0)
    with pytest.raises(ValueError, match="sort: expected a bool"):
        model.log_prob_ensemble(x, num_masks=2, sort="yes")


def test_complete_and_sample_work_after_resampling():
    model = BernoulliMADE(4, [16], conditioner=MADEConfig(num_masks=2, order="random"), seed=0)
    model.made.resample_masks(torch.Generator().manual_seed(0))
    observed = torch.tensor([True, False, True, False])
    completed = model.complete(torch.zeros(3, 4), observed, method="mode")
    assert completed.shape == (3, 4) and model.made.active_mask == -1
    assert model.sample(5).shape == (5, 4)
    assert isinstance(model.is_exact_completion(observed, choose_mask=False), bool)
