"""Writing benchmark results into ``docs/benchmarks.md``: Markdown tables, the machine's
description, figure paths, and sections that each benchmark script owns.

A section is the text between two HTML comments, invisible in the rendered page::

    <!-- speed:start -->
    ... written by benchmarks/speed.py ...
    <!-- speed:end -->

`write_section` replaces that text and leaves the rest of the page (hand-written prose,
other benchmarks' sections) untouched, so every benchmark can be rerun on its own.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

import torch

import flowkit

DEFAULT_PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def markers(name: str) -> tuple[str, str]:
    """The start and end comments of section ``name``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name: expected letters, digits, '-' or '_', got {name!r}")
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(page: str | os.PathLike, name: str, markdown: str) -> None:
    """Puts ``markdown`` between the markers of section ``name`` in the page at ``page``.

    The page is created (with a title) if it does not exist, and the section appended at
    its end if the page has no such markers yet; otherwise only the text between the
    markers changes.

    Args:
        page: The Markdown file, e.g. ``docs/benchmarks.md``.
        name: The section's name (letters, digits, ``-``, ``_``), e.g. ``"speed"``.
        markdown: The section's new content.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "page.md"
        >>> write_section(path, "speed", "old")
        >>> write_section(path, "speed", "new")
        >>> print(path.read_text())
        # Benchmarks
        <BLANKLINE>
        <!-- speed:start -->
        new
        <!-- speed:end -->
        <BLANKLINE>
    """
    start, end = markers(name)
    path = Path(page)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if text.count(start) > 1 or text.count(end) > 1:
        raise ValueError(f"page: {path} holds section {name!r} more than once")
    if start in text and end in text:
        before, rest = text.split(start, 1)
        if end not in rest:
            raise ValueError(f"page: in {path}, the end marker of section {name!r} comes before its start")
        after = rest.split(end, 1)[1]
        text = before + block + after
    elif start in text or end in text:
        raise ValueError(f"page: {path} holds only one of the markers of section {name!r}")
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options every benchmark shares: ``--threads``, ``--page`` and ``--quick``
    (read back with `page_to_write`)."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: reproducible on a shared machine)")  # fmt: skip
    parser.add_argument("--page", type=Path, default=None,
                        help=f"the page to write into (default {DEFAULT_PAGE}; none with --quick)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny sizes in seconds, for the test suite")


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the sizes of the timed flows and calls (``--transforms``, ``--hidden``,
    ``--train-batch``, ``--eval-batch``, ``--samples``) and of the timing itself
    (``--repeats``, ``--min-time``); `quick_sizes` shrinks them for ``--quick``."""
    parser.add_argument("--transforms", type=int, default=5, help="flow steps")
    parser.add_argument("--hidden", type=int, default=None, help="hidden width, two layers (default max(64, 3D+1))")
    parser.add_argument("--train-batch", type=int, default=512)
    parser.add_argument("--eval-batch", type=int, default=10_000, help="rows per log_prob call")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timing (several calls if needed)")


def quick_sizes(args: argparse.Namespace) -> None:
    """Tiny flows and calls, timed once or twice: a ``--quick`` run of `add_timing_arguments`' options."""
    args.transforms, args.hidden, args.train_batch, args.eval_batch = 2, 8, 32, 64
    args.samples, args.repeats, args.min_time = 32, 2, 0.0


def page_to_write(args: argparse.Namespace) -> Path | None:
    """``--page`` if given, else the documentation page, except that a ``--quick`` run writes
    nowhere unless it is given a page."""
    if args.page is not None:
        return args.page
    return None if args.quick else DEFAULT_PAGE


def figure_path(page: str | os.PathLike, name: str) -> tuple[Path, str]:
    """Where the figure ``bench_<name>.png`` of a page goes (``assets/`` beside the page), and
    the link to it from the page."""
    link = f"assets/bench_{name}.png"
    return Path(page).parent / link, link


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; cells are written with ``str``.

    Examples:
        >>> print(markdown_table(["D", "ms"], [[2, "1.5"]]))
        | D | ms |
        |---|---|
        | 2 | 1.5 |
    """
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"rows: expected {len(headers)} cells per row, got {len(row)} in {list(row)}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """One line naming the processor, the core count, torch and its thread setting."""
    return (
        f"{_processor()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} intra-op thread(s)"
    )


def timing_setup(repeats: int, min_time: float) -> str:
    """The line a timing script prints first: the machine, float32 and how the calls were timed."""
    return f"Measured on {machine()}; float32, best of {repeats} interleaved repeats of at least {min_time} s each."


def library_versions() -> str:
    """The versions of flowkit and the libraries it is compared with."""
    versions = [f"flowkit {flowkit.__version__}"]
    for name in ("pyro-ppl", "zuko", "nflows", "scikit-learn"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return ", ".join(versions)


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
