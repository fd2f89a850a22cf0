"""MADE mask sets: switching, cycling and reproducing them, resampling masks from a seed, and
orthogonal initialisation."""

import copy
import warnings

import pytest
import torch

import flowkit
from flowkit import MADE, MaskedLinear
from flowkit.nn import masks as M
from made_helpers import made_outputs_equal

# ---------------------------------------------------------------------- mask sets


def test_set_mask_changes_the_permutation_for_random_orders():
    made = MADE(6, [12], order="random", num_masks=5, seed=0)
    assert len({tuple(order.tolist()) for order in made.orders}) > 1
    for index in range(5):
        made.set_mask(index)
        assert int(made.mask_index) == index
        assert torch.equal(made.permutation, made.orders[index])
        assert torch.equal(made.get_permutation(), made.orders[index])
        assert sorted(made.permutation.tolist()) == list(range(6))
        # the layers hold the masks of the active set
        for layer, mask in zip([made.input_layer, made.output_layer], [made.masks()[0], made.masks()[-1]]):
            assert torch.equal(layer.mask, mask)


def test_explicit_order_is_shared_by_every_mask_set():
    made = MADE(4, [8], order=[2, 0, 3, 1], degrees="random", num_masks=3, seed=0)
    for index in range(3):
        assert made.orders[index].tolist() == [2, 0, 3, 1]
    hidden = {tuple(made.degrees(index)[1].tolist()) for index in range(3)}
    assert len(hidden) > 1  # connectivity-agnostic: the hidden degrees differ


def test_next_mask_cycles():
    made = MADE(4, [8], order="random", num_masks=3, seed=0)
    assert int(made.mask_index) == 0
    assert [made.next_mask() for _ in range(4)] == [1, 2, 0, 1]
    assert int(made.mask_index) == 1


def test_same_seed_gives_identical_masks():
    kwargs = dict(input_dim=7, hidden_dims=[9, 9], order="random", degrees="random", num_masks=3)
    a, b = MADE(**kwargs, seed=11), MADE(**kwargs, seed=11)
    c = MADE(**kwargs, seed=torch.Generator().manual_seed(11))  # a Generator works like its seed
    other = MADE(**kwargs, seed=12)
    for index in range(3):
        for made in (b, c):
            assert all(torch.equal(u, v) for u, v in zip(made.masks(index), a.masks(index)))
            assert torch.equal(made.orders[index], a.orders[index])
    assert not all(torch.equal(u, v) for u, v in zip(other.masks(0), a.masks(0)))


def test_masks_are_deterministic_by_index():
    made = MADE(5, [10, 10], param_dims=[1, 1], order="random", degrees="random", num_masks=3, seed=0)
    x = torch.randn(4, 5)
    original = made(x)
    made.set_mask(2)
    assert not made_outputs_equal(made(x), original)
    made.set_mask(0)
    assert made_outputs_equal(made(x), original)


def test_masks_of_an_inactive_set_do_not_change_the_active_one():
    made = MADE(5, [10], order="random", num_masks=3, seed=0)
    x = torch.randn(2, 5)
    before = made(x)
    made.masks(2), made.connectivity(2), made.lost_dependencies(2), made.degrees(2)
    assert int(made.mask_index) == 0
    assert torch.equal(made(x), before)


# ------------------------------------------------------------ mask resampling, orthogonal init


def resampling_made(**kwargs):
    kwargs = {"input_dim": 5, "hidden_dims": [12, 12], "param_dims": [1, 2], "order": "random", "seed": 0, **kwargs}
    return MADE(kwargs.pop("input_dim"), kwargs.pop("hidden_dims"), **kwargs)


def test_resample_masks_is_reproducible_from_a_seed():
    a, b = resampling_made(), resampling_made()
    a.resample_masks(torch.Generator().manual_seed(7))
    b.resample_masks(torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a.masks(), b.masks()))
    assert torch.equal(a.permutation, b.permutation)
    b.resample_masks(torch.Generator().manual_seed(8))
    assert not all(torch.equal(x, y) for x, y in zip(a.masks(), b.masks()))


def test_sorted_resample_is_the_unsorted_draw_sorted_per_layer():
    unsorted, ordered, again = resampling_made(), resampling_made(), resampling_made()
    unsorted.resample_masks(torch.Generator().manual_seed(7))
    ordered.resample_masks(torch.Generator().manual_seed(7), sort=True)
    again.resample_masks(torch.Generator().manual_seed(7), sort=True)
    assert torch.equal(ordered.permutation, unsorted.permutation)
    for mine, theirs, repeated in zip(ordered.degrees()[1:], unsorted.degrees()[1:], again.degrees()[1:]):
        assert bool((mine[1:] >= mine[:-1]).all())  # sorted within the layer
        assert torch.equal(mine, theirs.sort().values)  # the same degrees
        assert torch.equal(mine, repeated)  # reproducible from the seed
    assert all(torch.equal(x, y) for x, y in zip(ordered.masks(), again.masks()))
    assert ordered.active_mask == -1 and ordered.lost_dependencies() == unsorted.lost_dependencies()


