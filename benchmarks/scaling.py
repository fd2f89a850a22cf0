"""Training throughput on a million rows: one process against two (torch.distributed, gloo).

The data are ``--rows`` rows (default 1,000,000) drawn from
``flowkit.datasets.gaussian_mixture(D)``. Each configuration, a number of processes times
torch threads per process, starts fresh processes that each make the same data and the
same MAF, then train it with ``flowkit.fit(..., distributed=...)`` (batch 512 per
process) for one epoch. Reported: rows per second over the epoch (the slowest process's
time), the speed-up against one process with one thread, each process's peak resident
memory, and the data's own size.

    python benchmarks/scaling.py                          # D = 8 and 64, 1M rows (about 10 minutes on 2 cores)
    python benchmarks/scaling.py --quick --page /tmp/b.md # seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flowkit
from report import add_common_arguments, machine, markdown_table, page_to_write, write_section

CONFIGURATIONS = [(1, 1), (1, 2), (2, 1)]  # (processes, threads per process)


def worker(rank: int, processes: int, threads: int, dim: int, args: argparse.Namespace, folder: str) -> None:
    """One process: make the data and the flow, train one epoch, write what it measured."""
    torch.set_num_threads(threads)
    if processes > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=processes)
    memory_before_data = peak_memory_mib()
    torch.manual_seed(0)
    rows = flowkit.datasets.gaussian_mixture(dim, seed=0).sample((args.rows,))
    flow = flowkit.maf(dim, num_transforms=args.transforms, seed=0)
    if processes > 1:
        dist.barrier()  # every process starts the epoch together
    start = time.perf_counter()
    history = flowkit.fit(
        flow, rows, epochs=1, batch_size=args.batch_size, progress=False, seed=0, distributed=processes > 1
    )
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "steps": history.steps,
        "train_nll": history.train_nll[-1],
        "peak_mib": peak_memory_mib(),
        "before_data_mib": memory_before_data,
    }
    Path(folder, f"rank{rank}.json").write_text(json.dumps(result))
    if processes > 1:
        dist.destroy_process_group()


def peak_memory_mib() -> float:
    """This process's peak resident memory so far (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(dim: int, processes: int, threads: int, args: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(processes, threads, dim, args, folder), nprocs=processes, join=True)
        return [json.loads(Path(folder, f"rank{rank}.json").read_text()) for rank in range(processes)]


def table(dim: int, results: dict[tuple[int, int], list[dict]], rows: int) -> str:
    baseline = None
    lines = []
    for (processes, threads), ranks in results.items():
        seconds = max(rank["seconds"] for rank in ranks)
        rows_per_second = (rows - rows % processes) / seconds  # fit leaves out rows % processes
        baseline = baseline or rows_per_second
        lines.append([
            dim, processes, threads, ranks[0]["steps"], f"{seconds:.2f}", f"{rows_per_second:,.0f}",
            f"{rows_per_second / baseline:.2f}x", " / ".join(f"{rank['peak_mib']:,.0f}" for rank in ranks),
            f"{ranks[0]['before_data_mib']:,.0f}", f"{ranks[0]['train_nll']:.3f}",
        ])  # fmt: skip
    headers = [
        "D", "processes", "threads each", "steps each", "epoch (s)", "rows/s", "speed-up",
        "peak memory per process (MiB)", "before data (MiB)", "epoch NLL",
    ]  # fmt: skip
    return markdown_table(headers, lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--transforms", type=int, default=5, help="MAF steps (hidden max(64, 3D+1) x 2)")
    parser.add_argument("--batch-size", type=int, default=512, help="rows per process per step")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    args.configurations = CONFIGURATIONS
    if args.quick:
        args.dims, args.rows, args.transforms, args.batch_size = [2], 2_000, 2, 256
        args.configurations = [(1, 1), (2, 1)]
    args.page = page_to_write(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup = (
        f"{machine().split(';')[0]}; torch {torch.__version__}, gloo. {args.rows:,} rows, one epoch, MAF with "
        f"{args.transforms} steps, {args.batch_size} rows per process per step, float32. Peak memory is each "
        "process's peak resident set (torch itself included: see the column before the data)."
    )
    print(setup + "\n")
    tables = []
    for dim in args.dims:
        data_mib = args.rows * dim * 4 / 2**20
        results = {config: measure(dim, *config, args) for config in args.configurations}
        tables.append(f"D = {dim} (the data: {data_mib:,.0f} MiB per process)\n\n" + table(dim, results, args.rows))
        print(tables[-1] + "\n")
    if args.page is not None:
        write_section(args.page, "scaling", setup + "\n\n" + "\n\n".join(tables))
        print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
