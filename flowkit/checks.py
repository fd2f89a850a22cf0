"""Verification tools: prove that a network is autoregressive.

[`check_autoregressive`][flowkit.checks.check_autoregressive] checks a conditioner two independent ways:

* **structure**: the product of its boolean masks (every path through the layers,
  including residual and direct connections) says which inputs can reach which outputs;
* **behaviour**: autograd Jacobians of its outputs with respect to its inputs, in
  float64, at random points, say which inputs actually move which outputs.

Output ``i`` may depend on input ``j`` only when ``j`` comes before ``i`` in the order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from itertools import chain
from typing import NamedTuple

import torch
from torch import Tensor, nn

from flowkit._validation import check_int

__all__ = ["AutoregressiveReport", "Dependency", "check_autoregressive"]


class Dependency(NamedTuple):
    """One (input, output) pair, for mask set ``mask_index``, found by ``method``
    (``"masks"`` or ``"jacobian"``)."""

    input: int
    output: int
    mask_index: int
    method: str


@dataclass
class AutoregressiveReport:
    """What [`check_autoregressive`][flowkit.checks.check_autoregressive] found.

    Attributes:
        input_dim: The number of inputs.
        orders: The order of each mask set checked (``orders[k]`` lists the inputs by rank).
        forbidden: Dependencies of an output on an input at or after it in the order.
            Any entry means the network is not autoregressive.
        missing: Allowed dependencies that no path carries (``"masks"``) or that the
            Jacobian never showed at the test points (``"jacobian"``). A MADE with hidden
            layers narrower than ``D - 1`` is expected to miss some; a piecewise-linear
            activation (ReLU) can hide one at a given point, so prefer a smooth one when
            you check completeness by Jacobian.
        structure_checked: Whether the masks were read (only for flowkit MADEs).
    """

    input_dim: int
    orders: list[list[int]]
    forbidden: list[Dependency] = field(default_factory=list)
    missing: list[Dependency] = field(default_factory=list)
    structure_checked: bool = True

    @property
    def autoregressive(self) -> bool:
        """True when no output depends on an input at or after it in the order."""
        return not self.forbidden

    @property
    def complete(self) -> bool:
        """True when every allowed dependency is present."""
        return not self.missing

    @property
    def ok(self) -> bool:
        """Autoregressive and complete."""
        return self.autoregressive and self.complete

    def __str__(self) -> str:
        methods = "masks and Jacobians" if self.structure_checked else "Jacobians"
        lines = [
            f"check_autoregressive: D={self.input_dim}, {len(self.orders)} mask set(s), checked by {methods}",
            f"  autoregressive: {'yes' if self.autoregressive else 'NO'} "
            f"({len(self.forbidden)} forbidden dependencies)",
            f"  complete: {'yes' if self.complete else 'no'} ({len(self.missing)} allowed dependencies missing)",
        ]
        for title, items in (("forbidden", self.forbidden), ("missing", self.missing)):
            for dep in items[:10]:
                lines.append(
                    f"    {title}: output {dep.output} <- input {dep.input} "
                    f"(mask set {dep.mask_index}, by {dep.method})"
                )
            if len(items) > 10:
                lines.append(f"    ... and {len(items) - 10} more {title}")
        return "\n".join(lines)


def check_autoregressive(
    net: nn.Module,
    num_points: int = 3,
    context: Tensor | None = None,
    seed: int = 0,
) -> AutoregressiveReport:
    """Checks that ``net`` is autoregressive in its order, from its masks and by Jacobian.

    Works on a flowkit [`MADE`][flowkit.nn.MADE] (every mask set, structure and
    behaviour) and on any network with Pyro's conventions: a ``permutation`` attribute
    and outputs shaped ``(..., D)``, ``(..., p, D)`` or a tuple of those (behaviour only),
    such as `pyro.nn.AutoRegressiveNN`. The network itself is not changed: the
    check runs on a float64 copy.

    Args:
        net: The network to check.
        num_points: How many random points to take Jacobians at.
        context: The context for a conditional network; drawn at random if omitted.
        seed: Seeds the random points.

    Examples:
        >>> from flowkit import MADE
        >>> report = check_autoregressive(MADE(4, [8, 8], activation="tanh", seed=0))
        >>> report.ok
        True
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net: expected a torch.nn.Module, got {type(net).__name__}")
    if not hasattr(net, "permutation"):
        raise TypeError("net: expected a network with a `permutation` attribute (the inputs in autoregressive order)")
    check_int(num_points, "num_points")
    net = copy.deepcopy(net).double()
    input_dim = len(net.permutation)
    generator = torch.Generator().manual_seed(seed)
    context_dim = getattr(net, "context_dim", 0)
    device = _device_of(net)
    if context is None and context_dim:
        context = torch.randn(context_dim, generator=generator, dtype=torch.float64, device="cpu")
    if context is not None:
        context = context.detach().double().to(device)
    points = torch.randn(num_points, input_dim, generator=generator, dtype=torch.float64, device="cpu").to(device)

    is_made = hasattr(net, "set_mask") and hasattr(net, "connectivity")
    active = net.active_mask if is_made else 0
    # The active set first, as the layers hold it (a tampered mask must show), then the others.
    mask_sets = [active] + [i for i in range(net.num_masks) if i != active] if is_made else [0]
    report = AutoregressiveReport(input_dim, [], structure_checked=is_made)
    for index in mask_sets:
        if is_made and index != active:
            net.set_mask(index)
        order = net.permutation.cpu()
        report.orders.append(order.tolist())
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(input_dim, device="cpu")
        allowed = ranks[:, None] > ranks[None, :]  # [output, input]
        found = [("jacobian", _jacobian_dependence(net, points, context).cpu())]
        if is_made:
            found.insert(0, ("masks", net.connectivity().cpu()))
        for method, depends in found:
            for output, inp in torch.nonzero(depends & ~allowed).tolist():
                report.forbidden.append(Dependency(inp, output, index, method))
            for output, inp in torch.nonzero(allowed & ~depends).tolist():
                report.missing.append(Dependency(inp, output, index, method))
    return report


def _device_of(net: nn.Module) -> torch.device:
    """Where the network's tensors live (the CPU for a network without any)."""
    for tensor in chain(net.parameters(), net.buffers()):
        return tensor.device
    return torch.device("cpu")


def _jacobian_dependence(net: nn.Module, points: Tensor, context: Tensor | None) -> Tensor:
    """``[i, j]`` is True when some output parameter of input ``i`` moves with input ``j``
    at some point."""
    def outputs(x: Tensor) -> Tensor:
        out = net(x) if context is None else net(x, context)
        parts = out if isinstance(out, (tuple, list)) else (out,)
        # Pyro's layouts: (D,) or (p, D) per part; stack them as (P, D).
        return torch.cat([part.reshape(-1, x.shape[-1]) for part in parts])

    depends = torch.zeros(points.shape[-1], points.shape[-1], dtype=torch.bool, device=points.device)
    for x in points:
        jac = torch.autograd.functional.jacobian(outputs, x)  # (P, D_out, D_in)
        depends |= (jac != 0).any(dim=0)
    return depends
