"""The one check of a tensor argument that MADEs, transforms and flows share, so that the
same mistake gets the same message wherever it enters."""

from __future__ import annotations

import torch
from torch import Tensor


def check_tensor(value: object, name: str, size: int, size_name: str, dtype: torch.dtype | None = None) -> None:
    """Raises unless ``value`` is a floating-point tensor of shape ``(..., size)`` (and of
    ``dtype``, when given: the dtype of the model's parameters).

    Args:
        value: The argument to check.
        name: The argument's name, which every message starts with.
        size: The size its last dimension must have.
        size_name: What ``size`` is called (``"input_dim"``, ``"context_dim"``).
        dtype: The dtype it must have; ``None`` accepts every floating-point dtype.

    Raises:
        TypeError: For a non-tensor, an integer or boolean tensor, or another dtype.
        ValueError: For a scalar or a wrong last dimension.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype} (use .float())")
    if value.dim() == 0 or value.shape[-1] != size:
        raise ValueError(f"{name}: expected shape (..., {size}) with {size_name}={size}, got {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name}: dtype {value.dtype} does not match the model's {dtype}; convert one of them")
