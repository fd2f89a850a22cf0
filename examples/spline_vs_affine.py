"""An affine MAF against a spline MAF of about the same size on 2-D toy densities.

For each toy density (by default the checkerboard, whose sharp edges are what splines
are for, and the two moons), trains two flows with the same training (data, epochs,
batches, learning rate, seeds):

* an **affine MAF** (``flowkit.maf``): every step shifts and scales each coordinate;
* a **spline MAF** (``flowkit.nsf``): every step applies a monotone rational-quadratic
  spline to each coordinate.

The affine flow's MADEs are made wider until it has at least as many parameters as the
spline flow, so the spline does not win by size. The data are standardised with the
training set's mean and standard deviation, so that they lie inside the spline's
``[-B, B]``; NLLs and densities are reported in the original units.

Prints a table of test negative log-likelihoods (nats per point) and training times,
and writes a figure: the data, and the log-density of each flow on a grid.

    python examples/spline_vs_affine.py
    python examples/spline_vs_affine.py --quick   # tiny run (the test suite's smoke test)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

import flowkit  # noqa: E402
from flowkit.training import mean_nll  # noqa: E402

# The tests load this file by path, without its folder on sys.path as a script run has it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import add_shared_options, parse_with_presets  # noqa: E402

# grid_size is no option: the side of the grid each density is drawn on.
FULL = {"train_size": 10_000, "transforms": 5, "hidden": 64, "epochs": 40, "grid_size": 200}
QUICK = {"train_size": 1000, "transforms": 2, "hidden": 16, "epochs": 2, "grid_size": 40}  # the test suite's


@dataclass
class Standardiser:
    """The map ``z = (x - mean) / std`` fitted to training data; ``log_scale`` is
    ``sum(log std)``, which converts a density in ``z`` back into one in ``x``."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> Standardiser:
        return cls(x.mean(0), x.std(0))

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @property
    def log_scale(self) -> float:
        return self.std.log().sum().item()


@dataclass
class Result:
    """One trained flow: its label, its size, and how it did."""

    label: str
    flow: flowkit.Flow
    num_params: int
    test_nll: float
    seconds: float


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def spline_flow(args: argparse.Namespace) -> flowkit.Flow:
    torch.manual_seed(args.seed)  # weights follow torch's global seed; masks follow seed=
    return flowkit.nsf(
        2, args.transforms, [args.hidden] * 2, bins=args.bins, bound=args.bound, seed=args.seed
    )


def affine_flow(args: argparse.Namespace, at_least: int) -> flowkit.Flow:
    """An affine MAF with as many steps as the spline flow, and MADEs just wide enough to
    have at least ``at_least`` parameters."""
    width = args.hidden
    while num_params(flowkit.maf(2, args.transforms, [width] * 2)) < at_least:
        width += 1
    torch.manual_seed(args.seed)  # weights follow torch's global seed; masks follow seed=
    return flowkit.maf(2, args.transforms, [width] * 2, seed=args.seed)


