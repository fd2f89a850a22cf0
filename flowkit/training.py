"""One training loop for anything with a ``log_prob``: flows and MADE density models."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowkit.seeding import make_generator

__all__ = ["History", "fit", "mean_nll"]

Data = Tensor | tuple[Tensor, Tensor]


@dataclass
class History:
    """What [`fit`][flowkit.training.fit] did: per-epoch mean training and validation negative
    log-likelihoods, the epoch whose weights were kept, and the number of steps."""

    train_nll: list[float] = field(default_factory=list)
    valid_nll: list[float] = field(default_factory=list)
    best_epoch: int = -1
    steps: int = 0
    stopped_early: bool = False

    @property
    def best_valid_nll(self) -> float:
        """The validation NLL of the kept weights (``nan`` without validation data)."""
        return self.valid_nll[self.best_epoch] if self.valid_nll else math.nan


def fit(
    model: nn.Module,
    train: Data,
    valid: Data | None = None,
    *,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    weight_decay: float = 0.0,
    patience: int | None = 20,
    clip_grad_norm: float | None = None,
    cycle_masks: bool = False,
    progress: bool = True,
    seed: int | None = None,
) -> History:
    """Maximum-likelihood training: minimises ``-model.log_prob(x).mean()`` over
    minibatches.

    The model is trained in training mode and left in eval mode at the end (so a
    [`BatchNorm`][flowkit.transforms.BatchNorm] layer then uses its running averages).

    Args:
        model: Any ``nn.Module`` with ``log_prob(x)`` (or ``log_prob(x, context)``).
        train: A tensor of rows, or ``(x, context)`` for conditional models.
        valid: Validation data in the same form. When given, the weights with the best
            validation NLL are restored at the end, and training stops after
            ``patience`` epochs without improvement.
        epochs: The most epochs to run.
        batch_size: Rows per minibatch.
        lr: Learning rate.
        optimizer: An optimizer class, called as ``optimizer(params, lr=..., weight_decay=...)``.
        weight_decay: Passed to the optimizer.
        patience: Epochs without validation improvement before stopping; ``None`` never stops.
        clip_grad_norm: Clip the gradient norm to this value when given.
        cycle_masks: Move every MADE in the model to its next mask set at every minibatch
            (order- and connectivity-agnostic training). Validation uses mask set 0.
        progress: Show a tqdm progress bar.
        seed: Seeds the minibatch shuffling.

    Returns:
        A [`History`][flowkit.training.History].

    Raises:
        FloatingPointError: When the loss becomes non-finite; the message names the step.

    Examples:
        >>> from flowkit import maf
        >>> flow = maf(2, num_transforms=2, hidden_dims=[16])
        >>> history = fit(flow, torch.randn(256, 2), torch.randn(64, 2), epochs=3, progress=False)
        >>> len(history.train_nll)
        3
    """
    x_train, c_train = _split(train, "train")
    x_valid, c_valid = _split(valid, "valid") if valid is not None else (None, None)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience: expected a positive int or None, got {patience!r}")
    made_modules = [m for m in model.modules() if hasattr(m, "next_mask")]
    if cycle_masks and not made_modules:
        raise ValueError("cycle_masks: the model holds no MADE with mask sets")

    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params, lr=lr, weight_decay=weight_decay)
    generator = make_generator(seed)
    history = History()
    best_state, best_nll, waited = None, math.inf, 0

    bar = tqdm(range(epochs), desc="fit", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for rows in torch.randperm(len(x_train), generator=generator, device="cpu").split(batch_size):
            if cycle_masks:
                for made in made_modules:
                    made.next_mask()
            loss = -_log_prob(model, x_train[rows], None if c_train is None else c_train[rows]).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"fit: the loss is {loss.item()} at epoch {epoch}, step {history.steps} "
                    "(try a smaller lr, clip_grad_norm, or check the data for inf/nan)"
                )
            opt.zero_grad()
            loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, clip_grad_norm)
            opt.step()
            history.steps += 1
            total += loss.item() * len(rows)
            count += len(rows)
        history.train_nll.append(total / count)
        postfix = {"train": f"{history.train_nll[-1]:.3f}"}

        if x_valid is not None:
            training_masks = [made.active_mask for made in made_modules]
            if cycle_masks:
                for made in made_modules:
                    made.set_mask(0)
            history.valid_nll.append(mean_nll(model, x_valid, c_valid, batch_size=max(batch_size, 1024)))
            postfix["valid"] = f"{history.valid_nll[-1]:.3f}"
            improved = history.valid_nll[-1] < best_nll
            if improved:  # saved with mask set 0 active, the one validated
                best_nll, waited, history.best_epoch = history.valid_nll[-1], 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            if cycle_masks:  # carry on the cycle where it was, so every mask set gets its turn
                for made, index in zip(made_modules, training_masks):
                    made.set_mask(index)
            if not improved:
                waited += 1
                if patience is not None and waited >= patience:
                    history.stopped_early = True
                    bar.set_postfix(postfix)
                    break
        else:
            history.best_epoch = epoch
        bar.set_postfix(postfix)
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def mean_nll(model: nn.Module, x: Tensor, context: Tensor | None = None, batch_size: int = 1024) -> float:
    """The mean negative log-likelihood of rows ``x`` under ``model`` (no gradients)."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            end = start + batch_size
            log_prob = _log_prob(model, x[start:end], None if context is None else context[start:end])
            total -= log_prob.sum().item()
    model.train(was_training)
    return total / len(x)


def _log_prob(model: nn.Module, x: Tensor, context: Tensor | None) -> Tensor:
    return model.log_prob(x) if context is None else model.log_prob(x, context)


def _split(data: Data, name: str) -> tuple[Tensor, Tensor | None]:
    if isinstance(data, Tensor):
        x, context = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Tensor) for d in data):
        x, context = data
        if len(context) != len(x):
            raise ValueError(f"{name}: x has {len(x)} rows but the context has {len(context)}")
    else:
        raise TypeError(f"{name}: expected a tensor or a (x, context) pair of tensors, got {type(data).__name__}")
    if x.dim() < 2 or len(x) == 0:
        raise ValueError(f"{name}: expected a non-empty tensor of rows, shape (N, D), got {tuple(x.shape)}")
    for part, label in ((x, "rows"), (context, "context")):
        if part is not None and part.is_floating_point() and not torch.isfinite(part).all():
            bad = torch.nonzero(~torch.isfinite(part).reshape(len(part), -1).all(-1)).flatten()[:5].tolist()
            raise ValueError(f"{name}: the {label} hold inf or nan (first bad rows: {bad})")
    return x, context
