"""One training loop for anything with a ``log_prob``: flows and MADE density models."""

from __future__ import annotations

import copy
import inspect
import itertools
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowkit._seeding import make_generator
from flowkit._validation import check_int, check_is_tensor
from flowkit.nn import MADE
from flowkit.transforms import ActNorm

__all__ = ["History", "fit", "mean_nll"]

Data = Tensor | tuple[Tensor, Tensor]
OptimizerChoice = type[torch.optim.Optimizer] | Callable[[list[nn.Parameter]], torch.optim.Optimizer]
RESAMPLING = ("full", "connectivity")
_MASK_SEED_OFFSETS = (1, 2)  # training and validation masks: streams apart from the minibatch shuffling


@dataclass
class History:
    """What [`fit`][flowkit.training.fit] did: per-epoch mean training and validation negative
    log-likelihoods, the epoch whose weights were kept, and the number of steps.

    Epochs count from 0: ``best_epoch`` indexes ``valid_nll``. When early stopping ended
    training, ``stopped_early`` is True and ``stopped_epoch`` is the last epoch run
    (``None`` when every epoch ran)."""

    train_nll: list[float] = field(default_factory=list)
    valid_nll: list[float] = field(default_factory=list)
    best_epoch: int = -1
    steps: int = 0
    stopped_early: bool = False
    stopped_epoch: int | None = None

    @property
    def best_valid_nll(self) -> float:
        """The validation NLL of the kept weights (``nan`` without validation data)."""
        return self.valid_nll[self.best_epoch] if self.valid_nll else math.nan


