"""Eager against ``torch.compile``: MAF, IAF and a MADE density model, on the hot paths.

For each event size D, these are timed eagerly and compiled (``torch.compile`` with the
default inductor backend, ``fullgraph=True``: the tests prove there is no graph break),
the two taking turns within each repeat (``timing.py``):

* **train step**: ``-log_prob(x).mean()`` forward and backward and an Adam step, batch 512;
* **log_prob**: the density of 10,000 rows, no gradients;
* **sample**: 1,000 samples (for a MAF and a MADE model, the sequential direction);
* **IAF sample + log_prob**: 1,000 samples and their own log-density.

The first call of a compiled function compiles it; that time is reported too. Prints
Markdown tables and writes them into the ``compile`` section of ``docs/benchmarks.md``.

    python benchmarks/compile.py                                  # D = 8, 64 (about 10 minutes on 2 cores)
    python benchmarks/compile.py --quick --page /tmp/b.md         # seconds: aot_eager, no code generation
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

import flowkit
from report import (
    add_common_arguments,
    add_timing_arguments,
    machine,
    markdown_table,
    page_to_write,
    quick_sizes,
    write_section,
)
from timing import interleaved_times


Wrap = Callable[[Callable], Callable]  # identity for eager, torch.compile for compiled


def cases(dim: int, args: argparse.Namespace) -> dict[str, Callable[[Wrap], Callable[[], object]]]:
    """``{label: build}``: ``build(wrap)`` gives the call to time, with ``wrap`` applied to
    the function that ``torch.compile`` sees."""
    hidden = [args.hidden] * 2 if args.hidden else flowkit.transforms.default_hidden_dims(dim)
    rows = torch.randn(args.eval_batch, dim, generator=torch.Generator().manual_seed(0))
    maf = flowkit.maf(dim, args.transforms, hidden, seed=0)
    iaf = flowkit.iaf(dim, args.transforms, hidden, seed=0)
    made = flowkit.BernoulliMADE(dim, hidden, seed=0)

    def training(model: torch.nn.Module, batch: torch.Tensor) -> Callable[[Wrap], Callable[[], None]]:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def build(wrap: Wrap) -> Callable[[], None]:
            loss = wrap(lambda x: -model.log_prob(x).mean())

            def step() -> None:
                optimizer.zero_grad()
                loss(batch).backward()
                optimizer.step()

            return step

        return build

    def inference(fn: Callable[[], object]) -> Callable[[Wrap], Callable[[], object]]:
        return lambda wrap: torch.no_grad()(wrap(fn))

    return {
        "MAF train step": training(maf, rows[: args.train_batch]),
        "MAF log_prob": inference(lambda: maf.log_prob(rows)),
        "MAF sample": inference(lambda: maf.sample((args.samples,))),
        "IAF sample + log_prob": inference(lambda: iaf.rsample_and_log_prob((args.samples,))),
        "MADE train step": training(made, (rows[: args.train_batch] > 0).float()),
        "MADE sample": inference(lambda: made.sample((args.samples,))),
    }


def measure(dim: int, args: argparse.Namespace) -> list[list[object]]:
    torch.manual_seed(0)
    rows = []
    for label, build in tqdm(cases(dim, args).items(), desc=f"D={dim}", leave=False):
        eager = build(lambda fn: fn)
        compiled = build(lambda fn: torch.compile(fn, backend=args.backend, fullgraph=True))
        start = time.perf_counter()
        compiled()  # the first call compiles
        compile_seconds = time.perf_counter() - start
        times = interleaved_times({"eager": eager, "compiled": compiled}, args.repeats, args.min_time)
        speed_up = times["eager"] / times["compiled"]
        cells = [f"{1e3 * times['eager']:.2f}", f"{1e3 * times['compiled']:.2f}", f"{speed_up:.2f}x"]
        rows.append([label, dim, *cells, f"{compile_seconds:.1f}"])
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    add_timing_arguments(parser)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.dims, args.backend = [2], "aot_eager"
        quick_sizes(args)
    args.page = page_to_write(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = (
        f"{machine()}; flowkit {flowkit.__version__}. torch.compile backend {args.backend!r}, fullgraph. "
        f"{args.transforms} steps, hidden max(64, 3D+1) x 2 unless set; train batch {args.train_batch}, "
        f"log_prob batch {args.eval_batch}, {args.samples} samples; {args.repeats} interleaved repeats, float32."
    )
    print(setup + "\n")
    rows = [row for dim in args.dims for row in measure(dim, args)]
    headers = ["what", "D", "eager (ms)", "compiled (ms)", "speed-up", "compile (s)"]
    table = markdown_table(headers, rows)
    print(table)
    if args.page is not None:
        write_section(args.page, "compile", f"{setup}\n\n{table}")
        print(f"\nwrote {args.page}")


if __name__ == "__main__":
    main()
