"""MADE as a density model of binarised handwritten digits.

This is flowkit's headline example. It fits a ``flowkit.MADE`` to scikit-learn's 8x8
digits, binarised (a pixel is on when its intensity is above 7 of 16), as a product of
Bernoulli conditionals,

    p(x) = prod_d Bernoulli(x_d | sigmoid(logit_d(x_<d))),

where one forward pass of the MADE gives all 64 logits at once. It compares two models
trained with the same budget and early stopping on a validation split:

(a) a MADE with a single mask set, inputs in natural (raster) order;
(b) an order- and connectivity-agnostic MADE with K mask sets (random orders, random
    hidden degrees) that moves to the next mask set at every minibatch, evaluated with
    each mask set alone and as an ensemble that averages the K models in probability
    space, as in the MADE paper (Germain et al., 2015).

The test negative log-likelihoods (in nats per digit) are printed next to the baseline
of independent Bernoulli pixels. Finally it draws a figure: test digits, samples from
model (a), and completions of the test digits' bottom halves given their top halves.
Both samples and completions use ``MADE.sequential``, which builds ``x`` one pixel at a
time in the model's order; with natural order the top half (the first 32 pixels) comes
first, so a completion just feeds back the observed pixels for those.

Run ``python examples/made_digits.py`` (about a minute on two idle CPU cores) or add
``--quick`` for a smoke run of a few seconds. The figure goes to
``examples/output/made_digits.png`` (``--out`` picks another folder).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from flowkit import MADE

SPLIT_SEED = 0  # the train/validation/test split never changes, whatever --seed says
SIDE = 8  # digits are SIDE x SIDE images
D = SIDE * SIDE
OBSERVED = D // 2  # completions are given the top half: the first 32 pixels in raster order


# ----------------------------------------------------------------------------- data
def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binarised digits split 60/20/20 into train, validation and test, as float tensors."""
    digits = load_digits()
    x = torch.as_tensor(digits.data > 7, dtype=torch.float32)
    train_val, test = train_test_split(x, test_size=0.2, random_state=SPLIT_SEED, stratify=digits.target)
    train, val = train_test_split(train_val, test_size=0.25, random_state=SPLIT_SEED)
    return train, val, test


def independent_bernoulli_nll(train: torch.Tensor, test: torch.Tensor) -> float:
    """Test NLL of the baseline that ignores all dependencies: one Bernoulli per pixel,
    its probability the (add-one smoothed) frequency of that pixel in the training set."""
    probs = (train.sum(0) + 1) / (len(train) + 2)
    log_lik = test @ probs.log() + (1 - test) @ (1 - probs).log()
    return -log_lik.mean().item()


# ---------------------------------------------------------------------- likelihood
def log_likelihood(made: MADE, x: torch.Tensor) -> torch.Tensor:
    """Per-example log p(x) in nats under the active mask set."""
    return -F.binary_cross_entropy_with_logits(made(x), x, reduction="none").sum(-1)


def loss_fn(made: MADE, x: torch.Tensor) -> torch.Tensor:
    """The training loss: the mean NLL of a minibatch."""
    return F.binary_cross_entropy_with_logits(made(x), x, reduction="none").sum(-1).mean()


@torch.no_grad()
def mask_log_likelihoods(made: MADE, x: torch.Tensor) -> torch.Tensor:
    """Log-likelihoods of ``x`` under each mask set, shape ``(num_masks, len(x))``.
    Leaves the MADE's active mask set as it found it."""
    active = int(made.mask_index)
    rows = []
    for index in range(made.num_masks):
        made.set_mask(index)
        rows.append(log_likelihood(made, x))
    made.set_mask(active)
    return torch.stack(rows)


def ensemble_nll(log_liks: torch.Tensor) -> float:
    """Mean NLL of the mixture that averages the mask sets' likelihoods in probability
    space: -log((1/K) sum_k p_k(x)), by log-sum-exp for stability."""
    mixture = torch.logsumexp(log_liks, dim=0) - math.log(len(log_liks))
    return -mixture.mean().item()