def train(label: str, flow: flowkit.Flow, splits: dict, scaler: Standardiser, args) -> Result:
    """Fits ``flow`` to the standardised data and measures its test NLL in data units."""
    start = time.perf_counter()
    flowkit.fit(
        flow, scaler(splits["train"]), scaler(splits["valid"]), epochs=args.epochs,
        batch_size=256, lr=args.lr, patience=None, progress=not args.no_progress, seed=args.seed,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    test_nll = mean_nll(flow, scaler(splits["test"])) + scaler.log_scale
    return Result(label, flow, num_params(flow), test_nll, seconds)


def log_density_grid(flow: flowkit.Flow, scaler: Standardiser, limits: tuple, size: int):
    """``(xs, ys, log p)`` on a ``size x size`` grid over ``limits``, in data units."""
    xs = torch.linspace(*limits[0], size)
    ys = torch.linspace(*limits[1], size)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        log_p = flow.log_prob(scaler(grid)) - scaler.log_scale
    return xs, ys, log_p.reshape(size, size)


def plot_limits(x: Tensor, margin: float = 0.1) -> tuple:
    low, high = x.min(0).values, x.max(0).values
    pad = margin * (high - low)
    return tuple((float(lo), float(hi)) for lo, hi in zip(low - pad, high + pad))


def figure(panels: list[tuple[str, Tensor, Standardiser, list[Result]]], grid_size: int):
    """One row per toy density: its test points, then each flow's log-density."""
    fig, axes = plt.subplots(
        len(panels), 3, figsize=(13, 4.2 * len(panels)), squeeze=False, layout="constrained"
    )
    for row, (name, test, scaler, results) in zip(axes, panels):
        limits = plot_limits(test)
        row[0].scatter(*test.T.numpy(), s=1, alpha=0.3, color="black")
        row[0].set_title(f"{name}: {len(test):,} test points")
        grids = [log_density_grid(r.flow, scaler, limits, grid_size) for r in results]
        # One colour scale for both flows, floored 8 nats below the peak so that the
        # near-empty regions do not take it all.
        vmax = max(log_p.max().item() for _, _, log_p in grids)
        for ax, result, (xs, ys, log_p) in zip(row[1:], results, grids):
            floored = log_p.clamp(min=vmax - 8).numpy()
            image = ax.pcolormesh(xs.numpy(), ys.numpy(), floored, vmin=vmax - 8, vmax=vmax, shading="auto")
            ax.set_title(f"{result.label}: test NLL {result.test_nll:.3f} nats\n"
                         f"({result.num_params:,} parameters)")  # fmt: skip
        fig.colorbar(image, ax=row[1:], label="log-density (nats)", shrink=0.9)
        for ax in row:
            ax.set_xlim(limits[0])
            ax.set_ylim(limits[1])
            ax.set_aspect("equal")
            ax.set_xlabel("$x_1$")
            ax.set_ylabel("$x_2$")
    fig.suptitle("Affine MAF vs spline MAF (NSF) of about the same size, trained alike (lower NLL is better)")
    return fig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=flowkit.datasets.TOY_2D, default=["checkerboard", "moons"])
    parser.add_argument("--train-size", type=int, help=f"training points (default {FULL['train_size']})")
    parser.add_argument("--transforms", type=int, help=f"steps of each flow (default {FULL['transforms']})")
    parser.add_argument("--hidden", type=int, help=f"the spline MADEs' width, two layers (default {FULL['hidden']})")
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--bound", type=float, default=4.0, help="the spline's B, in standard deviations")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {FULL['epochs']})")
    parser.add_argument("--lr", type=float, default=3e-3)
    add_shared_options(parser, QUICK)
    return parse_with_presets(parser, argv, FULL, QUICK)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    panels = []
    print("| dataset | flow | parameters | test NLL (nats) | training time (s) |")
    print("|---|---|---|---|---|")
    for name in args.datasets:
        points = flowkit.datasets.toy_2d(name, args.train_size * 3 // 2, seed=args.seed)
        n_valid = args.train_size // 4
        splits = {
            "train": points[: args.train_size],
            "valid": points[args.train_size : args.train_size + n_valid],
            "test": points[args.train_size + n_valid :],
        }
        scaler = Standardiser.fit(splits["train"])
        spline = spline_flow(args)
        affine = affine_flow(args, at_least=num_params(spline))
        results = [
            train("affine MAF", affine, splits, scaler, args),
            train(f"spline MAF ({args.bins} bins)", spline, splits, scaler, args),
        ]
        for r in results:
            print(f"| {name} | {r.label} | {r.num_params} | {r.test_nll:.3f} | {r.seconds:.2f} |")
        panels.append((name, splits["test"], scaler, results))
    path = os.path.join(args.out, "spline_vs_affine.png")
    fig = figure(panels, args.grid_size)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
