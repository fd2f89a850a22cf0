"""The transforms' one-pair cache never answers what computing afresh would not.

Each test fills the cache (through ``t(x)`` or ``t.inv(y)``), changes the transform's state
in one way a user can, then asks all three of Pyro's questions about the cached pair
(``t(x)``, ``t.inv(y)``, ``t.log_abs_det_jacobian(x, y)``) and compares each answer with
the uncached computation on copies of the tensors. Every change is checked to matter
(some answer moves), so a cache that ignored it would fail. Transforms run in float64 on
perturbed weights, for MAF, IAF and their conditional variants.
"""

import copy
import math

import pyro.distributions as dist
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import flowkit
from flowkit.nn import MADE, MADEConfig
from flowkit.transforms import BatchNorm, affine_iaf, affine_maf, conditional_affine_iaf, conditional_affine_maf
from flowkit.transforms.cache import _same_values
from helpers import perturb_

TOL = dict(atol=1e-10, rtol=1e-10)
D, C = 3, 2
BUILDERS = {"maf": flowkit.maf, "iaf": flowkit.iaf}


# ---------------------------------------------------------------------------- helpers
def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def make_transform(kind, seed=0):
    """A float64 transform far from the identity; two mask sets, so set_mask changes it.
    Conditional kinds are conditioned on a context of their own."""
    options = dict(conditioner=MADEConfig(num_masks=2, order="random"), seed=seed)
    if kind.startswith("conditional"):
        builder = {"conditional_maf": conditional_affine_maf, "conditional_iaf": conditional_affine_iaf}[kind]
        module = perturb_(builder(D, C, [16], **options).double(), seed=seed)
        return module.condition(randn(4, C, seed=5))
    builder = {"maf": affine_maf, "iaf": affine_iaf}[kind]
    return perturb_(builder(D, [16], **options).double(), seed=seed)


def step(optimizer_class, **options):
    def change(t, x, y):
        optimizer = optimizer_class(t.parameters(), lr=0.1, **options)
        for p in t.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()

    return change


def data_add(t, x, y):
    t.made.output_layer.bias.data.add_(0.5)  # as Polyak averaging code does


def data_assign(t, x, y):
    weight = t.made.input_layer.weight
    weight.data = weight.data * 1.5


def vector_to_parameters_once(t, x, y):
    vector_to_parameters(parameters_to_vector(t.parameters()) * 1.2, t.parameters())


def no_grad_in_place(t, x, y):
    with torch.no_grad():
        t.made.output_layer.weight.mul_(1.5)


def load_state_dict(t, x, y):
    other = perturb_(copy.deepcopy(t.made), seed=7)
    t.made.load_state_dict(other.state_dict())


def set_mask(t, x, y):
    t.made.set_mask(1)


def context_in_place(t, x, y):
    t.context.add_(1.0)


def context_data_write(t, x, y):
    t.context.data.mul_(2.0)


def x_in_place(t, x, y):
    x.add_(1.0)


def y_in_place(t, x, y):
    y.mul_(3.0)


CHANGES = {
    "sgd": step(torch.optim.SGD),
    "adam_foreach_false": step(torch.optim.Adam, foreach=False),
    "adam_foreach": step(torch.optim.Adam, foreach=True),
    "adam_fused": step(torch.optim.Adam, fused=True),
    "data_add_": data_add,
    "data_assign": data_assign,
    "vector_to_parameters": vector_to_parameters_once,
    "no_grad_in_place": no_grad_in_place,
    "load_state_dict": load_state_dict,
    "set_mask": set_mask,
    "x_in_place": x_in_place,
    "y_in_place": y_in_place,
}
CONDITIONAL_CHANGES = {"context_in_place": context_in_place, "context_data_write": context_data_write}
KINDS = ["maf", "iaf", "conditional_maf", "conditional_iaf"]
CASES = [(kind, change) for kind in KINDS for change in CHANGES] + [
    (kind, change) for kind in KINDS if kind.startswith("conditional") for change in CONDITIONAL_CHANGES
]


def answers(t, x, y):
    """Pyro's three questions about the pair ``(x, y)``: through the cache when it holds."""
    return t(x), t.inv(y), t.log_abs_det_jacobian(x, y)


