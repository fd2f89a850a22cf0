"""flowkit.fit: the NLL goes down, best-validation weights are restored, early
stopping, History bookkeeping, mask cycling, gradient clipping, non-finite losses,
the progress bar and conditional data."""

import math

import pytest
import torch

from flowkit import GaussianMADE, History, MADEConfig, MixtureMADE, maf
from flowkit.training import mean_nll
from training_helpers import LearnableGaussian, conditional_data, noise, quiet_fit

def correlated_gaussian(num, seed=0):
    """2-D Gaussian rows with correlation 0.9: an easy problem a MADE can fit."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num, 2, generator=generator)
    return torch.stack([z[:, 0], 0.9 * z[:, 0] + math.sqrt(1 - 0.81) * z[:, 1]], dim=-1)


class NanAfter(LearnableGaussian):
    """Returns nan log-probs from the given call on."""

    def __init__(self, good_calls):
        super().__init__()
        self.calls, self.good_calls = 0, good_calls

    def log_prob(self, x):
        self.calls += 1
        log_prob = super().log_prob(x)
        return log_prob * math.nan if self.calls > self.good_calls else log_prob


# --------------------------------------------------------------- it learns


def test_fit_decreases_the_training_nll_of_a_gaussian_made():
    data = correlated_gaussian(512)
    model = GaussianMADE(2, [16], seed=0)
    before = mean_nll(model, data)
    history = quiet_fit(model, data, epochs=15, batch_size=64, lr=1e-2)
    after = mean_nll(model, data)
    assert history.train_nll[-1] < history.train_nll[0] - 0.3
    assert after < before - 0.5
    # the true NLL is H = log(2 pi e) + 0.5 log(1 - 0.81) ~ 2.01; a fitted MADE gets close
    entropy = math.log(2 * math.pi * math.e) + 0.5 * math.log(1 - 0.81)
    assert after < entropy + 0.25


def test_fit_decreases_the_training_nll_of_a_maf():
    data = correlated_gaussian(512)
    flow = maf(2, num_transforms=2, hidden_dims=[16], seed=0)
    before = mean_nll(flow, data)
    history = quiet_fit(flow, data, epochs=10, batch_size=64, lr=1e-2)
    assert history.train_nll[-1] < history.train_nll[0]
    assert mean_nll(flow, data) < before - 0.3


def test_fit_is_reproducible_with_a_seed():
    data, valid = correlated_gaussian(256), correlated_gaussian(64, seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = GaussianMADE(2, [8], seed=0)
        history = quiet_fit(model, data, valid, epochs=3, batch_size=32, lr=1e-2, seed=5)
        runs.append((history, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][key], runs[1][1][key]) for key in runs[0][1])


# ---------------------------------------------------------------- validation


def test_fit_restores_the_weights_with_the_best_validation_nll():
    # a high learning rate makes the validation NLL go up and down
    train, valid = correlated_gaussian(256), correlated_gaussian(128, seed=1)
    model = GaussianMADE(2, [16], seed=0)
    history = quiet_fit(model, train, valid, epochs=12, batch_size=32, lr=0.05, patience=None)
    assert len(history.valid_nll) == 12
    best = min(history.valid_nll)
    assert history.best_epoch == history.valid_nll.index(best)
    assert history.best_valid_nll == best
    assert history.best_epoch != 11, "the test needs a run whose last epoch is not the best"
    assert mean_nll(model, valid) == pytest.approx(best, rel=1e-6, abs=1e-6)
    assert not model.training  # fit leaves the model in eval mode


def test_fit_stops_early_when_validation_cannot_improve():
    # noise to fit with a learning rate far too high: the validation NLL soon gets worse
    train, valid = noise(256), noise(128, seed=1)
    model = GaussianMADE(2, [16], seed=0)
    history = quiet_fit(model, train, valid, epochs=50, batch_size=32, lr=0.5, patience=2)
    assert history.stopped_early
    epochs_run = len(history.train_nll)
    assert epochs_run < 50
    assert len(history.valid_nll) == epochs_run
    # it stopped exactly `patience` epochs after the last improvement
    assert epochs_run == history.best_epoch + 2 + 1
    assert history.stopped_epoch == epochs_run - 1  # epochs count from 0, as best_epoch does
    assert min(history.valid_nll[history.best_epoch + 1 :]) >= history.valid_nll[history.best_epoch]
    assert mean_nll(model, valid) == pytest.approx(history.best_valid_nll, rel=1e-6, abs=1e-6)


def test_patience_none_never_stops():
    train, valid = noise(64), noise(32, seed=1)
    history = quiet_fit(GaussianMADE(2, [8], seed=0), train, valid, epochs=8, lr=0.5, patience=None)
    assert len(history.train_nll) == 8
    assert not history.stopped_early
    assert history.stopped_epoch is None


def test_history_without_validation():
    data = correlated_gaussian(100)
    history = quiet_fit(GaussianMADE(2, [8], seed=0), data, epochs=3, batch_size=32)
    assert isinstance(history, History)
    assert len(history.train_nll) == 3
    assert all(isinstance(value, float) and math.isfinite(value) for value in history.train_nll)
    assert history.valid_nll == []
    assert history.best_epoch == 2  # the last epoch's weights are kept
    assert history.steps == 3 * math.ceil(100 / 32)
    assert history.stopped_early is False
    assert math.isnan(history.best_valid_nll)


def test_history_train_nll_is_the_row_weighted_mean_of_minibatch_losses():
    """With lr=0 nothing changes, so every epoch's train NLL is the data's mean NLL,
    even with a short last minibatch (100 rows in batches of 32)."""
    data = correlated_gaussian(100)
    model = GaussianMADE(2, [8], seed=0)
    expected = mean_nll(model, data)
    history = quiet_fit(model, data, epochs=2, batch_size=32, lr=0.0)
    assert history.train_nll == pytest.approx([expected, expected], rel=1e-5)


class RowCounter(LearnableGaussian):
    """Records how many rows each call of log_prob sees."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def log_prob(self, x):
        self.rows.append(len(x))
        return super().log_prob(x)


