"""MADE on the MADE paper's binary UCI datasets, beside the paper's published numbers.

For each dataset, trains two BernoulliMADEs with one hidden layer and direct
input-to-output connections (the paper's setting):

* **1 mask**: a single order and connectivity;
* **mask sampling**: 32 mask sets, each with its own random order and random hidden
  degrees (order- and connectivity-agnostic), cycled every minibatch, evaluated as the
  paper does, averaging the probability over all 32.

Prints a table of test negative log-likelihoods (nats per example) next to the paper's
Table 1 and writes a bar chart.

    python examples/made_uci.py --data-dir ../shared/data/made-uci
    python examples/made_uci.py --quick --data-dir DIR   # tiny run (the test suite's smoke test)

The data directory holds ``dna.npz``, ``mushrooms.npz``, ``nips.npz`` (arrays ``train``,
``valid``, ``test``); datasets whose file is absent are skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import flowkit  # noqa: E402
from flowkit.datasets import load_made_uci  # noqa: E402
from flowkit.training import mean_nll  # noqa: E402

# Test NLL in nats, Germain et al. (2015), Table 1: (1 mask, mask sampling).
PAPER_NLL = {"dna": (83.63, 79.66), "mushrooms": (9.68, 9.69), "nips": (280.25, 277.28)}


def train_made(splits, hidden: int, num_masks: int, epochs: int, seed: int, progress: bool, orders: str = "random"):
    """Trains a BernoulliMADE (cycling ``num_masks`` orders and connectivities) and returns it.

    As in the paper's code: one hidden layer, direct input-to-output connections."""
    torch.manual_seed(seed)
    model = flowkit.BernoulliMADE(
        splits.dim,
        [hidden],
        order=orders if num_masks > 1 else "natural",
        degrees="random" if num_masks > 1 else "even",
        num_masks=num_masks,
        skip_connections=True,
        seed=seed,
    )
    flowkit.fit(
        model,
        splits.train,
        splits.valid,
        epochs=epochs,
        batch_size=100,
        lr=1e-3,
        patience=30,
        cycle_masks=num_masks > 1,
        progress=progress,
        seed=seed,
    )
    return model


def ensemble_nll(model, x: torch.Tensor) -> float:
    """Test NLL with the probability averaged over every mask set."""
    with torch.no_grad():
        return -model.log_prob_ensemble(x).mean().item()


def plot(results: dict, path: str) -> None:
    """Bar chart of flowkit's test NLL beside the paper's."""
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        ours = results[name]
        paper = PAPER_NLL.get(name, (float("nan"), float("nan")))
        xs = range(2)
        ax.bar([x - 0.2 for x in xs], [ours["one_mask"], ours["ensemble"]], width=0.4, label="flowkit")
        ax.bar([x + 0.2 for x in xs], paper, width=0.4, label="MADE paper")
        ax.set_xticks(list(xs), ["1 mask", "mask sampling"])
        ax.set_title(f"{name} (D={ours['dim']})")
        ax.set_ylabel("test NLL (nats)")
        low = min(ours["one_mask"], ours["ensemble"], *paper)
        ax.set_ylim(low * 0.9, None)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with dna.npz, mushrooms.npz, nips.npz")
    parser.add_argument("--datasets", nargs="+", default=["dna", "mushrooms", "nips"])
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--masks", type=int, default=32, help="mask sets for mask sampling")
    parser.add_argument(
        "--orders", choices=["random", "natural"], default="random",
        help="mask sampling over random orders and connectivities, or connectivities only",
    )
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="examples/output")
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.masks, args.epochs = 32, 4, 3

    os.makedirs(args.out, exist_ok=True)
    results = {}
    for name in args.datasets:
        path = os.path.join(args.data_dir, f"{name}.npz")
        if not os.path.isfile(path):
            print(f"skipping {name}: no file {path}")
            continue
        splits = load_made_uci(path)
        start = time.perf_counter()
        single = train_made(splits, args.hidden, 1, args.epochs, args.seed, not args.no_progress)
        sampled = train_made(splits, args.hidden, args.masks, args.epochs, args.seed, not args.no_progress, args.orders)
        results[name] = {
            "dim": splits.dim,
            "one_mask": mean_nll(single, splits.test),
            "sampled_mask0": mean_nll(sampled, splits.test),
            "ensemble": ensemble_nll(sampled, splits.test),
            "seconds": time.perf_counter() - start,
        }
    if not results:
        print("no dataset found; nothing to do")
        return

    print("\nTest NLL (nats per example; lower is better)")
    print("| dataset | D | flowkit 1 mask | paper 1 mask | flowkit mask sampling (1 mask / ensemble) "
          "| paper mask sampling | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        paper = PAPER_NLL.get(name, (float("nan"), float("nan")))
        print(
            f"| {name} | {r['dim']} | {r['one_mask']:.2f} | {paper[0]:.2f} | "
            f"{r['sampled_mask0']:.2f} / {r['ensemble']:.2f} | {paper[1]:.2f} | {r['seconds']:.0f} |"
        )
    figure = os.path.join(args.out, "made_uci.png")
    plot(results, figure)
    print(f"\nfigure: {figure}")


if __name__ == "__main__":
    main()