def fresh_answers(t, x, y):
    """The same three, computed afresh (copies of x and y: the cache cannot answer)."""
    return t.forward_and_log_det(x.clone())[0], t.inverse_and_log_det(y.clone())[0], t.log_abs_det_jacobian(
        x.clone(), y.clone()
    )


def filled(t, direction):
    """``(x, y)``, cached by a forward pass from noise or an inverse pass from data."""
    if direction == "forward":
        x = randn(4, D, seed=1)
        return x, t(x)
    y = t.forward_and_log_det(randn(4, D, seed=2))[0]
    return t.inv(y), y


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("kind, change", CASES, ids=[f"{k}-{c}" for k, c in CASES])
def test_no_stale_answer_after_a_change(kind, change, direction):
    t = make_transform(kind)
    x, y = filled(t, direction)
    before = [a.clone() for a in fresh_answers(t, x, y)]
    {**CHANGES, **CONDITIONAL_CHANGES}[change](t, x, y)
    expected = fresh_answers(t, x, y)
    assert any((e - b).abs().max() > 1e-3 for e, b in zip(expected, before)), "the change changed nothing"
    for got, want, name in zip(answers(t, x, y), expected, ["t(x)", "t.inv(y)", "log_abs_det_jacobian"]):
        torch.testing.assert_close(got, want, **TOL, msg=f"{name} after {change}")


@pytest.mark.parametrize("kind", KINDS)
def test_no_stale_answer_when_the_parameters_alias_a_vector_written_later(kind):
    # vector_to_parameters makes the parameters views of the vector: writing to it later
    # moves no version counter of theirs.
    t = make_transform(kind)
    vector = parameters_to_vector(t.parameters())
    vector_to_parameters(vector, t.parameters())
    x = randn(4, D, seed=1)
    y = t(x)
    before = t.log_abs_det_jacobian(x.clone(), y.clone())
    vector.mul_(1.2)
    expected = fresh_answers(t, x, y)
    assert (expected[2] - before).abs().max() > 1e-3
    for got, want in zip(answers(t, x, y), expected):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("kind", KINDS)
def test_unchanged_pair_is_answered_from_the_cache(kind, direction, monkeypatch):
    t = make_transform(kind)
    x, y = filled(t, direction)
    log_det = t.log_abs_det_jacobian(x, y)
    passes = []
    original = MADE.raw_output
    monkeypatch.setattr(MADE, "raw_output", lambda *args, **kwargs: passes.append(1) or original(*args, **kwargs))
    assert t(x) is y and t.inv(y) is x and t.log_abs_det_jacobian(x, y) is log_det
    assert not passes
    with torch.no_grad():  # reading under no_grad may use a pair computed with gradients
        assert t.log_abs_det_jacobian(x, y) is log_det


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_train_eval_switch_of_a_flow_with_batch_norm(kind):
    """Through Pyro's TransformedDistribution: scoring in training mode (batch
    statistics), then the same tensor in eval mode (running averages). The running
    averages do not move in between, so only the mode tells the batch norm's pair apart."""
    flow = BUILDERS[kind](D, num_transforms=2, hidden_dims=[16], batch_norm=True, seed=0).double()
    y = 2.0 + randn(64, D, seed=8)
    flow.train()
    d = flow()
    d.log_prob(y)
    flow.eval()
    torch.testing.assert_close(d.log_prob(y), flow.log_prob(y.clone()), **TOL)


def test_batch_norm_running_statistics_written_through_data():
    bn = BatchNorm(D).double().eval()
    y = randn(8, D, seed=3)
    x = bn.inv(y)
    log_det = bn.log_abs_det_jacobian(x, y).clone()
    bn.running_var.data.mul_(4.0)
    expected = bn.log_abs_det_jacobian(x.clone(), y.clone())
    torch.testing.assert_close(expected, log_det + D * 0.5 * math.log(4.0), atol=1e-4, rtol=0)  # eps aside
    torch.testing.assert_close(bn.log_abs_det_jacobian(x, y), expected, **TOL)
    torch.testing.assert_close(bn.inv(y), bn.inverse_and_log_det(y.clone())[0], **TOL)


