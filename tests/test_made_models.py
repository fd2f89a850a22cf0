"""MADE density models (Bernoulli, Gaussian, mixture, categorical): log_prob shapes,
exact normalisation, log_prob against a chain rule written out here, sampling (shapes,
support, empirical frequencies, fast vs naive sequential pass), the Pyro distribution
view, completion, mask ensembles and input validation.

Exactness checks run in float64 on small models whose weights are redrawn with a fixed
generator, so the conditionals are far from uniform."""

import copy
import functools
import itertools
import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chi2

from flowkit import BernoulliMADE, CategoricalMADE, GaussianMADE, MixtureMADE
from flowkit.distributions import MADEDistribution

FAMILIES = ["bernoulli", "gaussian", "mixture", "categorical"]
K_CLASSES = 3
K_COMPONENTS = 3
SCALE_FLOOR = 1e-3  # the documented floor of every Gaussian scale

# ----------------------------------------------------------------------- helpers


def make_model(family, input_dim=4, hidden_dims=(10, 10), context_dim=0, **kwargs):
    """A float64 model of the given family; hidden widths >= D (no lost dependencies)."""
    kwargs.setdefault("seed", 0)
    hidden_dims = list(hidden_dims)
    if family == "bernoulli":
        model = BernoulliMADE(input_dim, hidden_dims, context_dim=context_dim, **kwargs)
    elif family == "gaussian":
        model = GaussianMADE(input_dim, hidden_dims, context_dim=context_dim, **kwargs)
    elif family == "mixture":
        model = MixtureMADE(input_dim, hidden_dims, num_components=K_COMPONENTS, context_dim=context_dim, **kwargs)
    else:
        model = CategoricalMADE(input_dim, hidden_dims, num_classes=K_CLASSES, context_dim=context_dim, **kwargs)
    return model.double()


def perturb(model, scale=1.0, seed=0):
    """Redraws every weight and bias from N(0, scale^2) so the conditionals are
    non-trivial (masks are buffers and stay as they are)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale)
    return model


def data_for(family, batch_shape, input_dim=4, seed=1):
    """Valid data of the family's type, shape batch_shape + (D,)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (*batch_shape, input_dim)
    if family == "bernoulli":
        return torch.randint(0, 2, shape, generator=generator).double()
    if family == "categorical":
        return torch.randint(0, K_CLASSES, shape, generator=generator)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def all_configurations(input_dim, num_values):
    """Every point of {0, ..., num_values-1}^D as rows, first dimension slowest."""
    return torch.tensor(list(itertools.product(range(num_values), repeat=input_dim)))


