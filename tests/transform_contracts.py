"""The registry of every public transform flowkit ships, for the contract tests
(test_transform_contracts*.py): add a transform here and every contract runs on it.

Each entry is a ``TransformCase``: a factory that builds a small float64 module far from
the identity (MADE weights perturbed, normalisation layers fitted to data), the size of
its context (conditional steps), the structure of its Jacobian, and the contracts that
do not apply to it, each with the reason. The elementwise bijections have contracts of
their own (test_elementwise*.py); here every one of them runs inside each kind of step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

from flowkit.nn import MADE
from flowkit.transforms import (
    IAF,
    MAF,
    ActNorm,
    Affine,
    AffineIAF,
    AffineMAF,
    BatchNorm,
    ConditionalAffineIAF,
    ConditionalAffineMAF,
    ConditionalIAF,
    ConditionalMAF,
    ElementwiseBijection,
    GatedAffine,
    Permute,
    RationalQuadraticSpline,
)
from helpers import perturb_

D, C = 4, 2  # the event size of the contracts (the density contract uses 2) and of a context

# The contracts a case may opt out of, with a reason in ``TransformCase.not_applicable``.
SIGN = "sign"  # Pyro's / torch's ``sign`` attribute
DTYPE = "dtype"  # inputs must have the parameters' dtype


@dataclass(frozen=True)
class TransformCase:
    """One transform of the registry.

    Attributes:
        build: ``(input_dim, seed) -> module``, float64 and far from the identity; a
            ``ConditionalTransformModule`` when ``context_dim > 0``.
        context_dim: The size of the context the contracts condition on (0: none).
        structure: The shape of the Jacobian: ``"autoregressive"`` (triangular in the
            MADE's order), ``"diagonal"`` or ``"permutation"``.
        not_applicable: The contracts (``SIGN``, ``DTYPE``) that do not hold, and why.
    """

    build: Callable[[int, int], nn.Module]
    context_dim: int = 0
    structure: str = "autoregressive"
    not_applicable: Mapping[str, str] = field(default_factory=dict)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def context_of(case: TransformCase, seed: int = 7) -> Tensor | None:
    """The one context of shape ``(context_dim,)`` the contracts use: it broadcasts over
    every batch shape."""
    if not case.context_dim:
        return None
    return torch.randn(case.context_dim, generator=generator(seed), dtype=torch.float64)


def transform_of(case: TransformCase, module: nn.Module):
    """The transform of ``module``: itself, or a conditional module conditioned on the context."""
    return module.condition(context_of(case)) if case.context_dim else module


# ----------------------------------------------------------------- the factories
def perturbed_made(input_dim: int, param_dims: list[int], context_dim: int, seed: int) -> MADE:
    """A two-hidden-layer MADE in a random order, its weights redrawn away from the
    builders' near-identity start."""
    made = MADE(input_dim, [16, 16], param_dims, context_dim=context_dim, order="random", seed=seed)
    return perturb_(made.double(), gain=1.0, seed=seed)


# Every bijection of the elementwise contracts (elementwise_helpers.BIJECTIONS, by the same
# names), built for an event size: a per-input bound needs one value per input.
STEP_BIJECTIONS: dict[str, Callable[[int], ElementwiseBijection]] = {
    "affine": lambda dim: Affine(),
    "affine_inverse_scale": lambda dim: Affine(inverse_scale=True),
    "gated": lambda dim: GatedAffine(),
    "spline": lambda dim: RationalQuadraticSpline(bins=5, bound=3.0),
    "spline_per_input": lambda dim: RationalQuadraticSpline(bins=4, bound=torch.linspace(2.0, 3.5, dim).tolist()),
}


def step_factory(cls: type, bijection_name: str, context_dim: int) -> Callable[[int, int], nn.Module]:
    """``MAF``, ``IAF`` or a conditional one on a perturbed MADE with one bijection."""

    def build(dim: int, seed: int) -> nn.Module:
        bijection = STEP_BIJECTIONS[bijection_name](dim)
        return cls(perturbed_made(dim, [bijection.num_params], context_dim, seed), bijection)

    return build


def affine_factory(cls: type, stable: bool, context_dim: int) -> Callable[[int, int], nn.Module]:
    """An ``Affine*`` class on a perturbed MADE with ``param_dims=[1, 1]``, as the builders make them."""

    def build(dim: int, seed: int) -> nn.Module:
        return cls(perturbed_made(dim, [1, 1], context_dim, seed), stable=stable)

    return build


def data(dim: int, seed: int, rows: int = 64) -> Tensor:
    """Float64 data with per-dimension means and standard deviations away from 0 and 1
    (narrow enough that a fitted layer's density lies inside the grid of the density contract)."""
    loc = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)
    scale = torch.linspace(0.5, 2.0, dim, dtype=torch.float64)
    return loc + scale * torch.randn(rows, dim, generator=generator(seed), dtype=torch.float64)