# rows -> minibatch sizes at batch_size=8: a single leftover row joins the minibatch before it
MINIBATCH_SIZES = {2: [2], 7: [7], 8: [8], 9: [9], 10: [8, 2], 15: [8, 7], 16: [8, 8], 17: [8, 9], 25: [8, 8, 9]}


@pytest.mark.parametrize("num_rows", MINIBATCH_SIZES)
def test_a_single_leftover_row_joins_the_last_minibatch(num_rows):
    model = RowCounter()
    history = quiet_fit(model, noise(num_rows), epochs=2, batch_size=8)
    assert model.rows == MINIBATCH_SIZES[num_rows] * 2
    assert history.steps == 2 * len(MINIBATCH_SIZES[num_rows])


@pytest.mark.parametrize("num_rows", [15, 16, 17, 23, 24, 25])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch_norm"])
def test_fit_trains_on_every_data_size_around_a_multiple_of_the_batch_size(num_rows, batch_norm):
    flow = maf(2, num_transforms=2, hidden_dims=[8], batch_norm=batch_norm, seed=0)
    history = quiet_fit(flow, correlated_gaussian(num_rows), correlated_gaussian(8, seed=1), epochs=2, batch_size=8)
    assert len(history.train_nll) == 2 and all(math.isfinite(v) for v in history.train_nll + history.valid_nll)


def test_fit_with_batch_norm_at_the_default_batch_size_and_one_row_over():
    """The issue's case: 1025 rows, 128 per minibatch, used to fail in the ninth step."""
    flow = maf(2, num_transforms=2, hidden_dims=[8], batch_norm=True, seed=0)
    history = quiet_fit(flow, correlated_gaussian(1025), epochs=1)
    assert history.steps == 8 and math.isfinite(history.train_nll[0])


def test_history_with_validation():
    train, valid = correlated_gaussian(64), correlated_gaussian(32, seed=1)
    history = quiet_fit(GaussianMADE(2, [8], seed=0), train, valid, epochs=4, batch_size=16)
    assert len(history.train_nll) == len(history.valid_nll) == 4
    assert history.steps == 4 * 4
    assert 0 <= history.best_epoch < 4


