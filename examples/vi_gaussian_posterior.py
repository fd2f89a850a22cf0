"""Does a flow guide converge to a posterior it can represent? A 5-D Gaussian, several seeds.

The model is a Bayesian linear regression with a conjugate prior,

    w ~ N(0, I_5),   y_n | x_n, w ~ N(w . x_n, 1),   n = 1..20,

with two pairs of nearly collinear features, so the posterior over w is a Gaussian with
strong correlations, and the log evidence log p(y) is known in closed form. The KL gap of
a guide, log p(y) - ELBO = KL(q || p(w | y)), is estimated from ``--eval-samples`` draws.

Every guide gets the same budget, as a new user would run it: ``--steps`` SVI steps of
``Trace_ELBO`` with one particle, ClippedAdam with a constant learning rate ``--lr``, each
guide's defaults, on each of ``--seeds``:

* ``AutoMultivariateNormal``: Pyro's full-covariance Gaussian, whose family contains the posterior;
* ``AutoIAFNormal``: Pyro's IAF guide (one step, MADE [3D+1]);
* ``flowkit AutoIAF, Pyro's architecture``: flowkit's IAF guide built as Pyro's (one step,
  one ReLU layer of 3D+1 units, the flow alone on N(0, I): ``affine=None``), with
  flowkit's default path-derivative ("sticking the landing") gradient, whose variance
  vanishes as the guide reaches the posterior;
* ``flowkit AutoIAF, stick_the_landing=False``: flowkit's defaults (two steps of 3D+1
  tanh units after a full-covariance affine map, which holds every Gaussian posterior)
  with the usual gradient;
* ``flowkit AutoIAF (defaults)``: the same with the path-derivative gradient.

It prints a Markdown table of the final KL gap per guide and seed, with the median, and
writes ``vi_gaussian_posterior.png``: the KL gap along the run (median over the seeds,
and the range), every ``--eval-every`` steps from ``--curve-samples`` draws. The
mean-field ``AutoNormal`` cannot do better than the printed closed-form gap.

    python examples/vi_gaussian_posterior.py           # about 10 minutes on 2 busy CPU cores
    python examples/vi_gaussian_posterior.py --quick   # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from _cli import add_shared_options, parse_with_presets  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402
from pyro.infer.autoguide import AutoGuide, AutoIAFNormal, AutoMultivariateNormal  # noqa: E402
from tqdm import tqdm  # noqa: E402

from flowkit.infer import AutoIAF  # noqa: E402
from flowkit.nn import MADEConfig  # noqa: E402

DIM, ROWS, NOISE = 5, 20, 1.0
# AutoIAFNormal's architecture: one step of one ReLU layer of 3D + 1 units, the flow alone.
PYRO_ARCHITECTURE = dict(num_transforms=1, conditioner=MADEConfig(hidden_dims=[3 * DIM + 1]), affine=None)
GUIDES: dict[str, Callable[[Callable], AutoGuide]] = {
    "AutoMultivariateNormal": lambda model: AutoMultivariateNormal(model),
    "AutoIAFNormal": lambda model: AutoIAFNormal(model),
    "flowkit AutoIAF, Pyro's architecture": lambda model: AutoIAF(model, **PYRO_ARCHITECTURE),
    "flowkit AutoIAF, stick_the_landing=False": lambda model: AutoIAF(model, stick_the_landing=False),
    "flowkit AutoIAF (defaults)": lambda model: AutoIAF(model),
}
COLOURS = ("tab:orange", "tab:green", "tab:gray", "tab:blue", "tab:purple")

FULL = {"steps": 3000, "seeds": [0, 1, 2, 3, 4], "eval_samples": 4000, "eval_every": 100, "curve_samples": 1000}
QUICK = {"steps": 40, "seeds": [0, 1], "eval_samples": 500, "eval_every": 20, "curve_samples": 200}


# ------------------------------------------------------------------ the posterior
def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Features with columns 1 ~ 0 and 3 ~ 2 (nearly collinear), and responses; always the same."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, DIM, generator=generator)
    x[:, 1] = x[:, 0] + 0.2 * torch.randn(ROWS, generator=generator)
    x[:, 3] = x[:, 2] - 0.3 * torch.randn(ROWS, generator=generator)
    y = x @ torch.tensor([1.0, -0.5, 0.3, 0.8, -1.0]) + NOISE * torch.randn(ROWS, generator=generator)
    return x, y


X, Y = make_data()


def model() -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(DIM), 1.0).to_event(1))
    with pyro.plate("data", ROWS):
        pyro.sample("y", dist.Normal((w * X).sum(-1), NOISE), obs=Y)


def log_evidence() -> float:
    """log p(y): y ~ N(0, NOISE^2 I + X X^T) once w is integrated out."""
    return dist.MultivariateNormal(torch.zeros(ROWS), NOISE**2 * torch.eye(ROWS) + X @ X.T).log_prob(Y).item()


def mean_field_gap() -> float:
    """The smallest KL gap of any mean-field Gaussian: (sum log diag P - log det P) / 2,
    P the posterior precision."""
    precision = torch.eye(DIM) + X.T @ X / NOISE**2
    return 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()


@torch.no_grad()
def kl_gap(guide: AutoGuide, num_samples: int, evidence: float) -> float:
    """log p(y) - ELBO, the ELBO from ``num_samples`` vectorised draws."""
    elbo = Trace_ELBO(num_particles=num_samples, vectorize_particles=True, max_plate_nesting=1)
    return evidence + elbo.loss(model, guide)


# ------------------------------------------------------------------ training
def train(name: str, seed: int, args: argparse.Namespace, evidence: float) -> dict:
    """One guide, one seed: the final KL gap, the curve of gaps and the wall time."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = GUIDES[name](model)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": args.lr}), Trace_ELBO(max_plate_nesting=1))
    curve, wall = [], 0.0
    for step in tqdm(range(1, args.steps + 1), desc=f"{name}, seed {seed}", disable=args.no_progress, leave=False):
        start = time.perf_counter()
        svi.step()
        wall += time.perf_counter() - start
        if step % args.eval_every == 0:
            curve.append((step, kl_gap(guide, args.curve_samples, evidence)))
    torch.manual_seed(10_000 + seed)  # the final estimate's draws do not depend on the guide
    return {"gap": kl_gap(guide, args.eval_samples, evidence), "curve": curve, "wall": wall}


