"""Blocked masked products (flowkit/nn/_blocked.py): the blocks cover every True entry of
the mask, the cut has the least work, and the blocked product and its gradients equal the
dense masked product to 1e-12 in float64 on MADE's masks."""

from __future__ import annotations

import copy
import doctest
import itertools
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.nn import _blocked, masks
from flowkit.nn._blocked import Block, CostModel, MaskBlocks, MaskedProduct, masked_linear

EXACT = {"rtol": 0.0, "atol": 1e-12}


def test_doctests():
    assert doctest.testmod(_blocked).failed == 0


def assert_valid_partition(blocks: tuple[Block, ...], mask: torch.Tensor) -> None:
    """Contiguous row groups covering every row once, and the mask False outside the blocks."""
    starts = [block.rows[0] for block in blocks]
    stops = [block.rows[1] for block in blocks]
    assert starts[0] == 0 and stops[-1] == mask.shape[0] and starts[1:] == stops[:-1], blocks
    inside = torch.zeros_like(mask)
    for block in blocks:
        assert block.rows[0] < block.rows[1] and 0 <= block.cols[0] <= block.cols[1] <= mask.shape[1], block
        inside[slice(*block.rows), slice(*block.cols)] = True
    assert not (mask & ~inside).any(), blocks


def brute_force_work(mask: torch.Tensor, groups: int) -> int:
    """The least work of any cut of the rows into at most ``groups`` contiguous groups."""
    rows = mask.shape[0]

    def span_work(begin: int, end: int) -> int:
        columns = torch.nonzero(mask[begin:end].any(dim=0)).flatten()
        return 0 if len(columns) == 0 else (end - begin) * int(columns[-1] - columns[0] + 1)

    best = None
    for count in range(1, min(groups, rows) + 1):
        for inner in itertools.combinations(range(1, rows), count - 1):
            bounds = [0, *inner, rows]
            work = sum(span_work(a, b) for a, b in zip(bounds, bounds[1:]))
            best = work if best is None else min(best, work)
    return best


