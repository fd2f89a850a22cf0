"""MADE density models (Bernoulli, Gaussian, mixture, categorical): log_prob shapes, exact
normalisation, and log_prob against a chain rule written out here.

Exactness checks run in float64 on small models whose weights are redrawn with a fixed
generator, so the conditionals are far from uniform."""

import pytest
import torch

from flowkit import MixtureMADE
from helpers import perturb_
from made_models_helpers import (
    FAMILIES,
    K_CLASSES,
    K_COMPONENTS,
    all_configurations,
    context_batch,
    data_for,
    density_on_grid,
    make_model,
    normal_log_density,
    scales_of,
)

# ------------------------------------------------------------ log_prob shapes


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
def test_log_prob_shape_is_the_batch_shape(family, batch_shape):
    model = make_model(family)
    log_prob = model.log_prob(data_for(family, batch_shape))
    assert log_prob.shape == batch_shape
    assert log_prob.dtype == torch.float64
    assert torch.isfinite(log_prob).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
def test_conditional_log_prob_shape_with_a_context_per_row(family, batch_shape):
    model = make_model(family, context_dim=2)
    context = torch.randn(*batch_shape, 2, dtype=torch.float64)
    assert model.log_prob(data_for(family, batch_shape), context).shape == batch_shape


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_broadcasts_data_against_the_context_batch(family):
    """Like any distribution (and like the MADE itself), one data row scored against a
    batch of three contexts gives three log-probs, each equal to scoring the row
    against that context alone."""
    model = make_model(family, context_dim=2)
    perturb_(model, scale=1.0)
    x = data_for(family, ())
    context = context_batch(3)
    expected = torch.stack([model.log_prob(x, c) for c in context])
    assert torch.allclose(model.log_prob(x, context), expected, atol=1e-12)
    # a leading sample dimension of size 1 broadcasts too: (4, 1, D) vs (3, C) -> (4, 3)
    xs = data_for(family, (4, 1))
    expected = torch.stack([torch.stack([model.log_prob(row[0], c) for c in context]) for row in xs])
    assert torch.allclose(model.log_prob(xs, context), expected, atol=1e-12)


# --------------------------------------------------------------- normalisation


DISCRETE_MASK_SETS = [
    dict(),
    dict(order="reversed", skip_connections=True),
    dict(order="random", num_masks=3),
    dict(order="random", degrees="random", num_masks=3, activation="tanh"),
]


@pytest.mark.parametrize("made_kwargs", DISCRETE_MASK_SETS)
@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("kind, dim, classes", [("bernoulli", 5, 2), ("categorical", 4, K_CLASSES)])
def test_discrete_probabilities_sum_to_one_over_all_configurations(made_kwargs, context_dim, kind, dim, classes):
    model = perturb_(make_model(kind, input_dim=dim, context_dim=context_dim, **made_kwargs), scale=1.5)
    x = all_configurations(dim, classes)  # (classes**dim, dim) int64
    x = x.double() if kind == "bernoulli" else x
    contexts = [None] if context_dim == 0 else list(context_batch(3, context_dim))
    for index in range(model.made.num_masks):
        model.made.set_mask(index)
        for context in contexts:
            log_prob = model.log_prob(x, context)
            assert abs(torch.logsumexp(log_prob, 0).exp().item() - 1) < 1e-10
            # non-trivial: the distribution is far from uniform
            assert log_prob.max() - log_prob.min() > 1.0


def integrate(density, axes):
    """Trapezoid rule, one axis at a time."""
    for axis in reversed(axes):
        density = torch.trapezoid(density, axis, dim=-1)
    return float(density)


def assert_scales_resolved_by(model, points, spacing, context=None):
    """The grid must resolve every conditional scale, or the trapezoid rule (not the
    model) would be what is tested. For a Gaussian of scale s on a grid of spacing h
    the trapezoid rule's error is about exp(-2 pi^2 s^2 / h^2): ~1e-19 at s = 1.5 h."""
    params = model.made.raw_output(points, context)
    if isinstance(model, MixtureMADE):
        unconstrained = params[..., 2 * K_COMPONENTS :, :]
    else:
        unconstrained = params[..., 1, :]
    assert scales_of(unconstrained).min() > 1.5 * spacing


