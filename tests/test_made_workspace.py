"""The feature-major pass of a MADE (flowkit/nn/_workspace.py): its outputs and gradients equal
to the ordinary pass's to 1e-12 in float64 whatever the architecture, product method and batch
shape; taken only where nothing can see its intermediate tensors; and, without gradients,
never handing out a tensor that a later call overwrites (two results stay independent across
calls, batch sizes, dtypes, autograd and threads)."""

from __future__ import annotations

import doctest
import threading
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkit
from flowkit import MADE, LostDependencyWarning
from flowkit.nn import _workspace
from flowkit.nn._blocked import MaskBlocks
from made_helpers import made_configs

EXACT = {"rtol": 0.0, "atol": 1e-12}


def test_doctests():
    assert doctest.testmod(_workspace).failed == 0


def build_quietly(**kwargs) -> MADE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LostDependencyWarning)
        return MADE(**kwargs).double()


def ordinary_output(made: MADE, x: torch.Tensor) -> torch.Tensor:
    """The ordinary pass (a hook makes the MADE take it), without gradients."""
    handle = made.register_forward_pre_hook(lambda *args: None)
    try:
        assert not _workspace.applies(made, x, None)
        with torch.no_grad():
            return made.raw_output(x)
    finally:
        handle.remove()


def gradients(made: MADE, x: torch.Tensor, ordinary: bool) -> list[torch.Tensor]:
    """The output and the gradients of ``x`` and of every parameter of a fixed random
    projection of it, by the ordinary pass or the feature-major one."""
    handle = made.register_forward_pre_hook(lambda *args: None) if ordinary else None
    x = x.detach().requires_grad_(True)
    if ordinary:
        assert not _workspace.applies(made, x, None)
    elif made.product == "blocked":  # with gradients, auto and dense may keep the ordinary pass
        assert _workspace.applies(made, x, None)
    out = made.raw_output(x)
    weights = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((out * weights).sum(), [x, *made.parameters()])
    if handle is not None:
        handle.remove()
    return [out.detach(), *grads]


@given(made_configs(activations=("relu", "elu", "leaky_relu")), st.sampled_from(["auto", "blocked", "dense"]),
       st.sampled_from([(), (1,), (5,), (3, 2)]))  # fmt: skip
@settings(max_examples=60, deadline=None)
def test_no_grad_pass_equals_the_ordinary_pass(config, product, batch_shape):
    config["context_dim"] = 0  # a context takes the ordinary pass
    made = build_quietly(**config, product=product)
    generator = torch.Generator().manual_seed(config["seed"])
    x = torch.randn(*batch_shape, made.input_dim, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        assert _workspace.applies(made, x, None)
        fast = made.raw_output(x)
    expected = ordinary_output(made, x)
    assert fast.shape == expected.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, expected, **EXACT)


@given(made_configs(activations=("relu", "elu", "leaky_relu")), st.sampled_from(["auto", "blocked", "dense"]),
       st.sampled_from([(1,), (7,), (3, 2)]))  # fmt: skip
@settings(max_examples=40, deadline=None)
def test_gradients_of_the_feature_major_pass_equal_the_ordinary_ones(config, product, batch_shape):
    config["context_dim"] = 0
    made = build_quietly(**config, product=product)
    x = torch.randn(*batch_shape, made.input_dim, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(config["seed"]))  # fmt: skip
    for fast, expected in zip(gradients(made, x, ordinary=False), gradients(made, x, ordinary=True)):
        torch.testing.assert_close(fast, expected, **EXACT)


@pytest.mark.parametrize("product", ["blocked", "dense"])
def test_second_order_gradients_of_the_feature_major_pass(product):
    made = build_quietly(input_dim=4, hidden_dims=[12, 12], param_dims=[1, 1], seed=0, product=product)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: made.raw_output(x), (x,))


@pytest.mark.parametrize("width", [64, 300])
@pytest.mark.parametrize("product", ["auto", "blocked"])
def test_wide_blocked_no_grad_pass_equals_the_dense_reference(width, product):
    """Wide layers and a long batch, where the auto choice takes blocks in every layer."""
    made = build_quietly(input_dim=16, hidden_dims=[width, width], param_dims=[1, 1], seed=0, product=product)
    x = torch.randn(2000, 16, dtype=torch.float64)
    with torch.no_grad():
        fast = made.raw_output(x)
    fast_gradients = gradients(made, x[:512], ordinary=False)
    made.product = "dense"
    torch.testing.assert_close(fast, ordinary_output(made, x), **EXACT)
    for fast, expected in zip(fast_gradients, gradients(made, x[:512], ordinary=True)):
        torch.testing.assert_close(fast, expected, **EXACT)