# ---------------------------------------------------------------- mask cycling


def test_cycle_masks_moves_to_the_next_mask_set_every_minibatch(monkeypatch):
    model = GaussianMADE(3, [8], conditioner=MADEConfig(order="random", num_masks=3), seed=0)
    seen = []
    original = model.made.next_mask

    def recording_next_mask():
        index = original()
        seen.append(index)
        return index

    monkeypatch.setattr(model.made, "next_mask", recording_next_mask)
    history = quiet_fit(model, noise(40, dim=3), epochs=2, batch_size=10, cycle_masks=True)
    assert history.steps == 8
    assert seen == [1, 2, 0, 1, 2, 0, 1, 2]
    assert int(model.made.mask_index) == 2  # no validation: the last mask set stays active


def test_cycle_masks_trains_every_mask_set():
    """Each mask set's NLL improves, not only mask set 0's."""
    data = correlated_gaussian(256)
    data = torch.cat([data, data[:, :1] - data[:, 1:]], dim=-1)  # 3-D, dependent
    model = GaussianMADE(3, [16], conditioner=MADEConfig(order="random", num_masks=3), seed=0)
    before = [model.log_prob_ensemble(data, mask_indices=[k]).mean().item() for k in range(3)]
    quiet_fit(model, data, epochs=8, batch_size=32, lr=1e-2, cycle_masks=True)
    after = [model.log_prob_ensemble(data, mask_indices=[k]).mean().item() for k in range(3)]
    assert all(a > b + 0.3 for a, b in zip(after, before))


def test_cycle_masks_validates_with_mask_set_zero():
    model = GaussianMADE(3, [8], conditioner=MADEConfig(order="random", num_masks=3), seed=0)
    train, valid = noise(40, dim=3), noise(20, dim=3, seed=1)
    history = quiet_fit(model, train, valid, epochs=3, batch_size=10, cycle_masks=True, patience=None)
    assert int(model.made.mask_index) == 0
    model.made.set_mask(0)
    assert mean_nll(model, valid) == pytest.approx(history.best_valid_nll, rel=1e-6)


def test_without_cycle_masks_the_mask_set_stays():
    model = GaussianMADE(3, [8], conditioner=MADEConfig(order="random", num_masks=3), seed=0)
    model.made.set_mask(1)
    quiet_fit(model, noise(40, dim=3), epochs=2, batch_size=10)
    assert int(model.made.mask_index) == 1


def test_cycle_masks_needs_a_made():
    with pytest.raises(ValueError, match="cycle_masks"):
        quiet_fit(LearnableGaussian(), noise(16), epochs=1, cycle_masks=True)


# ----------------------------------------------------------- gradient clipping


