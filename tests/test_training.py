"""flowkit.fit: the NLL goes down, best-validation weights are restored, early
stopping, History bookkeeping, mask cycling, gradient clipping, non-finite losses,
the progress bar, conditional data and argument validation."""

import copy
import math

import pytest
import torch
from torch import nn

import flowkit.training
from flowkit import BernoulliMADE, GaussianMADE, History, MixtureMADE, fit, maf
from flowkit.training import mean_nll

# ----------------------------------------------------------------------- helpers


def correlated_gaussian(num, seed=0):
    """2-D Gaussian rows with correlation 0.9: an easy problem a MADE can fit."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num, 2, generator=generator)
    return torch.stack([z[:, 0], 0.9 * z[:, 0] + math.sqrt(1 - 0.81) * z[:, 1]], dim=-1)


def noise(num, dim=2, seed=0):
    return torch.randn(num, dim, generator=torch.Generator().manual_seed(seed))


def quiet_fit(model, train, valid=None, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("seed", 0)
    return fit(model, train, valid, **kwargs)


class LearnableGaussian(nn.Module):
    """A model with a log_prob but no MADE."""

    def __init__(self, dim=2):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))

    def log_prob(self, x):
        # written out (no torch.distributions argument checks): nan/inf data give a nan/inf loss
        return (-0.5 * (x - self.loc) ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)


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
    model = GaussianMADE(3, [8], order="random", num_masks=3, seed=0)
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
    model = GaussianMADE(3, [16], order="random", num_masks=3, seed=0)
    before = [model.log_prob_ensemble(data, mask_indices=[k]).mean().item() for k in range(3)]
    quiet_fit(model, data, epochs=8, batch_size=32, lr=1e-2, cycle_masks=True)
    after = [model.log_prob_ensemble(data, mask_indices=[k]).mean().item() for k in range(3)]
    assert all(a > b + 0.3 for a, b in zip(after, before))


def test_cycle_masks_validates_with_mask_set_zero():
    model = GaussianMADE(3, [8], order="random", num_masks=3, seed=0)
    train, valid = noise(40, dim=3), noise(20, dim=3, seed=1)
    history = quiet_fit(model, train, valid, epochs=3, batch_size=10, cycle_masks=True, patience=None)
    assert int(model.made.mask_index) == 0
    model.made.set_mask(0)
    assert mean_nll(model, valid) == pytest.approx(history.best_valid_nll, rel=1e-6)


def test_without_cycle_masks_the_mask_set_stays():
    model = GaussianMADE(3, [8], order="random", num_masks=3, seed=0)
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


def conditional_data(num, seed=0):
    """x = A c + small noise: x depends strongly on the context c."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(num, 2, generator=generator)
    x = context @ torch.tensor([[1.0, 0.5], [-0.5, 1.0]]) + 0.2 * torch.randn(num, 2, generator=generator)
    return x, context


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


# ------------------------------------------------------------ bad arguments


@pytest.fixture
def small_model():
    return GaussianMADE(2, [8], seed=0)


