r"""Masked products by blocks: \(x (W \odot M)^\top + b\) without multiplying the zeros.

MADE sorts its hidden units by degree, so every mask is block-lower-triangular when its
rows (outputs) and columns (inputs) are grouped by degree: a unit of low degree reads only
the first few columns, and about half of a dense masked product multiplies zeros.

[`MaskBlocks.of`][flowkit.nn._blocked.MaskBlocks.of] cuts the rows of a mask into a few
contiguous groups and gives each group the column range outside which its rows are all
False; [`masked_linear`][flowkit.nn._blocked.masked_linear] then runs one matrix multiply
per group, on that column range only, into slices of one output (forward and backward).
For every number of groups up to ``max_blocks`` the cut is the one with the least work
(a dynamic programme over the rows); more groups save more multiplies but pay more calls,
and [`CostModel`][flowkit.nn._blocked.CostModel] weighs the two for the batch at hand and
says whether any blocked product beats the dense one at all.

[`MaskedProduct`][flowkit.nn._blocked.MaskedProduct] is what a masked layer holds: the
method (``"auto"``, ``"blocked"`` or ``"dense"``) and the blocks of its mask, rebuilt when
the mask tensor is replaced or changed in place.

Examples:
    >>> from flowkit.nn import masks
    >>> degrees = masks.hidden_degrees(6, low=1, high=3)
    >>> mask = masks.hidden_mask(degrees, degrees)
    >>> mask.int()
    tensor([[1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1]], dtype=torch.int32)
    >>> blocks = MaskBlocks.of(mask, max_blocks=3)
    >>> blocks.partition(2)
    (Block(rows=(0, 2), cols=(0, 2)), Block(rows=(2, 6), cols=(0, 6)))
    >>> blocks.work(2), blocks.work(3), blocks.dense_work
    (28, 24, 36)
    >>> weight, x = torch.randn(6, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    >>> dense = masked_linear(x, weight, mask)
    >>> torch.allclose(masked_linear(x, weight, mask, blocks=blocks.partition(3)), dense)
    True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["METHODS", "Block", "CostModel", "MaskBlocks", "MaskedProduct", "masked_linear"]

METHODS = ("auto", "blocked", "dense")
# Above this many runs of equal-span rows, runs are merged into this many before the
# dynamic programme (its tables are runs x runs); a few coarse blocks lose nothing by it.
_MAX_RUNS = 256


@dataclass(frozen=True)
class Block:
    """Rows ``rows[0]:rows[1]`` of the output read only columns ``cols[0]:cols[1]`` of
    the input: the mask is False elsewhere in those rows. An empty column range
    (``cols[0] == cols[1]``) means the rows read nothing, and are their bias."""

    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def work(self) -> int:
        """Multiply-adds per batch row."""
        return (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0])


Partition = tuple[Block, ...]


@dataclass(frozen=True)
class MaskBlocks:
    """The cheapest cut of a mask's rows into ``1, 2, ..., max_blocks`` contiguous groups.

    Attributes:
        shape: The mask's ``(out_features, in_features)``.
        partitions: ``partitions[k - 1]`` is the best cut into at most ``k`` groups.
    """

    shape: tuple[int, int]
    partitions: tuple[Partition, ...]

    @staticmethod
    def of(mask: Tensor, max_blocks: int = 8) -> MaskBlocks:
        """Finds the blocks of a boolean ``(out_features, in_features)`` mask.

        Rows with the same column span are merged into runs first (a MADE layer has one
        run per degree), so the search is over runs, not rows.
        """
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
            raise TypeError(f"mask: expected a 2-D boolean tensor, got {_describe(mask)}")
        if isinstance(max_blocks, bool) or not isinstance(max_blocks, int) or max_blocks < 1:
            raise ValueError(f"max_blocks: expected a positive int, got {max_blocks!r}")
        mask = mask.detach().cpu()
        with torch.device("cpu"):  # bookkeeping, wherever torch.set_default_device puts new tensors
            run_rows, first, stop = _runs(*_row_spans(mask))
            cuts = _best_cuts(run_rows, first, stop, max_blocks)
        # Python lists from here: a few hundred numbers, read one at a time.
        run_rows, first, stop = run_rows.tolist(), first.tolist(), stop.tolist()
        partitions = tuple(_blocks(cut, run_rows, first, stop) for cut in cuts)
        return MaskBlocks(tuple(mask.shape), partitions)

    @staticmethod
    def whole(shape: tuple[int, int], max_blocks: int = 8) -> MaskBlocks:
        """The blocks of a mask taken as one block, without a search: for masks with no
        all-False regions worth skipping (a MADE's resampled, unsorted units), so that
        ``"auto"`` picks the dense product at once.

        Examples:
            >>> MaskBlocks.whole((3, 2), max_blocks=2).partition(2)
            (Block(rows=(0, 3), cols=(0, 2)),)
        """
        one = (Block((0, shape[0]), (0, shape[1])),)
        return MaskBlocks(tuple(shape), (one,) * max_blocks)

    @property
    def dense_work(self) -> int:
        """Multiply-adds per batch row of the dense product."""
        return self.shape[0] * self.shape[1]

    def partition(self, count: int) -> Partition:
        """The best cut into at most ``count`` groups (``count`` above the largest
        searched gives the finest one found)."""
        return self.partitions[min(count, len(self.partitions)) - 1]

    def work(self, count: int) -> int:
        """Multiply-adds per batch row with the best cut into at most ``count`` groups."""
        return sum(block.work for block in self.partition(count))


@dataclass(frozen=True)
class CostModel:
    """Predicted time of a masked product, in multiply-adds at the dense product's rate.

    One matrix multiply of a ``rows x cols`` block costs
    ``batch * (rows + reread) * cols + call_cost``: its multiply-adds, the reading of its
    ``batch x cols`` slice of the input (which every block reads again, and which costs
    about as much as ``reread`` more rows once the input outgrows the caches), and a fixed
    cost per call. Blocks cost ``block_slowdown`` times more per multiply-add than the one
    dense multiply of the whole weight (thinner matrices, strided slices).

    Attributes:
        call_cost: The fixed cost of one more multiply (dispatch, slicing, the masking of
            its weight block), in multiply-adds.
        reread: The cost of reading one input element, in multiply-adds.
        block_slowdown: The cost of a multiply-add in a block over one in the dense product.
        min_saving: The least fraction of the dense cost that blocks must save to be
            chosen, so that a near tie keeps the simpler dense call.
    """

    call_cost: float
    reread: float
    block_slowdown: float
    min_saving: float = 0.1

    def cost(self, partition: Partition, batch: int) -> float:
        """The predicted cost of the blocked product for ``batch`` rows."""
        per_row = sum((block.rows[1] - block.rows[0] + self.reread) * (block.cols[1] - block.cols[0])
                      for block in partition)  # fmt: skip
        return batch * per_row * self.block_slowdown + len(partition) * self.call_cost

    def dense_cost(self, shape: tuple[int, int], batch: int) -> float:
        """The predicted cost of the dense product of a weight of ``shape`` for ``batch`` rows."""
        return batch * (shape[0] + self.reread) * shape[1] + self.call_cost

    def choose(self, blocks: MaskBlocks, batch: int) -> Partition | None:
        """The cheapest blocked cut for ``batch`` rows, or ``None`` when the dense product
        is predicted to be about as fast."""
        best, best_cost = None, (1.0 - self.min_saving) * self.dense_cost(blocks.shape, batch)
        for partition in blocks.partitions:
            cost = self.cost(partition, batch)
            if cost < best_cost:
                best, best_cost = partition, cost
        return best


# Calibrated with benchmarks/masked_product.py on one float32 thread of a shared 2-core
# AMD EPYC (forward and forward + backward, D = 16 and 64, widths 256 to 1024, batches
# 512 and 4096): a dense multiply runs at about 35 GMAC/s, a call costs some 15 us.
# Devices without a model (a GPU: microseconds of launch against tens of teraflops, not
# measured yet) keep the dense product under "auto".
COST_MODELS = {"cpu": CostModel(call_cost=5e5, reread=32.0, block_slowdown=1.1)}


def masked_linear(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None = None,
    blocks: Partition | None = None,
) -> Tensor:
    r"""\(x (W \odot M)^\top + b\) for ``x`` of shape ``(..., in_features)``: dense when
    ``blocks`` is ``None``, else one multiply per block of ``blocks`` (a partition of the
    rows from [`MaskBlocks`][flowkit.nn._blocked.MaskBlocks] of this ``mask``; entries of
    the mask outside the blocks must be False). ``mask`` is boolean, or its 0s and 1s in
    ``weight``'s dtype (no conversion at each multiply).

    Gradients flow to ``x``, ``weight`` and ``bias`` as through the dense product: the
    weight's gradient is computed on the blocks only and is zero where the mask is.
    Higher-order gradients (``create_graph=True``) take the dense formulas.
    """
    if blocks is None:
        return F.linear(x, weight * mask, bias)
    flat = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        out = _BlockedLinear.apply(flat, weight, mask, bias, blocks)
    else:
        out = _blocked_forward(flat, weight, mask, bias, blocks)
    return out.reshape(*x.shape[:-1], weight.shape[0])


class MaskedProduct:
    """The masked product of one layer: its method and its mask's blocks, kept between calls.

    Args:
        method: ``"auto"`` (blocked when [`CostModel`][flowkit.nn._blocked.CostModel]
            predicts that it is faster for the batch and device of the call; dense under
            ``torch.jit.trace``, ``torch.compile`` and autocast), ``"blocked"`` or
            ``"dense"`` (always). An attribute, so it can be switched later. A forced
            blocked product computes in the dtype of its arguments, even under autocast.
        max_blocks: The most groups of rows a product is cut into.

    The blocks are found on the first blocked call and found again when the mask is
    another tensor or was changed in place (its version counter moved): ``set_mask``,
    ``load_state_dict`` and ``.to(device)`` all do one or the other.

    Examples:
        >>> from flowkit.nn import masks
        >>> degrees = masks.hidden_degrees(512, low=1, high=15)
        >>> mask = masks.hidden_mask(degrees, degrees)
        >>> weight, x = torch.randn(512, 512), torch.randn(4096, 512)
        >>> product = MaskedProduct()
        >>> len(product.choice(x, mask))  # the number of blocks auto picks on the CPU
        4
        >>> product.choice(x[:1], mask) is None  # one row: the dense product
        True
        >>> torch.allclose(product(x, weight, mask), x @ (weight * mask).T, atol=1e-4)
        True
    """

    def __init__(self, method: str = "auto", max_blocks: int = 8):
        self.method = method
        if isinstance(max_blocks, bool) or not isinstance(max_blocks, int) or max_blocks < 1:
            raise ValueError(f"max_blocks: expected a positive int, got {max_blocks!r}")
        self.max_blocks = max_blocks
        self._blocks: MaskBlocks | None = None
        self._key: tuple | None = None
        self._factor: Tensor | None = None
        self._factor_key: tuple | None = None
        self._choices: tuple | None = None  # (cost model, blocks, {batch size: the choice for them})

    @property
    def method(self) -> str:
        """``"auto"``, ``"blocked"`` or ``"dense"``."""
        return self._method

    @method.setter
    def method(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        self._method = method

    def __call__(self, x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None = None) -> Tensor:
        blocks = self.choice(x, mask)
        return masked_linear(x, weight, self.factor(mask, weight), bias, blocks)

    def factor(self, mask: Tensor, weight: Tensor) -> Tensor:
        """``mask`` as 0s and 1s of ``weight``'s dtype and device, kept while the mask is
        unchanged: multiplying by a boolean mask converts it at every call, forward and
        backward. The boolean mask itself under tracing and compiling (a kept tensor
        would be baked into the graph as a constant) and in inference mode (whose tensors
        cannot be saved for a later backward)."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.is_inference_mode_enabled():
            return mask
        if mask.is_inference():  # made in inference mode: no version counter to key on
            return mask
        key = (mask, mask.data_ptr(), mask._version, weight.dtype, weight.device)
        cached = self._factor_key
        if cached is None or cached[0] is not mask or cached[1:] != key[1:]:
            self._factor, self._factor_key = mask.detach().to(weight.dtype), key
        return self._factor

    def choice(self, x: Tensor, mask: Tensor) -> Partition | None:
        """The blocks this product uses for input ``x`` (``None``: the dense product)."""
        if self._method == "dense":
            return None
        if self._method == "blocked":
            return self.blocks(mask).partition(self.max_blocks)
        # A traced or compiled graph is fixed for later calls (and fused by the compiler), and
        # autocast casts F.linear's arguments but not those of the blocks' out= multiplies.
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
            return None
        model = COST_MODELS.get(x.device.type)
        batch = x.numel() // max(x.shape[-1], 1)
        if model is None or batch == 0:
            return None
        blocks = self.blocks(mask)
        # The choice depends on the model, the blocks and the batch size only: made once for
        # each batch size (a guide's step alternates two), not at every call.
        if self._choices is None or self._choices[0] is not model or self._choices[1] is not blocks:
            self._choices = (model, blocks, {})
        by_batch = self._choices[2]
        if batch not in by_batch:
            if len(by_batch) >= 64:  # many sizes (evaluation in varied chunks): start over
                by_batch.clear()
            by_batch[batch] = model.choose(blocks, batch)
        return by_batch[batch]

    def remember(self, mask: Tensor, blocks: MaskBlocks) -> None:
        """Takes ``blocks`` as those of ``mask`` as it is now, without searching: a layer
        that switches between masks it has seen before (a MADE's mask sets) keeps each
        one's blocks and hands them over after the switch."""
        if blocks.shape != tuple(mask.shape):
            raise ValueError(f"blocks: expected the blocks of a {tuple(mask.shape)} mask, got {blocks.shape}")
        self._blocks, self._key = blocks, (mask, mask.data_ptr(), mask._version)

    def blocks(self, mask: Tensor) -> MaskBlocks:
        """The blocks of ``mask``, from the cache while the mask is unchanged."""
        blocks = self.known_blocks(mask)
        if blocks is None:
            # Holding the mask keeps its id and storage from being reused by another tensor.
            blocks, self._key = MaskBlocks.of(mask, self.max_blocks), (mask, mask.data_ptr(), mask._version)
            self._blocks = blocks
        return blocks

    def known_blocks(self, mask: Tensor) -> MaskBlocks | None:
        """The blocks of ``mask`` as it is now if this product found (or was handed) them
        already, else ``None``: no search."""
        cached = self._key
        if cached is None or cached[0] is not mask or cached[1:] != (mask.data_ptr(), mask._version):
            return None
        return self._blocks

    def __getstate__(self) -> dict:
        # A copy finds its blocks (and its factor) again: the caches refer to one mask tensor.
        return {**self.__dict__, "_blocks": None, "_key": None, "_factor": None, "_factor_key": None, "_choices": None}

    def __repr__(self) -> str:
        return f"MaskedProduct(method={self._method!r}, max_blocks={self.max_blocks})"


# ------------------------------------------------------------------ the products
def _blocked_forward(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None, blocks: Partition) -> Tensor:
    """``x @ (weight * mask).T + bias`` for a 2-D ``x``, block by block, into one output."""
    out = x.new_empty(x.shape[0], weight.shape[0])
    for block in blocks:
        rows, cols = slice(*block.rows), slice(*block.cols)
        target = out[:, rows]
        if block.work == 0:  # rows that read nothing: their bias
            if bias is None:
                target.zero_()
            else:
                target.copy_(bias[rows])
            continue
        block_weight = (weight[rows, cols] * mask[rows, cols]).T
        if bias is None:
            torch.mm(x[:, cols], block_weight, out=target)
        else:
            torch.addmm(bias[rows], x[:, cols], block_weight, out=target)
    return out


class _BlockedLinear(torch.autograd.Function):
    """The blocked product with its own backward, so that the gradients are computed on
    the blocks only (slicing through autograd would build full-size zero gradients of
    ``x`` and ``weight`` for every block)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None, blocks: Partition) -> Tensor:
        ctx.save_for_backward(x, weight, mask)
        ctx.blocks, ctx.has_bias = blocks, bias is not None
        return _blocked_forward(x, weight, mask, bias, blocks)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, mask = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: differentiable dense formulas
            grad_x, grad_weight = _dense_backward(grad, x, weight, mask, needs[0], needs[1])
        else:
            grad_x, grad_weight = _blocked_backward(grad, x, weight, mask, ctx.blocks, needs[0], needs[1])
        grad_bias = grad.sum(0) if ctx.has_bias and needs[3] else None
        return grad_x, grad_weight, None, grad_bias, None


def _dense_backward(grad, x, weight, mask, needs_x: bool, needs_weight: bool) -> tuple[Tensor | None, ...]:
    """The gradients of ``x`` and ``weight`` by the dense product's formulas (differentiable)."""
    grad_x = grad @ (weight * mask) if needs_x else None
    grad_weight = (grad.T @ x) * mask if needs_weight else None
    return grad_x, grad_weight


def _blocked_backward(grad, x, weight, mask, blocks: Partition, needs_x: bool, needs_weight: bool):
    """The gradients of ``x`` and ``weight`` block by block, in place (not differentiable)."""
    grad_x = x.new_zeros(x.shape) if needs_x else None
    grad_weight = weight.new_zeros(weight.shape) if needs_weight else None
    for block in blocks:
        if block.work == 0:
            continue
        rows, cols = slice(*block.rows), slice(*block.cols)
        block_mask = mask[rows, cols]
        block_grad = grad[:, rows]
        if needs_x:
            grad_x[:, cols].addmm_(block_grad, weight[rows, cols] * block_mask)
        if needs_weight:
            target = grad_weight[rows, cols]
            torch.mm(block_grad.T, x[:, cols], out=target)
            target.mul_(block_mask)
    return grad_x, grad_weight


# ------------------------------------------------------------------ finding the blocks
def _row_spans(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the first True column and one past the last; ``(C, 0)`` for an empty row,
    so that it widens no group's span."""
    rows, columns = mask.shape
    if columns == 0:
        return torch.zeros(rows, dtype=torch.long), torch.zeros(rows, dtype=torch.long)
    as_bytes = mask.to(torch.uint8)  # argmax gives the first of equal maxima
    first = as_bytes.argmax(dim=1)
    stop = columns - as_bytes.flip(1).argmax(dim=1)
    any_true = mask.any(dim=1)
    return torch.where(any_true, first, columns), torch.where(any_true, stop, 0)


def _runs(first: Tensor, stop: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Merges consecutive rows with one span into runs, and more than ``_MAX_RUNS`` runs
    into ``_MAX_RUNS`` of about equal length. Returns each run's row count and span."""
    rows = len(first)
    changes = torch.ones(rows, dtype=torch.bool)
    changes[1:] = (first[1:] != first[:-1]) | (stop[1:] != stop[:-1])
    starts = torch.nonzero(changes).flatten()
    if len(starts) > _MAX_RUNS:
        starts = starts[torch.arange(_MAX_RUNS) * len(starts) // _MAX_RUNS]
    bounds = torch.cat([starts, torch.tensor([rows])])
    run_rows = bounds.diff()
    run_of_row = torch.repeat_interleave(torch.arange(len(starts)), run_rows)
    run_first = torch.full((len(starts),), first.max().item() if rows else 0).scatter_reduce(
        0, run_of_row, first, "amin"
    )
    run_stop = torch.zeros(len(starts), dtype=torch.long).scatter_reduce(0, run_of_row, stop, "amax")
    return run_rows, run_first, run_stop


def _best_cuts(run_rows: Tensor, first: Tensor, stop: Tensor, max_blocks: int) -> list[list[int]]:
    """For ``k = 1..max_blocks``, the run indices where the groups of the least-work cut
    into at most ``k`` contiguous groups start (a dynamic programme over runs)."""
    runs = len(run_rows)
    if runs == 0:
        return [[]]
    # work[i, j]: multiply-adds per batch row of one group made of runs i..j (inclusive).
    later = torch.ones(runs, runs, dtype=torch.bool).triu()
    group_first = torch.where(later, first, first.max()).cummin(dim=1).values
    group_stop = torch.where(later, stop, 0).cummax(dim=1).values
    rows_before = torch.cat([torch.zeros(1, dtype=torch.long), run_rows.cumsum(0)])
    group_rows = rows_before[None, 1:] - rows_before[:-1, None]
    work = (group_rows * (group_stop - group_first).clamp(min=0)).double()
    work = work.masked_fill(~later, float("inf"))

    best = work[0]  # best[j]: least work for runs 0..j in the groups allowed so far
    # starts[k - 1][j]: where the last group starts in the best cut of runs 0..j into at
    # most k groups, or -1 where k groups do no better than k - 1.
    starts = [torch.zeros(runs, dtype=torch.long)]
    for _ in range(1, min(max_blocks, runs)):  # no more groups than runs
        # A last group of runs i..j after the best cut of runs 0..i-1 (i >= 1).
        candidates = best[:-1, None] + work[1:]
        more, start = candidates.min(dim=0)
        better = more < best
        best = torch.where(better, more, best)
        starts.append(torch.where(better, start + 1, -1))
    starts = [table.tolist() for table in starts]
    return [_backtrack(starts, groups, runs) for groups in range(1, max_blocks + 1)]


def _backtrack(starts: list[list[int]], groups: int, runs: int) -> list[int]:
    """The first run of each group in the best cut of all runs into at most ``groups``."""
    cut, end, groups = [], runs - 1, min(groups, len(starts))
    while end >= 0:
        while groups > 1 and starts[groups - 1][end] < 0:
            groups -= 1
        begin = starts[groups - 1][end]
        cut.append(begin)
        end, groups = begin - 1, groups - 1
    return cut[::-1]


def _blocks(cut: list[int], run_rows: list[int], first: list[int], stop: list[int]) -> Partition:
    """The blocks of a cut (the first run of each group)."""
    rows_before = [0, *itertools.accumulate(run_rows)]
    bounds = [*cut, len(run_rows)]
    blocks = []
    for begin, end in zip(bounds, bounds[1:]):
        lo, hi = min(first[begin:end]), max(stop[begin:end])
        span = (lo, hi) if hi > lo else (0, 0)
        blocks.append(Block((rows_before[begin], rows_before[end]), span))
    return tuple(blocks)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dim()}-D tensor of dtype {value.dtype}"
    return type(value).__name__