def fit(
    model: nn.Module,
    train: Data,
    valid: Data | None = None,
    *,
    epochs: int | None = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: OptimizerChoice = torch.optim.Adam,
    weight_decay: float = 0.0,
    optimizer_kwargs: dict[str, object] | None = None,
    patience: int | None = 20,
    clip_grad_norm: float | None = None,
    cycle_masks: bool = False,
    resample_masks: str | None = None,
    sort_degrees: bool = False,
    valid_masks: int | str | None = None,
    progress: bool = True,
    seed: int | None = None,
    distributed: bool = False,
    compile: bool = False,
) -> History:
    """Maximum-likelihood training: minimises ``-model.log_prob(x).mean()`` over
    minibatches.

    The model is trained in training mode and left in eval mode at the end (so a
    [`BatchNorm`][flowkit.transforms.BatchNorm] layer then uses its running averages).
    Data may stay on the CPU while the model is on a GPU: each minibatch is moved to the
    model's device.

    With ``distributed=True``, every process of an initialised ``torch.distributed``
    group (e.g. started by ``torchrun``) calls ``fit`` with the same data and seed. The
    loss is wrapped in ``DistributedDataParallel``, which starts every process from rank
    0's parameters and buffers (masks and orders included) and averages gradients; each
    process takes its own share of every minibatch (``batch_size`` rows each, so
    ``batch_size`` times the number of processes in all, as with PyTorch's
    ``DistributedSampler``), and validation is shared the same way and summed. Every
    process makes the same decisions and ends with the same model.

    Args:
        model: Any ``nn.Module`` with ``log_prob(x)`` (or ``log_prob(x, context)``).
        train: A tensor of rows, or ``(x, context)`` for conditional models.
        valid: Validation data in the same form. When given, the weights with the best
            validation NLL are restored at the end, and training stops after
            ``patience`` epochs without improvement.
        epochs: The most epochs to run; ``None`` for no cap (then training ends by early
            stopping, which needs ``valid`` and a ``patience``).
        batch_size: Rows per minibatch (per process when ``distributed``). When one row
            would be left for the last minibatch of an epoch, it joins the one before
            (``batch_size + 1`` rows), so every row is used and batch normalisation never
            sees a single row.
        lr: Learning rate.
        optimizer: A `torch.optim.Optimizer` class, called as ``optimizer(params, lr=lr,
            weight_decay=weight_decay, **optimizer_kwargs)``, with its fused (else foreach)
            step where it offers one and ``optimizer_kwargs`` chooses neither; or a factory
            ``optimizer(params) -> Optimizer``, which then sets every option itself (``lr``,
            ``weight_decay`` and ``optimizer_kwargs`` left at their defaults). The MADE
            paper's: ``optimizer=torch.optim.Adadelta, lr=1.0, optimizer_kwargs={"rho": 0.95, "eps": 1e-5}``.
        weight_decay: Passed to the optimizer class.
        optimizer_kwargs: More keyword arguments for the optimizer class.
        patience: Epochs without validation improvement before stopping; ``None`` never stops.
        clip_grad_norm: Clip the gradient norm to this value when given.
        cycle_masks: Move every MADE in the model to its next mask set at every minibatch
            (order- and connectivity-agnostic training). Validation uses mask set 0, or all
            of them with ``valid_masks="sets"``.
        resample_masks: The MADE paper's mask sampling: before every update, every MADE in
            the model draws a fresh structure ([`MADE.resample_masks`][flowkit.nn.made.MADE.resample_masks]),
            ``"full"`` (order and connectivity) or ``"connectivity"`` (the order kept). The
            masks come from a generator seeded from ``seed`` (the same on every process).
        sort_degrees: Sort each hidden layer's degrees in the structures drawn fresh (by
            ``resample_masks`` and by an int ``valid_masks``), as the fixed mask sets are;
            ``False``, the default, keeps the paper's unsorted draw.
        valid_masks: Validate on the ensemble of this many masks
            ([`log_prob_ensemble`][flowkit.distributions.made_models.AutoregressiveMADE.log_prob_ensemble]
            with ``num_masks``): the same masks, drawn from ``seed``, at every epoch. For
            models trained with ``resample_masks``; it needs a MADE density model.
            ``"sets"``: validate on the ensemble of the model's mask sets, the masks that
            ``cycle_masks=True`` trains (the MADE paper code's validation with ``shuffle_mask``).
        progress: Show a tqdm progress bar (on rank 0 only when ``distributed``).
        seed: Seeds the minibatch shuffling and the masks of ``resample_masks`` and
            ``valid_masks`` (rank 0's seed is used by every process when ``distributed``).
        distributed: Train data-parallel over the default ``torch.distributed`` group.
        compile: Compile the loss, forward and backward, with ``torch.compile``.

    Returns:
        A [`History`][flowkit.training.History].

    Raises:
        FloatingPointError: When the loss becomes non-finite (on any process); the
            message names the step.

    Examples:
        >>> from flowkit import maf
        >>> flow = maf(2, num_transforms=2, hidden_dims=[16])
        >>> history = fit(flow, torch.randn(256, 2), torch.randn(64, 2), epochs=3, progress=False)
        >>> len(history.train_nll)
        3
    """
    x_train, c_train = _checked_data(model, train, "train")
    x_valid, c_valid = _checked_data(model, valid, "valid") if valid is not None else (None, None)
    mades = _checked_options(
        model, valid, epochs, batch_size, patience, cycle_masks, resample_masks, sort_degrees, valid_masks
    )
    params = _trainable_parameters(model)
    make = _optimizer_factory(optimizer, lr, weight_decay, optimizer_kwargs)
    group = _ProcessGroup.default() if distributed else _ProcessGroup()
    if group.size > 1 and len(x_train) < group.size:
        raise ValueError(f"train: {len(x_train)} rows cannot be shared by {group.size} processes")

    with _naming_the_data("train", model):  # when distributed, ActNorm is initialised from train here
        loss_fn = _loss_function(model, x_train, c_train, params[0].device, distributed, compile)
    generator = make_generator(group.shared_seed(seed, params[0].device))
    run = _TrainingRun(
        model, loss_fn, make(params), params, params[0].device, group, generator, batch_size, clip_grad_norm,
        mades if cycle_masks else [],
        _MaskSampling.of(mades, resample_masks, sort_degrees, valid_masks, generator.initial_seed()),
    )  # fmt: skip
    stopper = _EarlyStopping(patience)
    epoch_numbers = range(epochs) if epochs is not None else itertools.count()
    bar = tqdm(epoch_numbers, desc="fit", disable=not progress or group.rank != 0, leave=False)
    _train_until_stopped(run, stopper, bar, (x_train, c_train), (x_valid, c_valid))
    bar.close()
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    model.eval()
    return run.history