def context_batch(num, context_dim=2, seed=2):
    return torch.randn(num, context_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def chi_square(counts, probs):
    """Pearson's statistic of observed counts against probabilities."""
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def chi_square_limit(num_cells):
    """A bound that a correct sampler exceeds with probability 1e-4 (fixed seeds make
    the tests deterministic; this only sets how close 'matches' has to be)."""
    return chi2.ppf(1 - 1e-4, num_cells - 1)


def counts_of(rows, num_values):
    """Counts of each configuration (same enumeration as all_configurations)."""
    input_dim = rows.shape[-1]
    weights = num_values ** torch.arange(input_dim - 1, -1, -1)
    codes = (rows.long() * weights).sum(-1)
    return torch.bincount(codes, minlength=num_values**input_dim).double()


def scales_of(unconstrained):
    return F.softplus(unconstrained) + SCALE_FLOOR


def normal_log_density(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


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
    perturb(model)
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
def test_bernoulli_probabilities_sum_to_one_over_all_configurations(made_kwargs, context_dim):
    D = 5
    model = perturb(make_model("bernoulli", input_dim=D, context_dim=context_dim, **made_kwargs), scale=1.5)
    x = all_configurations(D, 2).double()  # (32, D)
    contexts = [None] if context_dim == 0 else list(context_batch(3, context_dim))
    for index in range(model.made.num_masks):
        model.made.set_mask(index)
        for context in contexts:
            log_prob = model.log_prob(x, context)
            assert abs(torch.logsumexp(log_prob, 0).exp().item() - 1) < 1e-10
            # non-trivial: the distribution is far from uniform
            assert log_prob.max() - log_prob.min() > 1.0


@pytest.mark.parametrize("made_kwargs", DISCRETE_MASK_SETS)
@pytest.mark.parametrize("context_dim", [0, 2])
def test_categorical_probabilities_sum_to_one_over_all_configurations(made_kwargs, context_dim):
    D = 4
    model = perturb(make_model("categorical", input_dim=D, context_dim=context_dim, **made_kwargs), scale=1.5)
    x = all_configurations(D, K_CLASSES)  # (81, D) int64
    contexts = [None] if context_dim == 0 else list(context_batch(3, context_dim))
    for index in range(model.made.num_masks):
        model.made.set_mask(index)
        for context in contexts:
            log_prob = model.log_prob(x, context)
            assert abs(torch.logsumexp(log_prob, 0).exp().item() - 1) < 1e-10
            assert log_prob.max() - log_prob.min() > 1.0


def density_on_grid(model, axes, context=None):
    """exp(log_prob) on the Cartesian grid of the given 1-D axes, shape (len(a0), ...)."""
    mesh = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack(mesh, dim=-1)
    if context is not None:
        context = context.expand(*points.shape[:-1], context.shape[-1])
    with torch.no_grad():
        return model.log_prob(points, context).exp()


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
    model = perturb(make_model(family, input_dim=1, hidden_dims=[6], context_dim=context_dim), scale=0.7)
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
    model = perturb(make_model("bernoulli", input_dim=4, context_dim=context_dim, order="random"))
    x = data_for("bernoulli", (6,))
    context = context_batch(6, context_dim) if context_dim else None
    logits = model.made(x, context) if context is not None else model.made(x)  # (6, D)
    p_one = torch.sigmoid(logits)
    by_hand = torch.where(x == 1, torch.log(p_one), torch.log1p(-p_one)).sum(-1)
    assert torch.allclose(model.log_prob(x, context), by_hand, atol=1e-12)


def test_gaussian_log_prob_is_the_chain_rule():
    model = perturb(make_model("gaussian", input_dim=4, order="random"), scale=0.5)
    x = data_for("gaussian", (6,))
    loc, unconstrained = model.made(x)
    by_hand = normal_log_density(x, loc, scales_of(unconstrained)).sum(-1)
    assert torch.allclose(model.log_prob(x), by_hand, atol=1e-12)


def test_mixture_log_prob_is_the_chain_rule():
    model = perturb(make_model("mixture", input_dim=4, order="random"), scale=0.5)
    x = data_for("mixture", (6,))
    logits, loc, unconstrained = model.made(x)  # each (6, K, D)
    weights = torch.softmax(logits, dim=-2)
    components = normal_log_density(x.unsqueeze(-2), loc, scales_of(unconstrained)).exp()
    by_hand = torch.log((weights * components).sum(-2)).sum(-1)
    assert torch.allclose(model.log_prob(x), by_hand, atol=1e-12)


def test_categorical_log_prob_is_the_chain_rule():
    model = perturb(make_model("categorical", input_dim=4, order="random"))
    x = data_for("categorical", (6,))
    made_input = x.double() * 2 / (K_CLASSES - 1) - 1  # documented: class k -> 2k/(K-1) - 1
    logits = model.made(made_input)  # (6, K, D)
    log_probs = torch.log_softmax(logits, dim=-2)
    by_hand = torch.stack([sum(log_probs[n, x[n, d], d] for d in range(4)) for n in range(6)])
    assert torch.allclose(model.log_prob(x), by_hand, atol=1e-12)


# ------------------------------------------------------------------- sampling


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)])
def test_sample_shape_dtype_and_support(family, sample_shape):
    model = perturb(make_model(family), scale=0.5)
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
    model = perturb(make_model(family, input_dim=D, hidden_dims=[8], order=order), scale=1.5)
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
    model = perturb(make_model(family, input_dim=5, **made_kwargs), scale=0.7)
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
    model = perturb(make_model(family, input_dim=5, order="random", num_masks=2), scale=0.7)
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
    model = perturb(make_model(family), scale=0.7)
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
    model = perturb(make_model(family, context_dim=2), scale=0.7)
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
    model = perturb(make_model(family), scale=0.7)
    data = data_for(family, (7,))

    def pyro_model(data):
        pyro.sample("x", model(), obs=data)

    trace = poutine.trace(pyro_model).get_trace(data)
    assert torch.equal(trace.nodes["x"]["value"], data)
    assert torch.allclose(trace.log_prob_sum(), model.log_prob(data).sum(), atol=1e-12)


