"""Exact rules for orders, degrees and masks (flowkit.nn.masks), on hand-checked cases
and as properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.nn import masks as M

# ------------------------------------------------------------------------ orders


def test_make_order_natural_and_reversed():
    assert M.make_order(4, "natural").tolist() == [0, 1, 2, 3]
    assert M.make_order(4, "reversed").tolist() == [3, 2, 1, 0]
    assert M.make_order(1, "reversed").tolist() == [0]
    assert M.make_order(4).tolist() == [0, 1, 2, 3]  # natural is the default
    assert M.make_order(4).dtype == torch.long


@pytest.mark.parametrize("order", [[2, 0, 3, 1], (2, 0, 3, 1), torch.tensor([2, 0, 3, 1])])
def test_make_order_explicit_permutation_is_kept(order):
    result = M.make_order(4, order)
    assert result.dtype == torch.long
    assert result.tolist() == [2, 0, 3, 1]


def test_make_order_random_is_a_permutation_and_reproducible_with_a_generator():
    first = M.make_order(20, "random", torch.Generator().manual_seed(7))
    again = M.make_order(20, "random", torch.Generator().manual_seed(7))
    other = M.make_order(20, "random", torch.Generator().manual_seed(8))
    assert sorted(first.tolist()) == list(range(20))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)  # 20! orders: a collision would be a broken generator


@pytest.mark.parametrize(
    "order, error",
    [
        ([0, 0, 1], ValueError),  # repeated input
        ([0, 1], ValueError),  # too short
        ([0, 1, 2, 3], ValueError),  # too long
        ([0, 1, 5], ValueError),  # out of range
        ([-1, 0, 1], ValueError),  # negative
        ([[0, 1, 2]], ValueError),  # wrong shape
        ([0.0, 1.0, 2.0], TypeError),  # floats are not indices
        ([True, False, True], TypeError),
        (None, TypeError),
        ("shuffled", ValueError),  # unknown kind
    ],
)
def test_make_order_rejects_bad_orders_naming_the_argument(order, error):
    with pytest.raises(error, match="order"):
        M.make_order(3, order)


@pytest.mark.parametrize("input_dim, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)])
def test_make_order_rejects_bad_input_dim(input_dim, error):
    with pytest.raises(error, match="input_dim"):
        M.make_order(input_dim)


def test_degrees_from_order_hand_checked():
    # order [2, 0, 1]: input 2 comes first (degree 1), then input 0 (2), then input 1 (3)
    assert M.degrees_from_order(torch.tensor([2, 0, 1])).tolist() == [2, 3, 1]
    assert M.order_from_degrees(torch.tensor([2, 3, 1])).tolist() == [2, 0, 1]
    assert M.degrees_from_order(torch.tensor([0, 1, 2])).tolist() == [1, 2, 3]


@given(st.integers(1, 30).flatmap(lambda d: st.permutations(range(d))))
@settings(max_examples=40, deadline=None)
def test_degrees_and_order_are_inverse(perm):
    order = torch.tensor(perm)
    degrees = M.degrees_from_order(order)
    assert sorted(degrees.tolist()) == list(range(1, len(perm) + 1))
    for rank, inp in enumerate(perm):
        assert degrees[inp] == rank + 1
    assert torch.equal(M.order_from_degrees(degrees), order)
    assert torch.equal(M.degrees_from_order(M.order_from_degrees(degrees)), degrees)


# ----------------------------------------------------------------- hidden degrees


@pytest.mark.parametrize(
    "width, low, high, expected",
    [
        (5, 1, 3, [1, 1, 2, 2, 3]),
        (3, 1, 3, [1, 2, 3]),
        (7, 1, 3, [1, 1, 1, 2, 2, 3, 3]),
        (4, 0, 3, [0, 1, 2, 3]),  # with context, degree 0 is allowed
        (6, 0, 2, [0, 0, 1, 1, 2, 2]),
        (1, 1, 1, [1]),
        # narrow: distinct degrees spread evenly, first and last included
        (2, 1, 5, [1, 5]),
        (3, 1, 5, [1, 3, 5]),
        (1, 1, 5, [1]),
    ],
)
def test_hidden_degrees_even_scheme_values(width, low, high, expected):
    assert M.hidden_degrees(width, low, high).tolist() == expected
    assert M.hidden_degrees(width, low, high, scheme="even").tolist() == expected


@given(
    width=st.integers(1, 40),
    low=st.integers(0, 2),
    span=st.integers(0, 30),
    scheme=st.sampled_from(["even", "random"]),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=40, deadline=None)
def test_hidden_degrees_properties(width, low, span, scheme, seed):
    high = low + span
    count = high - low + 1
    degrees = M.hidden_degrees(width, low, high, scheme, torch.Generator().manual_seed(seed)).tolist()
    assert len(degrees) == width
    assert degrees == sorted(degrees)
    assert all(low <= m <= high for m in degrees)
    if width >= count:
        # wide enough: no degree may be missing, or some dependency would be lost
        assert set(degrees) == set(range(low, high + 1))
    else:
        # narrow: as many different degrees as there are units
        assert len(set(degrees)) == width


def test_hidden_degrees_random_scheme_is_reproducible_with_a_seeded_generator():
    for width in (3, 12, 40):  # narrow and wide
        a = M.hidden_degrees(width, 1, 9, "random", torch.Generator().manual_seed(3))
        b = M.hidden_degrees(width, 1, 9, "random", torch.Generator().manual_seed(3))
        assert torch.equal(a, b)
    draws = {tuple(M.hidden_degrees(40, 1, 9, "random", torch.Generator().manual_seed(s)).tolist()) for s in range(5)}
    assert len(draws) > 1  # "random" really depends on the generator


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(width=0, low=1, high=3), ValueError, "width"),
        (dict(width=2.0, low=1, high=3), TypeError, "width"),
        (dict(width=3, low=3, high=1), ValueError, "high"),
        (dict(width=3, low=1, high=3, scheme="foo"), ValueError, "scheme"),
    ],
)
def test_hidden_degrees_validation(kwargs, error, name):
    with pytest.raises(error, match=name):
        M.hidden_degrees(**kwargs)


# -------------------------------------------------------------------------- masks

# A hand-written 3-input example in natural order: input degrees [1, 2, 3], one hidden
# layer with degrees [1, 1, 2, 2].
INPUT_DEGREES = torch.tensor([1, 2, 3])
HIDDEN = torch.tensor([1, 1, 2, 2])
# hidden unit k sees input j when m(k) >= deg(j)
EXPECTED_HIDDEN_MASK = [
    [1, 0, 0],
    [1, 0, 0],
    [1, 1, 0],
    [1, 1, 0],
]
# output for input d sees hidden unit k when deg(d) > m(k), strictly
EXPECTED_OUTPUT_MASK = [
    [0, 0, 0, 0],
    [1, 1, 0, 0],
    [1, 1, 1, 1],
]


def test_hidden_mask_hand_checked():
    mask = M.hidden_mask(INPUT_DEGREES, HIDDEN)
    assert mask.dtype == torch.bool
    assert mask.shape == (4, 3)  # (out_features, in_features)
    assert mask.int().tolist() == EXPECTED_HIDDEN_MASK


def test_output_mask_hand_checked():
    mask = M.output_mask(HIDDEN, INPUT_DEGREES)
    assert mask.dtype == torch.bool
    assert mask.shape == (3, 4)
    assert mask.int().tolist() == EXPECTED_OUTPUT_MASK


def test_hidden_mask_is_inclusive_and_output_mask_is_strict_on_equal_degrees():
    equal = torch.tensor([2])
    assert M.hidden_mask(equal, equal).item() is True
    assert M.output_mask(equal, equal).item() is False


def test_masks_for_reversed_order_hand_checked():
    degrees = M.degrees_from_order(M.make_order(3, "reversed"))  # [3, 2, 1]
    assert M.hidden_mask(degrees, HIDDEN).int().tolist() == [[0, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 1]]
    assert M.output_mask(HIDDEN, degrees).int().tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_hidden_layer_of_degree_zero_sees_no_input():
    # with context, degree-0 units are allowed: they see only the context
    mask = M.hidden_mask(INPUT_DEGREES, torch.tensor([0, 1]))
    assert mask.int().tolist() == [[0, 0, 0], [1, 0, 0]]


def test_connectivity_hand_checked():
    first = M.hidden_mask(INPUT_DEGREES, HIDDEN)
    last = M.output_mask(HIDDEN, INPUT_DEGREES)
    reach = M.connectivity([first, last])
    assert reach.dtype == torch.bool
    # strictly lower triangular: output d sees exactly the inputs before it
    assert reach.int().tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert M.lost_dependencies(reach, INPUT_DEGREES, INPUT_DEGREES) == []


def test_connectivity_with_skip_adds_direct_paths():
    dead = torch.zeros(3, 3, dtype=torch.bool)  # the hidden path carries nothing
    skip = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    reach = M.connectivity([dead, dead], skip=skip)
    assert reach.int().tolist() == skip.int().tolist()


def test_connectivity_with_residual_passes_the_identity():
    first = torch.tensor([[1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    middle = torch.zeros(2, 2, dtype=torch.bool)  # h + f(h) with f seeing nothing
    last = torch.tensor([[1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    assert not M.connectivity([first, middle, last]).any()
    reach = M.connectivity([first, middle, last], residual=[False, True, False])
    assert reach.int().tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]


def test_connectivity_counts_paths_through_several_layers():
    # input 0 -> unit 0 -> unit 1 -> output 2; no other path
    a = torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 0], [1, 0]], dtype=torch.bool)
    c = torch.tensor([[0, 0], [0, 0], [0, 1]], dtype=torch.bool)
    assert M.connectivity([a, b, c]).int().tolist() == [[0, 0], [0, 0], [1, 0]]


def _reach_by_search(masks, residual):
    """Reference for connectivity: follow edges unit by unit (no matrix products)."""
    inputs = masks[0].shape[1]
    reach = []
    for source in range(inputs):
        active = {source}
        for mask, has_residual in zip(masks, residual):
            nxt = {i for i in range(mask.shape[0]) if any(bool(mask[i, j]) for j in active)}
            active = nxt | (active if has_residual else set())
        reach.append([i in active for i in range(masks[-1].shape[0])])
    return torch.tensor(reach, dtype=torch.bool).T


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_connectivity_equals_a_path_search(data):
    widths = data.draw(st.lists(st.integers(1, 6), min_size=2, max_size=5))
    density = data.draw(st.floats(0.1, 0.9))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    masks = [torch.rand(out, inp, generator=generator) < density for inp, out in zip(widths, widths[1:])]
    # a residual connection needs a square layer
    residual = [m.shape[0] == m.shape[1] and data.draw(st.booleans()) for m in masks]
    assert torch.equal(M.connectivity(masks, residual), _reach_by_search(masks, residual))


def test_lost_dependencies_hand_checked():
    reach = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    # output 2 may see inputs 0 and 1 but sees only 1: (input 0, output 2) is lost
    assert M.lost_dependencies(reach, INPUT_DEGREES, INPUT_DEGREES) == [(0, 2)]
    # in reversed order the same reach is forbidden, not lost; every allowed pair is lost
    reversed_degrees = torch.tensor([3, 2, 1])
    assert M.lost_dependencies(reach, reversed_degrees, reversed_degrees) == [(1, 0), (2, 0), (2, 1)]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_lost_dependencies_of_degrees_equal_those_of_the_mask_products(data):
    """The degree rule MADE uses when it is built finds exactly the pairs that the masks'
    path products lose, for any degrees: narrow layers, gaps, unsorted units, degree 0."""
    dim = data.draw(st.integers(1, 7))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    input_degrees = torch.randperm(dim, generator=generator) + 1
    widths = data.draw(st.lists(st.integers(1, 8), min_size=1, max_size=3))
    hidden = [torch.randint(0, dim + 1, (width,), generator=generator) for width in widths]
    chain = [M.hidden_mask(input_degrees, hidden[0])]
    chain += [M.hidden_mask(a, b) for a, b in zip(hidden, hidden[1:])]
    chain.append(M.output_mask(hidden[-1], input_degrees))
    reach = M.connectivity(chain)
    expected = M.lost_dependencies(reach, input_degrees, input_degrees)
    assert M.lost_dependencies_of_degrees(input_degrees, hidden) == expected


# ------------------------------------------------ the paper's uniform degrees, draw_structure


def test_uniform_degrees_are_iid_draws_sorted_or_not():
    g = torch.Generator().manual_seed(0)
    unsorted = M.hidden_degrees(2000, 1, 9, "uniform", g, sort=False)
    again = M.hidden_degrees(2000, 1, 9, "uniform", torch.Generator().manual_seed(0), sort=True)
    assert torch.equal(unsorted.sort().values, again)  # the same draws, sorted
    assert unsorted.tolist() != again.tolist()  # unsorted: unit k is not tied to a quantile
    assert int(unsorted.min()) >= 1 and int(unsorted.max()) <= 9
    counts = torch.bincount(unsorted, minlength=10)[1:].double()
    assert (counts - 2000 / 9).abs().max() < 5 * (2000 / 9) ** 0.5  # uniform on 1..9


def test_uniform_degrees_may_leave_a_degree_without_a_unit():
    """The paper's draw as it is: no unit per degree is forced (unlike "random")."""
    draws = [set(M.hidden_degrees(5, 1, 5, "uniform", torch.Generator().manual_seed(s)).tolist()) for s in range(20)]
    assert any(len(d) < 5 for d in draws)


def test_draw_structure_is_reproducible_and_keeps_a_given_order():
    a = M.draw_structure(6, [10, 10], torch.Generator().manual_seed(3), sort=False)
    b = M.draw_structure(6, [10, 10], torch.Generator().manual_seed(3), sort=False)
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    kept = M.draw_structure(6, [10], torch.Generator().manual_seed(4), order=[5, 4, 3, 2, 1, 0])
    assert kept[0].tolist() == [6, 5, 4, 3, 2, 1]
    _, hidden = M.draw_structure(6, [10, 10], torch.Generator().manual_seed(5))
    assert int(hidden[1].min()) >= int(hidden[0].min())  # a unit below the layer below would see nothing
    _, residual = M.draw_structure(6, [10, 10], torch.Generator().manual_seed(5), residual=True)
    assert torch.equal(residual[0], residual[1])
