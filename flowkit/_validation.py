"""Checks of user input that several public entry points share, so that they all accept
the same things and say the same words when they refuse one.

These run inside ``torch.compile`` traces too (``Flow.sample``, ``log_prob``): they read
types and Python ints only, never a tensor's values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "as_shape",
    "broadcast_batch",
    "check_context",
    "check_float_tensor",
    "check_int",
    "check_int_list",
    "check_is_tensor",
    "check_last_dim",
    "check_options",
    "check_tensor",
]


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


def check_int(
    value: object, name: str, *, minimum: int = 1, or_none: bool = False, type_error: bool = False
) -> None:
    """Raises unless ``value`` is an int (not a bool) of at least ``minimum`` (or ``None``,
    when ``or_none``). The message says ``a positive int`` (``minimum=1``), ``a
    non-negative int`` (0) or ``an int >= minimum``. A value of another type is a
    ``ValueError`` like a small one, or a ``TypeError`` with ``type_error`` (the mask
    functions' and MADE's convention).

    Examples:
        >>> check_int(0, "num_masks")
        Traceback (most recent call last):
            ...
        ValueError: num_masks: expected a positive int, got 0
    """
    if or_none and value is None:
        return
    expected = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
    expected += " or None" if or_none else ""
    if isinstance(value, bool) or not isinstance(value, int):
        if type_error:
            raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def check_int_list(values: object, name: str) -> list[int]:
    """``values``, a non-empty sequence of positive ints, as a list (layer widths,
    ``param_dims``)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: expected a sequence of positive ints, got {type(values).__name__}")
    values = list(values)
    if not values:
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints, got []")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected positive ints, got {values}")
    return values


def check_last_dim(value: Tensor, name: str, size: int, size_name: str | None = None) -> None:
    """Raises a ``ValueError`` unless tensor ``value`` has shape ``(..., size)``; the
    message names ``size_name`` (``"input_dim"``) when given."""
    if value.dim() == 0 or value.shape[-1] != size:
        with_name = f" with {size_name}={size}" if size_name else ""
        raise ValueError(f"{name}: expected shape (..., {size}){with_name}, got {tuple(value.shape)}")


def check_float_tensor(value: object, name: str) -> None:
    """Raises a ``TypeError`` naming ``name`` unless ``value`` is a floating-point tensor."""
    check_is_tensor(value, name)
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype} (use .float())")


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
    check_float_tensor(value, name)
    check_last_dim(value, name, size, size_name)
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name}: dtype {value.dtype} does not match the model's {dtype}; convert one of them")


def check_context(context: object, context_dim: int, owner: str, dtype: torch.dtype | None = None) -> None:
    """Raises unless ``context`` suits a model with ``context_dim`` (``None`` exactly when it
    is 0, else a ``(..., context_dim)`` tensor of ``dtype``); ``owner`` names the model in
    the message (``"this MADE"``, ``"this flow"``)."""
    if context is not None:
        check_is_tensor(context, "context")
    if context_dim == 0:
        if context is not None:
            raise ValueError(f"context: {owner} was built with context_dim=0 and takes no context")
        return
    if context is None:
        raise ValueError(f"context: {owner} needs a context of size context_dim={context_dim}")
    check_tensor(context, "context", context_dim, "context_dim", dtype)


def broadcast_batch(context: Tensor, batch_shape: Sequence[int], against: str) -> torch.Size:
    """The batch shape of ``batch_shape`` broadcast with the context's, or a ``ValueError``
    that names what the context was set against (``"x's batch shape"``)."""
    try:
        return torch.broadcast_shapes(torch.Size(batch_shape), context.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"context: batch shape {tuple(context.shape[:-1])} does not broadcast with {against} {tuple(batch_shape)}"
        ) from None


def check_options(options: Mapping[str, object], allowed: type, function: str) -> None:
    """A ``TypeError`` naming the first keyword of ``options`` that is not a key of the
    ``TypedDict`` ``allowed``, the options that ``function`` takes as ``**options``.

    Examples:
        >>> from typing import TypedDict
        >>> class Options(TypedDict, total=False):
        ...     seed: int
        >>> check_options({"seed": 0}, Options, "build")
        >>> check_options({"sede": 0}, Options, "build")
        Traceback (most recent call last):
        ...
        TypeError: sede: not an option of build; expected one of ['seed']
    """
    for name in options:
        if name not in allowed.__annotations__:
            raise TypeError(f"{name}: not an option of {function}; expected one of {sorted(allowed.__annotations__)}")


def _type_name(value: object) -> str:
    """``int``, ``str``, ... for builtins, ``numpy.ndarray`` for the others (so that the
    message says where the type comes from)."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
