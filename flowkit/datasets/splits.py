"""The [`Splits`][flowkit.datasets.Splits] that every loader here returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Splits"]


@dataclass
class Splits:
    """Train, validation and test rows (float tensors unless said otherwise)."""

    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def dim(self) -> int:
        """The number of columns."""
        return self.train.shape[-1]