def test_sorted_resample_keeps_the_order_with_order_false():
    made = resampling_made()
    order = made.permutation.clone()
    made.resample_masks(torch.Generator().manual_seed(3), order=False, sort=True)
    assert torch.equal(made.permutation, order)
    assert all(bool((h[1:] >= h[:-1]).all()) for h in made.degrees()[1:])


@pytest.mark.parametrize("sort", [None, 1, "yes"])
def test_bad_sort_is_rejected(sort):
    with pytest.raises(ValueError, match="sort: expected a bool"):
        resampling_made().resample_masks(torch.Generator().manual_seed(0), sort=sort)


@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize("skip_connections", [False, True])
@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("residual", [False, True])
def test_resampled_masks_are_autoregressive(skip_connections, context_dim, residual, sort):
    made = resampling_made(skip_connections=skip_connections, context_dim=context_dim, residual=residual)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        made.resample_masks(generator, sort=sort)
        report = flowkit.check_autoregressive(made)
        assert report.autoregressive, report
        assert made.active_mask == -1 and int(made.mask_index) == -1


def test_resampled_structure_is_what_the_made_reports():
    made = resampling_made()
    made.resample_masks(torch.Generator().manual_seed(2))
    input_degrees, *hidden = made.degrees()
    assert torch.equal(made.permutation, M.order_from_degrees(input_degrees))
    assert torch.equal(made.masks()[0], M.hidden_mask(input_degrees, hidden[0]))
    assert any(not bool((h[1:] >= h[:-1]).all()) for h in hidden)  # units come unsorted
    assert made.connectivity().shape == (5, 5) and made.lost_dependencies() == []


def test_resampling_connectivity_only_keeps_the_order():
    made = resampling_made()
    made.set_mask(0)
    order = made.permutation.clone()
    first = [m.clone() for m in made.masks()]
    made.resample_masks(torch.Generator().manual_seed(3), order=False)
    assert torch.equal(made.permutation, order)
    assert not all(torch.equal(x, y) for x, y in zip(first, made.masks()))


