"""Building a MADE, and drawing new masks for it, in flowkit, Pyro, zuko and nflows.

Construction is part of speed: a user who builds a wide MADE waits for its masks before the
first step, and mask sampling (`MADE.resample_masks`, the MADE paper's training recipe)
draws a new order and connectivity before every update. Each library builds the same
conditioner: a MADE on D inputs with one hidden layer of H ReLU units and two outputs per
input (an affine step's shift and scale), no direct connections, in float32:

* **flowkit**: `flowkit.nn.MADE(D, [H], param_dims=[1, 1])`;
* **Pyro**: `pyro.nn.AutoRegressiveNN(D, [H], param_dims=[1, 1])`;
* **zuko**: `zuko.flows.MaskedAutoregressiveTransform(D, hidden_features=[H])` (its MADE
  and the affine step around it);
* **nflows**: `nflows.transforms.made.MADE(D, H, num_blocks=0, output_multiplier=2,
  use_residual_blocks=False)` (one hidden layer).

Beside them: flowkit's `resample_masks` (a fresh order and connectivity, copied into the
existing masks), and one Adam training step of that MADE on a minibatch of 100 rows (the
MADE paper's), the cost a redraw before every update is measured against. The calls take
turns within each repeat and keep their fastest round (``timing.py``).

    python benchmarks/construction.py             # D = 625, H = 1000 (the newcomer issue's size), seconds
    python benchmarks/construction.py --quick     # tiny smoke run
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import nflows.transforms.made
import pyro.nn
import torch
import zuko

import flowkit
from report import markdown_table, timing_setup
from timing import interleaved_times

HEADERS = ["D", "H", "what", "time (ms)", "over flowkit's construction"]


def builders(dim: int, width: int) -> dict[str, Callable[[], object]]:
    """For each library, a call that builds its MADE on ``dim`` inputs with ``width`` hidden units."""
    return {
        "flowkit: build MADE": lambda: flowkit.nn.MADE(dim, [width], param_dims=[1, 1]),
        "Pyro: build AutoRegressiveNN": lambda: pyro.nn.AutoRegressiveNN(dim, [width], param_dims=[1, 1]),
        "zuko: build MaskedAutoregressiveTransform": lambda: zuko.flows.MaskedAutoregressiveTransform(
            dim, hidden_features=[width]
        ),
        "nflows: build MADE": lambda: nflows.transforms.made.MADE(
            dim, width, num_blocks=0, output_multiplier=2, use_residual_blocks=False
        ),
    }


def flowkit_updates(dim: int, width: int, batch: int = 100) -> dict[str, Callable[[], object]]:
    """flowkit's mask redraw and, to compare it with, one Adam step on ``batch`` rows."""
    made = flowkit.nn.MADE(dim, [width], param_dims=[1, 1])
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(made.parameters(), lr=1e-3)
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))

    def train_step() -> None:
        optimizer.zero_grad()
        made.raw_output(x).square().mean().backward()
        optimizer.step()

    return {
        "flowkit: resample_masks (order and connectivity)": lambda: made.resample_masks(generator),
        f"flowkit: one Adam step, batch {batch}": train_step,
    }


def measure(dim: int, width: int, args: argparse.Namespace) -> list[list[str]]:
    """The table's rows for one size."""
    calls = {**builders(dim, width), **flowkit_updates(dim, width)}
    times = interleaved_times(calls, repeats=args.repeats, min_time=args.min_time)
    reference = times["flowkit: build MADE"]
    return [[str(dim), str(width), name, f"{1e3 * t:.2f}", f"{t / reference:.2f}"] for name, t in times.items()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[625], help="input sizes D")
    parser.add_argument("--hidden", type=int, nargs="+", default=[1000], help="hidden widths H")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timing (several calls if needed)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes in seconds, for the test suite")
    args = parser.parse_args(argv)
    if args.quick:
        args.dims, args.hidden, args.repeats, args.min_time = [4], [16], 2, 0.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(timing_setup(args.repeats, args.min_time) + "\n")
    rows = [row for d in args.dims for h in args.hidden for row in measure(d, h, args)]
    print(markdown_table(HEADERS, rows))


if __name__ == "__main__":
    main()