def test_converted_dtype_is_not_answered_from_the_cache():
    t = affine_iaf(D, [16], seed=0)
    x = torch.randn(4, D)
    y = t(x)
    t.double()
    with pytest.raises(TypeError, match="x: dtype torch.float32 does not match the model's torch.float64"):
        t(x)
    with pytest.raises(TypeError, match="y: dtype torch.float32"):
        t.inv(y)


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_log_prob_of_a_sample_carries_the_score_function_gradient(kind):
    """REINFORCE: ``d.sample()`` runs without gradients, so the pair it caches has no
    graph; ``d.log_prob`` of that sample must still be differentiable, like a fresh one."""
    flow = BUILDERS[kind](D, num_transforms=2, hidden_dims=[16], seed=0).double()
    perturb_(flow)
    d = flow()
    y = d.sample((8,))
    log_q = d.log_prob(y)
    assert log_q.requires_grad
    grads = torch.autograd.grad(log_q.sum(), list(flow.parameters()))
    fresh = torch.autograd.grad(flow.log_prob(y.clone()).sum(), list(flow.parameters()))
    for got, want in zip(grads, fresh):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-8)
    assert any(g.abs().sum() > 0 for g in grads)


def test_sample_then_log_prob_without_gradients_is_answered_from_the_cache(monkeypatch):
    flow = flowkit.iaf(D, num_transforms=2, hidden_dims=[16], seed=0)
    d = flow()
    passes = []
    original = MADE.raw_output
    monkeypatch.setattr(MADE, "raw_output", lambda *args, **kwargs: passes.append(1) or original(*args, **kwargs))
    with torch.no_grad():
        y = d.sample((8,))
        assert len(passes) == 2
        log_q = d.log_prob(y)
    assert len(passes) == 2  # evaluation needs no gradient: the sample's pass answers
    torch.testing.assert_close(log_q, flow.log_prob(y.clone()), atol=1e-5, rtol=1e-5)


def test_transformed_distribution_after_a_fused_adam_step():
    """The issue's reproduction: a fused Adam step moved no version counter."""
    t = affine_iaf(D, hidden_dims=[16], seed=0)
    td = dist.TransformedDistribution(dist.Normal(torch.zeros(D), 1.0).to_event(1), [t])
    y = td.rsample((4,))
    lp0 = td.log_prob(y)
    optimizer = torch.optim.Adam(t.parameters(), lr=0.1, fused=True)
    (-lp0.mean()).backward()
    optimizer.step()
    again = td.log_prob(y)
    assert (again - lp0).abs().max() > 1e-3
    torch.testing.assert_close(again, td.log_prob(y.detach().clone()), atol=1e-5, rtol=1e-5)


def test_a_pair_computed_in_inference_mode_is_not_cached():
    """Inference tensors keep no version counter, so their in-place changes could not be seen."""
    t = make_transform("iaf")
    x = randn(4, D, seed=1)
    with torch.inference_mode():
        y = t(x)
        x.add_(1.0)
    torch.testing.assert_close(t(x), t.forward_and_log_det(x.clone())[0], **TOL)


def test_copies_of_another_dtype_or_device_are_not_the_same_values():
    # torch.equal alone calls a float32 and a float64 copy of a value equal
    assert not _same_values([torch.ones(2)], [torch.ones(2, dtype=torch.float64)])
    assert not _same_values([torch.ones(2)], [torch.ones(2, device="meta")])
    assert _same_values([torch.ones(2), torch.tensor([True])], [torch.ones(2), torch.tensor([True])])


@pytest.mark.parametrize("kind", KINDS)
def test_parameters_unfrozen_after_the_pair_was_computed(kind):
    """A pair computed with frozen parameters has no graph for them: after
    requires_grad_(True), the log-determinant is computed again and has one."""
    t = make_transform(kind)
    t.requires_grad_(False)
    x, y = filled(t, "forward")
    t.requires_grad_(True)
    log_det = t.log_abs_det_jacobian(x, y)
    assert log_det.requires_grad
    torch.testing.assert_close(log_det, t.log_abs_det_jacobian(x.clone(), y.clone()), **TOL)


def test_x_that_requires_grad_after_the_pair_was_computed():
    t = make_transform("iaf")
    x = randn(4, D, seed=1)
    y = t(x)
    x.requires_grad_(True)  # moves no version counter
    (gradient,) = torch.autograd.grad(t.log_abs_det_jacobian(x, y).sum(), x)
    assert gradient.abs().sum() > 0
