"""MADE density models: completing partly observed data (observed entries kept, the exact
conditional, the best mask set for the observed pattern)."""

import itertools

import pytest
import torch
from helpers import perturb_
from made_models_helpers import (
    FAMILIES,
    all_configurations,
    chi_square,
    chi_square_limit,
    context_batch,
    counts_of,
    data_for,
    make_model,
)

# ------------------------------------------------------------------ completion


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["sample", "mode"])
def test_complete_keeps_observed_entries_exactly(family, method):
    model = perturb_(make_model(family, order="random", num_masks=3), scale=0.7)
    x = data_for(family, (50,))
    observed = torch.tensor([True, False, True, False])
    completed = model.complete(x, observed, method=method)
    assert completed.shape == x.shape and completed.dtype == x.dtype
    assert torch.equal(completed[:, observed], x[:, observed])
    # the unobserved entries were filled in (not copied through)
    assert not torch.equal(completed[:, ~observed], x[:, ~observed])
    assert torch.isfinite(model.log_prob(completed)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_complete_with_a_per_row_observed_mask(family):
    model = perturb_(make_model(family), scale=0.7)
    x = data_for(family, (30,))
    observed = torch.rand(30, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    completed = model.complete(x, observed)
    assert torch.equal(completed[observed], x[observed])
    assert not torch.equal(completed[~observed], x[~observed])


@pytest.mark.parametrize("family", FAMILIES)
def test_complete_with_a_context(family):
    model = perturb_(make_model(family, context_dim=2), scale=0.7)
    x = data_for(family, (5,))
    observed = torch.tensor([False, True, True, False])
    completed = model.complete(x, observed, context=context_batch(5))
    assert completed.shape == x.shape
    assert torch.equal(completed[:, observed], x[:, observed])


@pytest.mark.parametrize("family", FAMILIES)
def test_complete_by_mode_is_deterministic_and_fills_in_conditional_modes(family):
    model = perturb_(make_model(family, order="random"), scale=0.7)
    x = data_for(family, (8,))
    observed = torch.tensor([False, True, False, True])
    torch.manual_seed(1)
    first = model.complete(x, observed, method="mode")
    torch.manual_seed(2)
    second = model.complete(x, observed, method="mode")
    assert torch.equal(first, second)
    # each filled-in entry is the mode of its conditional given the completed row
    params = model.made.raw_output(model.to_input(first))
    for d in (0, 2):
        mode = model.mode_conditional(params[..., d])
        assert torch.allclose(first[:, d].double(), mode.double(), atol=1e-10)


def exact_conditional(model, observed_values, observed):
    """p(x_unobserved | x_observed = observed_values) for a binary model, by
    enumerating the joint; rows follow all_configurations over the unobserved dims."""
    D = len(observed)
    configs = all_configurations(D, 2).double()
    matches = (configs[:, observed] == observed_values).all(-1)
    joint = model.log_prob(configs[matches]).exp().detach()
    return joint / joint.sum()


@pytest.mark.parametrize(
    "order, observed",
    [("natural", [True, False, False]), ("reversed", [False, True, True]), ([1, 2, 0], [False, True, False])],
)
def test_completion_is_the_exact_conditional_when_observed_dims_come_first(order, observed):
    model = perturb_(make_model("bernoulli", input_dim=3, hidden_dims=[8], order=order), scale=1.5)
    observed = torch.tensor(observed)
    assert model.is_exact_completion(observed)
    observed_values = torch.ones(int(observed.sum()), dtype=torch.float64)
    probs = exact_conditional(model, observed_values, observed)
    # the conditional differs from the other conditional, so conditioning matters
    other = exact_conditional(model, 1 - observed_values, observed)
    assert (probs - other).abs().max() > 0.02

    x = torch.zeros(40_000, 3, dtype=torch.float64)
    x[:, observed] = observed_values
    torch.manual_seed(5)
    completed = model.complete(x, observed)
    counts = counts_of(completed[:, ~observed], 2)
    assert chi_square(counts, probs) < chi_square_limit(len(probs))


@pytest.mark.parametrize(
    "observed, expected",
    [
        ([True, False, False, False], True),
        ([True, True, False, False], True),
        ([False, False, False, False], True),
        ([True, True, True, True], True),
        ([False, True, False, False], False),
        ([True, False, True, False], False),
        ([False, False, False, True], False),
    ],
)
def test_is_exact_completion_for_the_natural_order(observed, expected):
    model = make_model("gaussian")
    assert model.is_exact_completion(torch.tensor(observed)) is expected


def test_is_exact_completion_follows_the_active_order():
    model = make_model("gaussian", order=[3, 1, 0, 2])
    assert model.is_exact_completion(torch.tensor([False, True, False, True]))  # dims 3, 1 come first
    assert not model.is_exact_completion(torch.tensor([True, False, False, False]))  # dim 0 comes third


def unobserved_before_observed(order, observed):
    """Pairs (unobserved u, observed o) with u earlier than o in the order."""
    return sum(
        1
        for a, u in enumerate(order)
        for o in order[a + 1 :]
        if not observed[u] and observed[o]
    )


def test_best_mask_for_picks_the_order_with_the_fewest_bad_pairs():
    model = make_model("gaussian", input_dim=6, hidden_dims=[10], order="random", num_masks=8, seed=3)
    orders = [order.tolist() for order in model.made.orders]
    assert len({tuple(order) for order in orders}) == 8  # really different orders
    unique_best = 0
    for pattern in itertools.product([False, True], repeat=6):
        costs = [unobserved_before_observed(order, pattern) for order in orders]
        chosen = model.best_mask_for(torch.tensor(pattern))
        assert costs[chosen] == min(costs), pattern
        unique_best += costs.count(min(costs)) == 1
    assert unique_best >= 10  # many patterns where only one mask set is right


def test_complete_uses_the_best_mask_and_restores_the_active_one():
    model = perturb_(make_model("gaussian", input_dim=5, order="random", num_masks=6, seed=1), scale=0.7)
    model.made.set_mask(2)
    observed = torch.tensor([True, False, False, True, False])
    best = model.best_mask_for(observed)
    assert best != 2
    x = data_for("gaussian", (4,), input_dim=5)
    chosen = model.complete(x, observed, method="mode")
    assert int(model.made.mask_index) == 2
    assert torch.equal(model.made.permutation, model.made.orders[2])

    model.made.set_mask(best)
    by_hand = model.complete(x, observed, method="mode", choose_mask=False)
    assert torch.equal(chosen, by_hand)
    model.made.set_mask(2)
    with_active = model.complete(x, observed, method="mode", choose_mask=False)
    assert int(model.made.mask_index) == 2
    assert not torch.allclose(with_active, chosen)


def test_complete_restores_the_active_mask_when_a_step_fails():
    model = make_model("gaussian", order="random", num_masks=3)
    model.made.set_mask(1)

    def failing(params):
        raise RuntimeError("boom")

    model.sample_conditional = failing
    with pytest.raises(RuntimeError, match="boom"):
        model.complete(data_for("gaussian", (2,)), torch.tensor([True, False, False, False]))
    assert int(model.made.mask_index) == 1