def _train_until_stopped(
    run: _TrainingRun,
    stopper: _EarlyStopping,
    bar: tqdm,
    train: tuple[Tensor, Tensor | None],
    valid: tuple[Tensor | None, Tensor | None],
) -> None:
    """The epochs of ``bar``: train one epoch, validate (when there is ``valid`` data), and
    stop when ``stopper`` runs out of patience."""
    (x_train, c_train), (x_valid, c_valid) = train, valid
    for epoch in bar:
        run.history.train_nll.append(run.train_epoch(epoch, x_train, c_train))
        postfix = {"train": f"{run.history.train_nll[-1]:.3f}"}
        if x_valid is None:
            run.history.best_epoch = epoch
        else:
            with _mask_set_pinned(run.cycled_mades, 0):  # the best weights are saved with it active
                valid_nll = run.validate(x_valid, c_valid)
                stopper.observe(valid_nll, epoch, run.model, run.history)
            postfix["valid"] = f"{valid_nll:.3f}"
            if stopper.exhausted:
                _stop_early(run.history, epoch, bar, postfix)
                break
        bar.set_postfix(postfix)


def _checked_data(model: nn.Module, data: Data, name: str) -> tuple[Tensor, Tensor | None]:
    """The rows and context of the argument ``name`` of ``fit``, checked against the model."""
    x, context = _split(data, name)
    _check_widths(model, x, context, name)
    return x, context


def _trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: it has no trainable parameters")
    return params


def _checked_options(
    model: nn.Module,
    valid: Data | None,
    epochs: int | None,
    batch_size: int,
    patience: int | None,
    cycle_masks: bool,
    resample_masks: str | None,
    sort_degrees: bool,
    valid_masks: int | str | None,
) -> list[MADE]:
    """Checks the options of ``fit`` about epochs, minibatches and masks; the MADEs of the model."""
    check_int(epochs, "epochs", or_none=True)
    check_int(batch_size, "batch_size")
    check_int(patience, "patience", or_none=True)
    mades = [m for m in model.modules() if isinstance(m, MADE)]
    if epochs is None and (valid is None or patience is None):
        raise ValueError("epochs: None (no cap) needs valid data and a patience, or training would never end")
    if resample_masks is not None and resample_masks not in RESAMPLING:
        raise ValueError(f"resample_masks: expected None or one of {RESAMPLING}, got {resample_masks!r}")
    for name, on in (("cycle_masks", cycle_masks), ("resample_masks", resample_masks is not None)):
        if on and not mades:
            raise ValueError(f"{name}: the model holds no MADE with mask sets")
    if cycle_masks and resample_masks is not None:
        raise ValueError("resample_masks: cannot be combined with cycle_masks=True")
    if not isinstance(sort_degrees, bool):
        raise ValueError(f"sort_degrees: expected a bool, got {sort_degrees!r}")
    draws_fresh = resample_masks is not None or (valid_masks is not None and not isinstance(valid_masks, str))
    if sort_degrees and not draws_fresh:
        raise ValueError("sort_degrees: True needs resample_masks or an int valid_masks (masks drawn fresh)")
    if isinstance(valid_masks, str):
        if valid_masks != "sets":
            raise ValueError(f"valid_masks: expected a positive int, 'sets' or None, got {valid_masks!r}")
        if not cycle_masks:
            raise ValueError("valid_masks: 'sets' (the ensemble of the mask sets) needs cycle_masks=True")
    else:
        check_int(valid_masks, "valid_masks", or_none=True)
    if valid_masks is not None and not hasattr(model, "log_prob_ensemble"):
        raise ValueError(
            f"valid_masks: needs a MADE density model (with log_prob_ensemble), got {type(model).__name__}"
        )
    if valid_masks is not None and valid is None:
        raise ValueError("valid_masks: needs valid data")
    return mades


def _optimizer_factory(
    optimizer: OptimizerChoice, lr: float, weight_decay: float, optimizer_kwargs: dict[str, object] | None
) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
    """``params -> Optimizer`` for the ``optimizer`` argument of ``fit`` (checked here)."""
    if optimizer_kwargs is not None and not isinstance(optimizer_kwargs, dict):
        raise TypeError(f"optimizer_kwargs: expected a dict or None, got {type(optimizer_kwargs).__name__}")
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        if not callable(optimizer):
            raise TypeError(f"optimizer: expected an Optimizer class or a factory, got {type(optimizer).__name__}")
        if lr != 1e-3 or weight_decay != 0.0 or optimizer_kwargs is not None:
            raise ValueError(
                "optimizer: a factory sets its own options: leave lr, weight_decay and optimizer_kwargs "
                "at their defaults (or pass an Optimizer class)"
            )
        return optimizer
    kwargs = {"lr": lr, "weight_decay": weight_decay, **(optimizer_kwargs or {})}
    return lambda params: optimizer(params, **_fastest_step(optimizer, params, kwargs))


