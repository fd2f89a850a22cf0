"""Speed of flowkit's MAF and IAF against Pyro, zuko and nflows, on the same architecture.

For each event size D, every library builds the same flow (see ``contenders.py``) and these
are timed, the libraries taking turns within each repeat (``timing.py``):

* **train step**: one Adam step on ``-log_prob(x).mean()`` of a MAF, batch 512;
* **log_prob**: a MAF's density of 10,000 rows, no gradients;
* **sample**: 1,000 MAF samples, the sequential direction (no gradients);
* **IAF sample + log_prob**: 1,000 IAF samples and their own log-density (no gradients);
* **IAF log_prob of outside points**: an IAF's density of 1,000 rows it did not sample, the
  sequential direction (no gradients);
* **dense floor**: what the train step and ``log_prob`` cost as plain dense matrix
  multiplies of the same shapes, without masks (the train step's with its backward pass and
  Adam step); flowkit's time over it is flowkit's overhead;
* **spline ...**: the first four again with rational-quadratic spline steps (8 bins, bound
  5; ``flowkit.nsf`` against zuko's ``NSF``, nflows' and Pyro's spline MAF).

Each D runs at the hidden widths of ``--hidden`` (two layers of each): ``default`` is
``max(64, 3D + 1)``, and the wide widths of the speed targets are a documented command,
since at H = 512 a run takes several times as long as the default one.

Prints Markdown tables (times are the best of interleaved repeats; a ratio below 1 means flowkit is
faster than the best other library, or than the dense floor) and writes them, with a figure,
into the ``speed`` section of ``docs/benchmarks.md``.

    python benchmarks/speed.py                          # D = 2, 16, 64 (a minute or two)
    python benchmarks/speed.py --hidden default 256 512 # also H = 256 and 512 (longer)
    python benchmarks/speed.py --quick --page /tmp/b.md # tiny smoke run, seconds
    python benchmarks/speed.py --bijections spline --dims 16 64 --page /tmp/b.md
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import torch.nn.functional as F

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
    "iaf_outside": ("iaf", "affine", "IAF log_prob of outside points"),
    "spline_train": ("maf", "spline", "spline train step"),
    "spline_log_prob": ("maf", "spline", "spline log_prob"),
    "spline_sample": ("maf", "spline", "spline sample"),
    "spline_iaf": ("iaf", "spline", "spline IAF sample + log_prob"),
}
FLOOR = "dense floor"
FLOORED = ("train", "log_prob")  # the measurements that get a dense floor


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
    if measurement.endswith("iaf_outside"):  # as many rows as samples: a sequential pass
        x = torch.randn(sizes.samples, dim)
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


def dense_train_floor(flow: torch.nn.Module, x: Tensor) -> Callable[[], None]:
    """The training step of the chain of ``dense_floor``: copies of every MADE layer's weight
    and bias, unmasked, each MADE's chain reading ``x``; forward, backward of the sum of the
    last outputs and the Adam step that the timed train step takes, over as many parameters
    (the step's ``optimizer`` attribute)."""
    chains = [
        [(layer.weight.detach().clone().requires_grad_(True), layer.bias.detach().clone().requires_grad_(True))
         for layer in [made.input_layer, *made.hidden_layers, made.output_layer]]
        for made in (module for module in flow.modules() if isinstance(module, flowkit.MADE))
    ]  # fmt: skip
    optimizer = torch.optim.Adam([p for chain in chains for layer in chain for p in layer], lr=1e-3)

    def train_step() -> None:
        optimizer.zero_grad()
        loss = 0.0
        for chain in chains:
            h = x
            for k, (weight, bias) in enumerate(chain):
                h = F.linear(h, weight, bias)
                h = h.relu_() if k < len(chain) - 1 else h
            loss = loss + h.mean()
        loss.backward()
        optimizer.step()

    train_step.optimizer = optimizer
    return train_step


def widths(dim: int, hidden: list[int | None]) -> list[int]:
    """The hidden widths of D = ``dim``: ``--hidden`` with ``None`` (``default``) as
    ``max(64, 3D + 1)``, each once."""
    chosen = [default_hidden_dims(dim)[0] if width is None else width for width in hidden]
    return list(dict.fromkeys(chosen))


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
        if measurement == "train":
            fns[FLOOR] = dense_train_floor(contenders["flowkit"].module, torch.randn(args.train_batch, dim))
        result["times"][measurement] = interleaved_times(fns, args.repeats, args.min_time)
        if direction == "maf":
            counts = {lib: (c.num_parameters, c.active_weights) for lib, c in contenders.items()}
            result["parameters"][bijection] = counts
    return result


def ratio_cell(times: dict[str, float]) -> str:
    """flowkit's time over the best other library's, with that library named."""
    best = min(OTHERS, key=times.__getitem__)
    return f"{times['flowkit'] / times[best]:.2f} ({NAMES[best]})"


def floor_cells(times: dict[str, float]) -> list[str]:
    """The dense floor's time and flowkit's time over it, or dashes where there is none."""
    if FLOOR not in times:
        return ["-", "-"]
    return [f"{1e3 * times[FLOOR]:.3g}", f"{times['flowkit'] / times[FLOOR]:.2f}"]


def tables(results: dict[tuple[int, int], dict], args: argparse.Namespace) -> str:
    """The Markdown of the two tables: architectures, and times with flowkit's ratios to
    the best other library and to the dense floor. ``results`` is keyed by (D, H)."""
    arch_rows = [
        [dim, width, architecture(dim, [width] * 2, bijection, args.transforms)]
        + [f"{counts[lib][0]} ({counts[lib][1]})" for lib in LIBRARIES]
        for (dim, width), result in results.items()
        for bijection, counts in result["parameters"].items()
    ]
    time_rows = [
        [dim, width, label] + [f"{1e3 * result['times'][m][lib]:.3g}" for lib in LIBRARIES]
        + [ratio_cell(result["times"][m]), *floor_cells(result["times"][m])]
        for (dim, width), result in results.items()
        for m, (_, _, label) in measured(args).items()
    ]
    return "\n\n".join([
        "**Architectures**: parameters (active weights: those the masks keep, biases excluded).",
        markdown_table(["D", "H", "flow"] + [NAMES[lib] for lib in LIBRARIES], arch_rows),
        "**Times** in milliseconds (best of the interleaved repeats). *flowkit / best other*: flowkit's time "
        "over the best other library's; *flowkit / floor*: over the same chain of dense matrix multiplies "
        f"without masks (train step: with its backward and Adam step; log_prob of {args.eval_batch} rows). "
        "Below 1: flowkit is faster.",
        markdown_table(
            ["D", "H", "measurement"] + [f"{NAMES[lib]} (ms)" for lib in LIBRARIES]
            + ["flowkit / best other", "dense floor (ms)", "flowkit / floor"],
            time_rows,
        ),
    ])


def architecture(dim: int, hidden_dims: list[int], bijection: str, num_transforms: int) -> str:
    """``"5 x MADE 16-64-64-32 affine"``: the steps, one MADE's widths and the bijection."""
    outputs = dim * (2 if bijection == "affine" else 3 * SPLINE_BINS - 1)
    return f"{num_transforms} x MADE {dim}-" + "-".join(map(str, hidden_dims)) + f"-{outputs} {bijection}"


def summary(results: dict[tuple[int, int], dict], args: argparse.Namespace) -> str:
    """A sentence on where flowkit is slower than the best other library."""
    losses, total = [], 0
    for (dim, width), result in results.items():
        for m, (_, _, label) in measured(args).items():
            total += 1
            times = result["times"][m]
            best = min(OTHERS, key=times.__getitem__)
            if times["flowkit"] > times[best]:
                ratio = times["flowkit"] / times[best]
                losses.append(f"{label} at D = {dim}, H = {width} ({NAMES[best]} is {ratio:.2f}x faster)")
    if not losses:
        return f"flowkit is the fastest in all {total} measurements."
    fastest = f"flowkit is the fastest in {total - len(losses)} of {total} measurements"
    return f"{fastest}; slower in: " + "; ".join(losses) + "."


def plot(results: dict[tuple[int, int], dict], path: Path, args: argparse.Namespace) -> None:
    """One panel per measurement: flowkit's time over each other library's (log scale), and
    one over the dense floors."""
    sizes = list(results)
    panels = [(m, label, OTHERS) for m, (_, _, label) in measured(args).items()]
    panels += [(m, f"{MEASUREMENTS[m][2]} / {FLOOR}", [FLOOR]) for m in FLOORED if m in measured(args)]
    colours = {"pyro": "C1", "zuko": "C2", "nflows": "C3", FLOOR: "C7"}
    columns = min(len(panels), 5)
    rows = math.ceil(len(panels) / columns)
    panel_width = max(3.2, 0.6 * len(sizes))
    fig, grid = plt.subplots(rows, columns, figsize=(panel_width * columns, 3.4 * rows + 0.4), sharey=True,
                             squeeze=False)  # fmt: skip
    axes = list(grid.flat)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes = axes[: len(panels)]
    for ax, (m, label, against) in zip(axes, panels):
        width = 0.8 / len(against)
        for k, other in enumerate(against):
            ratios = [results[size]["times"][m]["flowkit"] / results[size]["times"][m][other] for size in sizes]
            positions = [i + (k - (len(against) - 1) / 2) * width for i in range(len(sizes))]
            ax.bar(positions, ratios, width=width, color=colours[other], label=NAMES.get(other, "dense matmuls"))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(sizes)), [f"D={d}\nH={h}" for d, h in sizes], fontsize=8)
        ax.set_title(label, fontsize=10)
    for row in grid:
        row[0].set_ylabel("flowkit time / other time\n(below 1: flowkit faster)")
    handles = [h for ax in (axes[0], axes[-1]) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hidden_width(text: str) -> int | None:
    """A ``--hidden`` value: ``default`` (``None``) or a positive int."""
    if text == "default":
        return None
    try:
        width = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'default' or a positive int, got {text!r}") from None
    if width < 1:
        raise argparse.ArgumentTypeError(f"expected 'default' or a positive int, got {width}")
    return width


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # "resolve": this script's --hidden (several widths) replaces the one-width option of report.py.
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, conflict_handler="resolve"
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--bijections", nargs="+", choices=BIJECTIONS, default=list(BIJECTIONS))
    add_timing_arguments(parser)
    parser.add_argument("--hidden", type=hidden_width, nargs="+", default=[None], metavar="WIDTH",
                        help="hidden widths, two layers of each: 'default' (max(64, 3D+1)) or ints")  # fmt: skip
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        quick_sizes(args)
        args.dims, args.hidden = [3], [8, 12]  # two widths, to run the multi-width tables
    args.page = page_to_write(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = (
        f"Measured on {machine()}; {library_versions()}. Train batch {args.train_batch}, "
        f"log_prob batch {args.eval_batch}, {args.samples} samples, {args.repeats} interleaved repeats of at least {args.min_time} s each, float32."
    )
    print(setup + "\n")
    sizes = [(dim, width) for dim in args.dims for width in widths(dim, args.hidden)]
    results = {(d, h): measure(d, [h, h], args) for d, h in tqdm(sizes, desc="D, H", leave=False)}
    text = tables(results, args)
    print(text + "\n\n" + summary(results, args))
    if args.page is not None:
        path, link = figure_path(args.page, "speed")
        plot(results, path, args)
        write_section(args.page, "speed", f"{setup}\n\n{text}\n\n{summary(results, args)}\n\n![speed ratios]({link})")
        print(f"\nwrote {args.page} and {path}")


if __name__ == "__main__":
    main()