@pytest.mark.parametrize("name", ["epochs", "batch_size"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_epochs_and_batch_size(small_model, name, value):
    with pytest.raises(ValueError, match=name):
        quiet_fit(small_model, noise(8), **{name: value})


@pytest.mark.parametrize("value", [0, -2, 1.5])
def test_bad_patience(small_model, value):
    with pytest.raises(ValueError, match="patience"):
        quiet_fit(small_model, noise(8), noise(4), patience=value)


@pytest.mark.parametrize("train", [[[0.0, 1.0], [1.0, 2.0]], "data", (torch.zeros(4, 2),), None])
def test_train_not_a_tensor(small_model, train):
    with pytest.raises(TypeError, match="train"):
        quiet_fit(small_model, train)


def test_valid_not_a_tensor(small_model):
    with pytest.raises(TypeError, match="valid"):
        quiet_fit(small_model, noise(8), [[0.0, 1.0]])


@pytest.mark.parametrize("train", [torch.zeros(0, 2), torch.zeros(2)])
def test_train_without_rows(small_model, train):
    with pytest.raises(ValueError, match="train"):
        quiet_fit(small_model, train)


def test_numpy_data_is_a_type_error_that_suggests_torch_as_tensor(small_model):
    array = noise(8).numpy()
    with pytest.raises(TypeError, match=r"^train: expected a torch.Tensor or a \(x, context\) pair of tensors, "
                       r"got numpy.ndarray; convert it with torch.as_tensor\(train\)$"):  # fmt: skip
        quiet_fit(small_model, array)
    with pytest.raises(TypeError, match=r"^valid: .*got numpy.ndarray; convert it with torch.as_tensor\(valid\)$"):
        quiet_fit(small_model, noise(8), array)
    with pytest.raises(TypeError, match=r"^train\[1\]: expected a torch.Tensor, got numpy.ndarray"):
        quiet_fit(GaussianMADE(2, [8], context_dim=2, seed=0), (noise(8), array))


@pytest.mark.parametrize(
    "make_model",
    [
        pytest.param(lambda: GaussianMADE(2, [8], seed=0), id="gaussian-made"),
        pytest.param(lambda: maf(2, num_transforms=2, hidden_dims=[8], seed=0), id="maf"),
    ],
)
def test_rows_of_the_wrong_width_are_caught_before_training_naming_the_argument(make_model):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"^train: the model's input_dim is 2, so the rows need shape \(N, 2\); "
                       r"got \(8, 3\)$"):  # fmt: skip
        quiet_fit(model, noise(8, dim=3))
    with pytest.raises(ValueError, match=r"^valid: the model's input_dim is 2, .*got \(8, 3\)$"):
        quiet_fit(model, noise(8), noise(8, dim=3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_context_of_the_wrong_width_names_the_argument():
    model = GaussianMADE(2, [8], context_dim=2, seed=0)
    with pytest.raises(ValueError, match=r"^train: the model's context_dim is 2, so the context need shape \(N, 2\)"):
        quiet_fit(model, (noise(8), noise(8, dim=3)))
    with pytest.raises(ValueError, match=r"^valid: the model's context_dim is 2"):
        quiet_fit(model, (noise(8), noise(8)), (noise(8), noise(8, dim=3)))


def test_rows_the_model_rejects_are_reported_under_the_argument_of_fit():
    """The model calls its data ``x``; fit's caller wrote ``train`` or ``valid``."""
    integers = torch.zeros(8, 2, dtype=torch.long)
    with pytest.raises(TypeError, match=r"^train: Flow.log_prob rejected .*: x: expected a floating-point tensor"):
        quiet_fit(maf(2, num_transforms=1, hidden_dims=[8], seed=0), integers, epochs=1)
    binary, not_binary = torch.ones(8, 2), torch.full((8, 2), 0.5)
    with pytest.raises(ValueError, match=r"^valid: BernoulliMADE.log_prob rejected .*: x: .*binary data"):
        quiet_fit(BernoulliMADE(2, [8], seed=0), binary, not_binary, epochs=1)
    conditional = GaussianMADE(2, [8], context_dim=2, seed=0)
    with pytest.raises(ValueError, match=r"^train: GaussianMADE.log_prob rejected .*: context: .*needs a context"):
        quiet_fit(conditional, noise(8), epochs=1)


def test_context_row_count_must_match_x():
    model = GaussianMADE(2, [8], context_dim=2, seed=0)
    x, c = conditional_data(10)
    with pytest.raises(ValueError, match="train"):
        quiet_fit(model, (x, c[:9]))
    with pytest.raises(ValueError, match="valid"):
        quiet_fit(model, (x, c), (x, c[:9]))


def test_model_without_trainable_parameters(small_model):
    small_model.requires_grad_(False)
    with pytest.raises(ValueError, match="model: it has no trainable parameters"):
        quiet_fit(small_model, noise(8))


def test_bad_arguments_do_not_touch_the_model(small_model):
    before = {k: v.clone() for k, v in small_model.state_dict().items()}
    with pytest.raises(ValueError):
        quiet_fit(small_model, noise(8), epochs=0)
    assert all(torch.equal(before[k], v) for k, v in small_model.state_dict().items())


def test_module_exports():
    assert flowkit.training.fit is fit
    assert set(flowkit.training.__all__) == {"History", "fit", "mean_nll"}


def test_validation_does_not_restart_the_mask_cycle(monkeypatch):
    """Validating with mask set 0 must not reset the cycle: with 4 minibatches per epoch
    and 3 mask sets, training visits 1, 2, 0, 1 then 2, 0, 1, 2 (not 1, 2, 0, 1 again)."""
    model = GaussianMADE(3, [8], order="random", num_masks=3, seed=0)
    seen = []
    original = model.made.next_mask

    def recording_next_mask():
        seen.append(original())
        return seen[-1]

    monkeypatch.setattr(model.made, "next_mask", recording_next_mask)
    quiet_fit(model, noise(40, dim=3), noise(20, dim=3, seed=1), epochs=2, batch_size=10, cycle_masks=True)
    assert seen == [1, 2, 0, 1, 2, 0, 1, 2]


# ------------------------------------------------------------ optimizers, epochs, mask sampling


def binary(num, dim=4, seed=0):
    return (torch.rand(num, dim, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


class RecordingSGD(torch.optim.SGD):
    """SGD (which offers a fused step) that remembers the options it was made with."""

    made_with: dict = {}

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, foreach=None, fused=None):
        RecordingSGD.made_with = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "foreach": foreach, "fused": fused}  # fmt: skip
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=foreach, fused=fused)


class RecordingRMSprop(torch.optim.RMSprop):
    """RMSprop (foreach but no fused step) that remembers its ``foreach``."""

    foreach_given = None

    def __init__(self, params, lr=1e-3, weight_decay=0.0, foreach=None):
        RecordingRMSprop.foreach_given = foreach
        super().__init__(params, lr=lr, weight_decay=weight_decay, foreach=foreach)


def test_optimizer_class_gets_lr_weight_decay_kwargs_and_the_fused_step():
    quiet_fit(GaussianMADE(2, [8], seed=0), noise(32), epochs=1, batch_size=16, lr=0.1, weight_decay=0.01,
              optimizer=RecordingSGD, optimizer_kwargs={"momentum": 0.5})  # fmt: skip
    assert RecordingSGD.made_with == {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01, "foreach": None, "fused": True}
    quiet_fit(GaussianMADE(2, [8], seed=0), noise(32), epochs=1, optimizer=RecordingSGD,
              optimizer_kwargs={"foreach": False})  # fmt: skip
    assert RecordingSGD.made_with["foreach"] is False and RecordingSGD.made_with["fused"] is None  # the caller's


def test_optimizers_without_a_fused_step_get_foreach():
    quiet_fit(GaussianMADE(2, [8], seed=0), noise(32), epochs=1, optimizer=RecordingRMSprop)
    assert RecordingRMSprop.foreach_given is True


def test_optimizer_factory_is_called_with_the_parameters():
    calls = []

    def factory(params):
        calls.append(len(params))
        return torch.optim.Adagrad(params, lr=0.05)

    model = GaussianMADE(2, [8], seed=0)
    history = quiet_fit(model, noise(32), epochs=2, batch_size=16, optimizer=factory)
    assert calls == [len(list(model.parameters()))] and history.steps == 4


@pytest.mark.parametrize("options", [{"lr": 0.1}, {"weight_decay": 0.1}, {"optimizer_kwargs": {"eps": 1e-3}}])
def test_optimizer_factory_with_class_options_is_rejected(options):
    with pytest.raises(ValueError, match="optimizer: a factory sets its own options"):
        quiet_fit(GaussianMADE(2, [8], seed=0), noise(8), epochs=1,
                  optimizer=lambda params: torch.optim.SGD(params, lr=0.1), **options)  # fmt: skip


def test_bad_optimizer_options_are_rejected():
    with pytest.raises(TypeError, match="optimizer: expected an Optimizer class or a factory"):
        quiet_fit(GaussianMADE(2, [8], seed=0), noise(8), epochs=1, optimizer="adam")
    with pytest.raises(TypeError, match="optimizer_kwargs: expected a dict"):
        quiet_fit(GaussianMADE(2, [8], seed=0), noise(8), epochs=1, optimizer_kwargs=[("eps", 1)])


def test_epochs_none_runs_until_patience_ends_it():
    train, valid = noise(64), noise(32, seed=1)
    history = quiet_fit(GaussianMADE(2, [16], seed=0), train, valid, epochs=None, batch_size=32, lr=0.5, patience=2)
    assert history.stopped_early and history.stopped_epoch == history.best_epoch + 2


@pytest.mark.parametrize("options", [{}, {"patience": None}])
def test_epochs_none_without_a_way_to_stop_is_rejected(options):
    valid = noise(8) if options else None
    with pytest.raises(ValueError, match="epochs: None"):
        quiet_fit(GaussianMADE(2, [8], seed=0), noise(8), valid, epochs=None, **options)


def test_resample_masks_draws_a_structure_per_update_reproducibly(monkeypatch):
    drawn = []
    original = flowkit.nn.MADE.resample_masks

    def recording(self, generator, order=True):
        original(self, generator, order)
        drawn.append((order, self.permutation.clone(), self.input_layer.mask.clone()))

    monkeypatch.setattr(flowkit.nn.MADE, "resample_masks", recording)
    models = [BernoulliMADE(4, [16], order="random", seed=0) for _ in range(2)]
    for model in models:
        history = quiet_fit(model, binary(40), epochs=2, batch_size=10, resample_masks="full")
    assert history.steps == 8 and len(drawn) == 16 and all(order for order, _, _ in drawn)
    first, second = drawn[:8], drawn[8:]
    assert all(torch.equal(a[2], b[2]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))  # same seed
    assert len({tuple(p.tolist()) for _, p, _ in first}) > 1  # fresh orders
    assert models[0].made.active_mask == -1


def test_resample_connectivity_keeps_the_order():
    model = BernoulliMADE(4, [16], order="random", seed=0)
    order = model.made.permutation.clone()
    quiet_fit(model, binary(40), binary(20, seed=1), epochs=2, batch_size=10, resample_masks="connectivity")
    assert torch.equal(model.made.permutation, order) and model.made.active_mask == -1


def test_valid_masks_validates_on_the_ensemble():
    model = BernoulliMADE(4, [16], order="random", seed=0)
    train, valid = binary(40), binary(20, seed=1)
    history = quiet_fit(model, train, valid, epochs=1, batch_size=10, lr=0.0, resample_masks="full", valid_masks=5)
    single = quiet_fit(copy.deepcopy(model), train, valid, epochs=1, batch_size=10, lr=0.0, resample_masks="full")
    assert history.valid_nll != single.valid_nll  # the ensemble, not the mask of the last update
    again = quiet_fit(model, train, valid, epochs=1, batch_size=10, lr=0.0, resample_masks="full", valid_masks=5)
    assert again.valid_nll == history.valid_nll  # the same masks from the same seed
    nll = mean_nll(model, valid, num_masks=5, seed=3)
    assert math.isclose(nll, mean_nll(model, valid, num_masks=5, seed=3, batch_size=7), rel_tol=1e-6)  # same masks


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"resample_masks": "order"}, ValueError, "resample_masks: expected None or one of"),
        ({"resample_masks": "full", "cycle_masks": True}, ValueError, "cannot be combined with cycle_masks"),
        ({"valid_masks": 0}, ValueError, "valid_masks"),
        ({"valid_masks": 2.5}, ValueError, "valid_masks"),
    ],
)
def test_bad_mask_sampling_options_are_rejected(options, error, message):
    model = BernoulliMADE(4, [8], num_masks=2, seed=0)
    with pytest.raises(error, match=message):
        quiet_fit(model, binary(20), binary(10, seed=1), epochs=1, **options)


def test_mask_sampling_needs_a_made():
    with pytest.raises(ValueError, match="resample_masks: the model holds no MADE"):
        quiet_fit(LearnableGaussian(), noise(16), epochs=1, resample_masks="full")
    with pytest.raises(ValueError, match="valid_masks: needs a MADE density model"):
        quiet_fit(LearnableGaussian(), noise(16), noise(8), epochs=1, valid_masks=3)
    with pytest.raises(ValueError, match="num_masks: needs a MADE density model"):
        mean_nll(LearnableGaussian(), noise(8), num_masks=3)