def _fastest_step(optimizer: type[torch.optim.Optimizer], params: list[nn.Parameter], kwargs: dict) -> dict:
    """``kwargs`` with ``fused=True`` (else ``foreach=True``) where the optimizer takes it and
    the caller chose neither: one kernel over all parameters rather than a loop over them.
    torch picks foreach by itself on GPUs only, and fused nowhere."""
    if "fused" in kwargs or "foreach" in kwargs:
        return kwargs
    accepted = inspect.signature(optimizer.__init__).parameters
    on_fused_devices = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if "fused" in accepted and on_fused_devices:
        return {**kwargs, "fused": True}
    if "foreach" in accepted:
        return {**kwargs, "foreach": True}
    return kwargs


@dataclass(frozen=True)
class _MaskSampling:
    """The masks of one ``fit``: which MADEs draw a fresh structure before every update (with
    a fresh order or not), from which stream, and the ensemble validation scores by."""

    mades: list[MADE]
    order: bool
    sort: bool
    generator: torch.Generator | None
    valid: _Ensemble | None

    @staticmethod
    def of(
        mades: list[MADE], resample: str | None, sort: bool, valid_masks: int | str | None, seed: int
    ) -> _MaskSampling:
        """``seed`` is the one every process shares, so every process draws the same masks."""
        generator = make_generator(seed + _MASK_SEED_OFFSETS[0]) if resample is not None else None
        chosen = mades if resample is not None else []
        order = resample != "connectivity"  # validation keeps the order that training keeps
        if valid_masks is None:
            valid = None
        elif valid_masks == "sets":
            valid = _Ensemble(None, seed)
        else:
            valid = _Ensemble(valid_masks, seed + _MASK_SEED_OFFSETS[1], order, sort)  # as training draws
        return _MaskSampling(chosen, order, sort, generator, valid)

    def before_update(self) -> None:
        for made in self.mades:
            made.resample_masks(self.generator, self.order, sort=self.sort)

@dataclass
class _TrainingRun:
    """What one call of [`fit`][flowkit.training.fit] trains with, and its history so far."""

    model: nn.Module
    loss_fn: Callable[..., Tensor]
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    device: torch.device
    group: _ProcessGroup
    generator: torch.Generator
    batch_size: int
    clip_grad_norm: float | None
    cycled_mades: list[MADE]  # moved to their next mask set before every minibatch
    mask_sampling: _MaskSampling
    history: History = field(default_factory=History)

    def train_epoch(self, epoch: int, x: Tensor, context: Tensor | None) -> float:
        """One pass over the rows in shuffled minibatches; the mean training NLL. The losses
        are read back (and averaged over processes) once per epoch, not at every step."""
        self.model.train()
        losses, sizes = [], []
        for rows in self.group.minibatches(len(x), self.batch_size, self.generator):
            for made in self.cycled_mades:
                made.next_mask()
            self.mask_sampling.before_update()
            losses.append(self.train_step(*_rows(x, context, rows, self.device)))
            sizes.append(len(rows))
        self.group.broadcast_buffers(self.model)  # running averages differ after the last step's local batches
        mean_losses = self.group.mean(torch.stack(losses)).tolist()  # every process sees every process's loss
        self._check_finite(mean_losses, epoch)
        return sum(loss * size for loss, size in zip(mean_losses, sizes)) / sum(sizes)

    def train_step(self, x: Tensor, context: Tensor | None) -> Tensor:
        """One optimizer step on one minibatch; its mean loss (detached, not read back)."""
        with _naming_the_data("train", self.model):
            loss = self.loss_fn(x, context)
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.optimizer.step()
        self.history.steps += 1
        return loss.detach()

    def _check_finite(self, losses: list[float], epoch: int) -> None:
        """Raises for the epoch's first non-finite loss, naming its step."""
        for index, loss in enumerate(losses):
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"fit: the loss is {loss} at epoch {epoch}, step {self.history.steps - len(losses) + index} "
                    "(try a smaller lr, clip_grad_norm, or check the data for inf/nan)"
                )

    def validate(self, x: Tensor, context: Tensor | None) -> float:
        """The validation NLL of every row, each process scoring its share; recorded in the history."""
        with _naming_the_data("valid", self.model):
            nll = _shared_mean_nll(
                self.model, x, context, max(self.batch_size, 1024), self.device, self.group, self.mask_sampling.valid
            )
        self.history.valid_nll.append(nll)
        return nll


