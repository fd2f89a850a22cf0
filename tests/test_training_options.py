"""flowkit.fit's arguments: validation of bad ones, any optimizer, epochs and mask sampling."""

import copy
import math

import pytest
import torch

import flowkit.training
from flowkit import BernoulliMADE, GaussianMADE, MADEConfig, fit, maf
from flowkit.training import mean_nll
from training_helpers import LearnableGaussian, conditional_data, noise, quiet_fit

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
    model = GaussianMADE(3, [8], conditioner=MADEConfig(order="random", num_masks=3), seed=0)
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

    def recording(self, generator, order=True, sort=False):
        original(self, generator, order, sort=sort)
        drawn.append((order, self.permutation.clone(), self.input_layer.mask.clone()))

    monkeypatch.setattr(flowkit.nn.MADE, "resample_masks", recording)
    models = [BernoulliMADE(4, [16], conditioner=MADEConfig(order="random"), seed=0) for _ in range(2)]
    for model in models:
        history = quiet_fit(model, binary(40), epochs=2, batch_size=10, resample_masks="full")
    assert history.steps == 8 and len(drawn) == 16 and all(order for order, _, _ in drawn)
    first, second = drawn[:8], drawn[8:]
    assert all(torch.equal(a[2], b[2]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))  # same seed
    assert len({tuple(p.tolist()) for _, p, _ in first}) > 1  # fresh orders
    assert models[0].made.active_mask == -1


def test_sort_degrees_sorts_the_masks_of_training_and_of_the_validation_ensemble(monkeypatch):
    drawn = []
    original = flowkit.nn.MADE.resample_masks

    def recording(self, generator, order=True, sort=False):
        original(self, generator, order, sort=sort)
        drawn.append((sort, [degrees.clone() for degrees in self.degrees()[1:]]))

    monkeypatch.setattr(flowkit.nn.MADE, "resample_masks", recording)
    model = BernoulliMADE(4, [16, 16], conditioner=MADEConfig(order="random"), seed=0)
    train, valid = binary(40), binary(20, seed=1)
    quiet_fit(model, train, valid, epochs=1, batch_size=10, resample_masks="full", sort_degrees=True, valid_masks=3)
    assert len(drawn) == 4 + 3  # four updates, then the validation ensemble
    assert all(sort and all(bool((h[1:] >= h[:-1]).all()) for h in hidden) for sort, hidden in drawn)
    drawn.clear()
    quiet_fit(model, train, valid, epochs=1, batch_size=10, resample_masks="full", valid_masks=3)
    assert len(drawn) == 7 and not any(sort for sort, _ in drawn)  # the default stays unsorted


def test_mean_nll_scores_sorted_fresh_masks():
    model = BernoulliMADE(4, [16], conditioner=MADEConfig(order="random"), seed=0)
    valid = binary(20, seed=1)
    with torch.no_grad():
        expected = -model.log_prob_ensemble(valid, num_masks=5, seed=3, sort=True).mean().item()
    assert math.isclose(mean_nll(model, valid, num_masks=5, seed=3, sort=True), expected, rel_tol=1e-6)
    assert mean_nll(model, valid, num_masks=5, seed=3) != mean_nll(model, valid, num_masks=5, seed=3, sort=True)
    with pytest.raises(ValueError, match="sort: expected a bool"):
        mean_nll(model, valid, num_masks=5, sort="yes")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"resample_masks": "full", "sort_degrees": "yes"}, "sort_degrees: expected a bool"),
        ({"resample_masks": "full", "sort_degrees": 1}, "sort_degrees: expected a bool"),
        ({"sort_degrees": True}, "sort_degrees: True needs resample_masks"),
        ({"cycle_masks": True, "valid_masks": "sets", "sort_degrees": True}, "sort_degrees: True needs"),
    ],
)
def test_bad_sort_degrees_is_rejected(options, message):
    model = BernoulliMADE(4, [16], conditioner=MADEConfig(order="random", num_masks=2), seed=0)
    with pytest.raises(ValueError, match=message):
        quiet_fit(model, binary(40), binary(20, seed=1), epochs=1, batch_size=10, **options)