# ------------------------------------------------------------------ finding the blocks
@given(st.integers(1, 7), st.integers(1, 6), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_blocks_are_the_least_work_cut_of_any_mask(rows, columns, seed):
    """Any boolean mask, MADE's or not: valid partitions whose work is the brute-force minimum."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, columns, generator=generator) < torch.rand((), generator=generator)
    blocks = MaskBlocks.of(mask, max_blocks=4)
    for count in range(1, 5):
        assert_valid_partition(blocks.partition(count), mask)
        assert len(blocks.partition(count)) <= count
        assert blocks.work(count) == brute_force_work(mask, count)
    assert blocks.work(1) <= blocks.dense_work


def test_many_runs_are_merged_and_still_cover_the_mask():
    """Over 256 runs of distinct spans are merged before the search; the cut stays valid."""
    mask = torch.rand(600, 300, generator=torch.Generator().manual_seed(0)) < 0.02
    blocks = MaskBlocks.of(mask, max_blocks=8)
    for count in (1, 4, 8):
        assert_valid_partition(blocks.partition(count), mask)


def test_a_made_layer_keeps_about_half_the_work():
    degrees = masks.hidden_degrees(512, low=1, high=63)
    blocks = MaskBlocks.of(masks.hidden_mask(degrees, degrees), max_blocks=8)
    kept = [blocks.work(k) / blocks.dense_work for k in range(1, 9)]
    assert kept[0] == 1.0 and kept == sorted(kept, reverse=True)
    assert 0.5 < kept[-1] < 0.6  # the triangle (1/2) plus the staircase of 8 blocks


def test_rows_that_read_nothing_get_an_empty_block():
    """The first output of a MADE reads no hidden unit: its rows are the bias alone."""
    hidden = masks.hidden_degrees(6, low=1, high=2)
    mask = masks.output_mask(hidden, torch.tensor([1, 2, 3]))
    assert MaskBlocks.of(mask, max_blocks=3).partition(3)[0] == Block((0, 1), (0, 0))
    assert MaskBlocks.of(torch.zeros(3, 4, dtype=torch.bool)).partition(8) == (Block((0, 3), (0, 0)),)


@pytest.mark.parametrize(
    ("mask", "max_blocks", "error", "message"),
    [
        (torch.ones(3, 3), 2, TypeError, "mask: expected a 2-D boolean tensor, got a 2-D tensor of dtype"),
        (torch.ones(3, dtype=torch.bool), 2, TypeError, "mask: expected a 2-D boolean"),
        ([[True]], 2, TypeError, "got list"),
        (torch.ones(3, 3, dtype=torch.bool), 0, ValueError, "max_blocks: expected a positive int"),
    ],
)
def test_mask_blocks_check_their_arguments(mask, max_blocks, error, message):
    with pytest.raises(error, match=message):
        MaskBlocks.of(mask, max_blocks)


# ------------------------------------------------------------------ the product equals the dense one
@st.composite
def made_masks(draw) -> list[torch.Tensor]:
    """The masks of a random MADE built with flowkit.nn.masks: input layer (context columns
    of degree 0 last), hidden layers, output layer, and the direct input-to-output mask."""
    dim = draw(st.integers(1, 8))
    context = draw(st.integers(0, 3))
    order = torch.tensor(draw(st.permutations(range(dim))))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scheme = draw(st.sampled_from(masks.DEGREE_SCHEMES))
    input_degrees = masks.degrees_from_order(order)
    low = 0 if context or dim == 1 else 1
    hidden = []
    for width in draw(st.lists(st.integers(1, 24), min_size=1, max_size=3)):
        hidden.append(masks.hidden_degrees(width, low, max(dim - 1, low), scheme, generator))
        low = int(hidden[-1].min())
    output_degrees = input_degrees.repeat(draw(st.integers(1, 3)))
    seen = torch.cat([input_degrees, torch.zeros(context, dtype=torch.long)])
    layers = [masks.hidden_mask(seen, hidden[0])]
    layers += [masks.hidden_mask(below, above) for below, above in zip(hidden, hidden[1:])]
    layers.append(masks.output_mask(hidden[-1], output_degrees))
    layers.append(masks.output_mask(seen, output_degrees))  # skip connections (and context)
    return layers


batch_shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@given(made_masks(), batch_shapes, st.booleans(), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_blocked_product_and_gradients_equal_the_dense_ones(layers, batch_shape, with_bias, seed):
    generator = torch.Generator().manual_seed(seed)
    for mask in layers:
        weight = torch.randn(mask.shape, generator=generator, dtype=torch.float64)
        bias = torch.randn(mask.shape[0], generator=generator, dtype=torch.float64) if with_bias else None
        x = torch.randn(*batch_shape, mask.shape[1], generator=generator, dtype=torch.float64)
        grad_out = torch.randn(*batch_shape, mask.shape[0], generator=generator, dtype=torch.float64)
        blocks = MaskBlocks.of(mask, max_blocks=4)
        dense, dense_grads = value_and_grads(x, weight, mask, bias, None, grad_out)
        for count in range(1, 5):
            assert_valid_partition(blocks.partition(count), mask)
            blocked, blocked_grads = value_and_grads(x, weight, mask, bias, blocks.partition(count), grad_out)
            assert blocked.shape == (*batch_shape, mask.shape[0])
            torch.testing.assert_close(blocked, dense, **EXACT)
            for got, expected in zip(blocked_grads, dense_grads, strict=True):
                torch.testing.assert_close(got, expected, **EXACT)
        with torch.no_grad():  # the path without autograd
            torch.testing.assert_close(masked_linear(x, weight, mask, bias, blocks.partition(4)), dense, **EXACT)


def value_and_grads(x, weight, mask, bias, blocks, grad_out):
    """The product and the gradients of ``<product, grad_out>`` for x, weight (and bias)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias) if t is not None]
    x_, weight_, *rest = leaves
    out = masked_linear(x_, weight_, mask, rest[0] if rest else None, blocks)
    grads = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]  # empty batches
    return out.detach(), grads


def test_weight_gradient_is_zero_where_the_mask_is():
    degrees = masks.hidden_degrees(12, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    weight = torch.randn(12, 12, dtype=torch.float64, requires_grad=True)
    out = masked_linear(torch.randn(5, 12, dtype=torch.float64), weight, mask, None, MaskBlocks.of(mask).partition(3))
    out.sum().backward()
    assert (weight.grad[~mask] == 0).all() and (weight.grad[mask] != 0).all()


def test_only_the_inputs_that_need_gradients_get_them():
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    weight = torch.randn(8, 8, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 8, dtype=torch.float64)
    bias = torch.randn(8, dtype=torch.float64)
    out = masked_linear(x, weight, mask, bias, MaskBlocks.of(mask).partition(3))
    (grad,) = torch.autograd.grad(out.sum(), weight)
    torch.testing.assert_close(grad, torch.ones(3, 8, dtype=torch.float64).T.mm(x) * mask, **EXACT)


def test_second_derivatives_take_the_dense_formulas():
    degrees = masks.hidden_degrees(6, low=1, high=2)
    mask = masks.hidden_mask(degrees, degrees)
    blocks = MaskBlocks.of(mask).partition(2)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: masked_linear(x, w, mask, b, blocks).tanh(), (x, weight, bias)
    )


