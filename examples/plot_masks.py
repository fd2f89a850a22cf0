"""Draws the masks of a small MADE, and the network they cut out of a dense autoencoder.

Left: the network, inputs at the bottom and outputs at the top. Every unit is labelled
with its degree, and every connection the masks keep is drawn in the colour of the degree
of the unit it leaves, so you can follow the rules: a hidden unit of degree m sees the
units of degree <= m below it, and the output for the input of degree d sees only the
units of degree < d. Right: the same masks as matrices (rows: units of the layer above,
columns: units of the layer below), and the input-to-output connectivity they imply.

Run ``python examples/plot_masks.py``; it writes ``docs/assets/made_masks.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.gridspec import GridSpec

from flowkit import MADE

# The tests load this file by path, without its folder on sys.path as a script run has it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import add_shared_options  # noqa: E402

# Not examples/output: this figure is the documentation's (docs/tutorials/made-and-masks.md).
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "assets" / "made_masks.png"


def degree_colour(degree: int, top: int):
    """A colour for a degree in 0..top, from a qualitative colormap."""
    return plt.get_cmap("viridis")(0.1 + 0.8 * degree / max(top, 1))


def layer_positions(width: int, max_width: int) -> list[float]:
    """Horizontal positions of ``width`` units, centred under the widest layer."""
    offset = (max_width - width) / 2
    return [offset + i for i in range(width)]


def draw_network(ax, made: MADE) -> None:
    """The network as a graph: units labelled and coloured by degree, connections
    coloured by the degree of the unit they leave."""
    input_degrees, *hidden = [d.tolist() for d in made.degrees()]
    D = made.input_dim
    layers = [input_degrees, *hidden, input_degrees]  # output d is drawn above input d
    names = ["inputs", *[f"hidden {i + 1}" for i in range(len(hidden))], "outputs"]
    widest = max(len(layer) for layer in layers)
    xs = [layer_positions(len(layer), widest) for layer in layers]
    for level, mask in enumerate(made.masks()[: len(layers) - 1]):
        for k, k_prev in mask.nonzero().tolist():
            colour = degree_colour(layers[level][k_prev], D)
            ax.plot([xs[level][k_prev], xs[level + 1][k]], [level, level + 1], color=colour, linewidth=1.6, zorder=1)
    for level, (degrees, name) in enumerate(zip(layers, names)):
        for x, degree in zip(xs[level], degrees):
            ax.scatter(x, level, s=430, color=degree_colour(degree, D), edgecolor="black", zorder=2)
            ax.text(x, level, str(degree), ha="center", va="center", color="white", weight="bold", zorder=3)
        ax.text(-0.9, level, name, ha="right", va="center", fontsize=10)
    for unit, x in enumerate(xs[0]):  # which input each input/output column is
        ax.text(x, -0.42, f"$x_{unit}$", ha="center", va="top", fontsize=10)
        ax.text(xs[-1][unit], len(layers) - 1 + 0.42, f"$x_{unit}$", ha="center", va="bottom", fontsize=10)
    ax.set_xlim(-3.2, widest)
    ax.set_ylim(-0.9, len(layers) - 0.4)
    ax.axis("off")
    order = made.permutation.tolist()
    ax.set_title(
        f"MADE(D={D}, hidden={made.hidden_dims}), order {order}\n"
        "numbers are degrees; output $x_i$ sees only inputs of lower degree",
        fontsize=11,
    )


def draw_matrix(ax, matrix, title: str, row_labels, col_labels) -> None:
    """One boolean matrix, with its rows and columns labelled."""
    ax.imshow(matrix.int().numpy(), cmap="Greys", vmin=0, vmax=1.4)
    ax.set_xticks(range(len(col_labels)), col_labels, fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(col_labels))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(row_labels))], minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.set_title(title, fontsize=10)


def draw_masks(fig, grid, made: MADE) -> None:
    """The masks of the active mask set and the connectivity, labelled by degree."""
    input_degrees, *hidden = [d.tolist() for d in made.degrees()]
    masks = made.masks()
    layers = [input_degrees, *hidden, input_degrees]
    panels = []
    for level, mask in enumerate(masks[: len(layers) - 1]):
        above = "output" if level == len(layers) - 2 else f"hidden {level + 1}"
        below = "input" if level == 0 else f"hidden {level}"
        rule = "kept where m(row) > m(col)" if above == "output" else "kept where m(row) ≥ m(col)"
        panels.append((mask, f"{below} → {above}\n{rule}", layers[level + 1], layers[level]))
    panels.append((made.connectivity(), "connectivity: output i\ndepends on input j", None, None))
    for index, (matrix, title, rows, cols) in enumerate(panels):
        ax = fig.add_subplot(grid[index // 2, 2 + index % 2])
        if rows is None:  # the connectivity is indexed by input, not by degree
            rows = [f"{i}" for i in range(made.input_dim)]
            cols = rows
            ax.set_xlabel("input j", fontsize=9)
            ax.set_ylabel("output i", fontsize=9)
        else:
            ax.set_xlabel("degree of unit below", fontsize=9)
            ax.set_ylabel("degree of unit above", fontsize=9)
        draw_matrix(ax, matrix, title, rows, cols)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PNG to write (default {DEFAULT_OUT})")
    parser.add_argument("--inputs", type=int, default=4, help="D, the number of inputs")
    parser.add_argument("--hidden", type=int, nargs="+", default=[6, 6], help="hidden widths")
    parser.add_argument("--order", default="natural", help="natural, reversed or random")
    parser.add_argument("--degrees", default="even", help="even or random hidden degrees")
    # No --quick (it takes a second) and its own --out: the PNG itself, not a folder.
    add_shared_options(parser, quick=None, seed_help="seeds a random order and random degrees", outputs=False)
    args = parser.parse_args(argv)

    made = MADE(args.inputs, args.hidden, order=args.order, degrees=args.degrees, seed=args.seed)
    panel_rows = (len(args.hidden) + 3) // 2  # one panel per mask and one for the connectivity, two a row
    fig = plt.figure(figsize=(13, 3.1 * max(panel_rows, 2)))
    grid = GridSpec(panel_rows, 4, figure=fig, width_ratios=[1.3, 1.3, 1, 1], wspace=0.45, hspace=0.6)
    draw_network(fig.add_subplot(grid[:, :2]), made)
    draw_masks(fig, grid, made)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90, bbox_inches="tight")
    plt.close(fig)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
