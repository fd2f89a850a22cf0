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
``face_completion.png``: for each dataset, headed by its test NLL, the originals, their
visible top half, the greedy (mode) completion and several sampled completions. Blue
marks the hidden bottom half: filled where it is hidden, outlined where the model
completed it.

    python examples/face_completion.py
    python examples/face_completion.py --quick   # tiny run (the test suite's smoke test)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

import flowkit  # noqa: E402
from flowkit.datasets import load_digits, load_faces  # noqa: E402
from flowkit.training import mean_nll  # noqa: E402

# The tests load this file by path, without its folder on sys.path as a script run has it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import add_shared_options, parse_with_presets  # noqa: E402

FULL = {"hidden": [1000], "epochs": 100, "images": 8, "draws": 3}
QUICK = {"hidden": [640], "epochs": 1, "images": 3, "draws": 1}  # seconds: the test suite's smoke run


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
    natural = flowkit.MADEConfig(order="natural")
    model = flowkit.CategoricalMADE(dim, hidden, num_classes=data["levels"], conditioner=natural, seed=seed)
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
    completions = [("greedy completion\n(each pixel's mode)", model.complete(images, observed, method="mode"))]
    return completions + [(f"sampled completion {k + 1}", model.complete(images, observed)) for k in range(draws)]


@dataclass
class Panel:
    """One dataset's block of the figure: its test NLL, the test images and their completions."""

    name: str
    data: dict
    nll: float
    images: torch.Tensor
    completions: list[tuple[str, torch.Tensor]]


HIDDEN = "tab:blue"  # the hidden half: filled where it is hidden, outlined where the model completed it


def plot(panels: list[Panel], path: str) -> None:
    """Writes the figure of ``panels`` to ``path``."""
    fig = figure(panels)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(panels: list[Panel]) -> plt.Figure:
    """One block per dataset, headed by its test NLL: originals, the visible top half, then
    the completions; a column per test image. Blue marks the hidden bottom half."""
    columns = max(len(panel.images) for panel in panels)
    heights = [2 + len(panel.completions) for panel in panels]
    width = max(1.1 * columns + 1.6, 7.5)  # room for the titles however few images are shown
    fig = plt.figure(figsize=(width, 1.15 * sum(heights) + 1.0), layout="constrained")
    fig.suptitle(
        "A CategoricalMADE completes the bottom half of held-out images, given the top half",
        fontsize=11, fontweight="bold",
    )  # fmt: skip
    fig.legend(
        handles=[
            Patch(facecolor=HIDDEN, label="the hidden bottom half, which the model does not see"),
            Patch(facecolor="none", edgecolor=HIDDEN, linewidth=1.5, label="the bottom half, completed by the model"),
        ],
        loc="outside lower center", ncols=2, fontsize=8, frameon=False,
    )  # fmt: skip
    for block, panel in zip(fig.subfigures(len(panels), 1, height_ratios=heights), panels):
        _plot_block(block, panel, columns)
    return fig


def _plot_block(block, panel: Panel, columns: int) -> None:
    side, top, levels = panel.data["side"], panel.data["side"] // 2, panel.data["levels"]
    bits = panel.nll / side**2 / math.log(2)
    block.suptitle(
        f"{panel.name}: {side}x{side} pixels, {levels} grey levels; "
        f"test NLL {panel.nll:.1f} nats/image ({bits:.3f} bits/pixel)",
        fontsize=9, x=0.02, ha="left",
    )  # fmt: skip
    visible = panel.images.clone().float()
    visible[:, top * side :] = float("nan")  # shown in the colour map's "bad" colour
    rows = [("original", panel.images), ("visible top half", visible)] + panel.completions
    cmap = plt.get_cmap("gray").with_extremes(bad=HIDDEN)
    axes = block.subplots(len(rows), columns, squeeze=False)
    for row, (label, images) in enumerate(rows):
        completed = row >= 2
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if col >= len(images):
                continue
            ax.imshow(images[col].float().reshape(side, side).numpy(), cmap=cmap, vmin=0, vmax=levels - 1)
            if completed:  # outline the part the model drew
                outline = Rectangle((-0.5, top - 0.5), side, side - top, fill=False, edgecolor=HIDDEN, linewidth=1.5)
                ax.add_patch(outline)
            if row == 0:
                ax.set_title(f"test image {col + 1}", fontsize=7)
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", help=f"hidden widths (default {FULL['hidden']})")
    parser.add_argument("--levels", type=int, default=8, help="grey levels for the faces")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {FULL['epochs']})")
    parser.add_argument("--images", type=int, help=f"test images to show per dataset (default {FULL['images']})")
    parser.add_argument("--draws", type=int, help=f"completions per image (default {FULL['draws']})")
    add_shared_options(parser, QUICK)
    args = parse_with_presets(parser, None, FULL, QUICK)

    os.makedirs(args.out, exist_ok=True)
    panels = []
    for name, data in (("faces", faces(args.levels, args.seed)), ("digits", digits(args.seed))):
        model = train(data, args.hidden, args.epochs, args.seed, not args.no_progress)
        nll = mean_nll(model, data["test"])
        torch.manual_seed(args.seed)
        images = data["test"][: args.images]
        panels.append(Panel(name, data, nll, images, complete_bottom(model, images, data["side"], args.draws)))
    # The table once both models are trained, so that fit's progress lines do not split it.
    print("| dataset | D | levels | test NLL (nats/image) | bits/pixel | uniform baseline (nats/image) |")
    print("|---|---|---|---|---|---|")
    for panel in panels:
        dim, levels = panel.data["side"] ** 2, panel.data["levels"]
        bits = panel.nll / dim / math.log(2)
        print(f"| {panel.name} | {dim} | {levels} | {panel.nll:.1f} | {bits:.3f} | {dim * math.log(levels):.1f} |")
    path = os.path.join(args.out, "face_completion.png")
    plot(panels, path)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
