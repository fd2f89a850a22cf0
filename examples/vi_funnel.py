"""Variational inference on two hard posteriors: flowkit's AutoIAF against Pyro's guides.

Two targets are written as Pyro models with no observations, so the "posterior" is the
model itself and its normaliser is known: log Z = 0. The ELBO is then at most 0 and the
gap is exactly the KL divergence of the guide from the target,

    ELBO = E_q[log p(z) - log q(z)] = log Z - KL(q || p) = -KL(q || p),

so each guide's final ELBO measures, in nats, how far it is from the truth.

* Neal's funnel in 10-D: v ~ N(0, 3^2), x_i | v ~ N(0, exp(v/2)^2) for i = 1..9. The
  scale of x changes by a factor of e^6 (about 400) between v = -6 and v = 6: no Gaussian
  fits both the neck and the mouth.
* A banana in 2-D: x1 ~ N(0, 2^2), x2 | x1 ~ N(b (x1^2 - 4), 1), a twisted Gaussian,
  normalised for every b.

Three guides get the same number of SVI steps, the same optimiser (Adam, its learning
rate decayed tenfold over the run), the same number of ELBO particles per step and the
same initial width (scale 1 in every coordinate):

* ``AutoNormal``: Pyro's mean-field Gaussian;
* ``AutoIAFNormal``: Pyro's IAF guide, given the same depth and MADE widths as flowkit's;
* ``flowkit AutoIAF``: ``flowkit.infer.AutoIAF``, IAF steps with permutations between
  them that start near the identity around Pyro's init location.

Every guide is run on each of ``--seeds`` (seeding SVI and flowkit's masks). It prints a
Markdown table per guide and target: on each seed, the gap of the final ELBO (estimated
from many guide samples) to log Z = 0, an estimate of KL(q || p); their mean and standard
deviation over the seeds; the effective sample size of those draws as importance samples
for the target (all of them when q = p), averaged over the seeds; and the training wall
time per run. It writes ``vi_funnel.png``: the first seed's guide samples over the true
density, for the funnel in the (x_1, v) plane.

    python examples/vi_funnel.py           # 3 seeds; took 20 minutes on 2 heavily shared cores
    python examples/vi_funnel.py --quick   # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402
from vi_common import (  # noqa: E402
    GUIDES, describe, guide_samples, log_weights, make_guide, mean_and_spread, parse_args, summarise, train,
)

FUNNEL_DIM = 10
BANANA_B = 0.5

FULL = {"steps": 2000, "lr": 5e-3, "particles": 8, "transforms": 4, "hidden": [64, 64], "eval_samples": 4000,
        "seeds": [0, 1, 2]}  # fmt: skip
QUICK = {"steps": 30, "lr": 5e-3, "particles": 2, "transforms": 2, "hidden": [16], "eval_samples": 500,
         "seeds": [0, 1]}  # fmt: skip


# ------------------------------------------------------------------ the targets
def funnel() -> None:
    """Neal's funnel: the joint density of (v, x) is normalised, so log Z = 0."""
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    scale = torch.exp(v / 2).unsqueeze(-1).expand(v.shape + (FUNNEL_DIM - 1,))
    pyro.sample("x", dist.Normal(0.0, scale).to_event(1))


def banana() -> None:
    """A twisted Gaussian: x2 given x1 is a unit Gaussian around a parabola; log Z = 0."""
    x1 = pyro.sample("x1", dist.Normal(0.0, 2.0))
    pyro.sample("x2", dist.Normal(BANANA_B * (x1**2 - 4.0), 1.0))


