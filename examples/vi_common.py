"""What the variational-inference examples share: the guides, the SVI loop, the options.

``vi_funnel.py`` and ``vi_logistic_regression.py`` race the same three guides (GUIDES)
with the same SVI recipe and judge them by the same importance weights
``log p(x, z) - log q(z)``, z ~ q. Their targets, figures and metrics stay in their own
files. Run as scripts (``python examples/vi_funnel.py``), their folder is on
``sys.path``, so they import this module as ``from vi_common import ...``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import pyro
import torch
from _cli import add_shared_options, parse_with_presets
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoGuide, AutoIAFNormal, AutoNormal
from tqdm import tqdm

from flowkit.infer import AutoIAF
from flowkit.nn import MADEConfig

GUIDES = ("AutoNormal", "AutoIAFNormal", "flowkit AutoIAF")


def make_guide(name: str, model: Callable, args: argparse.Namespace, seed: int) -> AutoGuide:
    """The guide called ``name`` (one of GUIDES) for ``model``, sized by ``args``; ``seed``
    fixes flowkit's masks and permutations."""
    # AutoNormal and flowkit's AutoIAF start as N(init loc, init_scale^2) in every
    # coordinate, Pyro's AutoIAFNormal from its N(0, I) base through randomly initialised
    # steps: init_scale = 1 (not Pyro's default 0.1) gives all three about the same start.
    if name == "AutoNormal":
        return AutoNormal(model, init_scale=args.init_scale)
    if name == "AutoIAFNormal":
        # Pyro's IAF guide with the same depth and widths as flowkit's, for a fair race.
        return AutoIAFNormal(model, hidden_dim=args.hidden, num_transforms=args.transforms)
    if name == "flowkit AutoIAF":
        # bijection="affine" (flowkit's default, spelled out): the gated update can only
        # shrink the scale in each step (sigmoid < 1), and the funnel needs the scale of x to
        # grow and shrink by orders of magnitude with v. In 1500-step trials it left a
        # 2.5-5x larger KL gap on the funnel.
        # ReLU units, as Pyro's AutoRegressiveNN (not the guides' default tanh), and the
        # location and scale per coordinate that the tables of the VI tutorial were run with.
        conditioner = MADEConfig(hidden_dims=args.hidden, activation="relu")
        return AutoIAF(model, num_transforms=args.transforms, conditioner=conditioner, bijection="affine",
                       affine="diagonal", init_scale=args.init_scale, seed=seed,
                       stick_the_landing=args.stick_the_landing)  # fmt: skip
    raise ValueError(name)