def test_observed_pyro_sample_site_in_a_plate_with_a_context_per_row():
    """Pyro's plate broadcasting calls dist.expand(batch_shape) at every site in a
    plate, even when the batch shape already matches (one context per row)."""
    model = perturb(make_model("gaussian", context_dim=2), scale=0.7)
    data, context = data_for("gaussian", (7,)), context_batch(7)

    def pyro_model(data, context):
        with pyro.plate("rows", len(data)):
            pyro.sample("x", model(context), obs=data)

    trace = poutine.trace(pyro_model).get_trace(data, context)
    assert torch.allclose(trace.log_prob_sum(), model.log_prob(data, context).sum(), atol=1e-12)


# ------------------------------------------------------------------ completion


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["sample", "mode"])
def test_complete_keeps_observed_entries_exactly(family, method):
    model = perturb(make_model(family, order="random", num_masks=3), scale=0.7)
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
    model = perturb(make_model(family), scale=0.7)
    x = data_for(family, (30,))
    observed = torch.rand(30, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    completed = model.complete(x, observed)
    assert torch.equal(completed[observed], x[observed])
    assert not torch.equal(completed[~observed], x[~observed])


@pytest.mark.parametrize("family", FAMILIES)
def test_complete_with_a_context(family):
    model = perturb(make_model(family, context_dim=2), scale=0.7)
    x = data_for(family, (5,))
    observed = torch.tensor([False, True, True, False])
    completed = model.complete(x, observed, context=context_batch(5))
    assert completed.shape == x.shape
    assert torch.equal(completed[:, observed], x[:, observed])


@pytest.mark.parametrize("family", FAMILIES)
def test_complete_by_mode_is_deterministic_and_fills_in_conditional_modes(family):
    model = perturb(make_model(family, order="random"), scale=0.7)
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
    model = perturb(make_model("bernoulli", input_dim=3, hidden_dims=[8], order=order), scale=1.5)
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
    model = perturb(make_model("gaussian", input_dim=5, order="random", num_masks=6, seed=1), scale=0.7)
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


# --------------------------------------------------------------- bad inputs


@pytest.fixture
def gaussian_model():
    return make_model("gaussian")


@pytest.mark.parametrize("observed", [torch.tensor([1, 0, 1, 0]), [True, False, True, False], torch.ones(4)])
def test_complete_observed_must_be_a_bool_tensor(gaussian_model, observed):
    with pytest.raises(TypeError, match="observed"):
        gaussian_model.complete(data_for("gaussian", (3,)), observed)


@pytest.mark.parametrize("shape", [(3,), (5,), (3, 5), ()])
def test_complete_observed_with_a_wrong_shape(gaussian_model, shape):
    with pytest.raises(ValueError, match="observed"):
        gaussian_model.complete(data_for("gaussian", (3,)), torch.zeros(shape, dtype=torch.bool))


def test_complete_unknown_method(gaussian_model):
    with pytest.raises(ValueError, match="method"):
        gaussian_model.complete(data_for("gaussian", (3,)), torch.zeros(4, dtype=torch.bool), method="foo")


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, float("nan")])
def test_bernoulli_rejects_non_binary_data(value):
    model = make_model("bernoulli")
    x = torch.zeros(3, 4, dtype=torch.float64)
    x[1, 2] = value
    with pytest.raises(ValueError, match="x"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="x"):
        model.complete(x, torch.zeros(4, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bool])
def test_categorical_rejects_non_integer_data(dtype):
    model = make_model("categorical")
    with pytest.raises(TypeError, match="x"):
        model.log_prob(torch.zeros(3, 4, dtype=dtype))


@pytest.mark.parametrize("value", [-1, K_CLASSES, 10])
def test_categorical_rejects_out_of_range_classes(value):
    model = make_model("categorical")
    x = torch.zeros(3, 4, dtype=torch.long)
    x[0, 1] = value
    with pytest.raises(ValueError, match="x"):
        model.log_prob(x)


