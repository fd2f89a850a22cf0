"""Speed of flowkit's MAF and IAF against Pyro, zuko and nflows, on the same architecture.

For each event size D, every library builds the same flow (see ``contenders.py``) and these
are timed, the libraries taking turns within each repeat (``timing.py``):

* **train step**: one Adam step on ``-log_prob(x).mean()`` of a MAF, batch 512;
* **log_prob**: a MAF's density of 10,000 rows, no gradients;
* **sample**: 1,000 MAF samples, the sequential direction (no gradients);
* **IAF sample + log_prob**: 1,000 IAF samples and their own log-density (no gradients);
* **dense floor**: the matrix multiplies of flowkit's ``log_prob`` alone, without masks;
* **spline ...**: the first four again with rational-quadratic spline steps (8 bins, bound
  5; ``flowkit.nsf`` against zuko's ``NSF``, nflows' and Pyro's spline MAF).

Prints Markdown tables (times are the best of interleaved repeats; a ratio below 1 means flowkit is
faster than the best other library) and writes them, with a figure, into the ``speed``
section of ``docs/benchmarks.md``.

    python benchmarks/speed.py                          # D = 2, 16, 64 (a minute or two)
    python benchmarks/speed.py --quick --page /tmp/b.md # tiny smoke run, seconds
    python benchmarks/speed.py --bijections spline --dims 16 64 --page /tmp/b.md
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import flowkit  # noqa: E402
from contenders import BIJECTIONS, LIBRARIES, SPLINE_BINS, Contender, build  # noqa: E402
from flowkit.transforms import default_hidden_dims  # noqa: E402
from report import (  # noqa: E402
    add_common_arguments,
    add_timing_arguments,
    figure_path,
    library_versions,
    machine,
    markdown_table,
    page_to_write,
    quick_sizes,
    write_section,
)
from timing import interleaved_times  # noqa: E402

NAMES = {"flowkit": "flowkit", "pyro": "Pyro", "zuko": "zuko", "nflows": "nflows"}
OTHERS = [library for library in LIBRARIES if library != "flowkit"]
MEASUREMENTS = {  # key: (direction, bijection, label)
    "train": ("maf", "affine", "train step"),
    "log_prob": ("maf", "affine", "log_prob"),
    "sample": ("maf", "affine", "sample"),
    "iaf": ("iaf", "affine", "IAF sample + log_prob"),
    "spline_train": ("maf", "spline", "spline train step"),
    "spline_log_prob": ("maf", "spline", "spline log_prob"),
    "spline_sample": ("maf", "spline", "spline sample"),
    "spline_iaf": ("iaf", "spline", "spline IAF sample + log_prob"),
}
FLOOR = "dense floor"


def calls(measurement: str, contender: Contender, dim: int, sizes: argparse.Namespace) -> Callable[[], object]:
    """The function to time for one contender. Inputs are cloned on every call: a repeated
    tensor would hit the transforms' one-pair caches and skip the work."""
    if measurement.endswith("train"):
        x = torch.randn(sizes.train_batch, dim)
        optimizer = torch.optim.Adam(contender.module.parameters(), lr=1e-3)

        def train_step() -> None:
            optimizer.zero_grad()
            loss = -contender.log_prob(x.clone()).mean()
            loss.backward()
            optimizer.step()

        return train_step
    if measurement.endswith("log_prob"):
        x = torch.randn(sizes.eval_batch, dim)
        return no_grad(lambda: contender.log_prob(x.clone()))
    if measurement.endswith("sample"):
        return no_grad(lambda: contender.sample(sizes.samples))
    return no_grad(lambda: contender.sample_and_log_prob(sizes.samples))


def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