def train(
    model: Callable,
    guide: AutoGuide,
    args: argparse.Namespace,
    label: str,
    model_args: tuple = (),
    max_plate_nesting: int = 0,
    loss_format: str = ".3f",
) -> tuple[float, float]:
    """Runs ``args.steps`` SVI steps on ``model(*model_args)``; returns the wall and CPU
    time in seconds. ``label`` and ``loss_format`` are for the progress bar."""
    # Adam with its learning rate decayed geometrically to lr * lr_decay by the last
    # step (and gradients clipped at norm 10): the late steps average out the noise of
    # the few-particle ELBO gradients instead of jittering around the optimum.
    gamma = args.lr_decay ** (1.0 / max(args.steps, 1))
    optimiser = pyro.optim.ClippedAdam({"lr": args.lr, "lrd": gamma, "clip_norm": 10.0})
    elbo = Trace_ELBO(num_particles=args.particles, vectorize_particles=True, max_plate_nesting=max_plate_nesting)
    svi = SVI(model, guide, optimiser, elbo)
    wall, cpu = time.perf_counter(), time.process_time()
    bar = tqdm(range(args.steps), desc=label, disable=args.no_progress, leave=False)
    for step in bar:
        loss = svi.step(*model_args)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss:{loss_format}}")
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.no_grad()
def log_weights(
    model: Callable,
    guide: AutoGuide,
    num_samples: int,
    model_args: tuple = (),
    particle_dim: int = -1,
    chunk: int = 1000,
) -> torch.Tensor:
    """``log p(x, z) - log q(z)`` for ``num_samples`` draws z ~ q, in a vectorised particle
    plate at ``particle_dim`` (left of the model's own plates), ``chunk`` draws at a time."""
    out = []
    for start in range(0, num_samples, chunk):
        n = min(chunk, num_samples - start)
        with pyro.plate("particles", n, dim=particle_dim):
            guide_trace = poutine.trace(guide).get_trace(*model_args)
            replayed = poutine.replay(model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(*model_args)
        out.append(_log_joint(model_trace, n) - _log_joint(guide_trace, n))
    return torch.cat(out)


def _log_joint(trace: poutine.Trace, n: int) -> torch.Tensor:
    """Sums every sample site's log-density over all but the leading (particle) dimension."""
    trace.compute_log_prob()
    total = torch.zeros(n)
    for site in trace.nodes.values():
        if site["type"] == "sample":
            log_prob = site["log_prob"]
            total = total + (log_prob.reshape(n, -1).sum(-1) if log_prob.dim() > 1 else log_prob)
    return total


def summarise(log_w: torch.Tensor) -> dict[str, float]:
    """The ELBO (the mean log-weight) with its standard error, the importance-sampling
    estimate of the log evidence, and the effective sample size of the weights."""
    weights = torch.softmax(log_w, 0)
    return {
        "elbo": log_w.mean().item(),
        "stderr": log_w.std().item() / math.sqrt(len(log_w)),
        "log_evidence": (torch.logsumexp(log_w, 0) - math.log(len(log_w))).item(),
        "ess": 1.0 / (weights**2).sum().item(),
    }


@torch.no_grad()
def guide_samples(guide: AutoGuide, num_samples: int, model_args: tuple = (), particle_dim: int = -1) -> dict:
    """``num_samples`` draws from the guide, in a particle plate at ``particle_dim``."""
    with pyro.plate("particles", num_samples, dim=particle_dim):
        return guide(*model_args)


def parse_args(
    description: str,
    full: dict,
    quick: dict,
    argv: list[str] | None,
    eval_for: str,
    seed_help: str = "seeds, one run of every guide each",
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """Parses ``argv`` (None: the command line) for the shared options; those left unset
    take their value from ``quick`` with ``--quick``, else from ``full``. ``eval_for`` says
    what the ``--eval-samples`` draws are for; ``extra(parser)`` adds an example's own
    options (listed after ``--eval-samples``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, help=f"SVI steps per guide (default {full['steps']})")
    parser.add_argument("--lr", type=float, help=f"Adam learning rate (default {full['lr']})")
    parser.add_argument("--lr-decay", type=float, default=0.1, help="final lr / initial lr (default 0.1)")
    parser.add_argument("--init-scale", type=float, default=1.0, help="initial guide scale (default 1)")
    parser.add_argument("--particles", type=int, help=f"ELBO particles per step (default {full['particles']})")
    parser.add_argument("--transforms", type=int, help=f"IAF steps of both IAF guides (default {full['transforms']})")
    parser.add_argument("--hidden", type=int, nargs="+", help=f"MADE widths of both IAF guides ({full['hidden']})")
    parser.add_argument("--eval-samples", type=int, help=f"guide draws for {eval_for} ({full['eval_samples']})")
    if extra is not None:
        extra(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"{seed_help} (default {full['seeds']})")
    parser.add_argument("--stick-the-landing", action=argparse.BooleanOptionalAction, default=True,
                        help="flowkit AutoIAF's path-derivative gradient (default on, as in flowkit)")
    add_shared_options(parser, quick, seed_help=None)  # --seeds above: one run per seed
    return parse_with_presets(parser, argv, full, quick)


def describe(args: argparse.Namespace, evaluation: str) -> str:
    """The line that states the run's settings (and what the evaluation draws are for),
    printed above the table."""
    return (f"{args.steps} SVI steps per guide, Adam lr {args.lr} decayed to {args.lr * args.lr_decay:g}, "
            f"{args.particles} particles per step, initial scale {args.init_scale}; IAF guides: {args.transforms} "
            f"steps of MADE {args.hidden} (flowkit: stick_the_landing={args.stick_the_landing}); seeds {args.seeds}; "
            f"{evaluation} from {args.eval_samples} draws\n")  # fmt: skip


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """The mean over seeds and the spread, the sample standard deviation (0 for one seed)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
