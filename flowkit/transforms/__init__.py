"""Bijective transforms (Pyro `TransformModule` objects): MAF, IAF, permutations, normalisation;
and the elementwise bijections (affine, gated affine, rational-quadratic spline) their steps apply."""

from flowkit.nn.made import default_hidden_dims
from flowkit.transforms.autoregressive import (
    IAF,
    MAF,
    AffineIAF,
    AffineMAF,
    AffineStepOptions,
    ConditionalAffineIAF,
    ConditionalAffineMAF,
    ConditionalIAF,
    ConditionalMAF,
    MaskedAutoregressive,
    affine_iaf,
    affine_maf,
    as_bijection,
    conditional_affine_iaf,
    conditional_affine_maf,
    init_near_identity,
)
from flowkit.transforms.elementwise import Affine, ElementwiseBijection, GatedAffine, RationalQuadraticSpline
from flowkit.transforms.normalization import ActNorm, BatchNorm
from flowkit.transforms.permute import Permute, permute

__all__ = [
    "IAF",
    "MAF",
    "ActNorm",
    "Affine",
    "AffineIAF",
    "AffineMAF",
    "AffineStepOptions",
    "BatchNorm",
    "ConditionalAffineIAF",
    "ConditionalAffineMAF",
    "ConditionalIAF",
    "ConditionalMAF",
    "ElementwiseBijection",
    "GatedAffine",
    "MaskedAutoregressive",
    "Permute",
    "RationalQuadraticSpline",
    "affine_iaf",
    "affine_maf",
    "as_bijection",
    "conditional_affine_iaf",
    "conditional_affine_maf",
    "default_hidden_dims",
    "init_near_identity",
    "permute",
]