def fitted_act_norm(dim: int, seed: int) -> ActNorm:
    """An ActNorm initialised from data (in training mode, where it stays an affine map)."""
    act_norm = ActNorm(dim).double()
    act_norm.inverse_and_log_det(data(dim, seed))
    return act_norm


def fitted_batch_norm(dim: int, seed: int) -> BatchNorm:
    """A BatchNorm with learned parameters and running averages of a few batches, in eval
    mode: in training mode its inverse uses the batch's statistics, so it is not the inverse
    of its forward (test_normalization.py covers that mode)."""
    batch_norm = perturb_(BatchNorm(dim).double(), seed=seed)
    for batch in range(3):
        batch_norm.inverse_and_log_det(data(dim, seed + batch))
    return batch_norm.eval()


STEP_KINDS = {"maf": MAF, "iaf": IAF, "conditional_maf": ConditionalMAF, "conditional_iaf": ConditionalIAF}
# Each Affine* class once, half of them stable: the plain and the gated update are the
# bijections "affine" and "gated" of the steps above, which run every contract with both.
AFFINE_KINDS = {
    "affine_maf": (AffineMAF, False),
    "affine_iaf_stable": (AffineIAF, True),
    "conditional_affine_maf": (ConditionalAffineMAF, False),
    "conditional_affine_iaf_stable": (ConditionalAffineIAF, True),
}


def _context_dim(kind: str) -> int:
    return C if kind.startswith("conditional") else 0


def _steps() -> dict[str, TransformCase]:
    """Each kind of step with each bijection, and each ``Affine*`` class."""
    cases = {}
    for kind, cls in STEP_KINDS.items():
        for bijection_name in STEP_BIJECTIONS:
            build = step_factory(cls, bijection_name, _context_dim(kind))
            cases[f"{kind}_{bijection_name}"] = TransformCase(build, _context_dim(kind))
    for kind, (cls, stable) in AFFINE_KINDS.items():
        cases[kind] = TransformCase(affine_factory(cls, stable, _context_dim(kind)), _context_dim(kind))
    return cases


CASES: dict[str, TransformCase] = {
    **_steps(),
    "permute": TransformCase(
        lambda dim, seed: Permute(torch.arange(dim).roll(seed + 1)),  # seed 0: a D-cycle, not its own inverse
        structure="permutation",
        not_applicable={
            SIGN: "torch defines sign for elementwise monotone maps; a permutation's determinant is +-1 by its parity",
            DTYPE: "it has no parameters, so it takes every floating-point dtype (checked instead: float32 passes)",
        },
    ),
    "act_norm": TransformCase(fitted_act_norm, structure="diagonal"),
    "batch_norm": TransformCase(fitted_batch_norm, structure="diagonal"),
}

# Public names that are no transform of their own, and why the registry has no entry for them.
NOT_IN_THE_REGISTRY = {"MaskedAutoregressive": "the shared base of MAF and IAF, with no direction of its own"}


def over(names) -> pytest.MarkDecorator:
    """Parametrises a test over the cases ``names`` as ``case``, with readable ids."""
    names = list(names)
    return pytest.mark.parametrize("case", [CASES[name] for name in names], ids=names)


def applying(contract: str) -> list[str]:
    """The cases ``contract`` applies to (every case without a reason against it)."""
    return [name for name, case in CASES.items() if contract not in case.not_applicable]


def not_applying(contract: str) -> list[str]:
    return [name for name, case in CASES.items() if contract in case.not_applicable]