def test_resample_masks_emits_no_lost_dependency_warning():
    made = MADE(30, [8], skip_connections=True, seed=0, on_lost_dependencies="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made.resample_masks(torch.Generator().manual_seed(0))


def test_set_mask_goes_back_from_a_resampled_structure():
    made = resampling_made(num_masks=2)
    expected = [m.clone() for m in made.masks(1)]
    made.resample_masks(torch.Generator().manual_seed(4))
    made.set_mask(1)
    assert made.active_mask == 1 and all(torch.equal(x, y) for x, y in zip(expected, made.masks()))
    assert torch.equal(made.permutation, made.orders[1])


def test_resampled_structure_survives_state_dict_and_deepcopy():
    made = resampling_made()
    made.resample_masks(torch.Generator().manual_seed(5))
    target = resampling_made(seed=1)
    target.load_state_dict(made.state_dict())
    assert target.active_mask == -1 and torch.equal(target.permutation, made.permutation)
    x = torch.randn(3, 5)
    assert torch.equal(target.raw_output(x), made.raw_output(x))
    copied = copy.deepcopy(made)
    step = lambda p, i: p[..., 0]  # noqa: E731
    assert torch.equal(copied.sequential(step, (2,))[0], made.sequential(step, (2,))[0])


@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize("context_dim", [0, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_fast_sequential_matches_naive_after_resampling(context_dim, residual, sort):
    """Unsorted resampled units must be reordered by the fast pass; sorted ones come in order."""
    made = resampling_made(input_dim=6, hidden_dims=[16, 16], skip_connections=True, context_dim=context_dim,
                           residual=residual).double()  # fmt: skip
    context = torch.randn(4, context_dim, dtype=torch.float64) if context_dim else None
    step = lambda params, i: torch.tanh(params[..., 0] + 0.5 * params[..., 1])  # noqa: E731
    generator = torch.Generator().manual_seed(6)
    for _ in range(3):
        made.resample_masks(generator, sort=sort)
        fast_x, fast_params = made.sequential(step, (4,), context, method="fast")
        naive_x, naive_params = made.sequential(step, (4,), context, method="naive")
        assert torch.allclose(fast_x, naive_x, atol=1e-10, rtol=0)
        assert torch.allclose(fast_params, naive_params, atol=1e-10, rtol=0)
        assert torch.allclose(fast_params, made.raw_output(fast_x, context), atol=1e-10, rtol=0)


def test_preserving_masks_restores_a_resampled_structure():
    made = resampling_made(num_masks=2)
    made.resample_masks(torch.Generator().manual_seed(8))
    before, order = [m.clone() for m in made.masks()], made.permutation.clone()
    with made.preserving_masks():
        made.set_mask(1)
        made.resample_masks(torch.Generator().manual_seed(9))
    assert made.active_mask == -1 and torch.equal(made.permutation, order)
    assert all(torch.equal(x, y) for x, y in zip(before, made.masks()))


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
def test_orthogonal_init_is_orthogonal_with_zero_bias(shape):
    torch.manual_seed(0)
    layer = MaskedLinear(torch.rand(shape) > 0.5, init="orthogonal")
    w = layer.weight.detach().double()
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T  # the fewer of rows and columns are orthonormal
    assert torch.allclose(gram, torch.eye(min(shape), dtype=torch.float64), atol=1e-5)
    assert torch.all(layer.bias == 0)


def test_made_init_orthogonal_reaches_every_masked_layer():
    torch.manual_seed(0)
    made = MADE(4, [16, 16], skip_connections=True, init="orthogonal", seed=0)
    for layer in [made.input_layer, *made.hidden_layers, made.output_layer, made.skip_layer]:
        w = layer.weight.detach().double()
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        assert torch.allclose(gram, torch.eye(min(w.shape), dtype=torch.float64), atol=1e-5)
    assert flowkit.MADEConfig(hidden_dims=[8], init="orthogonal").build(3, [1]).input_layer.init == "orthogonal"


def test_bad_init_is_rejected():
    with pytest.raises(ValueError, match="init: expected one of"):
        MADE(3, [8], init="xavier")
    with pytest.raises(ValueError, match="init: expected one of"):
        flowkit.MADEConfig(init="xavier")
    with pytest.raises(ValueError, match="init: expected one of"):
        MaskedLinear(torch.ones(2, 2, dtype=torch.bool), init="xavier")


def test_state_dict_keys_change_only_once_masks_are_resampled():
    made = resampling_made()
    keys = set(made.state_dict())
    assert not any(key.startswith("sampled_") for key in keys)
    made.resample_masks(torch.Generator().manual_seed(0))
    assert set(made.state_dict()) - keys == {"sampled_order", "sampled_hidden_degrees_0", "sampled_hidden_degrees_1"}
    resampled = made.state_dict()
    fresh = resampling_made(seed=1)
    fresh.load_state_dict(resampled)  # strict: the buffers are added
    assert fresh.active_mask == -1 and torch.equal(fresh.permutation, made.permutation)
    fresh.load_state_dict(resampling_made(seed=2).state_dict())  # strict: and dropped again
    assert set(fresh.state_dict()) == keys and fresh.active_mask == 0


def test_resampled_masks_take_the_dense_product_without_a_search(monkeypatch):
    """Resampled units are unsorted, so their masks have no blocks worth skipping: each layer
    is handed one whole block and "auto" multiplies densely, with no search per update."""
    from flowkit.nn import _blocked

    made = MADE(6, [64, 64], order="random", seed=0)
    made.resample_masks(torch.Generator().manual_seed(1))

    def no_search(*args, **kwargs):
        raise AssertionError("MaskBlocks.of was called after resample_masks")

    monkeypatch.setattr(_blocked.MaskBlocks, "of", staticmethod(no_search))
    x = torch.randn(4096, 6)
    for layer in made._masked_layers():
        assert layer.product.known_blocks(layer.mask) is not None
        assert layer.product.choice(torch.randn(4096, layer.in_features), layer.mask) is None
    made(x)  # the whole forward pass runs without a search


def test_sorted_resampled_masks_are_searched_for_blocks():
    """Sorted units leave all-False blocks: the layers search them (unlike the unsorted draw's
    one whole block), and the blocked product finds more than one."""
    made = MADE(6, [64, 64], order="random", seed=0, product="blocked")
    made.resample_masks(torch.Generator().manual_seed(1), sort=True)
    hidden = made.hidden_layers[0]
    assert hidden.product.known_blocks(hidden.mask) is None  # the unsorted draw's whole block is not kept
    with torch.no_grad():
        made.raw_output(torch.randn(256, 6))
    assert len(hidden.product.known_blocks(hidden.mask).partition(8)) > 1