# ------------------------------------------------------------------------ training
def train(made: MADE, train_x: torch.Tensor, val_x: torch.Tensor, args, name: str) -> int:
    """Adam on minibatches with early stopping on the validation NLL (of the ensemble of
    all mask sets, which for a single mask set is just its NLL). Moves to the next mask
    set after every minibatch when the MADE has several. Restores the best weights and
    returns the epoch they come from."""
    optimizer = torch.optim.Adam(made.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    best_nll, best_epoch, best_state = math.inf, 0, copy.deepcopy(made.state_dict())
    progress = tqdm(range(1, args.epochs + 1), desc=name, unit="epoch", leave=False)
    for epoch in progress:
        made.train()
        for batch in torch.randperm(len(train_x), generator=generator).split(args.batch_size):
            loss = loss_fn(made, train_x[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if made.num_masks > 1:
                made.next_mask()
        made.eval()
        val_nll = ensemble_nll(mask_log_likelihoods(made, val_x))
        if val_nll < best_nll:
            best_nll, best_epoch, best_state = val_nll, epoch, copy.deepcopy(made.state_dict())
        progress.set_postfix(val_nll=f"{val_nll:.2f}", best=f"{best_nll:.2f}@{best_epoch}")
        if epoch - best_epoch >= args.patience:
            break
    progress.close()
    made.load_state_dict(best_state)
    return best_epoch


# ------------------------------------------------------------- sampling, completion
@torch.no_grad()
def sample(made: MADE, n: int, generator: torch.Generator) -> torch.Tensor:
    """Ancestral samples: each pixel is a Bernoulli draw given the pixels before it."""

    def step(params: torch.Tensor, i: int) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params[..., 0]), generator=generator)

    x, _ = made.sequential(step, batch_shape=(n,), method="fast")
    return x


@torch.no_grad()
def complete(made: MADE, x: torch.Tensor, observed: int, generator: torch.Generator) -> torch.Tensor:
    """Keeps pixels ``0 .. observed-1`` of ``x`` and samples the rest from the model.
    Needs those pixels to come first in the MADE's order (natural order does that)."""
    if made.permutation[:observed].sort().values.tolist() != list(range(observed)):
        raise ValueError("complete: the observed pixels must come first in the MADE's order")

    def step(params: torch.Tensor, i: int) -> torch.Tensor:
        if i < observed:
            return x[:, i]
        return torch.bernoulli(torch.sigmoid(params[..., 0]), generator=generator)

    completed, _ = made.sequential(step, batch_shape=(len(x),), method="fast")
    return completed


def plot(test: torch.Tensor, samples: torch.Tensor, completions: torch.Tensor, path: Path) -> None:
    """Three rows of digits: test digits, model samples, completions of the test digits'
    bottom halves (the red line marks where the observed top half ends)."""
    rows = [("test digits", test), ("samples", samples), ("completions\n(top half given)", completions)]
    n = len(test)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.0 * n, 1.15 * len(rows)), squeeze=False)
    for row, (title, images) in zip(axes, rows):
        for ax, image in zip(row, images):
            ax.imshow(image.reshape(SIDE, SIDE).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if images is completions:
                ax.axhline(OBSERVED // SIDE - 0.5, color="tab:red", linewidth=1.5)
        row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle("MADE on binarised 8x8 digits")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def shown_path(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


FULL = {"epochs": 1000, "hidden": [1000], "patience": 50}  # about a minute on two CPU cores
QUICK = {"epochs": 5, "hidden": [64], "patience": 5}  # a smoke test: a few seconds


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"a tiny run for smoke tests: {QUICK}")
    parser.add_argument("--epochs", type=int, help=f"maximum epochs per model (default {FULL['epochs']})")
    parser.add_argument("--hidden", type=int, nargs="+", help=f"hidden widths (default {FULL['hidden']})")
    parser.add_argument("--patience", type=int, help=f"epochs without progress before stopping ({FULL['patience']})")
    parser.add_argument("--masks", type=int, default=8, help="mask sets of the order-agnostic model (default 8)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, masks, minibatches and samples")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output", help="folder for the figure")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def evaluate(single: MADE, agnostic: MADE, train_x: torch.Tensor, test_x: torch.Tensor) -> list[tuple[str, float, str]]:
    """The rows of the results table: (model, test NLL in nats, a note)."""
    per_mask_log_liks = mask_log_likelihoods(agnostic, test_x)  # (K, N)
    per_mask = -per_mask_log_liks.mean(dim=1)
    K = agnostic.num_masks
    return [
        ("independent Bernoulli pixels (baseline)", independent_bernoulli_nll(train_x, test_x), ""),
        ("(a) MADE, one mask, natural order", -log_likelihood(single, test_x).mean().item(), ""),
        (
            f"(b) MADE, {K} masks, each mask alone (mean)",
            per_mask.mean().item(),
            f"best {per_mask.min().item():.2f}, worst {per_mask.max().item():.2f}",
        ),
        (f"(b) MADE, ensemble of {K} masks", ensemble_nll(per_mask_log_liks), ""),
    ]


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    # The layers are small, so a second thread buys little, and on a busy two-core machine
    # competing OpenMP threads can make each step a hundred times slower.
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, val_x, test_x = load_data()
    print(f"binarised digits: {len(train_x)} train / {len(val_x)} validation / {len(test_x)} test, {D} pixels")

    # One logit per pixel (param_dims=[1]): made(x) has the shape of x.
    single = MADE(D, args.hidden, param_dims=[1], order="natural", seed=args.seed)
    agnostic = MADE(
        D, args.hidden, param_dims=[1], order="random", degrees="random", num_masks=args.masks, seed=args.seed + 1
    )
    epoch_a = train(single, train_x, val_x, args, "(a) one mask")
    epoch_b = train(agnostic, train_x, val_x, args, f"(b) {args.masks} masks")
    print(f"best validation epoch: (a) {epoch_a}, (b) {epoch_b} (of at most {args.epochs})")

    with torch.no_grad():
        rows = evaluate(single, agnostic, train_x, test_x)
    print("\ntest negative log-likelihood, in nats per digit (lower is better):")
    for name, nll, note in rows:
        print(f"{name:<44}{nll:>7.2f}   {note}".rstrip())

    generator = torch.Generator().manual_seed(args.seed)
    shown = test_x[:10]
    path = args.out / "made_digits.png"
    plot(shown, sample(single, len(shown), generator), complete(single, shown, OBSERVED, generator), path)
    print(f"\nfigure: {shown_path(path)}")
    print(f"time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
