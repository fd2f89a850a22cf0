"""MADE as a density model of binarised handwritten digits.

This is flowkit's headline example. It fits ``flowkit.BernoulliMADE`` to scikit-learn's
8x8 digits, binarised (a pixel is on when its intensity is at least 8 of 16), as a
product of Bernoulli conditionals,

    p(x) = prod_d Bernoulli(x_d | sigmoid(logit_d(x_<d))),

where one forward pass of the MADE gives all 64 logits at once. It compares two models,
both trained by ``flowkit.fit`` with the same budget and early stopping on a
validation split:

(a) a MADE with a single mask set, inputs in natural (raster) order;
(b) an order- and connectivity-agnostic MADE with 8 mask sets (random orders, random
    hidden degrees) that moves to the next mask set at every minibatch
    (``cycle_masks=True``), evaluated with each mask set alone and as the ensemble that
    averages the 8 models in probability space (``log_prob_ensemble``), as in the MADE
    paper (Germain et al., 2015).

The test negative log-likelihoods (in nats per digit) are printed next to the baseline
of independent Bernoulli pixels. Finally it draws a figure: test digits, samples from
model (a) (``model.sample``), and completions of the test digits' bottom halves given
their top halves (``model.complete``). In natural order the top half comes first, so
these completions are exact samples from p(bottom | top).

Run ``python examples/made_digits.py`` (about a minute on two idle CPU cores) or add
``--quick`` for a smoke run of a few seconds. The figure goes to
``examples/output/made_digits.png`` (``--out`` picks another folder).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _cli import add_shared_options, parse_with_presets  # noqa: E402

import flowkit  # noqa: E402
from flowkit.datasets import load_digits  # noqa: E402
from flowkit.training import mean_nll  # noqa: E402

SIDE = 8  # digits are SIDE x SIDE images
D = SIDE * SIDE
TOP_HALF = torch.arange(D) < D // 2  # the observed pixels of a completion, in raster order

FULL = {"epochs": 1000, "hidden": [1000], "patience": 50}  # about a minute on two CPU cores
QUICK = {"epochs": 5, "hidden": [64], "patience": 5}  # a smoke test: a few seconds


def independent_bernoulli_nll(train: torch.Tensor, test: torch.Tensor) -> float:
    """Test NLL of the baseline that ignores all dependencies: one Bernoulli per pixel,
    its probability the (add-one smoothed) frequency of that pixel in the training set."""
    probs = (train.sum(0) + 1) / (len(train) + 2)
    return -(test @ probs.log() + (1 - test) @ (1 - probs).log()).mean().item()


def plot(rows: list[tuple[str, torch.Tensor]], path: Path) -> None:
    """One row of digits per entry; a red line marks the end of a completion's given top half."""
    n = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), n, figsize=(1.0 * n, 1.15 * len(rows)), squeeze=False)
    for row, (title, images) in zip(axes, rows):
        for ax, image in zip(row, images):
            ax.imshow(image.reshape(SIDE, SIDE).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if title.startswith("completions"):
                ax.axhline(SIDE // 2 - 0.5, color="tab:red", linewidth=1.5)
        row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle("MADE on binarised 8x8 digits")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, help=f"maximum epochs per model (default {FULL['epochs']})")
    parser.add_argument("--hidden", type=int, nargs="+", help=f"hidden widths (default {FULL['hidden']})")
    parser.add_argument("--patience", type=int, help=f"epochs without progress before stopping ({FULL['patience']})")
    parser.add_argument("--masks", type=int, default=8, help="mask sets of the order-agnostic model (default 8)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_shared_options(parser, QUICK)
    return parse_with_presets(parser, argv, FULL, QUICK)


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    # The layers are small: on a busy two-core machine competing OpenMP threads can make
    # each step many times slower, and a second thread buys little on an idle one.
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_digits()  # binarised, shuffled 70/10/20 with a fixed seed
    sizes = f"{len(data.train)} train / {len(data.valid)} validation / {len(data.test)} test"
    print(f"binarised digits: {sizes}, {D} pixels")

    single = flowkit.BernoulliMADE(D, args.hidden, conditioner=flowkit.MADEConfig(order="natural"), seed=args.seed)
    order_agnostic = flowkit.MADEConfig(order="random", degrees="random", num_masks=args.masks)
    agnostic = flowkit.BernoulliMADE(D, args.hidden, conditioner=order_agnostic, seed=args.seed + 1)
    # fit: Adam on minibatches, early stopping on the validation NLL, best weights restored.
    # Model (b) moves to its next mask set at every minibatch and is validated with mask set 0.
    best_epochs = []
    for model in (single, agnostic):
        history = flowkit.fit(
            model,
            data.train,
            data.valid,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.patience,
            cycle_masks=model.made.num_masks > 1,
            progress=not args.no_progress,
            seed=args.seed,
        )
        best_epochs.append(history.best_epoch + 1)
    print(f"best validation epoch: (a) {best_epochs[0]}, (b) {best_epochs[1]} (of at most {args.epochs})")

    K = agnostic.made.num_masks
    with torch.no_grad():
        per_mask = torch.stack([-agnostic.log_prob_ensemble(data.test, mask_indices=[k]).mean() for k in range(K)])
        ensemble = -agnostic.log_prob_ensemble(data.test).mean().item()
    spread = f"best {per_mask.min().item():.2f}, worst {per_mask.max().item():.2f}"
    rows = [
        ("independent Bernoulli pixels (baseline)", independent_bernoulli_nll(data.train, data.test), ""),
        ("(a) MADE, one mask, natural order", mean_nll(single, data.test), ""),
        (f"(b) MADE, {K} masks, each mask alone (mean)", per_mask.mean().item(), spread),
        (f"(b) MADE, ensemble of {K} masks", ensemble, ""),
    ]
    print("\ntest negative log-likelihood, in nats per digit (lower is better):")
    for name, nll, note in rows:
        print(f"{name:<44}{nll:>7.2f}   {note}".rstrip())

    exact = single.is_exact_completion(TOP_HALF)  # natural order: the top half comes first
    print(f"\n(a) completes the bottom half exactly given the top half: {exact}")
    assert exact
    torch.manual_seed(args.seed)
    shown = data.test[:10]
    figure = [
        ("test digits", shown),
        ("samples", single.sample((len(shown),))),
        ("completions\n(top half given)", single.complete(shown, TOP_HALF)),
    ]
    path = args.out / "made_digits.png"
    plot(figure, path)
    try:
        path = path.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    print(f"figure: {path}")
    print(f"time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
