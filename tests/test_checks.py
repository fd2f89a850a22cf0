"""check_autoregressive: passes good networks, names exactly the forbidden and missing
dependencies of bad ones, works on Pyro's AutoRegressiveNN, and leaves the user's
network alone."""

import pytest
import torch
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn

from flowkit import MADE, AutoregressiveReport, LostDependencyWarning, check_autoregressive
from flowkit.checks import Dependency


class TriangularNet(nn.Module):
    """A linear autoregressive network with Pyro's conventions, written out by hand:
    output i = sum_j W[i, j] x_j with W[i, j] != 0 exactly when input j comes before
    input i in ``permutation``. ``leaks`` adds forbidden (input, output) entries and
    ``cuts`` removes allowed ones, so the right report is known exactly."""

    def __init__(self, permutation, leaks=(), cuts=(), leak_size=0.5):
        super().__init__()
        D = len(permutation)
        self.register_buffer("permutation", torch.tensor(permutation))
        rank = torch.empty(D, dtype=torch.long)
        rank[self.permutation] = torch.arange(D)
        weight = (rank[:, None] > rank[None, :]).float() * (1.0 + torch.rand(D, D))
        for j, i in leaks:
            weight[i, j] = leak_size
        for j, i in cuts:
            weight[i, j] = 0.0
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return torch.tanh(x @ self.weight.T)


def deps(report, method=None, kind="forbidden"):
    """The (input, output, mask_index) triples of a report, for one method or all."""
    return {(d.input, d.output, d.mask_index) for d in getattr(report, kind) if method in (None, d.method)}


# ------------------------------------------------------------------- good networks


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(input_dim=4, hidden_dims=[8, 8]),
        dict(input_dim=6, hidden_dims=[5, 5], order="random", num_masks=3, residual=True),
        dict(input_dim=5, hidden_dims=[7], param_dims=[1, 3], order=[4, 0, 3, 1, 2], skip_connections=True),
        dict(input_dim=5, hidden_dims=[6, 9], context_dim=2, order="reversed", degrees="random", num_masks=2),
        dict(input_dim=1, hidden_dims=[3], param_dims=[2]),
    ],
)
def test_good_mades_are_ok_for_every_mask_set(kwargs):
    made = MADE(**kwargs, activation="tanh", seed=0)
    report = check_autoregressive(made)
    assert isinstance(report, AutoregressiveReport)
    assert report.ok and report.autoregressive and report.complete
    assert report.forbidden == [] and report.missing == []
    assert report.structure_checked
    assert report.input_dim == kwargs["input_dim"]
    assert report.orders == [made.orders[index].tolist() for index in range(made.num_masks)]


def test_good_made_with_a_given_context():
    made = MADE(4, [8], context_dim=3, activation="tanh", seed=0)
    assert check_autoregressive(made, context=torch.randn(3)).ok
    assert check_autoregressive(made, num_points=1, seed=5).ok


def test_good_hand_written_network_is_ok_by_jacobian_only():
    report = check_autoregressive(TriangularNet([2, 0, 3, 1]))
    assert report.ok
    assert not report.structure_checked
    assert report.orders == [[2, 0, 3, 1]]


# -------------------------------------------------------------------- bad networks


def test_leaking_network_reports_exactly_the_forbidden_pair():
    # input 3 comes third and input 1 last: output 3 must not see input 1, nor itself
    net = TriangularNet([2, 0, 3, 1], leaks=[(1, 3), (0, 0)])
    report = check_autoregressive(net)
    assert not report.autoregressive and not report.ok
    assert report.complete
    assert sorted(report.forbidden) == [Dependency(0, 0, 0, "jacobian"), Dependency(1, 3, 0, "jacobian")]


def test_a_tiny_leak_is_still_forbidden():
    # exactness matters: any nonzero derivative on a forbidden pair breaks the flow's inverse
    report = check_autoregressive(TriangularNet([0, 1, 2], leaks=[(2, 0)], leak_size=1e-9))
    assert report.forbidden == [Dependency(2, 0, 0, "jacobian")]


def test_cut_network_reports_exactly_the_missing_pair():
    net = TriangularNet([2, 0, 3, 1], cuts=[(2, 1)])  # input 2 comes first, output 1 last
    report = check_autoregressive(net)
    assert report.autoregressive and not report.complete and not report.ok
    assert report.missing == [Dependency(2, 1, 0, "jacobian")]


def _first_unit_with_degree(made, degree, layer=1):
    return int(torch.nonzero(made.degrees()[layer] == degree)[0])


def test_tampered_input_mask_is_reported_by_masks_and_jacobian():
    """D = 2, natural order: the hidden units all have degree 1, so they may see input 0
    only, and only output 1 sees them. Letting one unit see input 1 makes output 1
    depend on itself: exactly one forbidden pair, (input 1, output 1)."""
    made = MADE(2, [4], activation="tanh", seed=0)
    assert check_autoregressive(made).ok
    with torch.no_grad():
        made.input_layer.mask[0, 1] = True
    report = check_autoregressive(made)
    assert not report.autoregressive
    assert deps(report) == {(1, 1, 0)}
    assert deps(report, "masks") == {(1, 1, 0)}, "the structural check reads masks the layers do not use"
    assert deps(report, "jacobian") == {(1, 1, 0)}, "the Jacobian check must run the network as given"


