"""Helpers shared by the elementwise-bijection contract tests (test_elementwise*.py):
``BIJECTIONS`` (add a new bijection here and every contract runs on it), the dtypes, and
applying a bijection in either direction."""

import pytest
import torch

from flowkit.transforms.elementwise import Affine, GatedAffine, RationalQuadraticSpline

D = 3


BIJECTIONS = {
    "affine": Affine(),
    "affine_inverse_scale": Affine(inverse_scale=True),
    "gated": GatedAffine(),
    "spline": RationalQuadraticSpline(bins=5, bound=3.0),
    "spline_per_input": RationalQuadraticSpline(bins=4, bound=[1.0, 2.5, 4.0]),
}


DTYPES = [torch.float32, torch.float64]


def over(bijections):
    return pytest.mark.parametrize("bijection", list(bijections.values()), ids=list(bijections))


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def bound_of(bijection, dtype, dims=D):
    """A spline's bound per input; a nominal range of 5 for the affine maps."""
    bound = getattr(bijection, "bound", 5.0)
    return torch.as_tensor(bound, dtype=dtype).expand(dims).clone()


def apply(bijection, direction, params, value, **kwargs):
    return getattr(bijection, direction)(params, value, **kwargs)
