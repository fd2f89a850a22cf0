"""MADE's sequential direction: the fast pass equals the naive one (outputs and gradients) and
reads no weight outside its masks, and every masked product gives the same outputs."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkit
from flowkit import MADE, MaskedLinear
from made_helpers import build, made_configs

# ---------------------------------------------------------- sequential direction


@given(config=made_configs(), batch=st.sampled_from([(), (3,), (2, 3)]), grad=st.booleans(), data=st.data())
@settings(max_examples=40, deadline=None)
def test_sequential_fast_equals_naive(config, batch, grad, data):
    """With gradients the fast pass joins its columns; without, it writes them in place."""
    torch.set_grad_enabled(grad)
    try:
        _check_sequential_fast_equals_naive(config, batch, data)
    finally:
        torch.set_grad_enabled(True)


def _check_sequential_fast_equals_naive(config, batch, data):
    torch.manual_seed(config["seed"])
    made, _ = build(**config)
    made.double()
    made.set_mask(data.draw(st.integers(0, made.num_masks - 1)))
    generator = torch.Generator().manual_seed(config["seed"])
    noise = torch.randn(*batch, config["input_dim"], generator=generator, dtype=torch.float64)
    context = None
    if config["context_dim"]:
        # sometimes one shared context, sometimes a batch of contexts to broadcast
        context_batch = data.draw(st.sampled_from([(), batch]))
        context = torch.randn(*context_batch, config["context_dim"], generator=generator, dtype=torch.float64)

    def run(method):
        visited = []

        def step(params, i):
            visited.append(i)
            assert params.shape == (*batch, sum(config["param_dims"]))
            # an affine step that uses the first and the last parameter, like MAF sampling
            return params[..., 0] + torch.exp(0.5 * torch.tanh(params[..., -1])) * noise[..., i]

        x, params = made.sequential(step, batch_shape=batch, context=context, method=method)
        return x, params, visited

    x_fast, params_fast, visited_fast = run("fast")
    x_naive, params_naive, visited_naive = run("naive")
    assert visited_fast == visited_naive == made.permutation.tolist()
    assert x_fast.shape == (*batch, config["input_dim"])
    assert params_fast.shape == (*batch, sum(config["param_dims"]), config["input_dim"])
    assert torch.allclose(x_fast, x_naive, rtol=0, atol=1e-10)
    assert torch.allclose(params_fast, params_naive, rtol=0, atol=1e-10)
    # the returned params are the MADE outputs at the built x
    assert torch.allclose(params_fast, made.raw_output(x_fast, context), rtol=0, atol=1e-10)


def test_sequential_inverts_an_affine_flow():
    """MAF: x_i = loc_i + exp(log_scale_i) * z_i; then z is recovered in one pass."""
    made = MADE(5, [16, 16], param_dims=[1, 1], order="random", seed=0).double()
    z = torch.randn(8, 5, dtype=torch.float64)
    x, params = made.sequential(lambda p, i: p[..., 0] + torch.exp(p[..., 1]) * z[..., i], batch_shape=(8,))
    loc, log_scale = made(x)
    assert torch.allclose((x - loc) * torch.exp(-log_scale), z, atol=1e-12)


def test_sequential_with_a_single_input_and_context():
    made = MADE(1, [3], param_dims=[2], context_dim=2, seed=0).double()
    context = torch.randn(4, 2, dtype=torch.float64)
    x, params = made.sequential(lambda p, i: p[..., 1], context=context)
    assert x.shape == (4, 1) and params.shape == (4, 2, 1)
    assert torch.equal(x[..., 0], params[..., 1, 0])
    naive_x, _ = made.sequential(lambda p, i: p[..., 1], context=context, method="naive")
    assert torch.allclose(x, naive_x, atol=1e-12)


@pytest.mark.parametrize("method", ["fast", "naive"])
@pytest.mark.parametrize("batch_shape", [(0,), (2, 0)], ids=str)
def test_sequential_on_an_empty_batch(method, batch_shape):
    """No rows to infer a size from: the fast pass once raised 'cannot reshape tensor of 0 elements'."""
    made = MADE(3, [8], param_dims=[2], context_dim=2, skip_connections=True, seed=0).double()
    steps = []
    x, params = made.sequential(
        lambda p, i: steps.append(p.shape) or p[..., 0], batch_shape, torch.zeros(2, dtype=torch.float64), method=method
    )
    assert x.shape == (*batch_shape, 3) and params.shape == (*batch_shape, 2, 3)
    assert steps == [(*batch_shape, 2)] * 3  # each step saw its inputs' parameters, of the batch shape


@given(config=made_configs(), data=st.data())
@settings(max_examples=25, deadline=None)
def test_sequential_fast_reads_no_weight_outside_its_masks(config, data):
    """The fast pass reads the raw weights: every slice it reads lies inside its mask, so
    huge weights where the masks are False change nothing."""
    torch.manual_seed(config["seed"])
    made, _ = build(**config)
    made.double()
    made.set_mask(data.draw(st.integers(0, made.num_masks - 1)))
    context = torch.randn(3, config["context_dim"], dtype=torch.float64) if config["context_dim"] else None

    def step(params, i):
        return params[..., 0] + torch.tanh(params[..., -1])

    reference = made.sequential(step, (3,), context, method="naive")
    with torch.no_grad():
        for layer in made._masked_layers():
            layer.weight.masked_fill_(~layer.mask, 1e6)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            fast = made.sequential(step, (3,), context, method="fast")
        for got, want in zip(fast, reference):
            assert torch.allclose(got, want, rtol=0, atol=1e-10)


def test_sequential_fast_gradients_equal_the_naive_ones():
    torch.manual_seed(0)
    made = MADE(5, [12, 12], param_dims=[1, 1], context_dim=2, skip_connections=True, seed=0).double()
    context = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(4, 5, dtype=torch.float64)

    def gradients(method):
        x, params = made.sequential(lambda p, i: p[..., 0] + p[..., 1].exp() * noise[..., i], (4,), context, method)
        inputs = [*made.parameters(), context]
        return torch.autograd.grad(x.square().sum() + params.sum(), inputs)

    for fast, naive in zip(gradients("fast"), gradients("naive")):
        assert torch.allclose(fast, naive, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ masked products
@pytest.mark.parametrize("product", ["blocked", "dense"])
def test_every_product_gives_the_auto_products_outputs_and_gradients(product):
    torch.manual_seed(0)
    auto = MADE(6, [40, 40], param_dims=[1, 1], skip_connections=True, seed=0).double()
    forced = copy.deepcopy(auto)
    forced.product = product
    assert {layer.product.method for layer in forced._masked_layers()} == {product}
    assert auto.product == "auto" and forced.product == product
    x = torch.randn(300, 6, dtype=torch.float64)
    outputs = [made.raw_output(x) for made in (auto, forced)]
    assert torch.allclose(outputs[0], outputs[1], rtol=0, atol=1e-12)
    grads = [torch.autograd.grad(out.square().sum(), list(made.parameters())) for out, made in zip(outputs, (auto, forced))]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_the_product_option_reaches_every_layer_and_is_checked():
    made = MADE(4, [16], skip_connections=True, product="blocked", seed=0)
    assert [layer.product.method for layer in made._masked_layers()] == ["blocked"] * 3
    config = flowkit.nn.MADEConfig(hidden_dims=[8], product="dense")
    assert config.build(3, param_dims=[1]).product == "dense"
    for bad in ("fast", None):
        with pytest.raises(ValueError, match="product: expected one of"):
            MADE(4, [16], product=bad)
        with pytest.raises(ValueError, match="product: expected one of"):
            flowkit.nn.MADEConfig(product=bad)
        with pytest.raises(ValueError, match="product: expected one of"):
            made.product = bad
        with pytest.raises(ValueError, match="product: expected one of"):
            MaskedLinear(torch.ones(2, 2, dtype=torch.bool), product=bad)
    assert made.product == "blocked"


def test_switching_mask_sets_hands_each_set_its_blocks(monkeypatch):
    """Cycling mask sets per minibatch searches each set's blocks once, not at every switch,
    and the blocks the layers use are always those of their current masks."""
    from flowkit.nn import _blocked

    made = MADE(6, [32, 32], param_dims=[1, 1], order="random", num_masks=3, product="blocked", seed=0)
    searches = []
    search = _blocked.MaskBlocks.of
    monkeypatch.setattr(_blocked.MaskBlocks, "of", staticmethod(lambda mask, *a: searches.append(1) or search(mask, *a)))
    x = torch.randn(5, 6)
    for _ in range(3):
        for index in range(3):
            made.set_mask(index)
            made(x)
            for layer in made._masked_layers():
                assert layer.product.known_blocks(layer.mask) == search(layer.mask)
    assert len(searches) == 3 * 3
    made.load_state_dict(made.state_dict())  # the masks may be others: searched again
    made.set_mask(1)
    made(x)
    assert len(searches) == 3 * 3 + 3
