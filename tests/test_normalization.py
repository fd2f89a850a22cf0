"""Tests for the normalisation layers BatchNorm and ActNorm.

In Pyro's convention the forward direction maps noise to data, so the *inverse* is the
normalising direction (what ``log_prob`` applies to data).
"""

import pickle

import pytest
import torch

from flowkit.transforms import ActNorm, BatchNorm, Permute

TOL = dict(atol=1e-10, rtol=1e-10)


def data(n=256, d=3, seed=0):
    """Float64 data with per-dimension means 1, -2, 3 and standard deviations 2, 0.5, 4."""
    generator = torch.Generator().manual_seed(seed)
    loc = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)[:d]
    scale = torch.tensor([2.0, 0.5, 4.0], dtype=torch.float64)[:d]
    return loc + scale * torch.randn(n, d, generator=generator, dtype=torch.float64)


def set_params_(layer, seed=1):
    """Non-trivial learned parameters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return layer


# ------------------------------------------------------------------------- BatchNorm
def test_batchnorm_training_inverse_normalises_the_batch():
    bn = BatchNorm(3).double()  # log_gamma = beta = 0 at construction
    y = data()
    x = bn.inv(y)
    torch.testing.assert_close(x.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    # unbiased variance, up to the eps in the denominator
    torch.testing.assert_close(x.var(0), torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)


def test_batchnorm_training_uses_gamma_and_beta():
    bn = set_params_(BatchNorm(3).double())
    y = data()
    x = bn.inv(y)
    torch.testing.assert_close(x.mean(0), bn.beta.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(x.std(0), bn.log_gamma.detach().exp(), atol=1e-4, rtol=1e-4)


def test_batchnorm_normalises_over_every_batch_dimension():
    bn = BatchNorm(3).double()
    x = bn.inv(data(n=60).reshape(3, 20, 3))
    torch.testing.assert_close(x.reshape(-1, 3).mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)


def test_batchnorm_running_averages_update_in_training_only():
    bn = BatchNorm(3, momentum=0.1).double()
    y = data()
    bn.inv(y)
    torch.testing.assert_close(bn.running_mean, 0.1 * y.mean(0), **TOL)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * y.var(0), **TOL)
    y2 = data(seed=5)
    bn.inv(y2)
    torch.testing.assert_close(bn.running_mean, 0.9 * 0.1 * y.mean(0) + 0.1 * y2.mean(0), **TOL)
    # eval mode and sampling (forward) leave them alone
    before = bn.running_mean.clone(), bn.running_var.clone()
    bn(torch.randn(8, 3, dtype=torch.float64))
    bn.eval()
    bn.inv(data(seed=6))
    torch.testing.assert_close(bn.running_mean, before[0], atol=0, rtol=0)
    torch.testing.assert_close(bn.running_var, before[1], atol=0, rtol=0)


def test_batchnorm_running_averages_carry_no_gradient():
    bn = BatchNorm(3)
    bn.inv(torch.randn(16, 3, requires_grad=True))
    assert not bn.running_mean.requires_grad and not bn.running_var.requires_grad


def _trained_batchnorm():
    """A BatchNorm with non-trivial parameters and running averages, in eval mode."""
    bn = set_params_(BatchNorm(3).double())
    for seed in range(5):
        bn.inv(data(seed=seed))
    return bn.eval()


def test_batchnorm_eval_uses_running_averages_and_round_trips():
    bn = _trained_batchnorm()
    y = data(n=16, seed=10)
    x = bn.inv(y)
    expected = (y - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.log_gamma.exp() + bn.beta
    torch.testing.assert_close(x, expected.detach(), **TOL)
    # eval output of one row does not depend on the rest of the batch
    torch.testing.assert_close(bn.inv(y[:1].clone()), x[:1], **TOL)
    other = _trained_batchnorm()  # a second object: no cache
    torch.testing.assert_close(other(x.clone()), y, **TOL)
    torch.testing.assert_close(other.inv(other(x.clone())), x, **TOL)


def test_batchnorm_eval_after_training_on_the_same_tensor_uses_running_averages():
    # Scoring a batch in training mode and then the same tensor in eval mode (a common
    # "evaluate the training loss" pattern) must give the eval-mode result, not the
    # cached training-mode one.
    bn = _trained_batchnorm().train()
    y = data(n=16, seed=10)
    bn.inv(y)  # training mode: batch statistics (and an update of the running averages)
    bn.eval()
    x = bn.inv(y)
    expected = (y - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.log_gamma.exp() + bn.beta
    torch.testing.assert_close(x, expected.detach(), **TOL)
    torch.testing.assert_close(bn.log_abs_det_jacobian(x, y), bn.log_abs_det_jacobian(x.clone(), y.clone()), **TOL)


def test_batchnorm_training_log_det_uses_the_batch_statistics():
    # d x / d y per row, holding the batch statistics fixed: exp(log_gamma) / sqrt(v + eps)
    bn = set_params_(BatchNorm(3).double())
    y = data()
    x = bn.inv(y)
    expected = (0.5 * (y.var(0) + bn.eps).log() - bn.log_gamma).sum().expand(256)
    torch.testing.assert_close(bn.log_abs_det_jacobian(x, y), expected.detach(), **TOL)


def test_batchnorm_state_dict_round_trip():
    bn = _trained_batchnorm()
    state = bn.state_dict()
    assert {"running_mean", "running_var", "log_gamma", "beta"} <= set(state)
    fresh = BatchNorm(3).double()
    fresh.load_state_dict(state)
    fresh.eval()
    y = data(n=8, seed=11)
    torch.testing.assert_close(fresh.inv(y), bn.inv(y.clone()), **TOL)
    restored = pickle.loads(pickle.dumps(bn))
    torch.testing.assert_close(restored.inv(y.clone()), bn.inv(y.clone()), **TOL)


def test_batchnorm_training_needs_two_rows():
    with pytest.raises(ValueError, match="y"):
        BatchNorm(3).inv(torch.randn(1, 3))


@pytest.mark.parametrize("layer", [BatchNorm, ActNorm])
@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_input_dim_raises(layer, bad):
    with pytest.raises(ValueError, match="input_dim"):
        layer(bad)


# --------------------------------------------------------------------------- ActNorm
def test_actnorm_initialises_from_the_first_training_batch():
    act = ActNorm(3).double()
    assert not bool(act.initialized)
    y = data()
    x = act.inv(y)
    torch.testing.assert_close(x.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(3, dtype=torch.float64), atol=1e-10, rtol=0)
    assert bool(act.initialized)
    torch.testing.assert_close(act.shift.detach(), y.mean(0), **TOL)


def test_actnorm_does_not_reinitialise():
    act = ActNorm(3).double()
    act.inv(data())
    shift, log_scale = act.shift.detach().clone(), act.log_scale.detach().clone()
    other = 10.0 + 5.0 * data(seed=3)
    x = act.inv(other)
    torch.testing.assert_close(act.shift.detach(), shift, atol=0, rtol=0)
    torch.testing.assert_close(act.log_scale.detach(), log_scale, atol=0, rtol=0)
    torch.testing.assert_close(x, (other - shift) / log_scale.exp(), **TOL)


def test_actnorm_is_identity_and_uninitialised_before_training_data():
    act = ActNorm(3).double()
    y = data(n=8)
    torch.testing.assert_close(act(y), y, atol=0, rtol=0)  # sampling does not initialise
    assert not bool(act.initialized)
    act.eval()
    torch.testing.assert_close(act.inv(y.clone()), y, atol=0, rtol=0)  # nor does eval mode
    assert not bool(act.initialized)


def test_actnorm_state_dict_keys_do_not_change_with_use():
    # the state_dict of a used layer must load into a fresh one (and into fresh flows)
    act = ActNorm(3)
    keys = set(act.state_dict())
    act(act.inv(torch.randn(8, 3)))  # data-dependent init, then sampling
    assert set(act.state_dict()) == keys == {"shift", "log_scale", "initialized"}
    assert [name for name, _ in act.named_parameters(remove_duplicate=False)] == ["shift", "log_scale"]


def test_actnorm_initialized_flag_travels_in_state_dict():
    act = ActNorm(3).double()
    act.inv(data())
    state = act.state_dict()
    assert "initialized" in state and bool(state["initialized"])
    fresh = ActNorm(3).double()
    fresh.load_state_dict(state)
    assert bool(fresh.initialized)
    y = 10.0 + 5.0 * data(seed=3)
    # loaded, so training-mode scoring of another batch does not re-initialise
    torch.testing.assert_close(fresh.inv(y), act.inv(y.clone()), **TOL)
    torch.testing.assert_close(fresh.shift, act.shift, atol=0, rtol=0)


def test_actnorm_initialisation_keeps_parameters_trainable():
    act = ActNorm(3)
    y = torch.randn(32, 3) * 2 + 1
    x = act.inv(y)
    (x.sum() - act.log_abs_det_jacobian(x, y).sum()).backward()
    assert act.shift.grad is not None and act.shift.grad.abs().sum() > 0
    assert act.log_scale.grad is not None and act.log_scale.grad.abs().sum() > 0


def test_actnorm_initialisation_needs_two_rows():
    with pytest.raises(ValueError, match="y"):
        ActNorm(3).inv(torch.randn(1, 3))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("make", [lambda: BatchNorm(3), lambda: ActNorm(3), lambda: Permute([2, 0, 1])])
def test_one_call_directions_agree_with_pyro_interface(make, training):
    """forward_and_log_det / inverse_and_log_det (what Flow calls) give what t(x), t.inv(y)
    and t.log_abs_det_jacobian give, with the same side effects (statistics, initialisation)."""
    y = 1.0 + 2.0 * data(seed=4)
    direct, pyro_side = make().double().train(training), make().double().train(training)
    x, log_det = direct.inverse_and_log_det(y)
    x_pyro = pyro_side.inv(y)
    torch.testing.assert_close(x, x_pyro, **TOL)
    torch.testing.assert_close(log_det, pyro_side.log_abs_det_jacobian(x_pyro, y), **TOL)
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), pyro_side.state_dict().values()))
    direct.eval()
    pyro_side.eval()
    y_direct, log_det = direct.forward_and_log_det(x)
    y_pyro = pyro_side(x.clone())
    torch.testing.assert_close(y_direct, y_pyro, **TOL)
    torch.testing.assert_close(log_det, pyro_side.log_abs_det_jacobian(x, y_pyro), **TOL)
