"""The VAE example (examples/vae_iaf.py) runs end to end in its quick mode.

It is run as a user runs it, as a script in a fresh interpreter from the repository
root, and its Markdown table is parsed: both posteriors must report finite numbers, and
the importance-sampled log p(x) must not fall below the ELBO.
"""

from __future__ import annotations

import math

from helpers import assert_png, run_script


def table_row(stdout: str, prefix: str) -> list[float]:
    """The numeric cells of the Markdown table row whose first cell starts with ``prefix``."""
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(prefix):
            return [float(cell) for cell in cells[1:]]  # also parses "nan" and "inf", rejected below
    raise AssertionError(f"no table row starting with {prefix!r} in:\n{stdout}")


def test_vae_iaf_quick(tmp_path):
    stdout = run_script("examples/vae_iaf.py", "--quick", "--no-progress", "--out", str(tmp_path)).stdout
    assert_png(tmp_path / "vae_iaf.png")

    uniform = 64 * math.log(2)  # fair coins for every pixel: any trained model should beat it
    for prefix in ("diagonal Gaussian", "IAF"):
        elbo, log_px, gap, seconds = table_row(stdout, prefix)
        assert all(math.isfinite(v) for v in (elbo, log_px, gap, seconds)), (prefix, elbo, log_px, gap, seconds)
        assert -uniform < elbo < 0, f"{prefix}: ELBO {elbo} is not between {-uniform:.2f} and 0"
        assert log_px < 0, f"{prefix}: log p(x) {log_px} of binary digits must be negative"
        # The IS estimate is at least the ELBO in expectation; allow Monte Carlo slack.
        assert log_px >= elbo - 0.5, f"{prefix}: log p(x) {log_px} is below the ELBO {elbo}"
        assert abs(gap - (log_px - elbo)) < 0.02, f"{prefix}: gap {gap} is not log p(x) - ELBO"
        assert seconds > 0
    assert "full 28x28 MNIST" in stdout
