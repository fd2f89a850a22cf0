"""What a MADE's masks connect, and what they lose: a layer narrower than the number of
useful degrees cannot carry every dependency the order allows. The path counting itself
is [`masks.connectivity`][flowkit.nn.masks.connectivity] and
[`masks.lost_dependencies`][flowkit.nn.masks.lost_dependencies]; this module reads a
MADE's layers through them and reports the losses when a MADE is built."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import Tensor

from flowkit._callsite import user_stacklevel
from flowkit.nn import masks as M

__all__ = ["LostDependencyWarning", "input_connectivity", "report_lost_dependencies"]

LOST_DEPENDENCY_ACTIONS = ("warn", "raise")
_SHOWN_PAIRS = 8  # a message lists this many lost pairs at most


class LostDependencyWarning(UserWarning):
    """A MADE whose hidden layers are too narrow to keep every conditional dependency."""


def input_connectivity(chain: Sequence[Tensor], skip: Tensor | None, residual: bool, input_dim: int) -> Tensor:
    """A ``(D, D)`` boolean matrix: ``[i, j]`` is True when some path through the masks
    ``chain`` (input layer, hidden layers, output layer; every hidden layer after the
    first residual when ``residual``) or the direct mask ``skip`` connects input ``j`` to
    any output parameter of input ``i``."""
    hidden_residual = [residual] * (len(chain) - 2)
    reach = M.connectivity(chain, [False, *hidden_residual, False], skip)
    return reach.unflatten(0, (-1, input_dim)).any(dim=0)


def report_lost_dependencies(
    lost_per_set: Sequence[list[tuple[int, int]]],
    action: str,
    input_dim: int,
    hidden_dims: list[int],
    context_dim: int,
) -> None:
    """Warns with a [`LostDependencyWarning`][flowkit.nn.diagnostics.LostDependencyWarning]
    (or raises a ``ValueError`` naming ``hidden_dims``, when ``action="raise"``) for each
    mask set of a MADE that loses (input, output) pairs."""
    allowed = input_dim * (input_dim - 1) // 2
    needed = input_dim if context_dim else input_dim - 1  # one unit per useful degree
    for index, lost in enumerate(lost_per_set):
        if not lost:
            continue
        shown = ", ".join(f"input {j} -> output {i}" for j, i in lost[:_SHOWN_PAIRS])
        shown += ", ..." if len(lost) > _SHOWN_PAIRS else ""
        message = (
            f"MADE(input_dim={input_dim}, hidden_dims={hidden_dims}): mask set {index} "
            f"cannot connect {len(lost)} of {allowed} allowed (input, output) pairs (0-based indices): {shown}. "
            f"Layers of width >= {needed} keep them all; made.lost_dependencies() lists them."
        )
        if action == "raise":
            raise ValueError(f"hidden_dims: {message}")
        warnings.warn(message, LostDependencyWarning, stacklevel=user_stacklevel())