@pytest.mark.parametrize("family", ["gaussian", "mixture"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_real_densities_integrate_to_one_in_one_dimension(family, context_dim):
    model = perturb_(make_model(family, input_dim=1, hidden_dims=[6], context_dim=context_dim), scale=0.7)
    axis = torch.linspace(-20, 20, 8001, dtype=torch.float64)
    contexts = [None] if context_dim == 0 else list(context_batch(2, context_dim))
    for context in contexts:
        assert_scales_resolved_by(model, axis[:, None], float(axis[1] - axis[0]), context)
        assert integrate(density_on_grid(model, [axis], context), [axis]) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("family", ["gaussian", "mixture"])
@pytest.mark.parametrize("made_kwargs", [dict(context_dim=0), dict(context_dim=2, order="reversed")])
def test_real_densities_integrate_to_one_in_two_dimensions(family, made_kwargs):
    # default initialisation: scales stay well above the grid spacing over the grid
    model = make_model(family, input_dim=2, hidden_dims=[6], **made_kwargs)
    axis = torch.linspace(-10, 10, 1001, dtype=torch.float64)
    spacing = float(axis[1] - axis[0])
    context = context_batch(1, 2)[0] if made_kwargs["context_dim"] else None
    grid_points = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    expanded = None if context is None else context.expand(len(grid_points), 2)
    assert_scales_resolved_by(model, grid_points, spacing, expanded)
    density = density_on_grid(model, [axis, axis], context)
    assert integrate(density, [axis, axis]) == pytest.approx(1, abs=1e-3)
    # the joint is not the product of its marginals: the second conditional matters
    product = torch.outer(density.sum(1), density.sum(0)) * spacing**2
    assert (density - product).abs().sum() * spacing**2 > 0.01


# ------------------------------------------------------------ chain rule by hand


@pytest.mark.parametrize("context_dim", [0, 2])
def test_bernoulli_log_prob_is_the_chain_rule(context_dim):
    model = perturb_(make_model("bernoulli", input_dim=4, context_dim=context_dim, order="random"), scale=1.0)
    x = data_for("bernoulli", (6,))
    context = context_batch(6, context_dim) if context_dim else None
    logits = model.made(x, context) if context is not None else model.made(x)  # (6, D)
    p_one = torch.sigmoid(logits)
    by_hand = torch.where(x == 1, torch.log(p_one), torch.log1p(-p_one)).sum(-1)
    assert torch.allclose(model.log_prob(x, context), by_hand, atol=1e-12)


def test_gaussian_log_prob_is_the_chain_rule():
    model = perturb_(make_model("gaussian", input_dim=4, order="random"), scale=0.5)
    x = data_for("gaussian", (6,))
    loc, unconstrained = model.made(x)
    by_hand = normal_log_density(x, loc, scales_of(unconstrained)).sum(-1)
    assert torch.allclose(model.log_prob(x), by_hand, atol=1e-12)


def test_mixture_log_prob_is_the_chain_rule():
    model = perturb_(make_model("mixture", input_dim=4, order="random"), scale=0.5)
    x = data_for("mixture", (6,))
    logits, loc, unconstrained = model.made(x)  # each (6, K, D)
    weights = torch.softmax(logits, dim=-2)
    components = normal_log_density(x.unsqueeze(-2), loc, scales_of(unconstrained)).exp()
    by_hand = torch.log((weights * components).sum(-2)).sum(-1)
    assert torch.allclose(model.log_prob(x), by_hand, atol=1e-12)


def test_categorical_log_prob_is_the_chain_rule():
    model = perturb_(make_model("categorical", input_dim=4, order="random"), scale=1.0)
    x = data_for("categorical", (6,))
    made_input = x.double() * 2 / (K_CLASSES - 1) - 1  # documented: class k -> 2k/(K-1) - 1
    logits = model.made(made_input)  # (6, K, D)
    log_probs = torch.log_softmax(logits, dim=-2)
    by_hand = torch.stack([sum(log_probs[n, x[n, d], d] for d in range(4)) for n in range(6)])
    assert torch.allclose(model.log_prob(x), by_hand, atol=1e-12)
