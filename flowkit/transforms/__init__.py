"""Bijective transforms (Pyro `TransformModule` objects): MAF, IAF, permutations, normalisation."""

from flowkit.transforms.autoregressive import (
    AffineIAF,
    AffineMAF,
    ConditionalAffineIAF,
    ConditionalAffineMAF,
    affine_iaf,
    affine_maf,
    conditional_affine_iaf,
    conditional_affine_maf,
    default_hidden_dims,
    init_near_identity,
)
from flowkit.transforms.normalization import ActNorm, BatchNorm
from flowkit.transforms.permute import Permute, permute

__all__ = [
    "ActNorm",
    "AffineIAF",
    "AffineMAF",
    "BatchNorm",
    "ConditionalAffineIAF",
    "ConditionalAffineMAF",
    "Permute",
    "affine_iaf",
    "affine_maf",
    "conditional_affine_iaf",
    "conditional_affine_maf",
    "default_hidden_dims",
    "init_near_identity",
    "permute",
]
