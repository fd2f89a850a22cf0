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

It prints a Markdown table per guide and target: the final ELBO estimated from many guide
samples (with its standard error), the gap to log Z = 0 (an estimate of KL(q || p)), the
effective sample size of those draws as importance samples for the target (all of them
when q = p), and the training wall and CPU time. It writes ``vi_funnel.png``:
guide samples over the true density, for the funnel in the (x_1, v) plane.

    python examples/vi_funnel.py           # about 2-4 minutes on 2 CPU cores
    python examples/vi_funnel.py --quick   # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402
from pyro.infer.autoguide import AutoIAFNormal, AutoNormal  # noqa: E402
from tqdm import tqdm  # noqa: E402

from flowkit.infer import AutoIAF  # noqa: E402

FUNNEL_DIM = 10
BANANA_B = 0.5
GUIDES = ("AutoNormal", "AutoIAFNormal", "flowkit AutoIAF")

FULL = {"steps": 5000, "lr": 5e-3, "particles": 8, "transforms": 4, "hidden": [64, 64], "eval_samples": 4000}
QUICK = {"steps": 30, "lr": 5e-3, "particles": 2, "transforms": 2, "hidden": [16], "eval_samples": 500}


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


# ------------------------------------------------------------------ guides and training
def make_guide(name: str, model, args: argparse.Namespace):
    # AutoNormal and flowkit's AutoIAF start as N(init loc, init_scale^2) in every
    # coordinate, Pyro's AutoIAFNormal from its N(0, I) base through randomly initialised
    # steps: init_scale = 1 (not Pyro's default 0.1) gives all three about the same start.
    if name == "AutoNormal":
        return AutoNormal(model, init_scale=args.init_scale)
    if name == "AutoIAFNormal":
        # Pyro's IAF guide with the same depth and widths as flowkit's, for a fair race.
        return AutoIAFNormal(model, hidden_dim=args.hidden, num_transforms=args.transforms)
    if name == "flowkit AutoIAF":
        # stable=False: the gated ("stable") update can only shrink the scale in each step
        # (sigmoid < 1), and the funnel needs the scale of x to grow and shrink by orders of
        # magnitude with v. In 1500-step trials it left a 2.5-5x larger KL gap on the funnel.
        return AutoIAF(model, num_transforms=args.transforms, hidden_dims=args.hidden, stable=False,
                       init_scale=args.init_scale, seed=args.seed)  # fmt: skip
    raise ValueError(name)


def train(model, guide, args: argparse.Namespace, label: str) -> tuple[float, float]:
    """Runs SVI; returns the wall and CPU time in seconds."""
    # Adam with its learning rate decayed geometrically to lr * lr_decay by the last
    # step (and gradients clipped at norm 10): the late steps average out the noise of
    # the few-particle ELBO gradients instead of jittering around the optimum.
    gamma = args.lr_decay ** (1.0 / max(args.steps, 1))
    optimiser = pyro.optim.ClippedAdam({"lr": args.lr, "lrd": gamma, "clip_norm": 10.0})
    elbo = Trace_ELBO(num_particles=args.particles, vectorize_particles=True, max_plate_nesting=0)
    svi = SVI(model, guide, optimiser, elbo)
    wall, cpu = time.perf_counter(), time.process_time()
    bar = tqdm(range(args.steps), desc=label, disable=args.no_progress, leave=False)
    for step in bar:
        loss = svi.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.no_grad()
def log_weights(model, guide, num_samples: int, chunk: int = 1000) -> torch.Tensor:
    """``log p(z) - log q(z)`` for ``num_samples`` draws z ~ q, a vectorised particle plate
    at a time (the models here have no plates of their own)."""
    out = []
    for start in range(0, num_samples, chunk):
        n = min(chunk, num_samples - start)
        with pyro.plate("particles", n, dim=-1):
            guide_trace = poutine.trace(guide).get_trace()
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace()
        out.append(_log_joint(model_trace, n) - _log_joint(guide_trace, n))
    return torch.cat(out)


def _log_joint(trace, n: int) -> torch.Tensor:
    trace.compute_log_prob()
    total = torch.zeros(n)
    for site in trace.nodes.values():
        if site["type"] == "sample":
            total = total + site["log_prob"]
    return total


@torch.no_grad()
def guide_samples(guide, num_samples: int) -> dict:
    with pyro.plate("particles", num_samples, dim=-1):
        return guide()


def summarise(log_w: torch.Tensor) -> dict:
    elbo = log_w.mean().item()
    stderr = log_w.std().item() / math.sqrt(len(log_w))
    weights = torch.softmax(log_w, 0)
    ess = 1.0 / (weights**2).sum().item()
    return {"elbo": elbo, "stderr": stderr, "gap": -elbo, "ess": ess}


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
                title = f"{column}\nKL(q||p) ~ {title['gap']:.3f} nats"
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
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"a tiny run for smoke tests: {QUICK}")
    parser.add_argument("--steps", type=int, help=f"SVI steps per guide (default {FULL['steps']})")
    parser.add_argument("--lr", type=float, help=f"Adam learning rate (default {FULL['lr']})")
    parser.add_argument("--lr-decay", type=float, default=0.1, help="final lr / initial lr (default 0.1)")
    parser.add_argument("--init-scale", type=float, default=1.0, help="initial guide scale (default 1)")
    parser.add_argument("--particles", type=int, help=f"ELBO particles per step (default {FULL['particles']})")
    parser.add_argument("--transforms", type=int, help=f"IAF steps of both IAF guides (default {FULL['transforms']})")
    parser.add_argument("--hidden", type=int, nargs="+", help=f"MADE widths of both IAF guides ({FULL['hidden']})")
    parser.add_argument("--eval-samples", type=int, help=f"guide draws for the final ELBO ({FULL['eval_samples']})")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output", help="folder for the figure")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    # Small tensors: on a busy two-core machine extra OpenMP threads only slow each step.
    torch.set_num_threads(args.threads)
    print(f"{args.steps} SVI steps per guide, Adam lr {args.lr} decayed to {args.lr * args.lr_decay:g}, "
          f"{args.particles} particles per step, initial scale {args.init_scale}; IAF guides: {args.transforms} "
          f"steps of MADE {args.hidden}; final ELBO from {args.eval_samples} draws\n")  # fmt: skip
    print("| target | guide | ELBO | std err | gap to log Z = 0 (KL) | ESS | train time (s) | CPU time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    panels: dict = {}
    for target, spec in TARGETS.items():
        if target not in args.targets:
            continue
        panels[target] = {}
        for guide_name in GUIDES:
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            guide = make_guide(guide_name, spec["model"], args)
            wall, cpu = train(spec["model"], guide, args, f"{target} / {guide_name}")
            stats = summarise(log_weights(spec["model"], guide, args.eval_samples))
            panels[target][guide_name] = (guide_samples(guide, 2000), stats)
            print(f"| {target} | {guide_name} | {stats['elbo']:.4f} | {stats['stderr']:.4f} | {stats['gap']:.4f} "
                  f"| {stats['ess']:.1f} | {wall:.1f} | {cpu:.1f} |", flush=True)  # fmt: skip
    path = args.out / "vi_funnel.png"
    plot(panels, path)
    print(f"\nfigure: {path}")
    print(f"time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
