"""Checks of user input that several public entry points share, so that they all accept
the same things and say the same words when they refuse one.

These run inside ``torch.compile`` traces too (``Flow.sample``, ``log_prob``): they read
types and Python ints only, never a tensor's values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["as_shape", "check_is_tensor", "check_tensor"]


def as_shape(shape: int | Sequence[int], name: str = "sample_shape") -> torch.Size:
    """``shape`` as a ``torch.Size``: an int ``n`` means ``(n,)``, and a tuple, list or
    ``torch.Size`` of ints is taken as it is.

    Examples:
        >>> as_shape(5), as_shape((2, 3)), as_shape([])
        (torch.Size([5]), torch.Size([2, 3]), torch.Size([]))
    """
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):  # torch.Size is a tuple
        raise TypeError(
            f"{name}: expected an int or a shape (a tuple, list or torch.Size of ints), got {_type_name(shape)}"
        )
    if any(isinstance(size, bool) or not isinstance(size, int) for size in shape):
        raise TypeError(f"{name}: expected a shape of ints, got {shape!r}")
    if any(size < 0 for size in shape):
        raise ValueError(f"{name}: expected sizes >= 0, got {tuple(shape)}")
    return torch.Size(shape)


def check_is_tensor(value: object, name: str, expected: str = "a torch.Tensor") -> None:
    """Raises a ``TypeError`` naming ``name`` unless ``value`` is a ``torch.Tensor``; for a
    NumPy array or a list, the message says how to convert it.

    Examples:
        >>> check_is_tensor([1.0, 2.0], "x")
        Traceback (most recent call last):
            ...
        TypeError: x: expected a torch.Tensor, got list; convert it with torch.as_tensor(x)
    """
    if isinstance(value, Tensor):
        return
    convertible = hasattr(value, "__array__") or isinstance(value, list)
    hint = f"; convert it with torch.as_tensor({name})" if convertible else ""
    raise TypeError(f"{name}: expected {expected}, got {_type_name(value)}{hint}")


def check_tensor(value: object, name: str, size: int, size_name: str, dtype: torch.dtype | None = None) -> None:
    """Raises unless ``value`` is a floating-point tensor of shape ``(..., size)`` (and of
    ``dtype``, when given: the dtype of the model's parameters). MADEs, transforms and flows
    all call it, so that the same mistake gets the same message wherever it enters.

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
    check_is_tensor(value, name)
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype} (use .float())")
    if value.dim() == 0 or value.shape[-1] != size:
        raise ValueError(f"{name}: expected shape (..., {size}) with {size_name}={size}, got {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name}: dtype {value.dtype} does not match the model's {dtype}; convert one of them")


def _type_name(value: object) -> str:
    """``int``, ``str``, ... for builtins, ``numpy.ndarray`` for the others (so that the
    message says where the type comes from)."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
