"""Distributions: MADE density models and flow builders."""

from flowkit.distributions.flows import Flow, iaf, maf, nsf
from flowkit.distributions.made_models import (
    AutoregressiveMADE,
    BernoulliMADE,
    CategoricalMADE,
    GaussianMADE,
    MADEDistribution,
    MixtureMADE,
)

__all__ = [
    "AutoregressiveMADE",
    "BernoulliMADE",
    "CategoricalMADE",
    "Flow",
    "GaussianMADE",
    "MADEDistribution",
    "MixtureMADE",
    "iaf",
    "maf",
    "nsf",
]
