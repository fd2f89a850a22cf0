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
    rows (and skip columns) of the input of rank ``k``.

    The raw weights, not the masked ones: every slice the pass reads (units of degree
    ``k`` against the inputs and units of degree ``<= k`` before them) lies wholly inside
    its mask, so masking first would only cost a full multiply of each weight."""

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
        hidden, bias = [layer.weight for layer in layers], [layer.bias for layer in layers]
        hidden[0] = hidden[0][:, order]
        out_rows = (torch.arange(P, device=order.device)[:, None] * D + order[None, :]).T
        out_weight = made.output_layer.weight[out_rows]
        for l, units in enumerate(plan.units):  # unsorted units: rows of layer l, columns of the next
            if units is not None:
                units = units.to(order.device)
                hidden[l], bias[l] = hidden[l][units], bias[l][units]
                if l + 1 < len(hidden):
                    hidden[l + 1] = hidden[l + 1][:, units]
                else:
                    out_weight = out_weight[..., units]
        skip = None if made.skip_layer is None else made.skip_layer.weight[:, order][out_rows]
        return _RankedWeights(hidden, bias, out_rows, out_weight, made.output_layer.bias[out_rows], skip)


class _Columns:
    """A ``(rows, width)`` tensor built a few columns at a time, left to right.

    Without gradients, the columns are written into one tensor allocated up front, and
    [`slot`][flowkit.nn.sequential._Columns.slot] lends the next columns' place to compute
    them in; with gradients, they are joined by ``torch.cat`` (autograd would take a write
    into the shared tensor for a change to the slices that earlier steps saved for their
    backward)."""

    def __init__(self, rows: int, width: int, like: Tensor, in_place: bool):
        self.width = 0
        self._full = like.new_empty(rows, width) if in_place else None
        self._joined = like.new_empty(rows, 0)
        self._lent: Tensor | None = None  # the last slot lent

    def slot(self, width: int) -> Tensor | None:
        """Where the next ``width`` columns go, to compute them in place (an ``out=``
        argument); ``None`` with gradients, and under ``torch.compile`` (which takes no
        strided ``out=``, and fuses the copy into the op itself)."""
        if self._full is None or torch.compiler.is_compiling():
            return None
        self._lent = self._full[:, self.width : self.width + width]
        return self._lent

    def append(self, columns: Tensor) -> None:
        """Appends ``columns``: copied into their place, unless they are the slot just lent
        (``out=`` and in-place ops return the very tensor they wrote)."""
        stop = self.width + columns.shape[-1]
        if self._full is not None:
            if columns is not self._lent:
                self._full[:, self.width : stop] = columns
            self._joined, self._lent = self._full[:, :stop], None
        else:
            self._joined = torch.cat([self._joined, columns], dim=-1)
        self.width = stop

    @property
    def known(self) -> Tensor:
        """The columns appended so far, ``(rows, width so far)``."""
        return self._joined


def fast_sequential(
    made: MADE, plan: SequentialPlan, step: Step, batch_shape: torch.Size, context: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The sequential pass that computes each hidden unit of ``made`` once, for the active
    mask set, whose ``plan`` is given; returns ``x`` and the MADE outputs at it.

    It runs on the batch flattened to one dimension of ``rows``; ``step`` sees the batch
    shape."""
    weights = _RankedWeights.of(made, plan)
    rows = batch_shape.numel()
    context_hidden = context_out = None
    if context is not None:
        context_hidden = made.context_layer(context)
        if plan.units[0] is not None:
            context_hidden = context_hidden[..., plan.units[0].to(context_hidden.device)]
        context_hidden = _flat(context_hidden, batch_shape)
        if made.context_skip_layer is not None:
            context_out = _flat(made.context_skip_layer(context), batch_shape)
    in_place = not torch.is_grad_enabled()  # nothing can be saved for a backward
    layers = [made.input_layer, *made.hidden_layers]
    x_ranked = _Columns(rows, made.input_dim, weights.out_bias, in_place)  # the inputs of rank < k, by rank
    known = [_Columns(rows, layer.out_features, weights.out_bias, in_place) for layer in layers]
    params_ranked = []
    for k in range(made.input_dim):
        inputs = x_ranked.known
        for l, layer in enumerate(layers):
            start, stop = plan.ready[l][k], plan.ready[l][k + 1]  # the units of degree exactly k
            if stop > start:
                pre = torch.addmm(
                    weights.hidden_bias[l][start:stop],
                    inputs,
                    weights.hidden[l][start:stop, : inputs.shape[-1]].T,
                    out=known[l].slot(stop - start),
                )
                if l == 0 and context_hidden is not None:
                    pre.add_(context_hidden[:, start:stop])
                new = made.activation(pre)  # in place for relu, elu and leaky_relu
                if l > 0 and made.residual:
                    new = new + inputs[:, start:stop]
                known[l].append(new)
            inputs = known[l].known
        params = torch.addmm(weights.out_bias[k], inputs, weights.out_weight[k, :, : inputs.shape[-1]].T)
        if weights.skip_weight is not None:
            params.addmm_(x_ranked.known, weights.skip_weight[k, :, :k].T)
            if context_out is not None:
                params.add_(context_out[:, weights.out_rows[k]])
        # explicit sizes, not -1: an empty batch has no rows to infer them from
        x_k = step(params.view(*batch_shape, params.shape[-1]), plan.order[k])
        x_ranked.append(x_k.reshape(rows, 1))
        params_ranked.append(params)
    ranks = M.degrees_from_order(made.permutation) - 1
    x = x_ranked.known.index_select(-1, ranks).view(*batch_shape, made.input_dim)
    params = torch.stack(params_ranked, dim=-1).index_select(-1, ranks)
    return x, params.view(*batch_shape, *params.shape[-2:])


def _flat(tensor: Tensor, batch_shape: torch.Size) -> Tensor:
    """``tensor`` of shape ``(..., width)``, broadcast to ``batch_shape`` and flattened to rows."""
    return tensor.expand(*batch_shape, tensor.shape[-1]).reshape(-1, tensor.shape[-1])
