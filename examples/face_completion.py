"""Image completion with MADE: see the top half of a held-out image, draw the bottom half.

This is the experiment that ends the blog post flowkit grew from, made reusable. A
CategoricalMADE learns the joint distribution of quantised pixels in raster order, so
the top half of an image comes first in the order and sampling the rest from the
model's conditionals is *exact* sampling from p(bottom | top).

Two datasets, both bundled with their packages (no download):

* faces: scikit-image's ``lfw_subset``, 100 faces of 25x25 (train on 80, complete the
  other 20), grey levels quantised to 8;
* digits: scikit-learn's 8x8 digits with their 17 grey levels.

Prints the test negative log-likelihood (nats per image, and bits per pixel) and writes
``face_completion.png``: originals, the visible half, the greedy (mode) completion and
several sampled completions.

    python examples/face_completion.py
    python examples/face_completion.py --quick   # tiny run (the test suite's smoke test)
"""

from __future__ import annotations

import argparse
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import flowkit  # noqa: E402
from flowkit.datasets import load_digits, load_faces  # noqa: E402
from flowkit.training import mean_nll  # noqa: E402


def faces(levels: int, seed: int) -> dict:
    """Faces quantised to ``levels`` grey levels: 70 train, 10 valid, 20 test."""
    train, test = load_faces(num_train=80, seed=seed)
    quantise = lambda x: torch.clamp((x * levels).long(), max=levels - 1)  # noqa: E731
    return {"train": quantise(train[:70]), "valid": quantise(train[70:]), "test": quantise(test),
            "side": 25, "levels": levels}


def digits(seed: int) -> dict:
    """The 8x8 digits with their 17 grey levels (0..16)."""
    splits = load_digits(binarize=False, seed=seed)
    return {"train": splits.train.long(), "valid": splits.valid.long(), "test": splits.test.long(),
            "side": 8, "levels": 17}


def train(data: dict, hidden: list[int], epochs: int, seed: int, progress: bool) -> flowkit.CategoricalMADE:
    torch.manual_seed(seed)
    dim = data["side"] ** 2
    model = flowkit.CategoricalMADE(dim, hidden, num_classes=data["levels"], order="natural", seed=seed)
    flowkit.fit(model, data["train"], data["valid"], epochs=epochs, batch_size=32, lr=1e-3, patience=15,
                progress=progress, seed=seed)
    return model


def complete_bottom(
    model: flowkit.CategoricalMADE, images: torch.Tensor, side: int, draws: int
) -> list[tuple[str, torch.Tensor]]:
    """The most likely completion (each pixel the mode of its conditional given all
    before it) and ``draws`` sampled completions of the bottom half, given the top half."""
    observed = torch.arange(side * side) < (side // 2) * side
    assert model.is_exact_completion(observed)  # raster order: the top half comes first
    completions = [("greedy mode", model.complete(images, observed, method="mode"))]
    return completions + [(f"sample {k + 1}", model.complete(images, observed)) for k in range(draws)]


def plot(panels: list[tuple[str, dict, torch.Tensor, list[torch.Tensor]]], path: str) -> None:
    """One block per dataset: originals, visible half, completions."""
    rows = sum(2 + len(completions) for *_, completions in panels)
    columns = max(len(images) for _, _, images, _ in panels)
    fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.15 * rows), squeeze=False)
    cmap = plt.get_cmap("gray").with_extremes(bad="tab:blue")  # the hidden half shows blue
    row = 0
    for name, data, images, completions in panels:
        side, top = data["side"], data["side"] // 2
        visible = images.clone().float()
        visible[:, top * side :] = float("nan")  # hidden part shows as blank
        blocks = [("original", images.float()), ("visible top half", visible)] + completions
        for label, block in blocks:
            block = block.float()
            for col in range(columns):
                ax = axes[row, col]
                ax.axis("off")
                if col < len(block):
                    ax.imshow(block[col].reshape(side, side), cmap=cmap, vmin=0, vmax=data["levels"] - 1)
            axes[row, 0].set_title(f"{name}: {label}", fontsize=7, loc="left")
            row += 1
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1000])
    parser.add_argument("--levels", type=int, default=8, help="grey levels for the faces")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--images", type=int, default=8, help="test images to show per dataset")
    parser.add_argument("--draws", type=int, default=3, help="completions per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="examples/output")
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.epochs, args.images, args.draws = [640], 1, 3, 1

    os.makedirs(args.out, exist_ok=True)
    panels = []
    print("| dataset | D | levels | test NLL (nats/image) | bits/pixel | uniform baseline (nats/image) |")
    print("|---|---|---|---|---|---|")
    for name, data in (("faces", faces(args.levels, args.seed)), ("digits", digits(args.seed))):
        model = train(data, args.hidden, args.epochs, args.seed, not args.no_progress)
        dim = data["side"] ** 2
        nll = mean_nll(model, data["test"])
        uniform = dim * math.log(data["levels"])
        print(f"| {name} | {dim} | {data['levels']} | {nll:.1f} | {nll / dim / math.log(2):.3f} | {uniform:.1f} |")
        torch.manual_seed(args.seed)
        images = data["test"][: args.images]
        panels.append((name, data, images, complete_bottom(model, images, data["side"], args.draws)))
    figure = os.path.join(args.out, "face_completion.png")
    plot(panels, figure)
    print(f"\nfigure: {figure}")


if __name__ == "__main__":
    main()
