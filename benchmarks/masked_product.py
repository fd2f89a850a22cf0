"""Dense against blocked masked products, ``x @ (W * M).T + b``, on MADE's hidden-to-hidden mask.

For each event size D, hidden width H and batch B, the mask is that of a MADE's second
hidden layer (H units of evenly spread degrees 1..D-1, sorted, seeing the H units below);
`flowkit.nn._blocked` cuts it into 2, 4 or 8 row groups and multiplies each on its
columns only. Every product is timed without gradients (forward) and with a backward pass
to the input, weight and bias (forward + backward), the variants taking turns within each
repeat and keeping their fastest round (``timing.py``), since slower rounds measure other
work on the machine.

Prints a Markdown table: the dense times, the blocked times over the dense ones (below 1:
blocks are faster), the work the blocks keep, and the number of blocks the automatic rule
(`flowkit.nn._blocked.CostModel`) picks for that batch ("dense" when it keeps the dense
product), timed as well: where it keeps the dense product its ratio shows the noise of
the run, since it then times the dense call twice.

    python benchmarks/masked_product.py            # D = 16, 64; H = 256, 512, 1024; B = 512, 4096 (minutes)
    python benchmarks/masked_product.py --quick    # tiny smoke run, seconds
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flowkit.nn import masks
from flowkit.nn._blocked import MaskBlocks, MaskedProduct, Partition, masked_linear
from report import markdown_table, timing_setup
from timing import interleaved_times

BLOCK_COUNTS = (2, 4, 8)


def hidden_layer_mask(dim: int, width: int) -> Tensor:
    """The mask between two hidden layers of ``width`` units of a MADE on ``dim`` inputs."""
    degrees = masks.hidden_degrees(width, low=1, high=max(dim - 1, 1))
    return masks.hidden_mask(degrees, degrees)


def product_calls(
    mask: Tensor, batch: int, partitions: dict[str, Partition | None], seed: int = 0
) -> dict[str, Callable[[], object]]:
    """For each named partition (``None``: dense), a forward call and a forward + backward call."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(mask.shape, generator=generator).requires_grad_(True)
    bias = torch.randn(mask.shape[0], generator=generator).requires_grad_(True)
    x = torch.randn(batch, mask.shape[1], generator=generator).requires_grad_(True)
    calls = {}
    for name, partition in partitions.items():

        def forward(partition=partition) -> None:
            with torch.no_grad():
                masked_linear(x, weight, mask, bias, partition)

        def forward_backward(partition=partition) -> None:
            masked_linear(x, weight, mask, bias, partition).sum().backward()
            x.grad = weight.grad = bias.grad = None

        calls[f"forward {name}"], calls[f"backward {name}"] = forward, forward_backward
    return calls


def measure(dim: int, width: int, batch: int, args: argparse.Namespace) -> list[object]:
    """One table row: dense times, blocked ratios, kept work, the automatic pick."""
    mask = hidden_layer_mask(dim, width)
    blocks = MaskBlocks.of(mask, max(BLOCK_COUNTS))
    auto = MaskedProduct().choice(torch.empty(batch, width), mask)
    partitions = {"dense": None, **{str(k): blocks.partition(k) for k in BLOCK_COUNTS}, "auto": auto}
    times = interleaved_times(product_calls(mask, batch, partitions), args.repeats, args.min_time)

    def ratio(kind: str, name: str) -> str:
        return f"{times[f'{kind} {name}'] / times[f'{kind} dense']:.2f}"

    kept = "/".join(f"{blocks.work(k) / blocks.dense_work:.2f}" for k in BLOCK_COUNTS)
    pick = "dense" if auto is None else f"{len(auto)} blocks"
    pick += f": {ratio('forward', 'auto')} / {ratio('backward', 'auto')}"
    return [
        dim, width, batch,
        f"{1e3 * times['forward dense']:.3g}", *(ratio("forward", str(k)) for k in BLOCK_COUNTS),
        f"{1e3 * times['backward dense']:.3g}", *(ratio("backward", str(k)) for k in BLOCK_COUNTS),
        kept, pick,
    ]  # fmt: skip


HEADERS = [
    "D", "H", "B",
    "forward dense (ms)", *(f"forward {k} blocks / dense" for k in BLOCK_COUNTS),
    "fwd+bwd dense (ms)", *(f"fwd+bwd {k} blocks / dense" for k in BLOCK_COUNTS),
    "work kept (2/4/8 blocks)", "auto: pick, fwd / fwd+bwd ratio",
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512, 1024], help="hidden widths H")
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 4096], help="batch sizes B")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timing (several calls if needed)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes in seconds, for the test suite")
    args = parser.parse_args(argv)
    if args.quick:
        args.dims, args.hidden, args.batches, args.repeats, args.min_time = [4], [16], [8], 2, 0.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(timing_setup(args.repeats, args.min_time) + "\n")
    sizes = [(d, h, b) for d in args.dims for h in args.hidden for b in args.batches]
    rows = [measure(d, h, b, args) for d, h, b in tqdm(sizes, desc="sizes", leave=False)]
    print(markdown_table(HEADERS, rows))


if __name__ == "__main__":
    main()
