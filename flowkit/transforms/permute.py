"""Permutations between autoregressive steps, as ``nn.Module`` transforms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from torch import Tensor

from flowkit.nn.masks import make_order
from flowkit._seeding import make_generator
from flowkit.transforms.cache import CachedTransformModule

__all__ = ["Permute", "permute"]


class Permute(CachedTransformModule):
    """Reorders the last dimension: ``y = x[..., permutation]``.

    Unlike Pyro's ``Permute``, the permutation is a buffer, so it is saved in the
    ``state_dict`` and follows ``.to()``. Volume preserving: the log-determinant is 0.

    Args:
        permutation: A permutation of ``range(D)``.

    Examples:
        >>> t = Permute(torch.tensor([2, 0, 1]))
        >>> t(torch.tensor([10.0, 11.0, 12.0]))
        tensor([12., 10., 11.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    volume_preserving = True

    def __init__(self, permutation: Sequence[int] | Tensor):
        super().__init__()
        permutation = make_order(len(permutation), permutation)
        device = torch.empty(0).device  # where torch puts new tensors (torch.set_default_device)
        self.register_buffer("permutation", permutation.to(device))
        self.register_buffer("inverse_permutation", torch.argsort(permutation).to(device))

    @property
    def input_dim(self) -> int:
        """The number of dimensions ``D``."""
        return len(self.permutation)

    def _forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x[..., permutation]`` and a zero log-determinant (volume is preserved)."""
        return x.index_select(-1, self.permutation), x.new_zeros(x.shape[:-1])

    def _inverse_and_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``y[..., inverse_permutation]`` and a zero log-determinant."""
        return y.index_select(-1, self.inverse_permutation), y.new_zeros(y.shape[:-1])

    def _log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1])  # a permutation preserves volume


def permute(input_dim: int, kind: str | Sequence[int] | Tensor = "reversed", seed: int | torch.Generator | None = None) -> Permute:
    """Builds a [`Permute`][flowkit.transforms.permute.Permute].

    Args:
        input_dim: The number of dimensions ``D``.
        kind: ``"reversed"``, ``"random"`` or a permutation of ``range(D)``.
        seed: An int or a ``torch.Generator`` for ``"random"``.

    Examples:
        >>> permute(3).permutation
        tensor([2, 1, 0])
    """
    return Permute(make_order(input_dim, kind, make_generator(seed)))