def test_tampered_output_mask_is_reported_by_masks_and_jacobian():
    """D = 4, natural order, one layer of degrees [1, 1, 2, 2, 3, 3]. Output 2 (degree 3)
    may see units of degree < 3; opening it to a degree-3 unit (which sees inputs 0, 1, 2)
    adds exactly one forbidden pair, (input 2, output 2)."""
    made = MADE(4, [6], activation="tanh", seed=0)
    unit = _first_unit_with_degree(made, 3)
    with torch.no_grad():
        made.output_layer.mask[2, unit] = True
    report = check_autoregressive(made)
    assert deps(report, "masks") == {(2, 2, 0)}
    assert deps(report, "jacobian") == {(2, 2, 0)}


def test_narrow_made_reports_its_missing_dependencies():
    with pytest.warns(LostDependencyWarning):
        made = MADE(6, [2, 2], activation="tanh", order="random", num_masks=2, seed=0)
    lost = {(j, i, index) for index in range(2) for j, i in made.lost_dependencies(index)}
    assert lost, "this MADE is too narrow to keep every dependency"
    report = check_autoregressive(made)
    assert report.autoregressive and not report.complete and not report.ok
    assert deps(report, "masks", "missing") == lost
    assert deps(report, "jacobian", "missing") == lost  # tanh: no path, no derivative, and vice versa
    assert str(report).count("missing:") == min(len(report.missing), 10)


# --------------------------------------------------------------------------- Pyro


def test_pyro_autoregressive_nn_is_checked_by_jacobian():
    permutation = torch.tensor([2, 0, 3, 1])
    net = AutoRegressiveNN(4, [16, 16], param_dims=[1, 1], permutation=permutation, nonlinearity=nn.Tanh())
    report = check_autoregressive(net)
    assert not report.structure_checked
    assert report.ok
    assert report.orders == [permutation.tolist()]
    assert "Jacobians" in str(report) and "masks" not in str(report)


@pytest.mark.parametrize("param_dims", [[1], [3], [1, 3]])
def test_pyro_layouts_are_all_understood(param_dims):
    net = AutoRegressiveNN(3, [8], param_dims=param_dims, nonlinearity=nn.Tanh())
    assert check_autoregressive(net).ok


def test_pyro_conditional_autoregressive_nn():
    net = ConditionalAutoRegressiveNN(4, 2, [16], param_dims=[1, 1], nonlinearity=nn.Tanh())
    assert check_autoregressive(net).ok
    assert check_autoregressive(net, context=torch.randn(2)).ok


# --------------------------------------------------------------------------- report


def test_report_string_is_readable():
    good = str(check_autoregressive(MADE(3, [4], activation="tanh", seed=0)))
    assert "D=3" in good and "autoregressive: yes" in good and "0 forbidden" in good
    bad = str(check_autoregressive(TriangularNet([0, 1, 2], leaks=[(2, 1)])))
    assert "autoregressive: NO" in bad
    assert "1 forbidden" in bad
    assert "forbidden: output 1 <- input 2 (mask set 0, by jacobian)" in bad


def test_report_string_truncates_long_lists():
    leaks = [(j, i) for i in range(12) for j in range(i, 12)]  # every forbidden pair: 78
    report = check_autoregressive(TriangularNet(list(range(12)), leaks=leaks))
    assert len(report.forbidden) == 78
    assert "... and 68 more forbidden" in str(report)


# ------------------------------------------------------------------ side effects


def test_check_does_not_modify_the_network():
    made = MADE(4, [8, 8], param_dims=[1, 1], order="random", num_masks=3, seed=0)
    made.set_mask(1)
    x = torch.randn(5, 4)
    before = made(x)
    state = {key: value.clone() for key, value in made.state_dict().items()}
    check_autoregressive(made)
    assert int(made.mask_index) == 1
    assert made.input_layer.weight.dtype == torch.float32
    assert all(torch.equal(state[key], value) for key, value in made.state_dict().items())
    after = made(x)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_check_does_not_touch_the_global_rng():
    made = MADE(4, [8], seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_autoregressive(made)
    assert torch.equal(torch.rand(3), expected)


# -------------------------------------------------------------------- bad inputs


def test_check_rejects_a_non_module():
    with pytest.raises(TypeError, match="net"):
        check_autoregressive(lambda x: x)


def test_check_rejects_a_module_without_permutation():
    with pytest.raises(TypeError, match="net.*permutation"):
        check_autoregressive(nn.Linear(3, 3))


@pytest.mark.parametrize("num_points", [0, -2, 1.5, True])
def test_check_rejects_bad_num_points(num_points):
    with pytest.raises(ValueError, match="num_points"):
        check_autoregressive(MADE(3, [4], seed=0), num_points=num_points)
