r"""Test negative log-likelihood of flowkit's MAF against Pyro, zuko and nflows at an equal
training budget, affine and rational-quadratic spline MAFs both (``--bijections``), and of
flowkit's BernoulliMADE beside the MADE paper's published numbers.

Every contender (the same flow in each library, see ``contenders.py``) goes through one
training loop: Adam, the same learning rate, batch size, number of steps and minibatch
sequence; every ``--eval-every`` steps the validation NLL is computed and the best weights
are kept; the test NLL is that of the kept weights. Datasets:

* **moons** (2-D): ``flowkit.datasets.toy_2d``, fresh draws for train, valid and test;
* **breast_cancer** (30-D): scikit-learn's bundled table, standardised with the training
  statistics; the 13 rows whose concavity features are exactly 0 (a point mass that a
  density can exploit without bound) are left out;
* **digits** (64-D): scikit-learn's 8x8 digits, 17 grey levels, dequantised with uniform
  noise and logit-transformed as in the MAF paper, then standardised with the training
  logits' statistics (so that the splines' [-5, 5] holds most values); the NLL is reported
  in the original pixel space (see ``Digits``);
* **MADE UCI** (binary): the MADE paper's dna, mushrooms and nips files, if present in
  ``--made-uci-dir``; a BernoulliMADE (one hidden layer, direct connections, one mask)
  through the same loop, beside the paper's Table 1.

    python benchmarks/quality.py                           # all of it (about 10 minutes on 2 cores)
    python benchmarks/quality.py --quick --page /tmp/b.md  # tiny smoke run, seconds
    python benchmarks/quality.py --seeds 0 1 2 --made-uci  # the flows over three seeds

With several ``--seeds`` every model is trained once per seed (data split, weights,
minibatches and noise all follow it), and each cell gives the mean over the seeds of the
mean and of the median test NLL, and the worst single test row over all seeds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import flowkit  # noqa: E402
from contenders import BIJECTIONS, LIBRARIES, build  # noqa: E402
from flowkit.transforms import default_hidden_dims  # noqa: E402
from report import (  # noqa: E402
    add_common_arguments,
    figure_path,
    library_versions,
    machine,
    markdown_table,
    page_to_write,
    write_section,
)

NAMES = {"flowkit": "flowkit", "pyro": "Pyro", "zuko": "zuko", "nflows": "nflows"}
FLOW_DATASETS = ("moons", "breast_cancer", "digits")
MADE_UCI = ("dna", "mushrooms", "nips")
# Test NLL in nats, Germain et al. (2015), Table 1: (1 mask, mask sampling).
PAPER_NLL = {"dna": (83.63, 79.66), "mushrooms": (9.68, 9.69), "nips": (280.25, 277.28)}
DEFAULT_MADE_UCI_DIR = (Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "made-uci").resolve()
LOGIT_LAMBDA = 1e-6  # the MAF paper's for MNIST
LEVELS = 17  # the digits' grey levels 0..16
# Affine flows C0-C3, spline flows C4-C6 and C8 (C7, grey, is the Gaussian).
FLOW_COLOURS = dict(zip(["flowkit", "Pyro", "zuko", "nflows"], ["C0", "C1", "C2", "C3"], strict=True)) | dict(
    zip(["flowkit spline", "Pyro spline", "zuko spline", "nflows spline"], ["C4", "C5", "C6", "C8"], strict=True)
)
PANELS_PER_ROW = 3  # of the figure: more makes its text too small on the docs page


def models(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(library, bijection)`` of every flow to train: the affine ones first."""
    return [(lib, bijection) for bijection in BIJECTIONS if bijection in args.bijections for lib in LIBRARIES]


def model_key(library: str, bijection: str) -> str:
    """A flow's key and column: the library's name (``"zuko"``), with ``" spline"`` for a spline MAF."""
    return NAMES[library] + ("" if bijection == "affine" else " spline")


def identity(batch: Tensor, generator: torch.Generator) -> Tensor:
    return batch


