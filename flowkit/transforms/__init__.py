"""Bijective transforms (Pyro `TransformModule` objects): MAF, IAF, permutations, normalisation;
and the elementwise bijections (affine, gated affine, rational-quadratic spline) their steps apply."""

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
from flowkit.transforms.elementwise import Affine, ElementwiseBijection, GatedAffine, RationalQuadraticSpline
from flowkit.transforms.normalization import ActNorm, BatchNorm
from flowkit.transforms.permute import Permute, permute

__all__ = [
    "ActNorm",
    "Affine",
    "AffineIAF",
    "AffineMAF",
    "BatchNorm",
    "ConditionalAffineIAF",
    "ConditionalAffineMAF",
    "ElementwiseBijection",
    "GatedAffine",
    "Permute",
    "RationalQuadraticSpline",
    "affine_iaf",
    "affine_maf",
    "conditional_affine_iaf",
    "conditional_affine_maf",
    "default_hidden_dims",
    "init_near_identity",
    "permute",
]