@dataclass
class _EarlyStopping:
    """Keeps the weights of the best validation NLL so far, and counts the epochs since."""

    patience: int | None
    best_nll: float = math.inf
    best_state: dict[str, Tensor] | None = None
    waited: int = 0

    def observe(self, nll: float, epoch: int, model: nn.Module, history: History) -> None:
        """Takes one epoch's validation NLL: a better one saves the model's weights."""
        if nll < self.best_nll:
            self.best_nll, self.waited, history.best_epoch = nll, 0, epoch
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.waited += 1

    @property
    def exhausted(self) -> bool:
        """Whether ``patience`` epochs in a row brought no improvement."""
        return self.patience is not None and self.waited >= self.patience


@contextmanager
def _mask_set_pinned(mades: list[MADE], index: int) -> Iterator[None]:
    """Activates mask set ``index`` of every MADE in ``mades`` inside the block, and then
    each one's mask set from before again, so that a cycle carries on where it was."""
    before = [made.active_mask for made in mades]
    for made in mades:
        made.set_mask(index)
    try:
        yield
    finally:
        for made, active in zip(mades, before):
            made.set_mask(active)


def _stop_early(history: History, epoch: int, bar: tqdm, postfix: dict[str, str]) -> None:
    """Records that training stopped at ``epoch``, and says why where the bar was."""
    history.stopped_early, history.stopped_epoch = True, epoch
    bar.set_postfix(postfix)
    if not bar.disable:  # the bar vanishes when it closes (leave=False): say why it ended
        tqdm.write(_early_stop_message(history), file=sys.stderr)


def mean_nll(
    model: nn.Module,
    x: Tensor,
    context: Tensor | None = None,
    batch_size: int = 1024,
    *,
    num_masks: int | None = None,
    seed: int | None = None,
    order: bool = True,
    sort: bool = False,
) -> float:
    """The mean negative log-likelihood of rows ``x`` under ``model`` (no gradients, eval
    mode); rows are moved to the model's device batch by batch.

    Args:
        model: Any ``nn.Module`` with ``log_prob``.
        x: The rows, shape ``(N, D)``.
        context: The context of each row, for conditional models.
        batch_size: Rows scored at a time.
        num_masks: Score with the ensemble of this many freshly drawn masks (a MADE density
            model's [`log_prob_ensemble`][flowkit.distributions.made_models.AutoregressiveMADE.log_prob_ensemble]);
            the same masks for every batch.
        seed: The seed of those masks (drawn from torch's global generator when ``None``).
        order: Draw a fresh order for each of those masks; ``False`` keeps the active order
            (for a model trained with ``resample_masks="connectivity"``).
        sort: Sort each hidden layer's degrees in those masks (for a model trained with
            ``sort_degrees=True``).
    """
    check_int(num_masks, "num_masks", or_none=True)
    if num_masks is not None and not hasattr(model, "log_prob_ensemble"):
        raise ValueError(f"num_masks: needs a MADE density model (with log_prob_ensemble), got {type(model).__name__}")
    if not isinstance(sort, bool):
        raise ValueError(f"sort: expected a bool, got {sort!r}")
    device = _device_of(model)
    # One seed for every batch: the same masks.
    ensemble = None if num_masks is None else _Ensemble(num_masks, make_generator(seed).initial_seed(), order, sort)
    total = _nll_sum(model, x, context, torch.arange(len(x), device="cpu"), batch_size, device, ensemble)
    return total / len(x)


@dataclass(frozen=True)
class _Ensemble:
    """Score by the ensemble of ``num_masks`` masks drawn from ``seed`` (``order``: fresh orders;
    ``sort``: sorted hidden degrees), or of the model's mask sets when ``num_masks`` is ``None``."""

    num_masks: int | None
    seed: int
    order: bool = True
    sort: bool = False


