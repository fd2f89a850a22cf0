"""Training throughput on a million rows: one process against two (torch.distributed, gloo).

The data are ``--rows`` rows (default 1,000,000) drawn from
``flowkit.datasets.gaussian_mixture(D)``. Each configuration (processes, torch threads per
process, rows per process per step) starts fresh processes that each make the same data
and the same MAF, then train it for one epoch with ``flowkit.fit(..., distributed=...)``.
Reported: rows per second over the epoch (the slowest process's time), the speed-up
against one single-threaded process with the same batch per process, and each process's
resident memory: before it makes the data, with the data and model, and its peak.

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

PROCESSES_AND_THREADS = [(1, 1), (1, 2), (2, 1)]


def worker(rank: int, config: tuple[int, int, int], dim: int, args: argparse.Namespace, folder: str) -> None:
    """One process: make the data and the flow, train one epoch, write what it measured."""
    processes, threads, batch_size = config
    torch.set_num_threads(threads)
    if processes > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=processes)
    before_data = resident_memory_mib()
    torch.manual_seed(0)
    rows = flowkit.datasets.gaussian_mixture(dim, seed=0).sample((args.rows,))
    flow = flowkit.maf(dim, num_transforms=args.transforms, seed=0)
    with_data = resident_memory_mib()
    if processes > 1:
        dist.barrier()  # every process starts the epoch together
    start = time.perf_counter()
    history = flowkit.fit(flow, rows, epochs=1, batch_size=batch_size, progress=False, seed=0, distributed=processes > 1)
    result = {
        "seconds": time.perf_counter() - start,
        "steps": history.steps,
        "train_nll": history.train_nll[-1],
        "before_data_mib": before_data,
        "with_data_mib": with_data,
        "peak_mib": peak_memory_mib(),
    }
    Path(folder, f"rank{rank}.json").write_text(json.dumps(result))
    if processes > 1:
        dist.destroy_process_group()


def resident_memory_mib() -> float:
    """This process's resident memory now (Linux: the second field of /proc/self/statm, in pages)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_memory_mib() -> float:
    """This process's peak resident memory so far (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(dim: int, config: tuple[int, int, int], args: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(config, dim, args, folder), nprocs=config[0], join=True)
        return [json.loads(Path(folder, f"rank{rank}.json").read_text()) for rank in range(config[0])]


def table(dim: int, results: dict[tuple[int, int, int], list[dict]], num_rows: int) -> str:
    baselines: dict[int, float] = {}  # rows/s of one single-threaded process, per batch size
    lines = []
    for (processes, threads, batch_size), ranks in results.items():
        seconds = max(rank["seconds"] for rank in ranks)
        rows_per_second = (num_rows - num_rows % processes) / seconds  # fit leaves out num_rows % processes
        baseline = baselines.setdefault(batch_size, rows_per_second)
        lines.append([
            dim, processes, threads, batch_size, ranks[0]["steps"], f"{seconds:.2f}", f"{rows_per_second:,.0f}",
            f"{rows_per_second / baseline:.2f}x", f"{ranks[0]['before_data_mib']:,.0f}",
            f"{ranks[0]['with_data_mib']:,.0f}", " / ".join(f"{rank['peak_mib']:,.0f}" for rank in ranks),
            f"{ranks[0]['train_nll']:.3f}",
        ])  # fmt: skip
    headers = [
        "D", "processes", "threads each", "rows per step each", "steps each", "epoch (s)", "rows/s", "speed-up",
        "memory before data (MiB)", "with data and model (MiB)", "peak, each process (MiB)", "epoch NLL",
    ]  # fmt: skip
    return markdown_table(headers, lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--transforms", type=int, default=5, help="MAF steps (hidden max(64, 3D+1) x 2)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 4096], help="rows per process per step")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    processes_and_threads = PROCESSES_AND_THREADS
    if args.quick:
        args.dims, args.rows, args.transforms, args.batch_sizes = [2], 2_000, 2, [256]
        processes_and_threads = [(1, 1), (2, 1)]
    args.configurations = [(p, t, b) for b in args.batch_sizes for p, t in processes_and_threads]
    args.page = page_to_write(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup = (
        f"{machine().split(';')[0]}; torch {torch.__version__}, gloo. {args.rows:,} rows, one epoch, MAF with "
        f"{args.transforms} steps, float32. Memory is resident memory per process: before the data is made "
        "(torch itself), with the data and model, and the peak."
    )
    print(setup + "\n")
    tables = []
    for dim in args.dims:
        results = {config: measure(dim, config, args) for config in args.configurations}
        data_mib = args.rows * dim * 4 / 2**20
        tables.append(f"D = {dim} (the data: {data_mib:,.0f} MiB per process)\n\n" + table(dim, results, args.rows))
        print(tables[-1] + "\n")
    if args.page is not None:
        write_section(args.page, "scaling", setup + "\n\n" + "\n\n".join(tables))
        print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
