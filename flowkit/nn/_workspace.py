r"""A MADE's pass on the CPU with feature-major activations, and reused buffers without gradients.

[`MADE.raw_output`][flowkit.nn.made.MADE.raw_output] takes this path (a MAF's ``log_prob``
and training step, an IAF's sampling) when nothing can see its intermediate results (no
hooks, no context, plain masked layers, an in-place activation). It differs from the
ordinary pass in two ways, with the same results:

* **Feature-major activations.** Every hidden activation is kept as ``(width, batch)``, so
  that a block of a masked product (rows ``r`` of the output reading columns ``c`` of the
  input) is one multiply of a weight block with a contiguous slab of the input,
  \(H_{r} = (W \odot M)_{r,c} H_{c}\), into a contiguous slab of the output: the batch is
  the long dimension of every multiply, forward and backward
  ([`FeatureMajorLinear`][flowkit.nn._workspace.FeatureMajorLinear]), where the blocks of
  the batch-major layout are thin column strips that run far below the dense rate on a CPU.
* **Reused buffers without gradients.** Under ``torch.no_grad()`` the hidden activations and
  the output layer's product go into three buffers per thread that later passes reuse
  (out= multiplies, activations in place), instead of fresh ``(batch, width)`` tensors
  whose first touch costs thousands of page faults per pass. The returned parameters are
  always a fresh copy (the transpose back to the ordinary layout), so no result is ever
  overwritten by a later call. With gradients every activation is a fresh tensor, since
  the backward pass reads it later.

The blocks are those of each layer's `MaskedProduct` (private module `flowkit.nn._blocked`),
chosen for this layout by `FEATURE_MAJOR_COST`, honouring the ``product`` switch.

Examples:
    >>> from flowkit.nn import MADE
    >>> made = MADE(4, [64, 64], param_dims=[1, 1], seed=0).double()
    >>> x = torch.randn(100, 4, dtype=torch.float64)
    >>> with torch.no_grad():
    ...     applies(made, x, None)
    ...     fast = made.raw_output(x)
    True
    >>> made.product = "dense"
    >>> hook = made.register_forward_pre_hook(lambda *args: None)  # hooks take the ordinary pass
    >>> torch.allclose(fast, made.raw_output(x), rtol=0, atol=1e-12)
    True
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from flowkit.nn._blocked import CostModel, MaskBlocks, Partition
from flowkit.nn.layers import MaskedLinear, _InPlaceActivation

if TYPE_CHECKING:  # the MADE imports this module
    from flowkit.nn.made import MADE

__all__ = [
    "FEATURE_MAJOR_COST",
    "FEATURE_MAJOR_COST_WITH_GRAD",
    "FeatureMajorLinear",
    "applies",
    "feature_major_output",
]

# A buffer larger than this is used once and not kept, so that one huge batch does not
# hold its memory for the rest of the process.
MAX_KEPT_BYTES = 64 * 2**20

# Fitted, roughly (the machine was busy), to single-layer timings of this layout on one
# float32 thread of the shared 2-core AMD EPYC (D = 16 and 64, widths 256 and 512, batches
# 512 to 10,000): the input slab of a block is contiguous, so re-reading it costs little,
# but every multiply pays a fixed cost.
FEATURE_MAJOR_COST = CostModel(call_cost=2e5, reread=2.0, block_slowdown=1.1)
# With gradients every block also costs two multiplies and their bookkeeping in the
# backward pass: a larger fixed cost per block, so that small layers (a 16-input layer at
# batch 512, whose dense forward and backward take about 0.1 ms) stay dense.
FEATURE_MAJOR_COST_WITH_GRAD = CostModel(call_cost=6e5, reread=2.0, block_slowdown=1.1)


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
    """Whether this pass may replace the ordinary one: the CPU, no context, plain masked
    layers and an in-place activation, nothing that could see the intermediate tensors or
    needs the module calls (hooks, tracing, compiling, autocast, torch.func transforms),
    and, with gradients, blocks in some layer."""
    if context is not None or x.device.type != "cpu" or x.numel() == 0:
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    if torch._C._are_functorch_transforms_active():  # vmap, grad, ...: no rule for FeatureMajorLinear
        return False
    activation = made.activation
    if not isinstance(activation, _InPlaceActivation):
        return False
    layers = made._masked_layers()
    if any(type(layer) is not MaskedLinear for layer in layers):  # a subclass may change forward
        return False
    if _has_hooks([*layers, activation, made]):
        return False
    # With gradients, dense products are faster the ordinary way (F.linear's autograd is in
    # C++): the feature-major pass pays for itself only where some layer takes blocks.
    batch = x.numel() // x.shape[-1]
    return not torch.is_grad_enabled() or any(_choice(layer, batch) is not None for layer in layers)


def _has_hooks(modules: list[nn.Module]) -> bool:
    """Whether a hook (global or on one of ``modules``) would expect module calls.
    Spelled out attribute by attribute: this runs at every pass."""
    registry = nn.modules.module
    if (registry._global_forward_hooks or registry._global_forward_pre_hooks
            or registry._global_backward_hooks or registry._global_backward_pre_hooks):  # fmt: skip
        return True
    for module in modules:
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks:
            return True
    return False


def feature_major_output(made: MADE, x: Tensor) -> Tensor:
    """``made.raw_output(x)`` (shape ``(..., sum(param_dims), D)``) by the feature-major
    pass; ``applies(made, x, None)`` must hold. Without gradients the hidden activations
    go into this thread's reused buffers; with gradients every one is a fresh tensor (the
    backward pass reads them later) and the products are `FeatureMajorLinear`."""
    reuse = not torch.is_grad_enabled()
    flat = x.reshape(-1, made.input_dim)
    batch = flat.shape[0]
    inputs = flat.T  # (D, batch), a view: the multiplies read it transposed
    h = inputs
    for index, layer in enumerate([made.input_layer, *made.hidden_layers]):
        out = scratch(index % 2, layer.out_features, batch, flat) if reuse else None
        update = made.activation.function(_product(layer, h, out), inplace=True)
        # With gradients, the activation saved its output: the residual sum is a new tensor.
        h = (update.add_(h) if reuse else update + h) if made.residual and index > 0 else update
    output = made.output_layer
    params = _product(output, h, scratch(2, output.out_features, batch, flat) if reuse else None)
    if made.skip_layer is not None:
        skip = made.skip_layer
        params = torch.addmm(params, skip.weight * skip.product.factor(skip.mask, skip.weight), inputs)
    # One transposing copy of the parameters gives the ordinary pass's layout, and is
    # always a fresh tensor: the one that is returned.
    # (clone, not contiguous: with one row or one output the transpose is contiguous already)
    return params.T.clone(memory_format=torch.contiguous_format).reshape(*x.shape[:-1], -1, made.input_dim)


def _product(layer: MaskedLinear, h: Tensor, out: Tensor | None) -> Tensor:
    r"""\((W \odot M) h + b\) for a feature-major ``h`` of shape ``(in, batch)``, dense or
    by the blocks `_choice` picks, as a new ``(out, batch)`` tensor or into ``out``
    (without gradients only)."""
    factor = layer.product.factor(layer.mask, layer.weight)
    bias = None if layer.bias is None else layer.bias[:, None]
    blocks = _choice(layer, h.shape[1])
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, layer.weight, bias)):
        return FeatureMajorLinear.apply(h, layer.weight, factor, bias, blocks)
    if out is None:
        out = h.new_empty(layer.out_features, h.shape[1])
    _forward(h, layer.weight * factor, bias, blocks, out)
    return out


def _forward(h: Tensor, weight: Tensor, bias: Tensor | None, blocks: Partition | None, out: Tensor) -> None:
    """``out = weight @ h + bias`` (``weight`` masked already), dense or block by block."""
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


class FeatureMajorLinear(torch.autograd.Function):
    r"""\((W \odot M) h + b\) for a feature-major ``h`` ``(in, batch)``, by blocks or
    dense, with a backward on the same blocks: the gradient of ``h`` from one multiply
    per block, and the weight's computed on the blocks only (zero where the mask is).
    Arguments: ``h``, ``weight``, ``factor`` (the mask as 0s and 1s of the weight's
    dtype), ``bias`` of shape ``(out, 1)`` or ``None``, and the blocks (``None``: dense).
    Higher-order gradients (``create_graph=True``) take the dense formulas."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, factor: Tensor, bias: Tensor | None, blocks: Partition | None):
        masked = weight * factor
        ctx.save_for_backward(h, masked, factor)
        ctx.blocks, ctx.has_bias = blocks, bias is not None
        out = h.new_empty(weight.shape[0], h.shape[1])
        _forward(h, masked, bias, blocks, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, masked, factor = ctx.saved_tensors
        needs_h, needs_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled() or ctx.blocks is None:  # dense formulas, differentiable
            grad_h = masked.T @ grad if needs_h else None
            grad_weight = (grad @ h.T) * factor if needs_weight else None
        else:
            grad_h, grad_weight = _blocked_backward(grad, h, masked, factor, ctx.blocks, needs_h, needs_weight)
        grad_bias = grad.sum(1, keepdim=True) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return grad_h, grad_weight, None, grad_bias, None


def _blocked_backward(grad, h, masked, factor, blocks: Partition, needs_h: bool, needs_weight: bool):
    """The gradients of ``h`` and of the weight on the blocks only (not differentiable)."""
    grad_h = _blocked_input_gradient(grad, masked, blocks, h.shape) if needs_h else None
    grad_weight = None
    if needs_weight:
        grad_weight = masked.new_zeros(masked.shape)
        for block in blocks:
            if block.work:
                rows, cols = slice(*block.rows), slice(*block.cols)
                torch.mm(grad[rows], h[cols].T, out=grad_weight[rows, cols])
        grad_weight.mul_(factor)  # zero where the mask is, inside the blocks too
    return grad_h, grad_weight


def _blocked_input_gradient(grad: Tensor, masked: Tensor, blocks: Partition, shape: torch.Size) -> Tensor:
    r"""\((W \odot M)^\top G\) by slabs of input columns: between two consecutive column
    bounds of the blocks, the columns are read by the rows from the first to the last block
    that covers them (the masked weight is zero in any row between that does not), so each
    slab is one multiply written in place, with no zero fill and no accumulation."""
    grad_h = grad.new_empty(shape)
    bounds = sorted({0, shape[0], *(end for block in blocks if block.work for end in block.cols)})
    for start, stop in zip(bounds, bounds[1:]):
        readers = [block.rows for block in blocks if block.work and block.cols[0] <= start and stop <= block.cols[1]]
        if not readers:
            grad_h[start:stop].zero_()
            continue
        rows = slice(min(r[0] for r in readers), max(r[1] for r in readers))
        torch.mm(masked[rows, start:stop].T, grad[rows], out=grad_h[start:stop])
    return grad_h


def _choice(layer: MaskedLinear, batch: int) -> Partition | None:
    """The blocks of ``layer``'s product for this layout (``None``: one dense multiply),
    as its ``product`` method says: ``"auto"`` asks `FEATURE_MAJOR_COST` (or, with
    gradients, `FEATURE_MAJOR_COST_WITH_GRAD`)."""
    product = layer.product
    if product.method == "dense":
        return None
    blocks = product.blocks(layer.mask)
    if product.method == "blocked":
        return blocks.partition(product.max_blocks)
    model = FEATURE_MAJOR_COST_WITH_GRAD if torch.is_grad_enabled() else FEATURE_MAJOR_COST
    key = (id(blocks), batch, model)
    known = _CHOICES.get(key)
    if known is None or known[0] is not blocks:  # the entry holds its blocks: no reused id
        if len(_CHOICES) >= _MAX_CHOICES:
            _CHOICES.clear()
        known = _CHOICES[key] = (blocks, model.choose(blocks, batch))
    return known[1]


# The auto choices made so far, by (id of the blocks, batch, model): a choice is some 20 us of
# Python, and a training step asks for every layer's twice (once to decide on this pass).
_CHOICES: dict[tuple[int, int, CostModel], tuple[MaskBlocks, Partition | None]] = {}
_MAX_CHOICES = 1024
