"""flowkit: normalizing flows for PyTorch and Pyro, built on MADE."""

from flowkit import datasets, infer, transforms
from flowkit.checks import AutoregressiveReport, check_autoregressive
from flowkit.distributions import (
    BernoulliMADE,
    CategoricalMADE,
    Flow,
    GaussianMADE,
    MixtureMADE,
    iaf,
    maf,
    nsf,
)
from flowkit.nn import MADE, LostDependencyWarning, MADEConfig, MaskedLinear, masks
from flowkit.training import History, fit

__version__ = "0.1.0"

__all__ = [
    "MADE",
    "MADEConfig",
    "AutoregressiveReport",
    "BernoulliMADE",
    "CategoricalMADE",
    "Flow",
    "GaussianMADE",
    "History",
    "MixtureMADE",
    "LostDependencyWarning",
    "MaskedLinear",
    "check_autoregressive",
    "datasets",
    "fit",
    "infer",
    "iaf",
    "maf",
    "masks",
    "nsf",
    "transforms",
]