def dense_floor(flow: torch.nn.Module, x: Tensor) -> Callable[[], Tensor]:
    """A chain of plain ``x @ W.T + b`` (ReLU between layers) with the shapes of every MADE
    layer of ``flow``: what its ``log_prob`` costs without masks, permutations and the
    elementwise affine maps, i.e. the floor no masked network can beat. Every step reads
    ``x``; the results go into buffers allocated once, so that the floor does not pay for
    memory allocation either. The function returns the last step's output."""
    steps = []
    for made in (module for module in flow.modules() if isinstance(module, flowkit.MADE)):
        chain = [made.input_layer, *made.hidden_layers, made.output_layer]
        steps.append([
            (layer.weight.detach().clone(), layer.bias.detach().clone(), x.new_empty(len(x), layer.out_features))
            for layer in chain
        ])

    def run() -> Tensor:
        with torch.no_grad():
            for layers in steps:
                h = x
                for k, (weight, bias, out) in enumerate(layers):
                    torch.addmm(bias, h, weight.T, out=out)
                    h = out.relu_() if k < len(layers) - 1 else out
        return h

    return run


def measured(args: argparse.Namespace) -> dict[str, tuple[str, str, str]]:
    """The measurements of the bijections asked for."""
    return {m: spec for m, spec in MEASUREMENTS.items() if spec[1] in args.bijections}


def measure(dim: int, hidden_dims: list[int], args: argparse.Namespace) -> dict:
    """Times of every measurement (seconds, by library) and parameter counts (by
    bijection, then library) at one D."""
    result = {"times": {}, "parameters": {}}
    for measurement, (direction, bijection, _) in measured(args).items():
        contenders = {
            lib: build(lib, direction, dim, args.transforms, hidden_dims, seed=0, bijection=bijection)
            for lib in LIBRARIES
        }
        fns = {lib: calls(measurement, c, dim, args) for lib, c in contenders.items()}
        if measurement == "log_prob":
            fns[FLOOR] = dense_floor(contenders["flowkit"].module, torch.randn(args.eval_batch, dim))
        result["times"][measurement] = interleaved_times(fns, args.repeats, args.min_time)
        if direction == "maf":
            counts = {lib: (c.num_parameters, c.active_weights) for lib, c in contenders.items()}
            result["parameters"][bijection] = counts
    return result


def ratio_cell(times: dict[str, float]) -> str:
    """flowkit's time over the best other library's, with that library named."""
    best = min(OTHERS, key=times.__getitem__)
    return f"{times['flowkit'] / times[best]:.2f} ({NAMES[best]})"


def tables(results: dict[int, dict], hidden: dict[int, list[int]], args: argparse.Namespace) -> str:
    """The Markdown of the three tables: architectures, times and ratios, the dense floor."""
    arch_rows = [
        [dim, architecture(dim, hidden[dim], bijection, args.transforms)]
        + [f"{counts[lib][0]} ({counts[lib][1]})" for lib in LIBRARIES]
        for dim in results
        for bijection, counts in results[dim]["parameters"].items()
    ]
    time_rows = [
        [dim, label] + [f"{1e3 * results[dim]['times'][m][lib]:.3g}" for lib in LIBRARIES]
        + [ratio_cell(results[dim]["times"][m])]
        for dim in results
        for m, (_, _, label) in measured(args).items()
    ]
    affine_log_prob = {dim: r["times"]["log_prob"] for dim, r in results.items() if "log_prob" in r["times"]}
    floor_rows = [
        [dim, f"{1e3 * t['flowkit']:.3g}", f"{1e3 * t[FLOOR]:.3g}", f"{t['flowkit'] / t[FLOOR]:.2f}"]
        for dim, t in affine_log_prob.items()
    ]
    floor = [] if not floor_rows else [
        f"**Dense floor**: flowkit's `log_prob` of {args.eval_batch} rows against the same chain of dense "
        "matrix multiplies without masks.",
        markdown_table(["D", "flowkit log_prob (ms)", "dense matmul chain (ms)", "flowkit / floor"], floor_rows),
    ]
    return "\n\n".join([
        "**Architectures**: parameters (active weights: those the masks keep, biases excluded).",
        markdown_table(["D", "flow"] + [NAMES[lib] for lib in LIBRARIES], arch_rows),
        "**Times** in milliseconds (best of the interleaved repeats); last column: flowkit's time over the best "
        "other library's (below 1: flowkit is faster).",
        markdown_table(
            ["D", "measurement"] + [f"{NAMES[lib]} (ms)" for lib in LIBRARIES] + ["flowkit / best other"], time_rows
        ),
        *floor,
    ])


