"""Bayesian logistic regression by variational inference: flowkit's AutoIAF against Pyro's guides.

The data are scikit-learn's breast cancer set (569 tumours, 30 features, bundled with
scikit-learn: no download), standardised with the training statistics and split 75/25
with a fixed seed. The model is

    w ~ N(0, I_30),   b ~ N(0, 5^2),   y_n | x_n, w, b ~ Bernoulli(sigmoid(w . x_n + b)).

Many of the features are nearly collinear (mean radius, mean perimeter and mean area
correlate above 0.98), so the posterior over w has strong correlations that a mean-field
Gaussian cannot represent: it is squeezed along them and its variances are too small.

Three guides get the same number of SVI steps, the same optimiser (Adam, its learning
rate decayed tenfold over the run), the same number of ELBO particles per step and the
same initial width (scale 1, the prior's): Pyro's mean-field ``AutoNormal``, Pyro's
``AutoIAFNormal`` (given the same depth and MADE widths as flowkit's) and
``flowkit.infer.AutoIAF``, each on every one of ``--seeds``. It prints a Markdown table
per guide: the final ELBO on each seed, estimated from many guide samples (a lower bound
on the log evidence log p(y | X); higher is better), its mean and standard deviation over
the seeds, and, averaged over the seeds, the importance-sampling estimate of log p(y | X)
that uses the guide as the proposal, with its effective sample size, the held-out
predictive log-likelihood (the mean over test points of log (1/S) sum_s p(y | x, w_s, b_s),
w_s ~ q), the test accuracy of the posterior predictive mean and the training wall time
per run. The predictions are easy (every guide gets roughly 96-97% of the test set
right), so the held-out numbers barely tell the guides apart; the ELBO and the figure do.

It writes ``vi_logistic_regression.png``: the first seed's guide samples of the two
weights with the strongest posterior correlation, over the 90% ellipse of the Laplace
approximation (a reference that needs no guide), and each guide's posterior standard
deviation of every coordinate.

    python examples/vi_logistic_regression.py           # 3 seeds; took 17 minutes on 2 heavily shared cores
    python examples/vi_logistic_regression.py --quick   # a smoke run of a few seconds
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from vi_common import (  # noqa: E402
    GUIDES, describe, guide_samples, log_weights, make_guide, mean_and_spread, parse_args, summarise, train,
)

COLOURS = {"AutoNormal": "tab:orange", "AutoIAFNormal": "tab:green", "flowkit AutoIAF": "tab:blue"}
BIAS_SCALE = 5.0
SPLIT_SEED = 0  # the train/test split is the same whatever --seed says

FULL = {"steps": 2000, "lr": 1e-2, "particles": 8, "transforms": 4, "hidden": [64, 64], "eval_samples": 4000,
        "seeds": [0, 1, 2]}  # fmt: skip
QUICK = {"steps": 30, "lr": 1e-2, "particles": 2, "transforms": 2, "hidden": [32], "eval_samples": 500,
         "seeds": [0, 1]}  # fmt: skip


# ------------------------------------------------------------------ data and model
def load_data() -> dict:
    """Standardised features (training mean and sd) and 0/1 labels, split 75/25."""
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=SPLIT_SEED, stratify=data.target
    )
    mean, std = x_train.mean(0), x_train.std(0)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.get_default_dtype())  # noqa: E731
    return {
        "x_train": as_tensor((x_train - mean) / std), "y_train": as_tensor(y_train),
        "x_test": as_tensor((x_test - mean) / std), "y_test": as_tensor(y_test),
        "features": [str(name) for name in data.feature_names],
    }  # fmt: skip


def logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``w . x_n + b`` for every row of ``x``; ``w`` and ``b`` may carry leading sample
    dimensions, as ``(S, 1, D)`` and ``(S, 1)``, giving shape ``(S, N)``."""
    return (x * w).sum(-1) + b