def _nll_sum(
    model: nn.Module, x: Tensor, context: Tensor | None, rows: Tensor, batch_size: int, device,
    ensemble: _Ensemble | None = None,
) -> float:  # fmt: skip
    """The summed NLL of ``rows``, under ``ensemble`` when given."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for batch in rows.split(batch_size):
            x_batch, c_batch = _rows(x, context, batch, device)
            if ensemble is None:
                log_prob = _log_prob(model, x_batch, c_batch)
            else:
                log_prob = model.log_prob_ensemble(
                    x_batch, c_batch, num_masks=ensemble.num_masks, seed=ensemble.seed, order=ensemble.order,
                    sort=ensemble.sort,
                )  # fmt: skip
            total -= log_prob.sum().item()
    model.train(was_training)
    return total


def _shared_mean_nll(
    model, x: Tensor, context: Tensor | None, batch_size: int, device, group: _ProcessGroup,
    ensemble: _Ensemble | None = None,
) -> float:  # fmt: skip
    """The mean NLL of all rows, each process scoring its share."""
    rows = torch.arange(group.rank, len(x), group.size, device="cpu")
    total = _nll_sum(model, x, context, rows, batch_size, device, ensemble)
    return group.sum(torch.tensor(total, dtype=torch.float64, device=device)).item() / len(x)


def _rows(x: Tensor, context: Tensor | None, rows: Tensor, device) -> tuple[Tensor, Tensor | None]:
    """The rows of ``x`` (and of the context), on ``device``."""
    rows = rows.to(x.device)
    picked = x[rows].to(device, non_blocking=True)
    return picked, None if context is None else context[rows.to(context.device)].to(device, non_blocking=True)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


class _NegativeLogLikelihood(nn.Module):
    """The training loss as a module: ``DistributedDataParallel`` synchronises gradients
    for a module's ``forward``, and ``log_prob`` is not one."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return -_log_prob(self.model, x, context).mean()


def _loss_function(model, x_train, c_train, device, distributed: bool, compile: bool) -> Callable[..., Tensor]:
    loss: nn.Module = _NegativeLogLikelihood(model)
    if distributed:
        _initialise_from_data(model, *_rows(x_train, c_train, torch.arange(min(len(x_train), 1024)), device))
        device_ids = [device.index] if device.type == "cuda" else None
        loss = nn.parallel.DistributedDataParallel(loss, device_ids=device_ids)  # copies rank 0's state
        sync_from_buffers(model)
    return torch.compile(loss) if compile else loss


def _initialise_from_data(model: nn.Module, x: Tensor, context: Tensor | None) -> None:
    """Runs ActNorm's data-dependent initialisation now, on this process's rows, so that
    ``DistributedDataParallel`` copies rank 0's result to every process (initialised
    later, each process would keep its own)."""
    if any(isinstance(m, ActNorm) and not m.is_initialized for m in model.modules()):
        model.train()
        with torch.no_grad():
            _log_prob(model, x, context)


@runtime_checkable
class SyncsFromBuffers(Protocol):
    """A module that keeps Python copies of some of its buffers, so that its hot paths never
    read them back from the device ([`MADE`][flowkit.nn.MADE]'s structure,
    [`ActNorm`][flowkit.transforms.ActNorm]'s flag), and refreshes them on request."""

    def sync_from_buffers(self) -> None: ...


def sync_from_buffers(model: nn.Module) -> None:
    """Every module of ``model`` that keeps Python copies of buffers refreshes them, once the
    buffers were overwritten from rank 0."""
    for module in model.modules():
        if isinstance(module, SyncsFromBuffers):
            module.sync_from_buffers()