# ------------------------------------------------------------------ the choice
def test_cost_model_weighs_calls_and_reads_against_saved_work():
    degrees = masks.hidden_degrees(64, low=1, high=7)
    blocks = MaskBlocks.of(masks.hidden_mask(degrees, degrees), max_blocks=8)

    def model(call_cost=0.0, reread=0.0, min_saving=0.0):
        return CostModel(call_cost=call_cost, reread=reread, block_slowdown=1.0, min_saving=min_saving)

    assert model().choose(blocks, batch=1) == blocks.partition(8)  # the least work wins
    assert model(call_cost=1e12).choose(blocks, batch=1000) is None
    # The cut into k blocks pays k calls, and every block reads its input slice again:
    # either stops short of the finest cut.
    assert 1 < len(model(call_cost=64 * 64 * 0.02).choose(blocks, batch=1)) < 7
    assert 1 < len(model(reread=16.0).choose(blocks, batch=1)) < 7
    # A saving under min_saving keeps the dense product.
    saving = 1 - blocks.work(8) / blocks.dense_work
    assert model(min_saving=saving + 0.01).choose(blocks, batch=10) is None
    assert model(min_saving=saving - 0.01).choose(blocks, batch=10) is not None


def test_auto_keeps_the_dense_product_for_small_and_empty_batches():
    degrees = masks.hidden_degrees(512, low=1, high=15)
    mask = masks.hidden_mask(degrees, degrees)
    product = MaskedProduct()
    assert product.choice(torch.empty(1, 512), mask) is None
    assert product.choice(torch.empty(0, 512), mask) is None
    assert product.choice(torch.empty(4096, 512), mask) is not None  # the CPU model's pick
    assert product.choice(torch.empty(64, 64, 512), mask) is not None  # batch dims count as rows


def test_auto_chooses_once_per_batch_size_and_again_after_a_change(monkeypatch):
    """The cost model runs once per batch size, and again for a changed mask or model."""
    degrees = masks.hidden_degrees(512, low=1, high=15)
    mask = masks.hidden_mask(degrees, degrees)
    calls, choose = [], CostModel.choose

    def counting_choose(model, blocks, batch):
        calls.append(batch)
        return choose(model, blocks, batch)

    monkeypatch.setattr(CostModel, "choose", counting_choose)
    product = MaskedProduct()
    first = product.choice(torch.empty(4096, 512), mask)
    assert product.choice(torch.empty(4096, 512), mask) is first and calls == [4096]
    assert product.choice(torch.empty(1, 512), mask) is None and calls == [4096, 1]
    assert product.choice(torch.empty(4096, 512), mask) is first and calls == [4096, 1]
    mask[0, 0] = not mask[0, 0]  # an in-place change: new blocks, a new choice
    product.choice(torch.empty(1, 512), mask)
    monkeypatch.setitem(_blocked.COST_MODELS, "cpu", CostModel(call_cost=0.0, reread=0.0, block_slowdown=1.0))
    product.choice(torch.empty(1, 512), mask)
    assert calls == [4096, 1, 1, 1]


def test_auto_keeps_the_dense_product_under_autocast():
    """Autocast casts F.linear's arguments, not those of the blocks' out= multiplies."""
    degrees = masks.hidden_degrees(512, low=1, high=15)
    mask = masks.hidden_mask(degrees, degrees)
    x, weight = torch.randn(4096, 512), torch.randn(512, 512)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert MaskedProduct().choice(x, mask) is None
        assert MaskedProduct()(x, weight, mask).dtype == torch.bfloat16


def test_the_method_forces_either_product():
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    x, weight = torch.randn(2, 8, dtype=torch.float64), torch.randn(8, 8, dtype=torch.float64)
    product = MaskedProduct("blocked", max_blocks=3)
    assert product.choice(x, mask) == MaskBlocks.of(mask, 3).partition(3)
    torch.testing.assert_close(product(x, weight, mask), x @ (weight * mask).T, **EXACT)
    product.method = "dense"
    assert product.choice(torch.empty(10**6, 8), mask) is None
    with pytest.raises(ValueError, match="method: expected one of"):
        product.method = "sparse"
    with pytest.raises(ValueError, match="method: expected one of"):
        MaskedProduct("fast")
    with pytest.raises(ValueError, match="max_blocks: expected a positive int"):
        MaskedProduct(max_blocks=True)


