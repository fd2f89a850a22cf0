"""SVI step cost: flowkit's AutoIAF against Pyro's AutoIAFNormal at the same architecture.

One SVI step (``Trace_ELBO`` with one particle, a ClippedAdam update) is timed for each
guide, the guides taking turns within each repeat (``timing.py``), on two posteriors:

* **gaussian (D=5)**: the Bayesian linear regression of ``examples/vi_gaussian_posterior.py``;
* **logistic (D=31)**: a logistic regression with 30 features and a bias, 200 synthetic rows.

The first three guides have the same architecture: the flow alone on N(0, I), the same
number of IAF steps and the same MADE widths (Pyro's default ``3D+1``, one ReLU layer, no
direct connections): Pyro's ``AutoIAFNormal``; flowkit's ``AutoIAF(affine=None)`` with
``stick_the_landing=False`` (the same estimator as Pyro's); and the same with flowkit's
default path-derivative gradient, whose score of the guide's own sample costs one more pass
of the flow over D + 1 copies of the noise and its backward. The last row is flowkit's
``AutoIAF`` with all its defaults (two steps of 3D+1 tanh units after a full-covariance
affine map), for what a step costs out of the box. Prints a
Markdown table with the time per step and its ratio to Pyro's, and writes it into the
``svi`` section of ``docs/benchmarks.md``.

    python benchmarks/svi.py                                # about a minute on 2 cores
    python benchmarks/svi.py --quick --page /tmp/b.md       # seconds
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal

import flowkit
from flowkit.infer import AutoIAF
from flowkit.nn import MADEConfig
from report import add_common_arguments, machine, markdown_table, page_to_write, write_section
from timing import interleaved_times


class AutoIAFUsualGradient(AutoIAF):
    """flowkit's AutoIAF with ``stick_the_landing=False``; a class of its own so that its
    parameters get their own names in Pyro's global parameter store."""


class AutoIAFDefaults(AutoIAF):
    """flowkit's AutoIAF with its defaults, under a name of its own (as above)."""


def gaussian_model() -> tuple[Callable[[], None], int]:
    """The 5-D linear-Gaussian regression of ``examples/vi_gaussian_posterior.py``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=generator)
    y = x @ torch.tensor([1.0, -0.5, 0.3, 0.8, -1.0]) + torch.randn(20, generator=generator)

    def model() -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(5), 1.0).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal((w * x).sum(-1), 1.0), obs=y)

    return model, 5


def logistic_model() -> tuple[Callable[[], None], int]:
    """Logistic regression, 30 features and a bias: a 31-D latent vector."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 30, generator=generator)
    y = torch.bernoulli(torch.sigmoid(x @ torch.randn(30, generator=generator)), generator=generator)

    def model() -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(30), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 5.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Bernoulli(logits=(w * x).sum(-1) + b), obs=y)

    return model, 31


MODELS = {"gaussian": gaussian_model, "logistic": logistic_model}
GUIDES = (
    "Pyro AutoIAFNormal",
    "flowkit AutoIAF, stick_the_landing=False",
    "flowkit AutoIAF (path derivative)",
    "flowkit AutoIAF, all defaults",
)


def make_guide(name: str, model: Callable[[], None], dim: int, args: argparse.Namespace):
    hidden = [args.hidden or 3 * dim + 1]
    if name == GUIDES[0]:
        return AutoIAFNormal(model, hidden_dim=hidden, num_transforms=args.transforms)
    if name == GUIDES[3]:
        return AutoIAFDefaults(model)
    # Pyro's AutoRegressiveNN has one relu layer and no direct connections, and its guide
    # no location or scale: so has this one.
    options = dict(num_transforms=args.transforms, conditioner=MADEConfig(hidden_dims=hidden), affine=None)
    if name == GUIDES[1]:
        return AutoIAFUsualGradient(model, stick_the_landing=False, **options)
    return AutoIAF(model, **options)


def measure(model_name: str, args: argparse.Namespace) -> list[list[object]]:
    """One row per guide: its time per SVI step and the ratio to Pyro's."""
    model, dim = MODELS[model_name]()
    pyro.clear_param_store()
    steps = {}
    for name in GUIDES:
        pyro.set_rng_seed(0)
        svi = SVI(model, make_guide(name, model, dim, args), pyro.optim.ClippedAdam({"lr": 5e-3}), Trace_ELBO())
        svi.step()  # sets the guide up
        steps[name] = svi.step
    times = interleaved_times(steps, repeats=args.repeats, min_time=args.min_time)
    pyro_time = times[GUIDES[0]]
    return [[model_name, dim, name, f"{1e3 * times[name]:.2f}", f"{times[name] / pyro_time:.2f}x"] for name in GUIDES]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--transforms", type=int, default=1, help="IAF steps of every guide (Pyro's default 1)")
    parser.add_argument("--hidden", type=int, default=None, help="MADE width, one layer (default Pyro's 3D+1)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timing (several steps)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.min_time = 2, 0.0
    args.page = page_to_write(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = (
        f"{machine()}; flowkit {flowkit.__version__}, Pyro {pyro.__version__}. One SVI step: Trace_ELBO with "
        f"one particle and a ClippedAdam update; {args.transforms} IAF step(s) of one hidden layer "
        f"({args.hidden or '3D+1'} units) in every guide but the last; best of {args.repeats} interleaved "
        "repeats, float32."
    )
    print(setup + "\n")
    rows = [row for model_name in args.models for row in measure(model_name, args)]
    table = markdown_table(["model", "D", "guide", "ms per step", "vs Pyro"], rows)
    print(table)
    if args.page is not None:
        write_section(args.page, "svi", f"{setup}\n\n{table}")
        print(f"\nwrote {args.page}")


if __name__ == "__main__":
    main()