def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(x.new_zeros(()), BIAS_SCALE))
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("y", dist.Bernoulli(logits=logits(x, w, b)), obs=y)


# ------------------------------------------------------------------ evaluation
def posterior_samples(guide, data: dict, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, b)`` draws from the guide, of shapes ``(S, D)`` and ``(S,)``."""
    sample = guide_samples(guide, num_samples, (data["x_train"], data["y_train"]), particle_dim=-2)
    return sample["w"].reshape(num_samples, -1), sample["b"].reshape(num_samples)


def evaluate(guide, data: dict, num_samples: int) -> dict:
    """The importance-sampling summary (vi_common.summarise) of ``num_samples`` guide draws,
    the held-out predictive log-likelihood and accuracy, and the draws of ``(w, b)``."""
    # The particle plate goes left of the data plate; log p sums over the data.
    train_data = (data["x_train"], data["y_train"])
    log_w = log_weights(model, guide, num_samples, train_data, particle_dim=-2, chunk=500)
    w, b = posterior_samples(guide, data, num_samples)
    # Posterior predictive p(y = 1 | x) = mean_s sigmoid(w_s . x + b_s), in log space.
    test_logits = logits(data["x_test"], w.unsqueeze(-2), b.unsqueeze(-1))  # (S, N_test)
    y = data["y_test"]
    log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
        test_logits, y.expand_as(test_logits), reduction="none"
    )  # log p(y_n | x_n, w_s, b_s)
    predictive_log_lik = (torch.logsumexp(log_lik, 0) - math.log(num_samples)).mean().item()
    p_one = torch.sigmoid(test_logits).mean(0)
    return {
        **summarise(log_w),
        "test_log_lik": predictive_log_lik,
        "accuracy": ((p_one > 0.5).to(y.dtype) == y).to(y.dtype).mean().item(),
        "samples": (w, b),
    }


# ------------------------------------------------------------------ the figure
def laplace(data: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The Laplace approximation N(theta_MAP, H^-1) of the posterior of theta = (w, b), a
    reference for the figure that no guide had a hand in: ``(mean, covariance)``."""
    x, y = data["x_train"], data["y_train"]
    prior_scale = torch.cat([torch.ones(x.shape[1]), torch.tensor([BIAS_SCALE])])

    def neg_log_joint(theta: torch.Tensor) -> torch.Tensor:
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits(x, theta[:-1], theta[-1]), y, reduction="sum"
        )
        return -(log_lik - 0.5 * ((theta / prior_scale) ** 2).sum())

    theta = torch.zeros(x.shape[1] + 1, requires_grad=True)
    optimiser = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = neg_log_joint(theta)
        loss.backward()
        return loss

    optimiser.step(closure)
    hessian = torch.autograd.functional.hessian(neg_log_joint, theta.detach())
    return theta.detach(), torch.linalg.inv(hessian)


