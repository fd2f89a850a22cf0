"""The examples run, and every Python code block in the documentation runs.

The examples are run as a user runs them, as scripts in a fresh interpreter. The code
blocks of ``docs/*.md`` (and of the README) are executed one by one, each in a fresh
namespace and an empty working directory, so the documentation cannot silently rot.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``examples/<script>`` with this interpreter, the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), *args],
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


def printed_number(stdout: str, label: str) -> float:
    """The first number printed after ``label`` on the line that starts with it."""
    for line in stdout.splitlines():
        if line.startswith(label):
            token = line[len(label) :].split()[0]
            return float(token)  # also parses "nan" and "inf", which the callers reject
    raise AssertionError(f"no line starting with {label!r} in:\n{stdout}")


def test_made_digits_quick(tmp_path):
    stdout = run_script("made_digits.py", "--quick", "--out", str(tmp_path)).stdout

    baseline = printed_number(stdout, "independent Bernoulli pixels (baseline)")
    single = printed_number(stdout, "(a) MADE, one mask, natural order")
    per_mask = printed_number(stdout, "(b) MADE, 8 masks, each mask alone (mean)")
    ensemble = printed_number(stdout, "(b) MADE, ensemble of 8 masks")
    uniform = 64 * math.log(2)  # the NLL of fair coins, which any fitted model should beat
    for name, nll in [("baseline", baseline), ("single", single), ("per_mask", per_mask), ("ensemble", ensemble)]:
        assert math.isfinite(nll), f"{name} NLL is {nll}"
        assert 0 < nll < uniform, f"{name} NLL {nll} is not between 0 and {uniform:.2f}"
    # Jensen: the log of the mean likelihood is at least the mean of the log-likelihoods.
    assert ensemble <= per_mask
    assert_png(tmp_path / "made_digits.png")
    assert re.search(r"^figure: .*made_digits\.png$", stdout, re.MULTILINE), stdout


def test_plot_masks(tmp_path):
    out = tmp_path / "figures" / "made_masks.png"  # the folder does not exist yet
    stdout = run_script("plot_masks.py", "--out", str(out)).stdout
    assert_png(out)
    assert str(out) in stdout


def test_plot_masks_other_shapes(tmp_path):
    """In-process (the figure code is what matters here): three hidden layers and a random
    order give more mask panels than the default figure."""
    spec = importlib.util.spec_from_file_location("plot_masks", REPO / "examples" / "plot_masks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "masks.png"
    module.main(["--out", str(out), "--inputs", "5", "--hidden", "6", "6", "6", "--order", "random", "--seed", "1"])
    assert_png(out)


# ------------------------------------------------------------------ documentation
CODE_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
DOC_FILES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def code_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, each padded with blank lines so that line
    numbers in a traceback are line numbers in the file."""
    text = path.read_text(encoding="utf-8")
    return ["\n" * text.count("\n", 0, match.start(1)) + match.group(1) for match in CODE_BLOCK.finditer(text)]


DOC_BLOCKS = [
    pytest.param(path, code, id=f"{path.relative_to(REPO)}-{index}")
    for path in DOC_FILES
    for index, code in enumerate(code_blocks(path))
]


def test_docs_have_code_blocks():
    assert any("docs" in param.id for param in DOC_BLOCKS), "no ```python blocks found in docs/*.md"


@pytest.mark.parametrize(("path", "code"), DOC_BLOCKS)
def test_doc_code_block_runs(path, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(path), "exec"), {"__name__": "__doc_block__"})  # noqa: S102 (running the docs is the point)