@dataclass
class Task:
    """A density-estimation problem in the space the models see.

    Attributes:
        name: The dataset's name.
        train: Training rows as stored; ``to_model`` maps a minibatch of them to model space.
        valid: Validation rows, in model space.
        test: Test rows, in model space.
        to_model: ``to_model(batch, generator)``; the identity except for digits, whose
            every minibatch gets fresh dequantisation noise.
        test_log_jacobian: Per test row, the log-Jacobian of the map from data to model
            space (digits' logit transform), which turns a model-space log-density into a
            data-space one; ``None`` when the model sees the data as they are.
    """

    name: str
    train: Tensor
    valid: Tensor
    test: Tensor
    to_model: Callable[[Tensor, torch.Generator], Tensor] = identity
    test_log_jacobian: Tensor | None = None

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    @property
    def nll_offset(self) -> float:
        """What turns the mean test NLL in model space into the mean in data space."""
        return 0.0 if self.test_log_jacobian is None else -self.test_log_jacobian.mean().item()

    def test_nlls(self, log_prob: Callable[[Tensor], Tensor], batch_size: int = 2048) -> Tensor:
        """The data-space NLL of every test row under ``log_prob`` (a model-space density)."""
        with torch.no_grad():
            nlls = -torch.cat([log_prob(part).double() for part in self.test.split(batch_size)])
        return nlls if self.test_log_jacobian is None else nlls - self.test_log_jacobian


@dataclass
class Budget:
    """The training budget every contender gets."""

    steps: int
    batch_size: int
    lr: float
    eval_every: int


@dataclass
class Outcome:
    """What training one model gave: the mean and median test NLL of the kept weights (data
    space), the step they come from, the wall time, the step where the loss became
    non-finite (if it did), the model's parameter count and the NLL of the worst test row."""

    test_nll: float
    test_median: float
    best_step: int
    seconds: float
    diverged_at: int | None = None
    parameters: int = 0
    worst: float = math.nan


def combine(outcomes: list[Outcome]) -> Outcome:
    """One outcome for several seeds: the means of the mean and median NLLs, of the best
    step and of the time; the worst row over all seeds; the first non-finite step."""
    diverged = [o.diverged_at for o in outcomes if o.diverged_at is not None]
    return Outcome(
        test_nll=sum(o.test_nll for o in outcomes) / len(outcomes),
        test_median=sum(o.test_median for o in outcomes) / len(outcomes),
        best_step=round(sum(o.best_step for o in outcomes) / len(outcomes)),
        seconds=sum(o.seconds for o in outcomes) / len(outcomes),
        diverged_at=min(diverged) if diverged else None,
        parameters=outcomes[0].parameters,
        worst=max(o.worst for o in outcomes),
    )


def combine_tasks(tasks: list[Task]) -> Task:
    """The first seed's task, with every seed's test log-Jacobians (so that ``nll_offset``
    is the mean over the seeds, all of whose test sets have one size)."""
    first = tasks[0]
    if first.test_log_jacobian is None:
        return first
    return dataclasses.replace(first, test_log_jacobian=torch.cat([t.test_log_jacobian for t in tasks]))