def test_categorical_accepts_other_integer_dtypes():
    model = perturb(make_model("categorical"))
    x = data_for("categorical", (5,))
    assert torch.allclose(model.log_prob(x.int()), model.log_prob(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_data_with_a_wrong_last_dimension(family):
    model = make_model(family)
    with pytest.raises(ValueError, match="x"):
        model.log_prob(data_for(family, (3,), input_dim=5))


@pytest.mark.parametrize("family", FAMILIES)
def test_numpy_data_is_a_type_error_that_suggests_torch_as_tensor(family):
    model = make_model(family)
    array = data_for(family, (3,)).numpy()
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got numpy.ndarray; .*torch.as_tensor\(x\)"):
        model.log_prob(array)
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got numpy.ndarray"):
        model.complete(array, torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("family", ["gaussian", "mixture"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_real_data_must_be_finite(family, value):
    model = make_model(family)
    x = data_for(family, (3,))
    x[1, 0] = value
    with pytest.raises(ValueError, match="x: holds inf or nan"):
        model.log_prob(x)


@pytest.mark.parametrize("num_classes", [1, 0, -2, 2.0, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        CategoricalMADE(4, [8], num_classes=num_classes)


@pytest.mark.parametrize("num_components", [0, -1, 2.5, True])
def test_bad_num_components(num_components):
    with pytest.raises(ValueError, match="num_components"):
        MixtureMADE(4, [8], num_components=num_components)


# ------------------------------------------------------------------- ensembles


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_ensemble_is_the_log_mean_exp_over_mask_sets(family):
    model = perturb(make_model(family, order="random", num_masks=4), scale=0.7)
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
    model = perturb(make_model("gaussian", context_dim=2, order="random", num_masks=3), scale=0.7)
    x, context = data_for("gaussian", (5,)), context_batch(5)
    per_mask = []
    for index in range(3):
        model.made.set_mask(index)
        per_mask.append(model.log_prob(x, context))
    model.made.set_mask(0)
    expected = torch.logsumexp(torch.stack(per_mask), 0) - math.log(3)
    assert torch.allclose(model.log_prob_ensemble(x, context), expected, atol=1e-12)


def test_bernoulli_ensemble_is_normalised():
    model = perturb(make_model("bernoulli", input_dim=4, order="random", num_masks=3), scale=1.5)
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


def test_ensemble_of_fresh_masks_is_the_log_mean_exp_of_each_masks_log_prob():
    model = BernoulliMADE(5, [16], skip_connections=True, order="random", seed=0).double()
    perturb(model)
    x = data_for("bernoulli", (7,), input_dim=5).double()
    ensemble = model.log_prob_ensemble(x, num_masks=6, seed=3)
    generator, each = torch.Generator().manual_seed(3), []
    reference = copy.deepcopy(model)
    for _ in range(6):
        reference.made.resample_masks(generator)
        each.append(reference.log_prob(x))
    expected = torch.logsumexp(torch.stack(each), 0) - math.log(6)
    assert torch.allclose(ensemble, expected, atol=1e-10, rtol=0)
    assert torch.equal(ensemble, model.log_prob_ensemble(x, num_masks=6, seed=3))  # reproducible
    assert not torch.allclose(ensemble, model.log_prob_ensemble(x, num_masks=6, seed=4))


def test_ensemble_of_fresh_masks_restores_the_masks():
    model = BernoulliMADE(5, [16], num_masks=2, order="random", seed=0)
    model.made.set_mask(1)
    before, keys = [m.clone() for m in model.made.masks()], set(model.state_dict())
    model.log_prob_ensemble(data_for("bernoulli", (3,), input_dim=5), num_masks=4, seed=0)
    assert model.made.active_mask == 1 and set(model.state_dict()) == keys
    assert all(torch.equal(a, b) for a, b in zip(before, model.made.masks()))


def test_ensemble_connectivity_only_keeps_the_order():
    model = BernoulliMADE(4, [16], order="random", seed=0)
    x = data_for("bernoulli", (3,), input_dim=4)
    order = model.made.permutation.clone()
    seen = []
    original = model.made.resample_masks

    def recording(generator, order=True):
        original(generator, order)
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


def test_complete_and_sample_work_after_resampling():
    model = BernoulliMADE(4, [16], num_masks=2, order="random", seed=0)
    model.made.resample_masks(torch.Generator().manual_seed(0))
    observed = torch.tensor([True, False, True, False])
    completed = model.complete(torch.zeros(3, 4), observed, method="mode")
    assert completed.shape == (3, 4) and model.made.active_mask == -1
    assert model.sample(5).shape == (5, 4)
    assert isinstance(model.is_exact_completion(observed, choose_mask=False), bool)
