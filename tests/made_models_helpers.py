"""Helpers shared by the MADE density-model test files (test_made_models_*.py): small float64
models of each family, valid data, every configuration of a discrete model,
chi-square checks and the Gaussian scale map."""

import itertools
import math

import torch
import torch.nn.functional as F
from scipy.stats import chi2

from flowkit import BernoulliMADE, CategoricalMADE, GaussianMADE, MADEConfig, MixtureMADE

FAMILIES = ["bernoulli", "gaussian", "mixture", "categorical"]
K_CLASSES = 3
K_COMPONENTS = 3
SCALE_FLOOR = 1e-3  # the documented floor of every Gaussian scale


def make_model(family, input_dim=4, hidden_dims=(10, 10), context_dim=0, seed=0, **conditioner_options):
    """A float64 model of the given family; hidden widths >= D (no lost dependencies);
    ``conditioner_options`` are the MADEConfig's (order=, num_masks=, ...)."""
    options = dict(context_dim=context_dim, conditioner=MADEConfig(**conditioner_options), seed=seed)
    hidden_dims = list(hidden_dims)
    if family == "bernoulli":
        model = BernoulliMADE(input_dim, hidden_dims, **options)
    elif family == "gaussian":
        model = GaussianMADE(input_dim, hidden_dims, **options)
    elif family == "mixture":
        model = MixtureMADE(input_dim, hidden_dims, num_components=K_COMPONENTS, **options)
    else:
        model = CategoricalMADE(input_dim, hidden_dims, num_classes=K_CLASSES, **options)
    return model.double()


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


def density_on_grid(model, axes, context=None):
    """exp(log_prob) on the Cartesian grid of the given 1-D axes, shape (len(a0), ...)."""
    mesh = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack(mesh, dim=-1)
    if context is not None:
        context = context.expand(*points.shape[:-1], context.shape[-1])
    with torch.no_grad():
        return model.log_prob(points, context).exp()
