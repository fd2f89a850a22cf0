"""MADE density models: sampling (shapes, support, empirical frequencies, fast vs naive
sequential pass) and the Pyro distribution view."""

import functools

import pyro
import pyro.poutine as poutine
import pytest
import torch

from flowkit.distributions import MADEDistribution
from helpers import perturb_
from made_models_helpers import (
    FAMILIES,
    K_CLASSES,
    all_configurations,
    chi_square,
    chi_square_limit,
    context_batch,
    counts_of,
    data_for,
    density_on_grid,
    make_model,
)

# ------------------------------------------------------------------- sampling


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)])
def test_sample_shape_dtype_and_support(family, sample_shape):
    model = perturb_(make_model(family), scale=0.5)
    x = model.sample(sample_shape)
    assert x.shape == (*sample_shape, 4)
    if family == "categorical":
        assert x.dtype == torch.int64
        assert ((x >= 0) & (x < K_CLASSES)).all()
    elif family == "bernoulli":
        assert x.dtype == torch.float64
        assert ((x == 0) | (x == 1)).all()
    else:
        assert x.dtype == torch.float64
        assert torch.isfinite(x).all()
    assert torch.isfinite(model.log_prob(x)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_with_a_context_batch(family):
    """Documented shape: sample_shape + context batch + (D,), as for every
    torch/Pyro distribution (sample_shape + batch_shape + event_shape)."""
    model = make_model(family, context_dim=2)
    context = context_batch(3)
    assert model.sample((), context).shape == (3, 4)
    assert model.sample((5,), context).shape == (5, 3, 4)
    assert model(context).sample((2,)).shape == (2, 3, 4)
    # sample_shape equal to the context batch must not be mistaken for it
    assert model.sample((3,), context).shape == (3, 3, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_shape_may_be_an_int_or_any_shape(family):
    """As ``flow.sample(5)``: an int n means (n,), and lists and torch.Size work like tuples,
    through the model and through its Pyro distribution."""
    model = make_model(family, context_dim=2)
    context = context_batch(3)
    for sample_shape in (5, (5,), [5], torch.Size([5])):
        assert model.sample(sample_shape, context).shape == (5, 3, 4), sample_shape
        assert model(context).sample(sample_shape).shape == (5, 3, 4), sample_shape


@pytest.mark.parametrize("bad", [2.0, "5", (2.0,), None])
def test_bad_sample_shape_is_a_type_error_naming_sample_shape(bad):
    with pytest.raises(TypeError, match="sample_shape: expected"):
        make_model("gaussian").sample(bad)


def test_categorical_samples_use_every_class():
    model = make_model("categorical")
    x = model.sample((300,))
    assert set(x.unique().tolist()) == set(range(K_CLASSES))


@pytest.mark.parametrize("family", ["bernoulli", "categorical"])
@pytest.mark.parametrize("order", ["natural", "reversed"])
def test_empirical_distribution_of_samples_matches_the_exact_probabilities(family, order):
    D, num_values = 3, (2 if family == "bernoulli" else K_CLASSES)
    model = perturb_(make_model(family, input_dim=D, hidden_dims=[8], order=order), scale=1.5)
    configs = all_configurations(D, num_values)
    probs = model.log_prob(configs.double() if family == "bernoulli" else configs).exp().detach()
    # the joint is not a product of its marginals, so the conditionals matter
    marginals = [torch.stack([probs[configs[:, d] == v].sum() for v in range(num_values)]) for d in range(D)]
    product = torch.einsum("a,b,c->abc", *marginals).reshape(-1)
    assert (probs - product).abs().max() > 0.01

    torch.manual_seed(123)
    counts = counts_of(model.sample((40_000,)), num_values)
    assert chi_square(counts, probs) < chi_square_limit(len(probs))


@pytest.mark.parametrize("family", ["gaussian", "mixture"])
def test_real_samples_fall_into_cells_with_the_probabilities_of_the_density(family):
    """Cell probabilities of a 2-D model by the midpoint rule on a fine grid whose cells
    line up with the edges, against the frequencies of 20,000 samples."""
    model = make_model(family, input_dim=2, hidden_dims=[6], order="reversed")
    spacing = 0.02
    axis = torch.arange(-10 + spacing / 2, 10, spacing, dtype=torch.float64)
    density = density_on_grid(model, [axis, axis])
    edges = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    cell = torch.bucketize(axis, edges)  # 0..3 along each axis
    cell_index = (cell[:, None] * 4 + cell[None, :]).reshape(-1)
    probs = torch.bincount(cell_index, weights=density.reshape(-1) * spacing**2, minlength=16)
    assert probs.sum() == pytest.approx(1, abs=1e-3)
    probs = probs / probs.sum()

    num = 20_000
    torch.manual_seed(11)
    samples = model.sample((num,))
    sample_cells = torch.bucketize(samples, edges)
    counts = torch.bincount(sample_cells[:, 0] * 4 + sample_cells[:, 1], minlength=16).double()
    # cells expecting fewer than 5 samples are pooled into one, as usual for chi-square
    rare = probs * num < 5
    if rare.any():
        probs = torch.cat([probs[~rare], probs[rare].sum(0, keepdim=True)])
        counts = torch.cat([counts[~rare], counts[rare].sum(0, keepdim=True)])
    assert len(probs) >= 8
    assert chi_square(counts, probs) < chi_square_limit(len(probs))


def sample_with_method(model, method, sample_shape, context, seed):
    """model.sample, but with the MADE's sequential pass forced to `method`."""
    torch.manual_seed(seed)
    original = model.made.sequential
    model.made.sequential = functools.partial(original, method=method)
    try:
        return model.sample(sample_shape, context)
    finally:
        del model.made.sequential  # back to the class's method


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "made_kwargs",
    [dict(order="random"), dict(order="random", context_dim=2, skip_connections=True, degrees="random")],
)
def test_fast_sampling_equals_naive_sampling_with_the_same_seed(family, made_kwargs):
    model = perturb_(make_model(family, input_dim=5, **made_kwargs), scale=0.7)
    context = context_batch(6) if made_kwargs.get("context_dim") else None
    shape = () if context is not None else (6,)
    fast = sample_with_method(model, "fast", shape, context, seed=7)
    naive = sample_with_method(model, "naive", shape, context, seed=7)
    assert fast.shape == naive.shape == (6, 5)
    if family in ("bernoulli", "categorical"):
        assert torch.equal(fast, naive)
    else:
        assert torch.allclose(fast, naive, rtol=0, atol=1e-10)
    # and a different seed gives other samples, so the comparison above has power
    other = sample_with_method(model, "fast", shape, context, seed=8)
    assert not torch.equal(other, fast)


@pytest.mark.parametrize("family", FAMILIES)
def test_sequential_with_the_mode_step_is_the_same_for_fast_and_naive(family):
    """A deterministic step: the mode of each conditional. Both passes must build the
    same sequence, and each built value is the mode of its conditional at the result."""
    model = perturb_(make_model(family, input_dim=5, order="random", num_masks=2), scale=0.7)
    model.made.set_mask(1)

    def step(params, i):
        return model.to_input(model.mode_conditional(params))

    x_fast, params_fast = model.made.sequential(step, (4,), method="fast")
    x_naive, params_naive = model.made.sequential(step, (4,), method="naive")
    assert torch.allclose(x_fast, x_naive, rtol=0, atol=1e-10)
    assert torch.allclose(params_fast, params_naive, rtol=0, atol=1e-10)
    rebuilt = model.made.raw_output(x_fast)
    for d in range(5):
        assert torch.allclose(model.to_input(model.mode_conditional(rebuilt[..., d])), x_fast[..., d], atol=1e-10)


# ------------------------------------------------------------ Pyro distribution


@pytest.mark.parametrize("family", FAMILIES)
def test_pyro_view_without_context(family):
    model = perturb_(make_model(family), scale=0.7)
    distribution = model()
    assert isinstance(distribution, MADEDistribution)
    assert distribution.event_shape == (4,)
    assert distribution.batch_shape == ()
    x = data_for(family, (5,))
    assert torch.equal(distribution.log_prob(x), model.log_prob(x))
    torch.manual_seed(3)
    from_view = distribution.sample((5,))
    torch.manual_seed(3)
    assert torch.equal(from_view, model.sample((5,)))
    assert from_view.shape == (5, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_pyro_view_with_context(family):
    model = perturb_(make_model(family, context_dim=2), scale=0.7)
    context = context_batch(3)
    distribution = model(context)
    assert distribution.event_shape == (4,)
    assert distribution.batch_shape == (3,)
    x = data_for(family, (3,))
    assert torch.equal(distribution.log_prob(x), model.log_prob(x, context))
    torch.manual_seed(3)
    from_view = distribution.sample()
    torch.manual_seed(3)
    assert torch.equal(from_view, model.sample((), context))
    assert from_view.shape == (3, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_observed_pyro_sample_site_scores_with_the_model(family):
    model = perturb_(make_model(family), scale=0.7)
    data = data_for(family, (7,))

    def pyro_model(data):
        pyro.sample("x", model(), obs=data)

    trace = poutine.trace(pyro_model).get_trace(data)
    assert torch.equal(trace.nodes["x"]["value"], data)
    assert torch.allclose(trace.log_prob_sum(), model.log_prob(data).sum(), atol=1e-12)


def test_observed_pyro_sample_site_in_a_plate_with_a_context_per_row():
    """Pyro's plate broadcasting calls dist.expand(batch_shape) at every site in a
    plate, even when the batch shape already matches (one context per row)."""
    model = perturb_(make_model("gaussian", context_dim=2), scale=0.7)
    data, context = data_for("gaussian", (7,)), context_batch(7)

    def pyro_model(data, context):
        with pyro.plate("rows", len(data)):
            pyro.sample("x", model(context), obs=data)

    trace = poutine.trace(pyro_model).get_trace(data, context)
    assert torch.allclose(trace.log_prob_sum(), model.log_prob(data, context).sum(), atol=1e-12)
