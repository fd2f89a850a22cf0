"""Distributions: MADE density models and flow builders."""

from flowkit.distributions.flows import Flow, IAFOptions, iaf, maf, nsf
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
    "IAFOptions",
    "MADEDistribution",
    "MixtureMADE",
    "iaf",
    "maf",
    "nsf",
]