def test_clip_grad_norm_is_called_with_the_given_norm(monkeypatch):
    calls = []
    original = torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm, *args, **kwargs):
        params = list(params)
        calls.append((len(params), max_norm))
        return original(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    model = GaussianMADE(2, [8], seed=0)
    history = quiet_fit(model, noise(40), epochs=2, batch_size=20, clip_grad_norm=0.5)
    assert len(calls) == history.steps == 4
    assert all(max_norm == 0.5 for _, max_norm in calls)
    assert calls[0][0] == len(list(model.parameters()))

    calls.clear()
    quiet_fit(model, noise(40), epochs=1, batch_size=20)
    assert calls == []  # no clipping unless asked


def parameter_change(clip_grad_norm):
    """Norm of the parameter change after one plain SGD step with lr=1."""
    torch.manual_seed(0)
    model = GaussianMADE(2, [8], seed=0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    data = 5 + 3 * noise(32)  # far from the initial fit: large gradients
    quiet_fit(model, data, epochs=1, batch_size=32, lr=1.0, optimizer=torch.optim.SGD, clip_grad_norm=clip_grad_norm)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return float((after - before).norm())


def test_clip_grad_norm_bounds_the_step():
    # SGD with lr=1 moves the parameters by exactly the (clipped) gradient
    assert parameter_change(None) > 1.0
    assert parameter_change(1e-3) == pytest.approx(1e-3, rel=1e-3)


# -------------------------------------------------------- non-finite losses


@pytest.mark.parametrize(
    "make_model",
    [
        pytest.param(LearnableGaussian, id="plain-module"),
        pytest.param(lambda: GaussianMADE(2, [8], seed=0), id="gaussian-made"),
        pytest.param(lambda: MixtureMADE(2, [8], num_components=2, seed=0), id="mixture-made"),
        pytest.param(lambda: maf(2, num_transforms=2, hidden_dims=[8], seed=0), id="maf"),
    ],
)
@pytest.mark.parametrize("bad_value", [math.inf, math.nan])
def test_data_with_inf_or_nan_is_rejected_before_training(make_model, bad_value):
    """Non-finite data is caught up front with an error naming the argument and the row,
    rather than surfacing later as a non-finite loss."""
    data = noise(40)
    data[3, 1] = bad_value
    with pytest.raises(ValueError, match=r"train: .*inf or nan.*\[3\]"):
        quiet_fit(make_model(), data, epochs=1, batch_size=40)
    with pytest.raises(ValueError, match=r"valid: .*inf or nan"):
        quiet_fit(make_model(), noise(40), data, epochs=1, batch_size=40)


def test_nan_log_prob_raises_floating_point_error_naming_the_step():
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 5\b"):
        # 4 minibatches per epoch; the 6th call returns nan -> epoch 1, step 5
        quiet_fit(NanAfter(good_calls=5), noise(40), epochs=3, batch_size=10)


# ------------------------------------------------------------------ progress


def test_progress_false_prints_nothing(capsys):
    quiet_fit(GaussianMADE(2, [8], seed=0), noise(32), noise(16, seed=1), epochs=2, batch_size=16, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_true_shows_a_bar(capsys):
    quiet_fit(GaussianMADE(2, [8], seed=0), noise(32), epochs=2, batch_size=16, progress=True)
    captured = capsys.readouterr()
    assert "fit" in captured.out + captured.err
    assert "stopped" not in captured.out + captured.err  # it ran every epoch


def test_early_stopping_says_where_it_stopped_and_which_epoch_it_kept(capsys):
    """The bar vanishes when fit ends, so an early stop is said in a line of its own."""
    train, valid = noise(256), noise(128, seed=1)
    history = quiet_fit(GaussianMADE(2, [16], seed=0), train, valid, epochs=50, batch_size=32, lr=0.5, patience=2,
                        progress=True)  # fmt: skip
    assert history.stopped_early
    captured = capsys.readouterr()
    said = f"fit: stopped at epoch {history.stopped_epoch}, best epoch {history.best_epoch}: "
    assert said in captured.out + captured.err, captured
    assert f"(best {history.best_valid_nll:.3f}, whose weights are restored)" in captured.out + captured.err
    quiet_fit(GaussianMADE(2, [16], seed=0), train, valid, epochs=50, batch_size=32, lr=0.5, patience=2)
    assert capsys.readouterr() == ("", ""), "progress=False must stay silent, early stop or not"


# ------------------------------------------------------------ conditional data




def test_fit_with_context_pairs():
    (x, c), (xv, cv) = conditional_data(512), conditional_data(128, seed=1)
    model = GaussianMADE(2, [16], context_dim=2, seed=0)
    before = mean_nll(model, xv, cv)
    history = quiet_fit(model, (x, c), [xv, cv], epochs=15, batch_size=64, lr=1e-2)
    after = mean_nll(model, xv, cv)
    assert len(history.valid_nll) == len(history.train_nll) > 0
    assert after < before - 1.0
    # the context is used: the fit beats the best context-free Gaussian by far
    assert after < mean_nll(model, xv, cv[torch.randperm(128)]) - 0.5
    assert after == pytest.approx(history.best_valid_nll, rel=1e-6, abs=1e-6)


def test_mean_nll_batches_agree():
    (x, c) = conditional_data(50)
    model = GaussianMADE(2, [8], context_dim=2, seed=0)
    expected = -model.log_prob(x, c).mean().item()
    assert mean_nll(model, x, c, batch_size=7) == pytest.approx(expected, rel=1e-6)
    assert mean_nll(model, x, c) == pytest.approx(expected, rel=1e-6)