def test_blocks_follow_a_changed_or_replaced_mask():
    """An in-place change (set_mask, load_state_dict, a test's fill_) or a new mask tensor
    (.to(device)) finds the blocks again; otherwise the cached ones serve."""
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    x, weight = torch.randn(2, 8, dtype=torch.float64), torch.randn(8, 8, dtype=torch.float64)
    product = MaskedProduct("blocked")
    first = product.blocks(mask)
    assert product.blocks(mask) is first
    mask.fill_(True)
    torch.testing.assert_close(product(x, weight, mask), x @ weight.T, **EXACT)
    other = masks.output_mask(degrees, torch.tensor([1, 2, 3, 4]))
    torch.testing.assert_close(product(x, weight[:4], other), x @ (weight[:4] * other).T, **EXACT)


def test_remembered_blocks_serve_until_the_mask_changes():
    """A MADE switching between its mask sets hands over each set's blocks."""
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    product = MaskedProduct("blocked")
    full = MaskBlocks.of(torch.ones(8, 8, dtype=torch.bool))
    product.remember(mask, full)
    assert product.blocks(mask) is full  # taken as told, not searched
    mask.logical_not_()
    assert product.blocks(mask) == MaskBlocks.of(mask)
    with pytest.raises(ValueError, match=r"blocks: expected the blocks of a \(8, 4\) mask"):
        product.remember(mask[:, :4], full)


def test_copies_find_their_own_blocks():
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    product = MaskedProduct("blocked", max_blocks=2)
    product.blocks(mask)
    for clone in (copy.deepcopy(product), pickle.loads(pickle.dumps(product))):
        assert clone.method == "blocked" and clone.max_blocks == 2 and clone._key is None
        assert clone.blocks(mask.clone()) == product.blocks(mask)
    assert repr(product) == "MaskedProduct(method='blocked', max_blocks=2)"


# ------------------------------------------------------------------ the product's factor
def test_the_factor_is_the_mask_in_the_weights_dtype_until_the_mask_changes():
    """The 0/1 factor is converted once per mask state, not at every call (a bool mask in a
    multiply is converted forward and backward), and converted again after any change."""
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    weight, x = torch.randn(8, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    product = MaskedProduct("dense")
    factor = product.factor(mask, weight)
    assert factor.dtype == torch.float64 and torch.equal(factor, mask.double())
    assert product.factor(mask, weight) is factor
    assert product.factor(mask, weight.float()).dtype == torch.float32  # another dtype: converted again
    mask.logical_not_()
    torch.testing.assert_close(product(x, weight, mask), x @ (weight * mask).T, **EXACT)
    other = mask.clone()
    assert product.factor(other, weight) is not product.factor(mask, weight)


def test_the_weight_is_masked_at_every_call():
    """Writes that move no version counter (fused optimisers, ``.data``) are seen: the
    masked weight is never kept between calls."""
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    weight, x = torch.randn(8, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    for method in ("dense", "blocked"):
        product = MaskedProduct(method)
        with torch.no_grad():
            product(x, weight, mask)
        weight.data.add_(1.0)
        with torch.no_grad():
            torch.testing.assert_close(product(x, weight, mask), x @ (weight * mask).T, **EXACT)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_no_factor_is_kept_from_inference_mode_or_tracing():
    """A factor made in inference mode could not be saved for a later backward; one kept
    by a trace would be baked into it as a constant."""
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    weight = torch.randn(8, 8, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 8, dtype=torch.float64)
    product = MaskedProduct("dense")
    with torch.inference_mode():
        assert product.factor(mask, weight) is mask
        product(x, weight, mask)
    product(x, weight, mask).sum().backward()  # no inference tensor saved for backward
    torch.testing.assert_close(weight.grad, (mask * x.sum(0)).double(), **EXACT)
    seen = []

    def traced(x, w):
        seen.append(product.factor(mask, w))
        return product(x, w, mask)

    torch.jit.trace(traced, (x, weight.detach()))
    assert seen[0] is mask


def test_known_blocks_are_the_found_or_remembered_ones_of_the_mask_as_it_is():
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    product = MaskedProduct("blocked")
    assert product.known_blocks(mask) is None
    found = product.blocks(mask)
    assert product.known_blocks(mask) is found
    assert product.known_blocks(mask.clone()) is None
    mask.logical_not_()
    assert product.known_blocks(mask) is None


def test_blocks_are_found_on_the_cpu_whatever_the_default_device():
    degrees = masks.hidden_degrees(8, low=1, high=3)
    mask = masks.hidden_mask(degrees, degrees)
    with torch.device("meta"):
        blocks = MaskBlocks.of(mask)
    assert blocks == MaskBlocks.of(mask)