def plot(results: dict, data: dict, path: Path) -> None:
    """Left: guide samples of the two weights whose posterior correlation is strongest
    (under the Laplace approximation, drawn as its 90% ellipse), one panel per guide.
    Right: each guide's posterior standard deviation of every weight and the bias."""
    mean, cov = laplace(data)
    std = cov.diagonal().sqrt()
    corr = (cov / std / std.unsqueeze(-1))[:-1, :-1].clone()  # weights only
    corr.fill_diagonal_(0.0)
    i, j = divmod(int(corr.abs().argmax()), corr.shape[0])
    angle = torch.linspace(0, 2 * math.pi, 200)
    circle = torch.stack([angle.cos(), angle.sin()]) * math.sqrt(-2 * math.log(0.1))  # 90% of a 2-D Gaussian
    ellipse = torch.linalg.cholesky(cov[[i, j]][:, [i, j]]) @ circle + mean[[i, j]].unsqueeze(-1)
    names = data["features"]

    fig, axes = plt.subplots(1, len(GUIDES) + 1, figsize=(4.0 * (len(GUIDES) + 1), 3.9))
    half = 3.5 * std[[i, j]]
    for ax, name in zip(axes, GUIDES):
        w = results[name]["samples"][0]
        ax.scatter(w[:, i].numpy(), w[:, j].numpy(), s=2, alpha=0.3, color=COLOURS[name], rasterized=True)
        ax.plot(ellipse[0].numpy(), ellipse[1].numpy(), "k-", lw=1, label="Laplace, 90%")
        ax.set_xlim(mean[i].item() - half[0].item(), mean[i].item() + half[0].item())
        ax.set_ylim(mean[j].item() - half[1].item(), mean[j].item() + half[1].item())
        ax.set_xlabel(f"w[{names[i]}]")
        ax.set_ylabel(f"w[{names[j]}]")
        ax.set_title(f"{name}\nELBO {results[name]['elbo']:.2f} (first seed)", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    ax = axes[-1]
    index = torch.arange(len(std))
    ax.plot(index.numpy(), std.numpy(), "k_", ms=10, label="Laplace")
    for offset, name in zip((-0.2, 0.0, 0.2), GUIDES):
        w, b = results[name]["samples"]
        guide_std = torch.cat([w, b.unsqueeze(-1)], -1).std(0)
        ax.plot((index + offset).numpy(), guide_std.numpy(), "o", ms=3, color=COLOURS[name], label=name)
    ax.set_xlabel(f"coordinate (0-{len(std) - 2}: weights, {len(std) - 1}: bias)")
    ax.set_ylabel("posterior standard deviation")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title("posterior sd of each coordinate", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ main
def main(argv=None) -> None:
    args = parse_args(__doc__.split("\n\n")[0], FULL, QUICK, argv, eval_for="the evaluation")
    start = time.perf_counter()
    # Small tensors: on a busy two-core machine extra OpenMP threads only slow each step.
    torch.set_num_threads(args.threads)
    data = load_data()
    print(f"breast cancer: {len(data['x_train'])} train / {len(data['x_test'])} test, "
          f"{data['x_train'].shape[1]} features + bias")  # fmt: skip
    print(describe(args, "evaluation"))
    seed_columns = " | ".join(f"ELBO, seed {seed}" for seed in args.seeds)
    print(f"| guide | {seed_columns} | ELBO mean | ELBO sd | log p(y) (IS, mean) | ESS (mean) | test log-lik (mean) "
          "| test accuracy (mean) | train time per run (s) |")  # fmt: skip
    print("|---|" + "---|" * (len(args.seeds) + 7))
    results = {}
    for name in GUIDES:
        runs = []
        for seed in args.seeds:
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            guide = make_guide(name, model, args, seed)
            wall, _ = train(model, guide, args, f"{name} / seed {seed}", (data["x_train"], data["y_train"]),
                            max_plate_nesting=1, loss_format=".1f")  # fmt: skip
            runs.append({**evaluate(guide, data, args.eval_samples), "wall": wall})
        results[name] = runs[0]  # the figure shows the first seed's run
        elbos = [run["elbo"] for run in runs]
        mean, spread = mean_and_spread(elbos)
        average = {key: statistics.mean(run[key] for run in runs)
                   for key in ("log_evidence", "ess", "test_log_lik", "accuracy", "wall")}  # fmt: skip
        cells = " | ".join(f"{elbo:.3f}" for elbo in elbos)
        print(f"| {name} | {cells} | {mean:.3f} | {spread:.3f} | {average['log_evidence']:.3f} "
              f"| {average['ess']:.1f} | {average['test_log_lik']:.4f} | {average['accuracy']:.4f} "
              f"| {average['wall']:.1f} |", flush=True)  # fmt: skip
    path = args.out / "vi_logistic_regression.png"
    plot(results, data, path)
    print(f"\nfigure: {path}")
    print(f"time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
