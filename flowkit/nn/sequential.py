r"""The sequential direction of a MADE: building ``x`` one input at a time in
autoregressive order, which [`MADE.sequential`][flowkit.nn.made.MADE.sequential] runs.

For ``k = 0, ..., D-1`` with ``i = order[k]``, the MADE outputs for input ``i`` depend only
on the inputs already built, and ``x[..., i] = step(params, i)``. Two ways to run it:

* [`fast_sequential`][flowkit.nn.sequential.fast_sequential] computes each hidden unit
  exactly once: taking units in order of degree, the units of degree ``k`` (in every layer)
  are final as soon as the inputs of rank ``<= k`` are known, and step ``k + 1`` evaluates
  only that thin slice of each layer. The arithmetic of the whole loop is about one
  forward pass.
* [`naive_sequential`][flowkit.nn.sequential.naive_sequential] runs a full forward pass per
  input; it is the reference the tests compare the fast one with.

Both take arguments the MADE has checked: nothing here checks them again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flowkit.nn import masks as M

if TYPE_CHECKING:  # the MADE imports this module
    from flowkit.nn.made import MADE

__all__ = ["SequentialPlan", "fast_sequential", "naive_sequential"]  # MADE.sequential is the usual way in

Step = Callable[[Tensor, int], Tensor]


@dataclass(frozen=True)
class SequentialPlan:
    """One mask set's structure as Python ints, for the sequential pass, so that it never
    reads a buffer's value back from the device (and ``torch.compile`` sees constants).

    ``order[k]`` is the input of rank ``k``, and ``ready[l][k]`` how many units of hidden
    layer ``l`` have degree ``< k`` (with the units sorted by degree,
    ``ready[l][k]:ready[l][k + 1]`` are the units of degree ``k``). ``units[l]`` sorts
    the units of layer ``l`` by degree when they are not sorted already (masks resampled
    by [`MADE.resample_masks`][flowkit.nn.made.MADE.resample_masks]), else ``None``.
    """

    order: list[int]
    ready: list[list[int]]
    units: list[Tensor | None]

    @staticmethod
    def of(input_degrees: Tensor, hidden: list[Tensor]) -> SequentialPlan:
        """The plan of a mask set given by its input and hidden degrees."""
        steps = torch.arange(len(input_degrees), device="cpu")
        units = [_sorting(degrees.cpu()) for degrees in hidden]
        ready = [
            [0, *torch.searchsorted(degrees.cpu() if u is None else degrees.cpu()[u], steps, right=True).tolist()]
            for degrees, u in zip(hidden, units)
        ]  # fmt: skip
        return SequentialPlan(M.order_from_degrees(input_degrees.cpu()).tolist(), ready, units)


def _sorting(degrees: Tensor) -> Tensor | None:
    """The permutation that sorts ``degrees`` (stably), or ``None`` when they are sorted."""
    if bool((degrees[1:] >= degrees[:-1]).all()):
        return None
    return torch.argsort(degrees, stable=True)


def naive_sequential(
    raw_output: Callable[[Tensor], Tensor], order: list[int], step: Step, x: Tensor
) -> tuple[Tensor, Tensor]:
    """One full MADE pass (``raw_output``, of shape ``(..., P, D)``) per input, in ``order``,
    starting from ``x`` (zeros of the batch shape); returns ``x`` and the outputs at it."""
    columns = list(x.unbind(-1))
    for i in order:
        params = raw_output(torch.stack(columns, dim=-1))
        columns[i] = step(params[..., i], i)
    x = torch.stack(columns, dim=-1)
    return x, raw_output(x)


@dataclass
class _RankedWeights:
    """The weights of the active mask set, read once per pass and reordered by rank: the
    input columns in rank order, the hidden units by degree, and per rank ``k`` the output
    rows (and skip columns) of the input of rank ``k``."""

    hidden: list[Tensor]  # input layer and hidden layers, (H_l, H_{l-1})
    hidden_bias: list[Tensor]  # (H_l,)
    out_rows: Tensor  # (D, P): the output rows of each rank, p * D + order[k]
    out_weight: Tensor  # (D, P, H_last)
    out_bias: Tensor  # (D, P)
    skip_weight: Tensor | None  # (D, P, D), inputs in rank order

    @staticmethod
    def of(made: MADE, plan: SequentialPlan) -> _RankedWeights:
        D, P, order = made.input_dim, sum(made.param_dims), made.permutation
        layers = [made.input_layer, *made.hidden_layers]
        hidden, bias = [layer.masked_weight() for layer in layers], [layer.bias for layer in layers]
        hidden[0] = hidden[0][:, order]
        out_rows = (torch.arange(P, device=order.device)[:, None] * D + order[None, :]).T
        out_weight = made.output_layer.masked_weight()[out_rows]
        for l, units in enumerate(plan.units):  # unsorted units: rows of layer l, columns of the next
            if units is not None:
                units = units.to(order.device)
                hidden[l], bias[l] = hidden[l][units], bias[l][units]
                if l + 1 < len(hidden):
                    hidden[l + 1] = hidden[l + 1][:, units]
                else:
                    out_weight = out_weight[..., units]
        skip = None if made.skip_layer is None else made.skip_layer.masked_weight()[:, order][out_rows]
        return _RankedWeights(hidden, bias, out_rows, out_weight, made.output_layer.bias[out_rows], skip)


def fast_sequential(
    made: MADE, plan: SequentialPlan, step: Step, batch_shape: torch.Size, context: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The sequential pass that computes each hidden unit of ``made`` once, for the active
    mask set, whose ``plan`` is given; returns ``x`` and the MADE outputs at it."""
    weights = _RankedWeights.of(made, plan)
    num_layers = 1 + len(made.hidden_layers)
    context_hidden = context_out = None
    if context is not None:
        context_hidden = made.context_layer(context)
        if plan.units[0] is not None:
            context_hidden = context_hidden[..., plan.units[0].to(context_hidden.device)]
        if made.context_skip_layer is not None:
            context_out = made.context_skip_layer(context)

    empty = weights.out_bias.new_zeros(batch_shape + (0,))
    x_ranked = empty  # the inputs of rank < k, in rank order
    known = [empty] * num_layers  # per layer, the units of degree <= k computed so far
    params_ranked = []
    for k in range(made.input_dim):
        inputs = x_ranked
        for l in range(num_layers):
            start, stop = plan.ready[l][k], plan.ready[l][k + 1]  # the units of degree exactly k
            if stop > start:
                pre = inputs @ weights.hidden[l][start:stop, : inputs.shape[-1]].T + weights.hidden_bias[l][start:stop]
                if l == 0 and context_hidden is not None:
                    pre = pre + context_hidden[..., start:stop]
                new = made.activation(pre)
                if l > 0 and made.residual:
                    new = new + inputs[..., start:stop]
                known[l] = torch.cat([known[l], new], dim=-1)
            inputs = known[l]
        params = inputs @ weights.out_weight[k, :, : inputs.shape[-1]].T + weights.out_bias[k]
        if weights.skip_weight is not None:
            params = params + x_ranked @ weights.skip_weight[k, :, :k].T
            if context_out is not None:
                params = params + context_out[..., weights.out_rows[k]]
        x_k = step(params, plan.order[k])
        x_ranked = torch.cat([x_ranked, x_k.unsqueeze(-1)], dim=-1)
        params_ranked.append(params)
    ranks = M.degrees_from_order(made.permutation) - 1
    return x_ranked.index_select(-1, ranks), torch.stack(params_ranked, dim=-1).index_select(-1, ranks)