# ------------------------------------------------------------------ the figure
def plot(results: dict, path: Path, args: argparse.Namespace, floor: float) -> None:
    """KL gap along the run: the median over seeds (line) and their range (band), log scale."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for (name, runs), colour in zip(results.items(), COLOURS):
        steps = [step for step, _ in runs[0]["curve"]]
        gaps = torch.tensor([[max(gap, 1e-4) for _, gap in run["curve"]] for run in runs])
        ax.fill_between(steps, gaps.min(0).values, gaps.max(0).values, color=colour, alpha=0.2, lw=0)
        ax.plot(steps, gaps.median(0).values, color=colour, lw=1.5, label=name)
    ax.axhline(floor, color="k", ls=":", lw=1, label="best mean-field Gaussian")
    ax.axhline(0.05, color="tab:red", ls="--", lw=1, label="0.05 nats")
    ax.set_yscale("log")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("KL(q || posterior), nats")
    ax.set_title(
        f"5-D Gaussian posterior: KL gap along {args.steps} steps (Trace_ELBO, 1 particle, ClippedAdam "
        f"lr {args.lr})\nmedian over seeds {args.seeds} (line) and their range (band), "
        f"{args.curve_samples} draws per point",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help=f"SVI steps per guide and seed (default {FULL['steps']})")
    parser.add_argument("--lr", type=float, default=5e-3, help="ClippedAdam learning rate (default 5e-3)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"seeds (default {FULL['seeds']})")
    parser.add_argument("--eval-samples", type=int, help=f"draws for the final KL gap ({FULL['eval_samples']})")
    parser.add_argument("--eval-every", type=int, help=f"steps between points of the curve ({FULL['eval_every']})")
    parser.add_argument("--curve-samples", type=int, help=f"draws per point of the curve ({FULL['curve_samples']})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_shared_options(parser, QUICK, seed_help=None)  # --seeds above: one run per seed
    return parse_with_presets(parser, argv, FULL, QUICK)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)  # small tensors: extra threads only slow each step
    evidence, floor = log_evidence(), mean_field_gap()
    print(f"log p(y) = {evidence:.4f}; the best mean-field Gaussian (AutoNormal) misses by {floor:.3f} nats")
    print(f"{args.steps} SVI steps, Trace_ELBO with 1 particle, ClippedAdam lr {args.lr}; KL gap from "
          f"{args.eval_samples} draws\n")  # fmt: skip
    seed_columns = " | ".join(f"seed {seed}" for seed in args.seeds)
    print(f"| guide | {seed_columns} | median | max | time per run (s) |")
    print("|---|" + "---|" * (len(args.seeds) + 3))
    results = {}
    for name in GUIDES:
        runs = results[name] = [train(name, seed, args, evidence) for seed in args.seeds]
        gaps = [run["gap"] for run in runs]
        cells = " | ".join(f"{gap:.4f}" for gap in gaps)
        wall = statistics.mean(run["wall"] for run in runs)
        print(f"| {name} | {cells} | {statistics.median(gaps):.4f} | {max(gaps):.4f} | {wall:.1f} |", flush=True)
    path = args.out / "vi_gaussian_posterior.png"
    plot(results, path, args, floor)
    print(f"\nfigure: {path}")
    print(f"time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
