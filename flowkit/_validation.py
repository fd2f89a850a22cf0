"""Checks of user input that several public entry points share, so that they all accept
the same things and say the same words when they refuse one.

These run inside ``torch.compile`` traces too (``Flow.sample``, ``log_prob``): they read
types and Python ints only, never a tensor's values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["as_shape", "check_is_tensor"]


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


def _type_name(value: object) -> str:
    """``int``, ``str``, ... for builtins, ``numpy.ndarray`` for the others (so that the
    message says where the type comes from)."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