# ------------------------------------------------------------------ datasets
class Digits:
    r"""scikit-learn's digits for a continuous flow, as the MAF paper treats MNIST.

    A pixel \(x \in \{0, \dots, 16\}\) is dequantised, \(\tilde x = x + u\) with
    \(u \sim U(0, 1)\), scaled to \(p = \tilde x / 17 \in [0, 1)\), squeezed and
    logit-transformed, \(y = \operatorname{logit}(\lambda + (1 - 2\lambda) p)\). The flow
    models \(y\); the density of \(\tilde x\) follows by the change of variables,

    \[
    \log p(\tilde x) = \log p(y) + \sum_d \log \left|\frac{dy_d}{d\tilde x_d}\right|,\qquad
    \log \left|\frac{dy}{d\tilde x}\right| = \log(1 - 2\lambda) - \log 17 - \log s - \log(1 - s),
    \]

    with \(s = \sigma(y)\), so \(-\log s - \log(1 - s) = \operatorname{softplus}(y) +
    \operatorname{softplus}(-y)\). The mean of \(-\log p(\tilde x)\) over dequantised
    test images is an upper bound on the discrete model's NLL (Jensen), directly comparable
    with the uniform distribution over the 17 levels, \(64 \log 17\) nats per image.
    """

    @staticmethod
    def to_logit(pixels: Tensor, generator: torch.Generator) -> Tensor:
        """Pixel values 0..16 to logits, with fresh dequantisation noise."""
        return Digits.logit(pixels + torch.rand(pixels.shape, generator=generator))

    @staticmethod
    def logit(dequantised: Tensor) -> Tensor:
        """``y`` from ``x~`` in [0, 17)."""
        return torch.logit(LOGIT_LAMBDA + (1 - 2 * LOGIT_LAMBDA) * dequantised / LEVELS)

    @staticmethod
    def log_jacobian(y: Tensor) -> Tensor:
        """``sum_d log |dy_d / dx~_d|`` per row, from the logits ``y``."""
        per_pixel = math.log(1 - 2 * LOGIT_LAMBDA) - math.log(LEVELS) + F.softplus(y) + F.softplus(-y)
        return per_pixel.sum(-1)

    @staticmethod
    def uniform_nll(dim: int) -> float:
        """The NLL of independent uniform pixels over the 17 levels, nats per image."""
        return dim * math.log(LEVELS)


