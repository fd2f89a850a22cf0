"""Speed of the sequential direction: flowkit's one-pass-of-arithmetic path vs the naive
D full MADE passes, for MAF sampling and IAF inversion.

    python benchmarks/sequential.py            # D = 2, 16, 64; prints a Markdown table
    python benchmarks/sequential.py --quick    # tiny smoke run

Both paths compute the same numbers (the tests check 1e-10 in float64); this measures time.
"""

from __future__ import annotations

import argparse
import time

import torch

import flowkit


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` runs, in seconds (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(input_dim: int, batch: int, hidden: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    maf = flowkit.transforms.affine_maf(input_dim, [hidden, hidden], seed=0)
    iaf = flowkit.transforms.affine_iaf(input_dim, [hidden, hidden], seed=0)
    noise = torch.randn(batch, input_dim)
    data = torch.randn(batch, input_dim)
    row = {}
    with torch.no_grad():
        for name, transform, sequential_direction in (
            ("MAF sample", maf, lambda: maf.forward_and_log_det(noise)),
            ("IAF inverse", iaf, lambda: iaf.inverse_and_log_det(data)),
        ):
            for method in ("naive", "fast"):

                def run(method=method, transform=transform, sequential_direction=sequential_direction):
                    transform.sequential = method
                    sequential_direction()

                row[f"{name} {method}"] = best_time(run, repeats)
        row["one pass"] = best_time(lambda: maf.made.raw_output(data), repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=None, help="hidden width (default max(64, 3D+1))")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args()
    if args.quick:
        args.dims, args.batch, args.repeats = [2, 4], 16, 1

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, float32, no grad\n")
    print(
        "| D | hidden | one MADE pass (ms) | MAF sample naive (ms) | MAF sample fast (ms) | speed-up "
        "| IAF inverse naive (ms) | IAF inverse fast (ms) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for dim in args.dims:
        hidden = args.hidden or max(64, 3 * dim + 1)
        r = measure(dim, args.batch, hidden, args.repeats)
        cells = [f"{1e3 * r['one pass']:.2f}"]
        for name in ("MAF sample", "IAF inverse"):
            naive, fast = r[f"{name} naive"], r[f"{name} fast"]
            cells += [f"{1e3 * naive:.2f}", f"{1e3 * fast:.2f}", f"{naive / fast:.1f}x"]
        print(f"| {dim} | {hidden}x2 | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