@dataclass(frozen=True)
class _ProcessGroup:
    """The processes ``fit`` trains on: this one alone, or torch.distributed's default group."""

    rank: int = 0
    size: int = 1

    @staticmethod
    def default() -> _ProcessGroup:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError(
                "distributed: True needs an initialised process group: start the processes with torchrun "
                "and call torch.distributed.init_process_group() first (see the 'Scaling up' docs page)"
            )
        return _ProcessGroup(torch.distributed.get_rank(), torch.distributed.get_world_size())

    def shared_seed(self, seed: int | None, device: torch.device) -> int | None:
        """Rank 0's seed, drawn there when ``None``, so that every process shuffles alike."""
        if self.size == 1:
            return seed
        value = torch.tensor(make_generator(seed).initial_seed() if self.rank == 0 else 0, device=device)
        torch.distributed.broadcast(value, src=0)
        return int(value)

    def minibatches(self, num_rows: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
        """This process's rows of each minibatch of one epoch. Every process draws the same
        permutation and takes every ``size``-th row of it; the ``num_rows % size`` rows at
        its end are left out of this epoch, so that all shares have the same size. A
        single row left over at the end joins the minibatch before it: batch
        normalisation cannot normalise one row."""
        order = torch.randperm(num_rows, generator=generator, device="cpu")
        order = order[: num_rows - num_rows % self.size]
        batches = list(order[self.rank :: self.size].split(batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    def sum(self, value: Tensor) -> Tensor:
        if self.size > 1:
            torch.distributed.all_reduce(value)
        return value

    def mean(self, value: Tensor) -> Tensor:
        return self.sum(value.clone()) / self.size if self.size > 1 else value

    def broadcast_buffers(self, model: nn.Module) -> None:
        if self.size > 1:
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
            sync_from_buffers(model)


def _log_prob(model: nn.Module, x: Tensor, context: Tensor | None) -> Tensor:
    return model.log_prob(x) if context is None else model.log_prob(x, context)


def _early_stop_message(history: History) -> str:
    waited = history.stopped_epoch - history.best_epoch
    return (
        f"fit: stopped at epoch {history.stopped_epoch}, best epoch {history.best_epoch}: no better validation NLL "
        f"for {waited} epochs (best {history.best_valid_nll:.3f}, whose weights are restored). "
        "Epochs count from 0, as in History."
    )


def _check_widths(model: nn.Module, x: Tensor, context: Tensor | None, name: str) -> None:
    """Rows and context as wide as the model says it takes (flowkit's models say so with
    ``input_dim`` and ``context_dim``; other modules are left to their ``log_prob``):
    caught before any training rather than at the first minibatch or validation."""
    for part, label, attribute in ((x, "rows", "input_dim"), (context, "context", "context_dim")):
        width = getattr(model, attribute, None)
        if part is not None and isinstance(width, int) and width > 0 and part.shape[-1] != width:
            raise ValueError(
                f"{name}: the model's {attribute} is {width}, so the {label} need shape (N, {width}); "
                f"got {tuple(part.shape)}"
            )


@contextmanager
def _naming_the_data(argument: str, model: nn.Module) -> Iterator[None]:
    """Names the argument of ``fit`` in the model's complaints about its rows: the model
    calls them ``x`` or ``context`` (``x: expected shape (..., 2)``), which the caller of
    ``fit`` never wrote."""
    try:
        yield
    except (TypeError, ValueError) as error:
        kind = TypeError if isinstance(error, TypeError) else ValueError
        rejected = f"{type(model).__name__}.log_prob rejected a minibatch of these rows"
        raise kind(f"{argument}: {rejected}: {error}") from error


def _split(data: Data, name: str) -> tuple[Tensor, Tensor | None]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Tensor) for d in data):
        x, context = data
        if len(context) != len(x):
            raise ValueError(f"{name}: x has {len(x)} rows but the context has {len(context)}")
    elif isinstance(data, tuple) and len(data) == 2:  # an (x, context) pair, not both tensors: name the one
        for index, part in enumerate(data):
            check_is_tensor(part, f"{name}[{index}]")
    else:
        check_is_tensor(data, name, expected="a torch.Tensor or a (x, context) pair of tensors")
        x, context = data, None
    if x.dim() < 2 or len(x) == 0:
        raise ValueError(f"{name}: expected a non-empty tensor of rows, shape (N, D), got {tuple(x.shape)}")
    for part, label in ((x, "rows"), (context, "context")):
        if part is not None and part.is_floating_point() and not torch.isfinite(part).all():
            bad = torch.nonzero(~torch.isfinite(part).reshape(len(part), -1).all(-1)).flatten()[:5].tolist()
            raise ValueError(f"{name}: the {label} hold inf or nan (first bad rows: {bad})")
    return x, context