def test_resampled_masks_and_every_mask_set_give_the_ordinary_output():
    made = build_quietly(input_dim=6, hidden_dims=[40, 40], param_dims=[1, 1], num_masks=3, order="random", seed=1)
    x = torch.randn(50, 6, dtype=torch.float64)
    for index in range(3):
        made.set_mask(index)
        with torch.no_grad():
            torch.testing.assert_close(made.raw_output(x), ordinary_output(made, x), **EXACT)
    made.resample_masks(torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(made.raw_output(x), ordinary_output(made, x), **EXACT)


@pytest.mark.parametrize("product", ["auto", "blocked"])
def test_sorted_resampled_masks_give_the_dense_reference(product):
    """After a sorted redraw the blocked products skip blocks again: outputs and gradients
    equal the dense reference's in float64."""
    made = build_quietly(input_dim=8, hidden_dims=[64, 64], param_dims=[1, 1], order="random", seed=2, product=product)
    x = torch.randn(600, 8, dtype=torch.float64)
    generator = torch.Generator().manual_seed(4)
    for _ in range(2):
        made.product = product
        made.resample_masks(generator, sort=True)
        with torch.no_grad():
            fast = made.raw_output(x)
        fast_gradients = gradients(made, x[:256], ordinary=False)
        made.product = "dense"
        torch.testing.assert_close(fast, ordinary_output(made, x), **EXACT)
        for fast, expected in zip(fast_gradients, gradients(made, x[:256], ordinary=True)):
            torch.testing.assert_close(fast, expected, **EXACT)


def test_results_of_later_calls_never_overwrite_an_earlier_one():
    """The returned parameters are fresh tensors: keep them, call again with other batch
    sizes and dtypes, and they are unchanged."""
    made = MADE(8, [64, 64], param_dims=[1, 1], seed=0)
    x = torch.randn(300, 8)
    with torch.no_grad():
        first = made.raw_output(x)
        kept = first.clone()
        second = made.raw_output(torch.randn(300, 8))
        made.raw_output(torch.randn(17, 8))
        made.raw_output(torch.randn(1000, 8))
        made.double().raw_output(torch.randn(300, 8, dtype=torch.float64))
    assert first.data_ptr() != second.data_ptr()
    torch.testing.assert_close(first, kept, rtol=0, atol=0)


@pytest.mark.parametrize(("input_dim", "param_dims", "rows"), [(8, [1, 1], 1), (1, [1], 5), (1, [1], 1)])
def test_one_row_or_one_output_still_gives_a_fresh_result(input_dim, param_dims, rows):
    """There the transpose back to the ordinary layout is contiguous already: still a copy."""
    made = MADE(input_dim, [32], param_dims=param_dims, seed=0)
    with torch.no_grad():
        first = made.raw_output(torch.randn(rows, input_dim))
        kept = first.clone()
        made.raw_output(torch.randn(rows, input_dim))
    torch.testing.assert_close(first, kept, rtol=0, atol=0)


def test_two_log_probs_stay_independent_with_and_without_gradients():
    flow = flowkit.maf(6, 3, [48, 48], seed=0)
    x, z = torch.randn(200, 6), torch.randn(200, 6)
    with torch.no_grad():
        a = flow.log_prob(x)
        kept = a.clone()
        b = flow.log_prob(z)
    with_grad = flow.log_prob(x.clone())
    with torch.no_grad():
        flow.log_prob(torch.randn(500, 6))
    torch.testing.assert_close(a, kept, rtol=0, atol=0)
    torch.testing.assert_close(with_grad.detach(), kept, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(a, b)
    with_grad.sum().backward()  # the graph still holds its own tensors
    assert all(p.grad is not None for p in flow.parameters() if p.requires_grad)


def test_threads_have_their_own_buffers():
    """Passes in several threads at once give each thread's own, correct results."""
    made = MADE(8, [128, 128], param_dims=[1, 1], seed=0).double()
    inputs = [torch.randn(400 + 50 * k, 8, dtype=torch.float64) for k in range(4)]
    expected = [ordinary_output(made, x) for x in inputs]
    results: dict[int, list[torch.Tensor]] = {}

    def work(k: int) -> None:
        with torch.no_grad():
            results[k] = [made.raw_output(inputs[k]) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(4):
        for result in results[k]:
            torch.testing.assert_close(result, expected[k], **EXACT)


def test_the_hidden_buffers_are_reused_between_calls():
    made = MADE(8, [64, 64], param_dims=[1, 1], seed=0)
    with torch.no_grad():
        made.raw_output(torch.randn(300, 8))
        kept = {key: buffer.data_ptr() for key, buffer in _workspace._BUFFERS.kept.items()}
        made.raw_output(torch.randn(200, 8))  # smaller: a view of the same buffers
    assert kept and {key: b.data_ptr() for key, b in _workspace._BUFFERS.kept.items()} == kept


def test_inference_mode_and_no_grad_keep_separate_buffers():
    made = MADE(4, [32], param_dims=[1, 1], seed=0)
    x = torch.randn(20, 4)
    with torch.inference_mode():
        in_inference = made.raw_output(x)
    with torch.no_grad():
        torch.testing.assert_close(made.raw_output(x), in_inference, rtol=0, atol=0)
    with torch.inference_mode():
        torch.testing.assert_close(made.raw_output(x), in_inference, rtol=0, atol=0)


def test_hooks_context_and_other_activations_take_the_ordinary_pass():
    made = MADE(4, [16], param_dims=[1, 1], seed=0, product="blocked")
    x = torch.randn(5, 4)
    seen = []
    handle = made.input_layer.register_forward_hook(lambda module, args, out: seen.append(out))
    assert not _workspace.applies(made, x, None)
    made.raw_output(x)
    handle.remove()
    assert len(seen) == 1  # the hook saw the layer's call
    with torch.no_grad():
        assert _workspace.applies(made, x, None)
        assert not _workspace.applies(MADE(4, [16], activation="tanh", seed=0), x, None)
        conditional = MADE(4, [16], context_dim=2, seed=0)
        assert not _workspace.applies(conditional, x, torch.randn(5, 2))
        assert not _workspace.applies(made, x[:0], None)


def test_a_buffer_too_large_to_keep_is_not_kept(monkeypatch):
    monkeypatch.setattr(_workspace, "MAX_KEPT_BYTES", 1000)
    monkeypatch.setattr(_workspace, "_BUFFERS", _workspace._Buffers())
    made = MADE(4, [64], param_dims=[1, 1], seed=0).double()
    x = torch.randn(100, 4, dtype=torch.float64)
    with torch.no_grad():
        result = made.raw_output(x)
    assert _workspace._BUFFERS.kept == {}
    torch.testing.assert_close(result, ordinary_output(made, x), **EXACT)


@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None)
def test_feature_major_linear_equals_the_dense_product_on_any_mask(rows, columns, batch, groups, seed):
    """Any boolean mask (its blocks need not be nested) and any number of blocks: the
    product and the gradients of the input, weight and bias equal the dense formulas."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, columns, generator=generator) < 0.5
    blocks = MaskBlocks.of(mask, max_blocks=groups).partition(groups)
    h = torch.randn(columns, batch, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(rows, columns, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(rows, 1, dtype=torch.float64, generator=generator, requires_grad=True)
    grad = torch.randn(rows, batch, dtype=torch.float64, generator=generator)
    factor = mask.double()
    blocked = _workspace.FeatureMajorLinear.apply(h, weight, factor, bias, blocks)
    dense = (weight * factor) @ h + bias
    torch.testing.assert_close(blocked, dense, **EXACT)
    expected = torch.autograd.grad(dense, [h, weight, bias], grad)
    for fast, slow in zip(torch.autograd.grad(blocked, [h, weight, bias], grad), expected):
        torch.testing.assert_close(fast, slow, **EXACT)


def test_with_gradients_only_blocked_products_take_the_feature_major_pass():
    """Dense products are faster the ordinary way when gradients are on."""
    made = MADE(16, [256, 256], param_dims=[1, 1], seed=0)
    x = torch.randn(512, 16)
    assert _workspace.applies(made, x, None)  # auto takes blocks in the hidden layer
    made.product = "dense"
    assert not _workspace.applies(made, x, None)
    with torch.no_grad():
        assert _workspace.applies(made, x, None)  # still worth it: the reused buffers


def test_backward_hooks_and_torch_func_take_the_ordinary_pass():
    made = MADE(4, [16], param_dims=[1, 1], seed=0, product="blocked")
    x = torch.randn(5, 4)
    handle = made.output_layer.register_full_backward_hook(lambda module, grad_in, grad_out: None)
    assert not _workspace.applies(made, x, None)
    handle.remove()
    assert _workspace.applies(made, x, None)
    made.product = "auto"  # the blocked product's own autograd function has no vmap rule either
    seen = []
    with torch.no_grad():
        assert _workspace.applies(made, x, None)
        torch.func.vmap(lambda row: seen.append(_workspace.applies(made, row[None], None)) or row)(x)
        assert seen == [False]
        per_row = torch.func.vmap(lambda row: made.raw_output(row))(x)  # runs, by the ordinary pass
        torch.testing.assert_close(per_row, made.raw_output(x), rtol=1e-6, atol=1e-6)
