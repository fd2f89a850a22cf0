"""Helpers shared by several test files: parameter perturbation, Jacobians and the entry
points for the transform tests, and running examples as subprocesses for the example tests."""

import math
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The longest line a code block of the docs may have: the site's page is wide enough for it
# (docs/stylesheets/extra.css), so a reader sees whole lines without scrolling.
MAX_DOC_CODE_LINE = 88


def perturb_(module, gain=1.5, seed=0, scale=None):
    """Redraws every parameter so the map is far from the builders' near-identity start:
    biases from N(0, 0.5^2), weights from N(0, gain^2 / fan_in). Scaling by the fan-in
    keeps outputs O(1): with N(0, 0.5^2) weights a deep residual MADE can output scales
    of 1e-9, and an exactness check of 1e-10 then measures conditioning, not the code.

    With ``scale``, every weight and bias comes from N(0, scale^2) instead: the small
    density models of test_made_models_*.py want conditionals far from uniform. Masks are
    buffers and stay as they are. Returns ``module``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if scale is not None:
                std = scale
            else:
                std = 0.5 if p.dim() == 1 else gain / math.sqrt(p.shape[1])
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return module


def batch_jacobian(f, x):
    """``J[..., i, j] = d f(x)[..., i] / d x[..., j]`` for an ``f`` that treats batch rows
    independently (one backward pass per output coordinate)."""
    x = x.detach().clone().requires_grad_(True)
    y = f(x)
    rows = [torch.autograd.grad(y[..., i].sum(), x, retain_graph=True)[0] for i in range(y.shape[-1])]
    return torch.stack(rows, dim=-2)


def log_abs_det(jacobian):
    return torch.linalg.slogdet(jacobian)[1]


def entry_points(transform, value, good):
    """Every public entry of both directions of ``transform``, each called with ``value``
    where the other argument is the tensor ``good``, with the name of ``value``'s argument:
    ``[(name, call), ...]`` for the tests of bad input."""
    return [
        ("x", lambda: transform(value)),
        ("x", lambda: transform.forward_and_log_det(value)),
        ("y", lambda: transform.inv(value)),
        ("y", lambda: transform.inverse_and_log_det(value)),
        ("x", lambda: transform.log_abs_det_jacobian(value, good)),
        ("y", lambda: transform.log_abs_det_jacobian(good, value)),
    ]


def run_script(
    script: str, *args: str, timeout: float = 300, launcher: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Runs ``<script>`` (a path from the repository root, e.g. ``examples/plot_masks.py``)
    with this interpreter, the repository importable, and asserts that it exits with 0.
    ``launcher`` goes between the interpreter and the script (e.g. ``-m torch.distributed.run ...``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # One torch thread, as in conftest.py: on a busy 2-core machine a second one makes
    # these small models several times slower.
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, *launcher, str(REPO / script), *args],
        check=False,  # the assert below shows the output
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{script} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def assert_png(path: Path) -> None:
    assert path.is_file(), f"no figure at {path}"
    assert path.stat().st_size > 1000, f"{path} is suspiciously small"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
