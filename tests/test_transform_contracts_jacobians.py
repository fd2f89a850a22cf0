"""Contract tests of every public transform's Jacobian: the log-determinant of both
directions (and of a pair, cached or not) against ``torch.autograd.functional.jacobian``,
and the Jacobian's structure: rows of a batch independent, and triangular in the MADE's
order for the autoregressive steps, diagonal for the normalisation layers, a permutation
matrix for ``Permute``.

The entries are those of ``CASES`` (transform_contracts.py); float64, tolerance 1e-10.
"""

import torch
from torch.autograd.functional import jacobian

from transform_contracts import CASES, D, generator, over, transform_of

TOL = dict(atol=1e-10, rtol=1e-10)
EVERY_CASE = over(CASES)
DIRECTIONS = ("forward_and_log_det", "inverse_and_log_det")


def points(seed):
    """Three points of the data's scale, the last one five times farther out."""
    x = torch.randn(3, D, generator=generator(seed), dtype=torch.float64)
    x[2] *= 5.0
    return x


def jacobians(transform, direction, values):
    """``(rows, D, D)``: the Jacobian of ``direction`` at each row of ``values``, from one
    vectorised autograd Jacobian of the whole batch, whose rows must be independent."""
    full = jacobian(lambda v: getattr(transform, direction)(v)[0], values, vectorize=True)  # (rows, D, rows, D)
    rows = torch.arange(len(values))
    blocks = full[rows, :, rows]
    others = full.clone()
    others[rows, :, rows] = 0.0
    assert torch.equal(others, torch.zeros_like(others)), f"{direction}: rows of a batch depend on each other"
    return blocks


def log_abs_det(matrices):
    return torch.linalg.slogdet(matrices)[1]


@EVERY_CASE
def test_log_det_of_both_directions_and_of_a_pair_matches_autograd(case):
    transform = transform_of(case, case.build(D, 0))
    x, y = points(1), points(2)
    expected = log_abs_det(jacobians(transform, "forward_and_log_det", x))
    torch.testing.assert_close(transform.forward_and_log_det(x)[1], expected, **TOL)
    y_of_x = transform(x)
    torch.testing.assert_close(transform.log_abs_det_jacobian(x, y_of_x), expected, **TOL)  # the cached pair
    torch.testing.assert_close(transform.log_abs_det_jacobian(x.clone(), y_of_x.clone()), expected, **TOL)
    expected = -log_abs_det(jacobians(transform, "inverse_and_log_det", y))
    torch.testing.assert_close(transform.inverse_and_log_det(y)[1], expected, **TOL)
    x_of_y = transform.inv(y)
    torch.testing.assert_close(transform.log_abs_det_jacobian(x_of_y, y), expected, **TOL)  # the cached pair
    torch.testing.assert_close(transform.log_abs_det_jacobian(x_of_y.clone(), y.clone()), expected, **TOL)


def earlier_inputs(transform):
    """``[i, j]``: whether input ``j`` comes before input ``i`` in the MADE's order."""
    rank = torch.empty(D, dtype=torch.long)
    rank[transform.made.permutation] = torch.arange(D)
    return rank[None, :] < rank[:, None]


@over(name for name, case in CASES.items() if case.structure == "autoregressive")
def test_jacobian_is_triangular_in_the_made_order(case):
    transform = transform_of(case, case.build(D, 0))
    earlier = earlier_inputs(transform)
    later_or_same = ~earlier & ~torch.eye(D, dtype=torch.bool)
    for direction in DIRECTIONS:
        matrices = jacobians(transform, direction, points(1))
        assert (matrices[:, later_or_same] == 0).all(), direction
        assert (matrices[:, earlier].abs() > 1e-6).any(), direction  # it does depend on earlier inputs
        assert (matrices.diagonal(dim1=-2, dim2=-1) > 0).all(), direction  # increasing in each input


@over(name for name, case in CASES.items() if case.structure == "diagonal")
def test_jacobian_is_diagonal_and_positive(case):
    transform = transform_of(case, case.build(D, 0))
    for direction in DIRECTIONS:
        matrices = jacobians(transform, direction, points(1))
        diagonal = matrices.diagonal(dim1=-2, dim2=-1)
        assert torch.equal(matrices, torch.diag_embed(diagonal)), direction
        assert (diagonal > 0).all(), direction


@over(name for name, case in CASES.items() if case.structure == "permutation")
def test_jacobian_is_the_permutation_matrix(case):
    transform = transform_of(case, case.build(D, 0))
    expected = torch.eye(D, dtype=torch.float64)[transform.permutation]
    assert not torch.equal(expected, torch.eye(D, dtype=torch.float64))
    for direction, matrix in zip(DIRECTIONS, (expected, expected.T)):
        assert torch.equal(jacobians(transform, direction, points(1)), matrix.expand(3, D, D)), direction
