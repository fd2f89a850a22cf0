r"""Orderings, degrees and masks for MADE, as pure functions.

Conventions (the same as Pyro's `AutoRegressiveNN`):

* An **order** is the list of inputs in autoregressive order: ``order[k]`` is the input
  that comes ``k``-th. Pyro calls this ``permutation``.
* The **degree** of input ``i`` is its 1-based rank in the order, so ``order[k]`` has
  degree ``k + 1``. [`degrees_from_order`][flowkit.nn.masks.degrees_from_order] and
  [`order_from_degrees`][flowkit.nn.masks.order_from_degrees] convert.
* A hidden unit of degree ``m`` may see the inputs of degree ``<= m``. Context inputs
  (for a conditional MADE) have degree 0, so every hidden unit sees them.
* Masks have the shape of the weight they multiply, ``(out_features, in_features)``.
* Orders and degrees are made on the CPU (they are structure, drawn from CPU generators);
  the functions that take tensors keep their device, and modules move the results to theirs.

A hidden unit ``k`` sees a unit ``k'`` of the layer below when its degree is at least as
large, and the output for the input of degree ``d`` sees a unit ``k`` only when ``d`` is
strictly larger, so that no output sees its own input:

\[
M^{\text{hidden}}_{k k'} = \mathbb{1}\big[m(k) \ge m(k')\big], \qquad
M^{\text{output}}_{d k} = \mathbb{1}\big[d > m(k)\big].
\]

Examples:
    >>> order = make_order(3, "reversed")
    >>> order
    tensor([2, 1, 0])
    >>> degrees_from_order(order)
    tensor([3, 2, 1])
    >>> hidden = hidden_degrees(4, low=1, high=2)
    >>> hidden
    tensor([1, 1, 2, 2])
    >>> output_mask(hidden, degrees_from_order(order)).int()
    tensor([[1, 1, 1, 1],
            [1, 1, 0, 0],
            [0, 0, 0, 0]], dtype=torch.int32)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import BoolTensor, LongTensor, Tensor

from flowkit._validation import check_int

__all__ = [
    "connectivity",
    "degrees_from_order",
    "draw_structure",
    "hidden_degrees",
    "hidden_mask",
    "lost_dependencies",
    "lost_dependencies_of_degrees",
    "make_order",
    "order_from_degrees",
    "output_mask",
]

ORDER_KINDS = ("natural", "reversed", "random")
DEGREE_SCHEMES = ("even", "random", "uniform")


def make_order(
    input_dim: int,
    order: str | Sequence[int] | Tensor = "natural",
    generator: torch.Generator | None = None,
) -> LongTensor:
    """Builds an autoregressive order: the list of inputs in the order they come.

    Args:
        input_dim: The number of inputs ``D``.
        order: ``"natural"`` (0, 1, ..., D-1), ``"reversed"``, ``"random"`` (a uniform
            random permutation drawn from ``generator``) or any permutation of
            ``range(D)`` given as a sequence or a tensor.
        generator: The random generator for ``"random"``.

    Returns:
        A long tensor of shape ``(D,)``.

    Examples:
        >>> make_order(4, [2, 0, 3, 1])
        tensor([2, 0, 3, 1])
    """
    check_int(input_dim, "input_dim", type_error=True)
    if isinstance(order, str):
        if order == "natural":
            return torch.arange(input_dim, device="cpu")
        if order == "reversed":
            return torch.arange(input_dim - 1, -1, -1, device="cpu")
        if order == "random":
            return torch.randperm(input_dim, generator=generator, device="cpu")
        raise ValueError(f"order: expected one of {ORDER_KINDS} or a permutation, got {order!r}")
    try:
        perm = order.cpu() if isinstance(order, Tensor) else torch.as_tensor(order, device="cpu")
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"order: expected a permutation of range({input_dim}), got {order!r}") from error
    if perm.dtype.is_floating_point or perm.dtype == torch.bool or perm.dtype.is_complex:
        raise TypeError(f"order: expected integers, got dtype {perm.dtype}")
    perm = perm.long().cpu()
    if perm.shape != (input_dim,) or not torch.equal(perm.sort().values, torch.arange(input_dim, device="cpu")):
        raise ValueError(f"order: expected a permutation of range({input_dim}), got {perm.tolist()}")
    return perm


def degrees_from_order(order: Tensor) -> LongTensor:
    """Degrees (1-based ranks) of the inputs: ``degrees[order[k]] = k + 1``.

    Examples:
        >>> degrees_from_order(torch.tensor([2, 0, 1]))
        tensor([2, 3, 1])
    """
    degrees = torch.empty_like(order)
    degrees[order] = torch.arange(1, len(order) + 1, device=order.device)
    return degrees


def order_from_degrees(degrees: Tensor) -> LongTensor:
    """The order (list of inputs by rank) from input degrees; the inverse of
    [`degrees_from_order`][flowkit.nn.masks.degrees_from_order].

    Examples:
        >>> order_from_degrees(torch.tensor([2, 3, 1]))
        tensor([2, 0, 1])
    """
    return torch.argsort(degrees)


def hidden_degrees(
    width: int,
    low: int,
    high: int,
    scheme: str = "even",
    generator: torch.Generator | None = None,
    sort: bool = True,
) -> LongTensor:
    """Degrees of the units of one hidden layer, sorted ascending (unless ``sort=False``
    with ``"uniform"``).

    With ``"even"`` and ``"random"``, every degree in ``low..high`` is used at least once
    whenever ``width`` allows it (``width >= high - low + 1``). A narrower layer gets
    ``width`` distinct degrees, always including ``low``, the others spread evenly
    (``"even"``) or drawn at random (``"random"``); the MADE then loses some
    dependencies, which [`lost_dependencies`][flowkit.nn.masks.lost_dependencies] names.
    ``"uniform"`` is the MADE paper's draw: every unit's degree uniform on ``low..high``,
    independently, so some degrees may have no unit (the direct connections of a MADE
    with ``skip_connections`` still carry every first-order dependency).

    Args:
        width: The number of units.
        low: The smallest useful degree: 1 for a plain MADE (a unit of degree 0 would
            see no input), 0 with context inputs (it sees only the context).
        high: The largest useful degree, ``D - 1`` (a unit of degree D feeds no output).
        scheme: ``"even"`` spreads the units evenly over the degrees (deterministic);
            ``"random"`` is the MADE paper's scheme, uniform draws, but it first puts
            one unit on each degree so that none is missing by chance; ``"uniform"``
            is the paper's draw as it is.
        generator: The random generator for ``"random"`` and ``"uniform"``.
        sort: Sort ``"uniform"`` degrees. Unsorted, unit ``k`` of a layer is a fresh
            uniform draw at every call (what per-update mask sampling needs: sorted, unit
            ``k`` would always get a degree near the ``k/width`` quantile). The other
            schemes are always sorted.

    Examples:
        >>> hidden_degrees(5, low=1, high=3)
        tensor([1, 1, 2, 2, 3])
    """
    check_int(width, "width", type_error=True)
    if high < low:
        raise ValueError(f"high: expected high >= low, got low={low}, high={high}")
    count = high - low + 1
    if scheme == "even":
        if width >= count:
            return low + torch.arange(width, device="cpu") * count // width
        # Narrow: distinct degrees as evenly spaced as possible over low..high.
        return low + torch.arange(width, device="cpu") * (count - 1) // max(width - 1, 1)
    if scheme == "random":
        if width >= count:
            extra = torch.randint(low, high + 1, (width - count,), generator=generator, device="cpu")
            return torch.cat([torch.arange(low, high + 1, device="cpu"), extra]).sort().values
        # Keep the lowest degree: with context inputs it is what the first output reads.
        rest = low + 1 + torch.randperm(count - 1, generator=generator, device="cpu")[: width - 1]
        return torch.cat([torch.tensor([low], device="cpu"), rest]).sort().values
    if scheme == "uniform":
        degrees = torch.randint(low, high + 1, (width,), generator=generator, device="cpu")
        return degrees.sort().values if sort else degrees
    raise ValueError(f"scheme: expected one of {DEGREE_SCHEMES}, got {scheme!r}")


def draw_structure(
    input_dim: int,
    hidden_dims: Sequence[int],
    generator: torch.Generator | None = None,
    order: str | Sequence[int] | Tensor = "random",
    scheme: str = "uniform",
    low: int = 1,
    residual: bool = False,
    sort: bool = True,
) -> tuple[LongTensor, list[LongTensor]]:
    """One MADE structure: the input degrees of an order and the degrees of each hidden layer.

    Each layer's degrees are drawn on ``low..input_dim - 1``, ``low`` rising to the
    smallest degree of the layer below (a unit below it would see nothing). Inputs are
    checked by the caller ([`MADE`][flowkit.nn.MADE]); this only draws.

    Args:
        input_dim: The number of inputs ``D``.
        hidden_dims: The widths of the hidden layers.
        generator: The random generator for random orders and degrees.
        order: As in [`make_order`][flowkit.nn.masks.make_order].
        scheme: As in [`hidden_degrees`][flowkit.nn.masks.hidden_degrees].
        low: The smallest degree: 1, or 0 with context inputs (see
            [`hidden_degrees`][flowkit.nn.masks.hidden_degrees]).
        residual: Every layer after the first repeats the degrees of the one below
            (``h + f(h)`` needs matching degrees).
        sort: Sort ``"uniform"`` degrees (see [`hidden_degrees`][flowkit.nn.masks.hidden_degrees]).

    Returns:
        ``(input_degrees, [degrees of hidden layer l, ...])``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> input_degrees, hidden = draw_structure(4, [6], g)
        >>> sorted(input_degrees.tolist()), len(hidden[0]), bool(hidden[0].max() <= 3)
        ([1, 2, 3, 4], 6, True)
    """
    input_degrees = degrees_from_order(make_order(input_dim, order, generator))
    high = max(input_dim - 1, low)
    hidden: list[Tensor] = []
    for width in hidden_dims:
        if residual and hidden:
            layer_degrees = hidden[-1]
        else:
            layer_degrees = hidden_degrees(width, low, high, scheme, generator, sort)
        low = int(layer_degrees.min())
        hidden.append(layer_degrees)
    return input_degrees, hidden


def hidden_mask(in_degrees: Tensor, out_degrees: Tensor) -> BoolTensor:
    """Mask into a hidden layer: unit ``k`` sees unit ``k'`` when ``m(k) >= m(k')``.

    Returns a boolean tensor of shape ``(len(out_degrees), len(in_degrees))``.
    """
    return out_degrees[:, None] >= in_degrees[None, :]


def output_mask(in_degrees: Tensor, out_degrees: Tensor) -> BoolTensor:
    """Mask into the output layer: the output for an input of degree ``d`` sees unit
    ``k`` when ``d > m(k)``, strictly, so no output sees its own input.

    Returns a boolean tensor of shape ``(len(out_degrees), len(in_degrees))``.
    """
    return out_degrees[:, None] > in_degrees[None, :]


def connectivity(
    masks: Sequence[Tensor],
    residual: Sequence[bool] | None = None,
    skip: Tensor | None = None,
) -> BoolTensor:
    """Which inputs can reach which outputs through a chain of masked layers.

    Args:
        masks: The masks of the layers, first layer first, each ``(out, in)``.
        residual: For each layer, whether its input is also added to its output
            (a residual connection, which adds the identity to that layer's paths).
        skip: An optional direct input-to-output mask.

    Returns:
        A boolean ``(outputs, inputs)`` tensor: True where some path connects them.
    """
    residual = residual or [False] * len(masks)
    reach = None
    for mask, has_residual in zip(masks, residual):
        # Float products of 0/1 matrices: BLAS is tens of times faster than integer
        # matmul, and a sum of non-negative terms is positive exactly when one term is,
        # so thresholding at zero gives the exact path pattern at any width.
        step = mask.to(torch.float32)
        if has_residual:
            step = step + torch.eye(*step.shape, device=step.device)
        reach = step if reach is None else (step @ reach > 0).to(torch.float32)
    reach = reach.bool()
    if skip is not None:
        reach = reach | skip.bool()
    return reach


def lost_dependencies(reach: Tensor, in_degrees: Tensor, out_degrees: Tensor) -> list[tuple[int, int]]:
    """The (input, output) pairs that the autoregressive order allows but no path
    connects: ``in_degrees[j] < out_degrees[i]`` and ``not reach[i, j]``.

    Returns a sorted list of ``(j, i)`` index pairs.
    """
    allowed = out_degrees[:, None] > in_degrees[None, :]
    outputs, inputs = torch.nonzero(allowed & ~reach.bool(), as_tuple=True)
    return sorted(zip(inputs.tolist(), outputs.tolist()))



def lost_dependencies_of_degrees(input_degrees: Tensor, hidden: Sequence[Tensor]) -> list[tuple[int, int]]:
    """The pairs [`lost_dependencies`][flowkit.nn.masks.lost_dependencies] finds for the
    degree masks of a MADE without direct connections, from the degrees alone.

    From an input of degree ``a`` the first layer reaches exactly its units of degree
    ``>= a``, so each layer's reachable units are those of degree at least the smallest
    one reached: ``r_l = min {m in layer l : m >= r_(l-1)}``, with ``r_0 = a``. The output
    of an input of degree ``b`` sees the last layer's units of degree ``< b``, so it is
    reached exactly when ``r_L < b``. This costs a search per layer instead of the
    products of [`connectivity`][flowkit.nn.masks.connectivity] (a residual layer adds
    nothing: it joins units of equal degree, which the masks already join).

    Returns a sorted list of ``(j, i)`` index pairs, as ``lost_dependencies`` does.
    """
    reached = input_degrees.to(torch.float64)
    for degrees in hidden:
        ordered = torch.sort(degrees.to(torch.float64)).values
        at = torch.searchsorted(ordered, reached)  # first unit of degree >= reached
        padded = torch.cat([ordered, ordered.new_full((1,), math.inf)])
        reached = padded[at]
    allowed = input_degrees[:, None] > input_degrees[None, :]
    unreached = input_degrees[:, None] <= reached[None, :]
    outputs, inputs = torch.nonzero(allowed & unreached, as_tuple=True)
    return sorted(zip(inputs.tolist(), outputs.tolist()))
