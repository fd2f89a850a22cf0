"""The variational-inference examples run end to end, as a user runs them.

Each example runs as a script in a fresh interpreter with ``--quick`` (a few dozen SVI
steps on two seeds: this checks that they work, not how well they fit). The printed
Markdown table must have a row for every guide, with finite numbers whose mean and spread
over the seeds agree with the per-seed cells, and the figure must be a PNG.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from helpers import assert_png, run_script

GUIDES = ("AutoNormal", "AutoIAFNormal", "flowkit AutoIAF")


def run_example(script: str, out: Path) -> str:
    """Runs ``examples/<script> --quick --no-progress --out <out>``; returns its stdout."""
    return run_script(f"examples/{script}", "--quick", "--no-progress", "--out", str(out)).stdout


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The header and body rows of the first Markdown table in ``stdout``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip().startswith("|")]
    assert len(lines) >= 3, f"no Markdown table in:\n{stdout}"
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, separator, body = cells[0], cells[1], cells[2:]
    assert all(set(cell) <= set("-:") for cell in separator), f"bad separator row: {lines[1]}"
    assert all(len(row) == len(header) for row in body), f"ragged table:\n{stdout}"
    return header, body


def numeric_cells(header: list[str], row: list[str], labels: int) -> dict[str, float]:
    """Every cell after the first ``labels`` label cells, parsed as a finite float."""
    values = {}
    for name, cell in zip(header[labels:], row[labels:]):
        value = float(cell)  # parses "nan" and "inf" too, which the assert rejects
        assert math.isfinite(value), f"{name} is {cell} in row {row}"
        values[name] = value
    return values


def test_vi_funnel_quick(tmp_path):
    stdout = run_example("vi_funnel.py", tmp_path)
    header, body = table(stdout)
    assert header[2:4] == ["KL, seed 0", "KL, seed 1"] and header[4:6] == ["KL mean", "KL sd"]
    for target in ("funnel (10-D)", "banana (2-D)"):
        rows = {row[1]: row for row in body if row[0] == target}
        assert set(rows) == set(GUIDES), f"expected a row per guide for {target}:\n{stdout}"
        for guide, row in rows.items():
            values = numeric_cells(header, row, labels=2)
            gaps = [values["KL, seed 0"], values["KL, seed 1"]]
            # log Z = 0 for both targets, so the ELBO is at most 0 and the gap is a KL,
            # positive up to Monte Carlo error.
            assert min(gaps) > -0.05, f"{target}, {guide}: negative KL gap in {row}"
            assert values["KL mean"] == pytest.approx(statistics.mean(gaps), abs=2e-4)
            assert values["KL sd"] == pytest.approx(statistics.stdev(gaps), abs=2e-4)
            assert values["ESS (mean)"] >= 0.95  # an effective sample size is at least one draw
    assert_png(tmp_path / "vi_funnel.png")


def test_vi_logistic_regression_quick(tmp_path):
    stdout = run_example("vi_logistic_regression.py", tmp_path)
    header, body = table(stdout)
    assert header[1:3] == ["ELBO, seed 0", "ELBO, seed 1"] and header[3:5] == ["ELBO mean", "ELBO sd"]
    rows = {row[0]: row for row in body}
    assert set(rows) == set(GUIDES), f"expected a row per guide:\n{stdout}"
    for guide, row in rows.items():
        values = numeric_cells(header, row, labels=1)
        elbos = [values["ELBO, seed 0"], values["ELBO, seed 1"]]
        assert max(elbos) < 0  # a log-likelihood of 426 labels plus a KL
        assert values["ELBO mean"] == pytest.approx(statistics.mean(elbos), abs=2e-3)
        assert values["ELBO sd"] == pytest.approx(statistics.stdev(elbos), abs=2e-3)
        # Importance sampling with the guide as proposal: its estimate is at least the ELBO.
        assert values["log p(y) (IS, mean)"] >= values["ELBO mean"] - 2e-3  # (both rounded to 3 decimals)
        assert values["ESS (mean)"] >= 0.95
        assert values["test log-lik (mean)"] < 0
        assert 0.5 < values["test accuracy (mean)"] <= 1  # even a few steps beat guessing
    assert_png(tmp_path / "vi_logistic_regression.png")


def test_vi_gaussian_posterior_quick(tmp_path):
    stdout = run_example("vi_gaussian_posterior.py", tmp_path)
    header, body = table(stdout)
    assert header[1:3] == ["seed 0", "seed 1"] and header[-3:] == ["median", "max", "time per run (s)"]
    guides = [row[0] for row in body]
    assert guides[:2] == ["AutoMultivariateNormal", "AutoIAFNormal"] and len(guides) == 5
    assert all(guide.startswith("flowkit AutoIAF") for guide in guides[2:])
    for row in body:
        values = numeric_cells(header, row, labels=1)
        gaps = [values["seed 0"], values["seed 1"]]
        # An ELBO is a lower bound: the KL gap is positive up to Monte Carlo error.
        assert min(gaps) > -0.05, row
        assert values["median"] == pytest.approx(sum(gaps) / 2, abs=2e-4)
        assert values["max"] == pytest.approx(max(gaps), abs=1e-4)
    assert "misses by 1.971 nats" in stdout  # the closed-form mean-field gap of this posterior
    assert_png(tmp_path / "vi_gaussian_posterior.png")
