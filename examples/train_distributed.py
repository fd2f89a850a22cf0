"""Data-parallel training of a MAF with torch.distributed (DistributedDataParallel).

    torchrun --standalone --nproc_per_node=2 examples/train_distributed.py           # 2 CPU processes (gloo)
    torchrun --standalone --nproc_per_node=2 examples/train_distributed.py --quick   # seconds
    python examples/train_distributed.py                                              # one process, same code

Every process builds the same flow, makes the same data (a random 8-D mixture of
correlated Gaussians, whose exact log-density gives the best NLL any model can reach),
and calls ``flowkit.fit(..., distributed=True)``: each process trains on its share of
every minibatch, gradients are averaged, and all of them end with the same model. On a
machine with GPUs, torchrun starts one process per GPU and each uses the GPU of its
``LOCAL_RANK`` with the NCCL backend; nothing else changes.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from _cli import add_shared_options, parse_with_presets

import flowkit

FULL = {"rows": 200_000, "epochs": 5, "batch_size": 512}
QUICK = {"rows": 2_000, "epochs": 2, "batch_size": 64}  # seconds: the test suite's smoke run


def start() -> tuple[int, int, torch.device]:
    """Joins the process group torchrun set up (rank, world size, device); one process
    without torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, help=f"training rows, valid and test get a tenth each ({FULL['rows']})")
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {FULL['epochs']})")
    parser.add_argument("--batch-size", type=int, help=f"rows per process per step (default {FULL['batch_size']})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    # No --out (it draws no figure) and no --no-progress (only rank 0 shows progress).
    add_shared_options(parser, QUICK, seed_help="seeds the data, the flow and the minibatches", outputs=False)
    args = parse_with_presets(parser, None, FULL, QUICK)
    torch.set_num_threads(args.threads)
    rank, world_size, device = start()

    # The same data on every process: each takes its share of every minibatch.
    torch.manual_seed(args.seed)
    target = flowkit.datasets.gaussian_mixture(args.dim, seed=args.seed)
    train, valid, test = target.sample((args.rows + 2 * (args.rows // 10),)).split([args.rows, args.rows // 10, args.rows // 10])
    flow = flowkit.maf(args.dim, num_transforms=5, hidden_dims=[128, 128], seed=args.seed).to(device)

    start_time = time.perf_counter()
    history = flowkit.fit(
        flow, train, valid, epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=args.seed,
        distributed=world_size > 1, progress=rank == 0,
    )  # fmt: skip
    seconds = time.perf_counter() - start_time
    test_nll = flowkit.training.mean_nll(flow, test)
    if rank == 0:
        print(f"{world_size} process(es) on {device}, {args.batch_size} rows per process per step")
        print("| processes | epochs | steps | rows/s (all of fit) | test NLL | best possible (the target's) |")
        print("|---|---|---|---|---|---|")
        rows_per_second = len(history.train_nll) * (args.rows - args.rows % world_size) / seconds
        best = -target.log_prob(test).mean().item()
        print(
            f"| {world_size} | {len(history.train_nll)} | {history.steps} | {rows_per_second:,.0f} "
            f"| {test_nll:.3f} | {best:.3f} |"
        )
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