def funnel_plane_log_density(x1: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The exact log-density of the funnel's (x_1, v) marginal."""
    return dist.Normal(0.0, 3.0).log_prob(v) + dist.Normal(0.0, torch.exp(v / 2)).log_prob(x1)


def banana_log_density(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return dist.Normal(0.0, 2.0).log_prob(x1) + dist.Normal(BANANA_B * (x1**2 - 4.0), 1.0).log_prob(x2)


# A target: its model, how to read the two plotted coordinates from a sample, the exact
# density of those two coordinates, and the plot window.
TARGETS = {
    "funnel (10-D)": dict(
        model=funnel,
        coords=lambda s: (s["x"][..., 0], s["v"]),
        density=funnel_plane_log_density,
        labels=("$x_1$", "$v$"),
        window=((-12.0, 12.0), (-9.0, 9.0)),
    ),
    "banana (2-D)": dict(
        model=banana,
        coords=lambda s: (s["x1"], s["x2"]),
        density=banana_log_density,
        labels=("$x_1$", "$x_2$"),
        window=((-7.0, 7.0), (-4.0, 12.0)),
    ),
}


# ------------------------------------------------------------------ the figure
def exact_samples(target: str, num_samples: int) -> dict:
    """Exact draws from a target (both are easy to sample in their written order)."""
    with pyro.plate("particles", num_samples, dim=-1):
        return {name: site["value"] for name, site in poutine.trace(TARGETS[target]["model"]).get_trace().nodes.items()
                if site["type"] == "sample"}  # fmt: skip


def plot(panels: dict, path: Path) -> None:
    """Rows: targets. Columns: exact samples, then each guide's samples, over contours of
    the true density that enclose 50%, 90% and 99% of its mass."""
    columns = ("exact", *GUIDES)
    fig, axes = plt.subplots(len(panels), len(columns), figsize=(3.6 * len(columns), 3.5 * len(panels)),
                             squeeze=False)  # fmt: skip
    for row, (target, by_guide) in zip(axes, panels.items()):
        spec = TARGETS[target]
        (x_lo, x_hi), (y_lo, y_hi) = spec["window"]
        grid_x, grid_y = torch.meshgrid(torch.linspace(x_lo, x_hi, 400), torch.linspace(y_lo, y_hi, 400), indexing="xy")
        log_density = spec["density"](grid_x, grid_y)
        # The region {log p > c} holds mass m when c is the (1 - m) quantile of log p(X), X ~ p.
        truth = exact_samples(target, 20000)
        log_p_truth = spec["density"](*spec["coords"](truth))
        levels = torch.quantile(log_p_truth, torch.tensor([0.01, 0.10, 0.50])).numpy()
        for ax, column in zip(row, columns):
            samples, title = (truth, "exact samples") if column == "exact" else by_guide[column]
            if column != "exact":
                title = f"{column}\nKL(q||p) ~ {title['gap']:.3f} nats (first seed)"
            ax.contour(grid_x.numpy(), grid_y.numpy(), log_density.numpy(), levels=levels, colors="k",
                       linestyles="solid", linewidths=0.8, alpha=0.8)  # fmt: skip
            x, y = (c[:2000].numpy() for c in spec["coords"](samples))
            colour = "tab:gray" if column == "exact" else "tab:blue"
            ax.scatter(x, y, s=2, alpha=0.3, color=colour, rasterized=True)
            ax.set_xlim(x_lo, x_hi)
            ax.set_ylim(y_lo, y_hi)
            ax.set_xlabel(spec["labels"][0])
            ax.set_ylabel(spec["labels"][1])
            ax.set_title(f"{target}: {title}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ main
def add_targets_option(parser: argparse.ArgumentParser) -> None:
    """``--targets``: which of TARGETS to run (default all)."""
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))


def main(argv=None) -> None:
    args = parse_args(__doc__.split("\n\n")[0], FULL, QUICK, argv, eval_for="the final ELBO", extra=add_targets_option)
    start = time.perf_counter()
    # Small tensors: on a busy two-core machine extra OpenMP threads only slow each step.
    torch.set_num_threads(args.threads)
    print(describe(args, "final ELBO"))
    seed_columns = " | ".join(f"KL, seed {seed}" for seed in args.seeds)
    print(f"| target | guide | {seed_columns} | KL mean | KL sd | ESS (mean) | train time per run (s) |")
    print("|---|---|" + "---|" * (len(args.seeds) + 4))
    panels: dict = {}
    for target, spec in TARGETS.items():
        if target not in args.targets:
            continue
        panels[target] = {}
        for guide_name in GUIDES:
            gaps, ess, walls = [], [], []
            for seed in args.seeds:
                pyro.clear_param_store()
                pyro.set_rng_seed(seed)
                guide = make_guide(guide_name, spec["model"], args, seed)
                wall, _ = train(spec["model"], guide, args, f"{target} / {guide_name} / seed {seed}")
                stats = summarise(log_weights(spec["model"], guide, args.eval_samples))
                gaps.append(-stats["elbo"])  # log Z = 0, so the gap is KL(q || p)
                ess.append(stats["ess"])
                walls.append(wall)
                if seed == args.seeds[0]:  # the figure shows the first seed's run
                    panels[target][guide_name] = (guide_samples(guide, 2000), {"gap": gaps[0]})
            mean, spread = mean_and_spread(gaps)
            cells = " | ".join(f"{gap:.4f}" for gap in gaps)
            print(f"| {target} | {guide_name} | {cells} | {mean:.4f} | {spread:.4f} | {statistics.mean(ess):.1f} "
                  f"| {statistics.mean(walls):.1f} |", flush=True)  # fmt: skip
    path = args.out / "vi_funnel.png"
    plot(panels, path)
    print(f"\nfigure: {path}")
    print(f"time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
