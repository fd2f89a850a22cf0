r"""A MADE's pass without gradients on the CPU, feature-major, into reused buffers.

[`MADE.raw_output`][flowkit.nn.made.MADE.raw_output] takes this path under ``torch.no_grad()``
(``log_prob`` of a MAF, sampling of an IAF) when nothing can see its intermediate results.
It differs from the ordinary pass in two ways, with the same results:

* **Feature-major activations.** Every hidden activation is kept as ``(width, batch)``, so
  that a block of a masked product (rows ``r`` of the output reading columns ``c`` of the
  input) is one multiply of a weight block with a contiguous slab of the input,
  \(H_{r} = (W \odot M)_{r,c} H_{c}\), into a contiguous slab of the output: the batch is
  the long dimension of every multiply, where the blocks of the batch-major layout are
  thin column strips (which run far below the dense product's rate on a CPU).
* **Reused buffers.** The hidden activations go into two buffers per thread that later
  passes reuse (out= multiplies, activations in place), instead of fresh ``(batch, width)``
  tensors whose first touch costs thousands of page faults per pass. Only the hidden
  activations live there; the returned parameters are always a fresh tensor, so no result
  is ever overwritten by a later call.

The blocks are those of each layer's `MaskedProduct` (private module `flowkit.nn._blocked`),
chosen for this layout by `FEATURE_MAJOR_COST`, honouring the ``product`` switch.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from flowkit.nn._blocked import CostModel, Partition
from flowkit.nn.layers import MaskedLinear, _InPlaceActivation

if TYPE_CHECKING:  # the MADE imports this module
    from flowkit.nn.made import MADE

__all__ = ["FEATURE_MAJOR_COST", "applies", "no_grad_output"]

# A buffer larger than this is used once and not kept, so that one huge batch does not
# hold its memory for the rest of the process.
MAX_KEPT_BYTES = 64 * 2**20

# Calibrated like COST_MODELS in _blocked.py (one float32 thread of the shared 2-core AMD
# EPYC, D = 16 and 64, widths 256 and 512, batches 512 to 10,000), for this layout: the
# input slab of a block is contiguous, so re-reading it costs little, but every multiply
# pays a fixed cost and thin blocks run slower.
FEATURE_MAJOR_COST = CostModel(call_cost=5e5, reread=8.0, block_slowdown=1.05)


class _Buffers(threading.local):
    """Each thread's buffers, so that passes in two threads never share one."""

    def __init__(self) -> None:
        self.kept: dict[tuple, Tensor] = {}


_BUFFERS = _Buffers()


def scratch(slot: int, rows: int, columns: int, like: Tensor) -> Tensor:
    """A ``(rows, columns)`` tensor of ``like``'s dtype and device, from this thread's
    buffer ``slot`` (uninitialised; valid until the next call for the same slot).
    Buffers made in inference mode are kept apart: they cannot be written outside it."""
    key = (slot, like.dtype, like.device, torch.is_inference_mode_enabled())
    numel = rows * columns
    buffer = _BUFFERS.kept.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
        if numel * buffer.element_size() <= MAX_KEPT_BYTES:
            _BUFFERS.kept[key] = buffer
    return buffer[:numel].view(rows, columns)


def applies(made: MADE, x: Tensor, context: Tensor | None) -> bool:
    """Whether this pass may replace the ordinary one: no gradients, the CPU, no context,
    plain masked layers and an in-place activation, and nothing that could see the
    intermediate tensors or needs the module calls (hooks, tracing, compiling, autocast)."""
    if torch.is_grad_enabled() or context is not None or x.device.type != "cpu" or x.numel() == 0:
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    if not isinstance(made.activation, _InPlaceActivation):
        return False
    layers = made._masked_layers()
    if any(type(layer) is not MaskedLinear for layer in layers):  # a subclass may change forward
        return False
    return not _has_hooks([*layers, made.activation, made])


def _has_hooks(modules: list[nn.Module]) -> bool:
    """Whether a forward hook (global or on one of ``modules``) would expect module calls."""
    hooks = nn.modules.module
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return True
    return any(module._forward_hooks or module._forward_pre_hooks for module in modules)


def no_grad_output(made: MADE, x: Tensor) -> Tensor:
    """``made.raw_output(x)`` (shape ``(..., sum(param_dims), D)``) by the feature-major
    pass; ``applies(made, x, None)`` must hold."""
    flat = x.reshape(-1, made.input_dim)
    batch = flat.shape[0]
    inputs = flat.T  # (D, batch), a view: the multiplies read it transposed
    h = inputs
    for index, layer in enumerate([made.input_layer, *made.hidden_layers]):
        out = scratch(index % 2, layer.out_features, batch, flat)
        _product(layer, h, out)
        made.activation.function(out, inplace=True)
        if made.residual and index > 0:
            out.add_(h)
        h = out
    params = flat.new_empty(made.output_layer.out_features, batch)  # fresh: it is returned
    _product(made.output_layer, h, params)
    if made.skip_layer is not None:
        skip = made.skip_layer
        params.addmm_(skip.weight * skip.product.factor(skip.mask, skip.weight), inputs)
    # One transposing copy of the (small) parameters gives the ordinary pass's layout.
    return params.T.contiguous().reshape(*x.shape[:-1], -1, made.input_dim)


def _product(layer: MaskedLinear, h: Tensor, out: Tensor) -> None:
    r"""``out = (W \odot M) h + b`` for a feature-major ``h`` of shape ``(in, batch)``,
    dense or by the blocks `_choice` picks, written into ``out`` ``(out, batch)``."""
    weight = layer.weight * layer.product.factor(layer.mask, layer.weight)
    bias = None if layer.bias is None else layer.bias[:, None]
    blocks = _choice(layer, h.shape[1])
    if blocks is None:
        _multiply(weight, h, bias, out)
        return
    for block in blocks:
        rows, cols = slice(*block.rows), slice(*block.cols)
        target = out[rows]
        if block.work == 0:  # rows that read nothing: their bias
            if bias is None:
                target.zero_()
            else:
                target.copy_(bias[rows].expand_as(target))
            continue
        _multiply(weight[rows, cols], h[cols], None if bias is None else bias[rows], target)


def _multiply(weight: Tensor, h: Tensor, bias: Tensor | None, out: Tensor) -> None:
    if bias is None:
        torch.mm(weight, h, out=out)
    else:
        torch.addmm(bias, weight, h, out=out)


def _choice(layer: MaskedLinear, batch: int) -> Partition | None:
    """The blocks of ``layer``'s product for this layout (``None``: one dense multiply),
    as its ``product`` method says: ``"auto"`` asks `FEATURE_MAJOR_COST`."""
    product = layer.product
    if product.method == "dense":
        return None
    blocks = product.blocks(layer.mask)
    if product.method == "blocked":
        return blocks.partition(product.max_blocks)
    return FEATURE_MAJOR_COST.choose(blocks, batch)