def digits_task(test_draws: int, seed: int) -> Task:
    """Digits in standardised logit space: logits (``Digits``), then each pixel shifted and
    scaled by the mean and standard deviation of the training logits (one noise draw), as
    breast_cancer is standardised. The logits of the always-blank border pixels lie in
    [-13.8, -2.8], outside a spline's [-5, 5]; standardised, most values lie inside."""
    splits = flowkit.datasets.load_digits(binarize=False, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    train_logits = Digits.to_logit(splits.train, generator)
    mean, std = train_logits.mean(0), train_logits.std(0)

    def to_model(pixels: Tensor, generator: torch.Generator) -> Tensor:
        return (Digits.to_logit(pixels, generator) - mean) / std

    valid = to_model(splits.valid, generator)
    test_logits = Digits.to_logit(splits.test.repeat(test_draws, 1), generator)
    test = (test_logits - mean) / std
    log_jacobian = Digits.log_jacobian(test_logits.double()) - std.double().log().sum()
    return Task("digits", splits.train, valid, test, to_model=to_model, test_log_jacobian=log_jacobian)


def moons_task(num_train: int, seed: int) -> Task:
    draw = flowkit.datasets.toy_2d
    return Task("moons", draw("moons", num_train, seed), draw("moons", num_train // 4, seed + 1),
                draw("moons", num_train, seed + 2))  # fmt: skip


def breast_cancer_task(seed: int) -> Task:
    from sklearn.datasets import load_breast_cancer

    rows = torch.as_tensor(load_breast_cancer().data, dtype=torch.float32)
    rows = rows[(rows != 0).all(dim=1)]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    n_valid = n_test = len(rows) // 5
    valid, test, train = rows[order[:n_valid]], rows[order[n_valid : n_valid + n_test]], rows[order[n_valid + n_test :]]
    mean, std = train.mean(0), train.std(0)
    return Task("breast_cancer", (train - mean) / std, (valid - mean) / std, (test - mean) / std)


def flow_tasks(names: list[str], args: argparse.Namespace) -> list[Task]:
    makers = {
        "moons": lambda: moons_task(args.moons_rows, args.seed),
        "breast_cancer": lambda: breast_cancer_task(args.seed),
        "digits": lambda: digits_task(args.test_draws, args.seed),
    }
    return [makers[name]() for name in names]


# ------------------------------------------------------------------ training
def minibatches(num_rows: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Row indices, epoch after epoch, each epoch a fresh permutation."""
    while True:
        yield from torch.randperm(num_rows, generator=generator).split(batch_size)


def mean_nll(log_prob: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 2048) -> float:
    with torch.no_grad():
        return -sum(log_prob(part).sum().item() for part in x.split(batch_size)) / len(x)


def train(module: nn.Module, log_prob: Callable[[Tensor], Tensor], task: Task, budget: Budget, seed: int,
          progress: bool = True, label: str = "") -> Outcome:  # fmt: skip
    """The shared loop: ``budget.steps`` Adam steps on ``-log_prob(batch).mean()``, keeping
    the weights with the best validation NLL (checked at step 0 and every ``eval_every``
    steps). Stops early only if the loss becomes non-finite."""
    optimizer = torch.optim.Adam(module.parameters(), lr=budget.lr)
    generator = torch.Generator().manual_seed(seed)
    batches = minibatches(len(task.train), budget.batch_size, generator)
    best_nll, best_state, best_step = mean_nll(log_prob, task.valid), copy.deepcopy(module.state_dict()), 0
    diverged_at = None
    start = time.perf_counter()
    for step in tqdm(range(1, budget.steps + 1), desc=label, leave=False, disable=not progress):
        loss = -log_prob(task.to_model(task.train[next(batches)], generator)).mean()
        if not torch.isfinite(loss):
            diverged_at = step
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % budget.eval_every == 0 or step == budget.steps:
            valid_nll = mean_nll(log_prob, task.valid)
            if valid_nll < best_nll:
                best_nll, best_state, best_step = valid_nll, copy.deepcopy(module.state_dict()), step
    seconds = time.perf_counter() - start
    module.load_state_dict(best_state)
    nlls = task.test_nlls(log_prob)
    return Outcome(nlls.mean().item(), nlls.median().item(), best_step, seconds, diverged_at, worst=nlls.max().item())


def gaussian_nll(task: Task, generator: torch.Generator) -> Outcome:
    """Mean, median and worst test NLL (data space) of a Gaussian with the training rows'
    mean and covariance."""
    x = task.to_model(task.train, generator).double()
    covariance = torch.cov(x.T).reshape(task.dim, task.dim) + 1e-6 * torch.eye(task.dim, dtype=x.dtype)
    gaussian = torch.distributions.MultivariateNormal(x.mean(0), covariance)
    nlls = task.test_nlls(lambda x: gaussian.log_prob(x.double()))
    return Outcome(nlls.mean().item(), nlls.median().item(), 0, 0.0, worst=nlls.max().item())


def flow_hidden(dim: int, args: argparse.Namespace) -> list[int]:
    """The two hidden widths of the flows' MADEs."""
    return [args.hidden] * 2 if args.hidden else default_hidden_dims(dim)


def run_flows(task: Task, args: argparse.Namespace, budget: Budget) -> dict[str, Outcome]:
    """Every flow's outcome on ``task``, by ``model_key``."""
    outcomes = {}
    for library, bijection in models(args):
        key = model_key(library, bijection)
        contender = build(library, "maf", task.dim, args.transforms, flow_hidden(task.dim, args), seed=args.seed,
                          bijection=bijection)  # fmt: skip
        outcome = train(contender.module, contender.log_prob, task, budget, args.seed, args.progress,
                        f"{task.name} {key}")  # fmt: skip
        outcome.parameters = contender.num_parameters
        outcomes[key] = outcome
    return outcomes


def run_made_uci(directory: Path, args: argparse.Namespace, budget: Budget) -> dict[str, tuple[Task, Outcome]]:
    """BernoulliMADE on each MADE paper dataset found in ``directory`` (others skipped)."""
    results = {}
    for name in args.made_uci:
        path = directory / f"{name}.npz"
        if not path.is_file():
            print(f"skipping {name}: no file {path}")
            continue
        splits = flowkit.datasets.load_made_uci(path)
        task = Task(name, splits.train, splits.valid, splits.test)
        torch.manual_seed(args.seed)
        direct = flowkit.MADEConfig(skip_connections=True)
        model = flowkit.BernoulliMADE(task.dim, [args.made_hidden], conditioner=direct, seed=args.seed)
        results[name] = (task, train(model, model.log_prob, task, budget, args.seed, args.progress, name))
    return results


# ------------------------------------------------------------------ reporting
def nll_cell(mean: float, median: float, diverged_at: int | None = None) -> str:
    note = f", non-finite loss at step {diverged_at}" if diverged_at else ""
    return f"{mean:.3f} ({median:.3f}{note})"


def outcome_cell(outcome: Outcome) -> str:
    return nll_cell(outcome.test_nll, outcome.test_median, outcome.diverged_at)


def worst_cell(outcome: Outcome) -> str:
    return f"{outcome.worst:.4g}"


def flow_tables(tasks: list[Task], results: dict[str, dict[str, Outcome]], gaussians: dict[str, Outcome],
                args: argparse.Namespace) -> str:  # fmt: skip
    nll_rows, worst_rows, train_rows = [], [], []
    keys = [model_key(*model) for model in models(args)]
    for task in tasks:
        outcomes = results[task.name]
        sizes = f"{len(task.train)} / {len(task.valid)} / {len(task.test)}"
        hidden = "-".join(map(str, flow_hidden(task.dim, args)))
        nll_rows.append([task.name, task.dim, sizes] + [outcome_cell(outcomes[key]) for key in keys]
                        + [outcome_cell(gaussians[task.name])])  # fmt: skip
        worst_rows.append([task.name] + [worst_cell(outcomes[key]) for key in keys] + [worst_cell(gaussians[task.name])])
        train_rows.append([task.name, hidden] + [
            f"{outcomes[key].parameters}, step {outcomes[key].best_step}, {outcomes[key].seconds:.0f} s"
            for key in keys
        ])  # fmt: skip
    names = keys
    seeds = "" if len(args.seeds) == 1 else f", each the mean over seeds {', '.join(map(str, args.seeds))}"
    return "\n\n".join([
        f"**Test NLL**, mean (median) over the test rows{seeds}, nats per example, lower is better; digits in "
        "pixel space, nats per image. Rows: train / valid / test (digits test: dequantised copies of each test "
        "image).",
        markdown_table(["dataset", "D", "rows"] + names + ["Gaussian"], nll_rows),
        "**Worst test row**: the largest NLL of a single test row (over all seeds), nats.",
        markdown_table(["worst row of"] + names + ["Gaussian"], worst_rows),
        "**Training**: parameters, step of the kept (best validation) weights, training time (means over seeds).",
        markdown_table(["dataset", "hidden"] + names, train_rows),
    ])


def digits_table(task: Task, outcomes: dict[str, Outcome], gaussian: float) -> str:
    """Digits in both spaces, with bits per pixel and the uniform baseline (mean NLLs)."""
    def row(name: str, nll: float, logit_space: str) -> list[str]:
        return [name, logit_space, f"{nll:.2f}", f"{nll / task.dim / math.log(2):.3f}"]

    rows = [row(key, o.test_nll, f"{o.test_nll - task.nll_offset:.2f}") for key, o in outcomes.items()]
    rows.append(row("Gaussian", gaussian, f"{gaussian - task.nll_offset:.2f}"))
    rows.append(row("uniform over 17 levels", Digits.uniform_nll(task.dim), "-"))
    return "\n\n".join([
        f"**Digits**: NLL of the standardised logits (what the flows model) and of the pixels (nats per image, bits per "
        f"pixel). The pixel NLL is the logit NLL minus the mean log-Jacobian of the transform over the test "
        f"images, {-task.nll_offset:.2f} nats.",
        markdown_table(["model", "NLL logit space", "NLL pixels (nats)", "bits/pixel"], rows),
    ])


def made_table(results: dict[str, tuple[Task, Outcome]], hidden: int) -> str:
    rows = []
    for name, (task, outcome) in results.items():
        paper = PAPER_NLL.get(name, (math.nan, math.nan))
        rows.append([name, task.dim, f"{len(task.train)} / {len(task.valid)} / {len(task.test)}", outcome_cell(outcome),
                     f"{paper[0]:.2f}", f"{paper[1]:.2f}", outcome.best_step, f"{outcome.seconds:.0f}"])  # fmt: skip
    return "\n\n".join([
        f"**MADE on the MADE paper's binary datasets**: flowkit's BernoulliMADE (one hidden layer of {hidden}, "
        "direct connections, one mask, natural order) through the same loop, beside the paper's Table 1 "
        "(test NLL, nats per example: mean (median) for flowkit, means in the paper).",
        markdown_table(["dataset", "D", "rows", "flowkit 1 mask", "paper 1 mask", "paper mask sampling",
                        "best step", "time (s)"], rows),  # fmt: skip
    ])


def plot(tasks: list[Task], results: dict, gaussians: dict[str, Outcome], made: dict, path: Path,
         keys: list[str]) -> None:  # fmt: skip
    """Mean test NLL as bars and the median as dots: one panel per flow dataset (with the
    Gaussian), one per MADE dataset (with the paper's mean), three panels to a row so that
    the text stays legible at the width of the docs page."""
    panels = len(tasks) + len(made)
    columns = min(panels, PANELS_PER_ROW)
    rows = math.ceil(panels / columns)
    width = 3.6 if len(keys) <= len(LIBRARIES) else 5.0  # room for the spline flows' bars
    fig, grid = plt.subplots(rows, columns, figsize=(width * columns, 3.7 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[panels:]:
        ax.remove()
    for ax, task in zip(axes, tasks):
        scores = [(results[task.name][key].test_nll, results[task.name][key].test_median) for key in keys]
        scores.append((gaussians[task.name].test_nll, gaussians[task.name].test_median))
        title = f"{task.name} (D={task.dim})"
        if task.name == "digits":
            title += f"\nuniform: {Digits.uniform_nll(task.dim):.1f}"
        colours = [FLOW_COLOURS[key] for key in keys] + ["C7"]
        _nll_panel(ax, keys + ["Gaussian"], scores, colours, title)
    for ax, (name, (task, outcome)) in zip(axes[len(tasks):], made.items()):
        paper = PAPER_NLL.get(name, (math.nan,))[0]
        scores = [(outcome.test_nll, outcome.test_median), (paper, math.nan)]
        _nll_panel(ax, ["flowkit", "paper"], scores, ["C0", "C7"], f"{name} (D={task.dim}), 1 mask")
    axes[0].legend(fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _nll_panel(ax, labels: list[str], scores: list[tuple[float, float]], colours: list[str], title: str) -> None:
    """Bars of the means, dots of the medians; a log axis when one model is far off the
    others (a mean can be dominated by a single test row)."""
    means, medians = zip(*scores)
    ax.bar(labels, means, color=colours, label="mean")
    ax.plot(labels, medians, "o", color="black", markersize=4, label="median")
    values = [v for v in means + medians if math.isfinite(v)]
    low, high = min(values), max(values)
    if low > 0 and high / low > 20:
        ax.set_yscale("log")
    else:
        margin = 0.1 * (high - low) + 0.05 * abs(high) + 1e-3
        ax.set_ylim(low - margin, high + margin)
    ax.set_title(title, fontsize=13)
    ax.set_ylabel("test NLL (nats)", fontsize=11)
    ax.tick_params(axis="y", labelsize=10)
    ax.tick_params(axis="x", labelsize=11, rotation=30)


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=list(FLOW_DATASETS), choices=FLOW_DATASETS)
    parser.add_argument("--made-uci", nargs="*", default=list(MADE_UCI), help="MADE paper datasets to run")
    parser.add_argument("--made-uci-dir", type=Path, default=DEFAULT_MADE_UCI_DIR,
                        help="folder with dna.npz, mushrooms.npz, nips.npz (absent files are skipped)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=3000, help="training steps, for every model")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=50, help="steps between validation checks")
    parser.add_argument("--transforms", type=int, default=5, help="flow steps")
    parser.add_argument("--bijections", nargs="+", choices=BIJECTIONS, default=list(BIJECTIONS),
                        help="the flows' steps: affine, rational-quadratic spline, or both")  # fmt: skip
    parser.add_argument("--hidden", type=int, default=None, help="hidden width, two layers (default max(64, 3D+1))")
    parser.add_argument("--made-hidden", type=int, default=500, help="BernoulliMADE's hidden width (the paper's)")
    parser.add_argument("--moons-rows", type=int, default=8000, help="training rows (valid: a quarter, test: as many)")
    parser.add_argument("--test-draws", type=int, default=10, help="dequantised copies of each digits test image")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="train every model once per seed; tables give means over the seeds")  # fmt: skip
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.eval_every, args.transforms = 20, 32, 10, 2
        args.hidden, args.made_hidden, args.moons_rows, args.test_draws = 64, 16, 256, 1
    args.page = page_to_write(args)
    args.seed = args.seeds[0]  # the seed of the current run; main sets each in turn
    return args


def run_seeds(args: argparse.Namespace, budget: Budget) -> tuple[list[Task], dict, dict, dict]:
    """Every model on every dataset once per seed in ``args.seeds``, combined over the
    seeds: ``(tasks, flow outcomes, Gaussian outcomes, MADE outcomes)``."""
    runs = []
    for seed in args.seeds:
        args.seed = seed
        tasks = flow_tasks(args.datasets, args)
        results = {task.name: run_flows(task, args, budget) for task in tasks}
        gaussians = {task.name: gaussian_nll(task, torch.Generator().manual_seed(seed)) for task in tasks}
        runs.append((tasks, results, gaussians, run_made_uci(args.made_uci_dir, args, budget)))
    tasks = [combine_tasks([run[0][i] for run in runs]) for i in range(len(runs[0][0]))]
    results = {task.name: {key: combine([run[1][task.name][key] for run in runs]) for key in runs[0][1][task.name]}
               for task in tasks}  # fmt: skip
    gaussians = {task.name: combine([run[2][task.name] for run in runs]) for task in tasks}
    made = {name: (task, combine([run[3][name][1] for run in runs])) for name, (task, _) in runs[0][3].items()}
    return tasks, results, gaussians, made


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = Budget(args.steps, args.batch_size, args.lr, args.eval_every)
    setup = (
        f"Measured on {machine()}; {library_versions()}. Every model: {budget.steps} Adam steps, lr {budget.lr}, batch "
        f"{budget.batch_size}, validation every {budget.eval_every} steps, best validation weights kept; "
        f"{args.transforms} MAF steps ({' and '.join(args.bijections)}; splines: 8 bins on [-5, 5]), float32, "
        f"seed{'s' if len(args.seeds) > 1 else ''} {', '.join(map(str, args.seeds))}."
    )
    print(setup + "\n")
    tasks, results, gaussians, made = run_seeds(args, budget)
    parts = [setup]
    if tasks:
        parts.append(flow_tables(tasks, results, gaussians, args))
    digits = [task for task in tasks if task.name == "digits"]
    if digits:
        parts.append(digits_table(digits[0], results["digits"], gaussians["digits"].test_nll))
    if made:
        parts.append(made_table(made, args.made_hidden))
    else:
        parts.append(f"No MADE paper dataset found in `{args.made_uci_dir}`; that table is left out.")
    text = "\n\n".join(parts[1:])
    print(text)
    if args.page is not None and (tasks or made):
        path, link = figure_path(args.page, "quality")
        plot(tasks, results, gaussians, made, path, [model_key(*model) for model in models(args)])
        write_section(args.page, "quality", "\n\n".join(parts) + f"\n\n![test NLL]({link})")
        print(f"\nwrote {args.page} and {path}")


if __name__ == "__main__":
    main()