def test_resample_connectivity_keeps_the_order():
    model = BernoulliMADE(4, [16], conditioner=MADEConfig(order="random"), seed=0)
    order = model.made.permutation.clone()
    quiet_fit(model, binary(40), binary(20, seed=1), epochs=2, batch_size=10, resample_masks="connectivity")
    assert torch.equal(model.made.permutation, order) and model.made.active_mask == -1


def test_valid_masks_validates_on_the_ensemble():
    model = BernoulliMADE(4, [16], conditioner=MADEConfig(order="random"), seed=0)
    train, valid = binary(40), binary(20, seed=1)
    history = quiet_fit(model, train, valid, epochs=1, batch_size=10, lr=0.0, resample_masks="full", valid_masks=5)
    single = quiet_fit(copy.deepcopy(model), train, valid, epochs=1, batch_size=10, lr=0.0, resample_masks="full")
    assert history.valid_nll != single.valid_nll  # the ensemble, not the mask of the last update
    again = quiet_fit(model, train, valid, epochs=1, batch_size=10, lr=0.0, resample_masks="full", valid_masks=5)
    assert again.valid_nll == history.valid_nll  # the same masks from the same seed
    nll = mean_nll(model, valid, num_masks=5, seed=3)
    assert math.isclose(nll, mean_nll(model, valid, num_masks=5, seed=3, batch_size=7), rel_tol=1e-6)  # same masks


def test_valid_masks_sets_validates_on_the_ensemble_of_the_mask_sets():
    model = BernoulliMADE(4, [16], conditioner=MADEConfig(order="random", num_masks=3), seed=0)
    train, valid = binary(40), binary(20, seed=1)
    history = quiet_fit(model, train, valid, epochs=1, batch_size=10, lr=0.0, cycle_masks=True, valid_masks="sets")
    with torch.no_grad():
        ensemble = -model.log_prob_ensemble(valid).mean().item()
        first_set = -model.log_prob(valid).mean().item()  # mask set 0 is active after fit
    assert math.isclose(history.valid_nll[0], ensemble, rel_tol=1e-6)
    assert not math.isclose(history.valid_nll[0], first_set, rel_tol=1e-3)  # not the one set of plain cycle_masks


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"valid_masks": "all", "cycle_masks": True}, ValueError, "valid_masks: expected a positive int, 'sets'"),
        ({"valid_masks": "sets"}, ValueError, "'sets' .* needs cycle_masks=True"),
        ({"resample_masks": "order"}, ValueError, "resample_masks: expected None or one of"),
        ({"resample_masks": "full", "cycle_masks": True}, ValueError, "cannot be combined with cycle_masks"),
        ({"valid_masks": 0}, ValueError, "valid_masks"),
        ({"valid_masks": 2.5}, ValueError, "valid_masks"),
    ],
)
def test_bad_mask_sampling_options_are_rejected(options, error, message):
    model = BernoulliMADE(4, [8], conditioner=MADEConfig(num_masks=2), seed=0)
    with pytest.raises(error, match=message):
        quiet_fit(model, binary(20), binary(10, seed=1), epochs=1, **options)


def test_mask_sampling_needs_a_made():
    with pytest.raises(ValueError, match="resample_masks: the model holds no MADE"):
        quiet_fit(LearnableGaussian(), noise(16), epochs=1, resample_masks="full")
    with pytest.raises(ValueError, match="valid_masks: needs a MADE density model"):
        quiet_fit(LearnableGaussian(), noise(16), noise(8), epochs=1, valid_masks=3)
    with pytest.raises(ValueError, match="num_masks: needs a MADE density model"):
        mean_nll(LearnableGaussian(), noise(8), num_masks=3)