def architecture(dim: int, hidden_dims: list[int], bijection: str, num_transforms: int) -> str:
    """``"5 x MADE 16-64-64-32 affine"``: the steps, one MADE's widths and the bijection."""
    outputs = dim * (2 if bijection == "affine" else 3 * SPLINE_BINS - 1)
    return f"{num_transforms} x MADE {dim}-" + "-".join(map(str, hidden_dims)) + f"-{outputs} {bijection}"


def summary(results: dict[int, dict], args: argparse.Namespace) -> str:
    """A sentence on where flowkit is slower than the best other library."""
    losses, total = [], 0
    for dim, result in results.items():
        for m, (_, _, label) in measured(args).items():
            total += 1
            times = result["times"][m]
            best = min(OTHERS, key=times.__getitem__)
            if times["flowkit"] > times[best]:
                losses.append(f"{label} at D = {dim} ({NAMES[best]} is {times['flowkit'] / times[best]:.2f}x faster)")
    if not losses:
        return f"flowkit is the fastest in all {total} measurements."
    fastest = f"flowkit is the fastest in {total - len(losses)} of {total} measurements"
    return f"{fastest}; slower in: " + "; ".join(losses) + "."


def plot(results: dict[int, dict], path: Path, args: argparse.Namespace) -> None:
    """One panel per measurement: flowkit's time over each other library's (log scale)."""
    dims = list(results)
    panels = [(m, label, OTHERS) for m, (_, _, label) in measured(args).items()]
    if "affine" in args.bijections:
        panels.append(("log_prob", FLOOR, [FLOOR]))
    colours = {"pyro": "C1", "zuko": "C2", "nflows": "C3", FLOOR: "C7"}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), sharey=True)
    for ax, (m, label, against) in zip(axes, panels):
        width = 0.8 / len(against)
        for k, other in enumerate(against):
            ratios = [results[d]["times"][m]["flowkit"] / results[d]["times"][m][other] for d in dims]
            positions = [i + (k - (len(against) - 1) / 2) * width for i in range(len(dims))]
            ax.bar(positions, ratios, width=width, color=colours[other], label=NAMES.get(other, "dense matmuls"))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(dims)), [f"D={d}" for d in dims])
        ax.set_title(label, fontsize=10)
    axes[0].set_ylabel("flowkit time / other time\n(below 1: flowkit faster)")
    handles = [h for ax in (axes[0], axes[-1]) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--bijections", nargs="+", choices=BIJECTIONS, default=list(BIJECTIONS))
    add_timing_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.dims = [2, 3]
        quick_sizes(args)
    args.page = page_to_write(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    hidden = {dim: [args.hidden] * 2 if args.hidden else default_hidden_dims(dim) for dim in args.dims}
    setup = (
        f"Measured on {machine()}; {library_versions()}. Train batch {args.train_batch}, "
        f"log_prob batch {args.eval_batch}, {args.samples} samples, {args.repeats} interleaved repeats of at least {args.min_time} s each, float32."
    )
    print(setup + "\n")
    results = {dim: measure(dim, hidden[dim], args) for dim in tqdm(args.dims, desc="D", leave=False)}
    text = tables(results, hidden, args)
    print(text + "\n\n" + summary(results, args))
    if args.page is not None:
        path, link = figure_path(args.page, "speed")
        plot(results, path, args)
        write_section(args.page, "speed", f"{setup}\n\n{text}\n\n{summary(results, args)}\n\n![speed ratios]({link})")
        print(f"\nwrote {args.page} and {path}")


if __name__ == "__main__":
    main()
