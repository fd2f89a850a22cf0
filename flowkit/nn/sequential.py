r"""The sequential direction of a MADE: building ``x`` one input at a time in
autoregressive order, which [`MADE.sequential`][flowkit.nn.made.MADE.sequential] runs.

For ``k = 0, ..., D-1`` with ``i = order[k]``, the MADE outputs for input ``i`` depend only
on the inputs already built, and ``x[..., i] = step(params, i)``. Two ways to run it:

* [`fast_sequential`][flowkit.nn.sequential.fast_sequential] computes each hidden unit
  exactly once: units are sorted by degree, so the units of degree ``k`` (in every layer)
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
    layer ``l`` have degree ``< k`` (units are sorted by degree, so
    ``ready[l][k]:ready[l][k + 1]`` are the units of degree ``k``).
    """

    order: list[int]
    ready: list[list[int]]

    @staticmethod
    def of(input_degrees: Tensor, hidden: list[Tensor]) -> SequentialPlan:
        """The plan of a mask set given by its input and hidden degrees."""
        steps = torch.arange(len(input_degrees), device="cpu")
        ready = [[0, *torch.searchsorted(degrees.cpu(), steps, right=True).tolist()] for degrees in hidden]
        return SequentialPlan(M.order_from_degrees(input_degrees.cpu()).tolist(), ready)


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
    input columns in rank order, and per rank ``k`` the output rows (and skip columns) of
    the input of rank ``k``."""

    hidden: list[Tensor]  # input layer and hidden layers, (H_l, H_{l-1})
    out_rows: Tensor  # (D, P): the output rows of each rank, p * D + order[k]
    out_weight: Tensor  # (D, P, H_last)
    out_bias: Tensor  # (D, P)
    skip_weight: Tensor | None  # (D, P, D), inputs in rank order

    @staticmethod
    def of(made: MADE) -> _RankedWeights:
        D, P, order = made.input_dim, sum(made.param_dims), made.permutation
        hidden = [layer.masked_weight() for layer in [made.input_layer, *made.hidden_layers]]
        hidden[0] = hidden[0][:, order]
        out_rows = (torch.arange(P, device=order.device)[:, None] * D + order[None, :]).T
        skip = None if made.skip_layer is None else made.skip_layer.masked_weight()[:, order][out_rows]
        output = made.output_layer
        return _RankedWeights(hidden, out_rows, output.masked_weight()[out_rows], output.bias[out_rows], skip)


def fast_sequential(
    made: MADE, plan: SequentialPlan, step: Step, batch_shape: torch.Size, context: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The sequential pass that computes each hidden unit of ``made`` once, for the active
    mask set, whose ``plan`` is given; returns ``x`` and the MADE outputs at it."""
    weights = _RankedWeights.of(made)
    layers = [made.input_layer, *made.hidden_layers]
    context_hidden = context_out = None
    if context is not None:
        context_hidden = made.context_layer(context)
        if made.context_skip_layer is not None:
            context_out = made.context_skip_layer(context)

    empty = weights.out_bias.new_zeros(batch_shape + (0,))
    x_ranked = empty  # the inputs of rank < k, in rank order
    known = [empty] * len(layers)  # per layer, the units of degree <= k computed so far
    params_ranked = []
    for k in range(made.input_dim):
        inputs = x_ranked
        for l, layer in enumerate(layers):
            start, stop = plan.ready[l][k], plan.ready[l][k + 1]  # the units of degree exactly k
            if stop > start:
                pre = inputs @ weights.hidden[l][start:stop, : inputs.shape[-1]].T + layer.bias[start:stop]
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
