"""The options every example shares and its quick mode, in one place.

Each example keeps two presets, ``FULL`` (the documented run) and ``QUICK`` (a smoke run
of seconds, the test suite's): a preset maps option names (argparse ``dest``s) to values,
and may also name settings that are not options (``grid_size``). An option a preset
covers has ``default=None``; `parse_with_presets` fills it from ``QUICK`` under
``--quick``, else from ``FULL``, so an option given on the command line wins in both.

Run as scripts (``python examples/face_completion.py``), the examples have this folder on
``sys.path`` and import this module as ``from _cli import ...``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "output"
"""The examples' default output folder, ``examples/output/`` (ignored by git)."""


def add_shared_options(
    parser: argparse.ArgumentParser,
    quick: Mapping[str, object] | None,
    seed_help: str | None = "seeds the weights, masks, minibatches and samples",
    outputs: bool = True,
) -> None:
    """Adds the shared options: ``--quick`` (listing the ``quick`` preset; none if ``quick``
    is None), ``--seed`` (default 0; none if ``seed_help`` is None), and, with ``outputs``,
    ``--out`` (the folder for the figure, default `OUTPUT`) and ``--no-progress``."""
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=f"a tiny run for smoke tests: {dict(quick)}")
    if seed_help is not None:
        parser.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default 0)")
    if outputs:
        parser.add_argument("--out", type=Path, default=OUTPUT, help="folder for the figure (default examples/output)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_with_presets(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    full: Mapping[str, object],
    quick: Mapping[str, object],
) -> argparse.Namespace:
    """Parses ``argv`` (None: the command line); every preset key left unset (None, or not
    an option at all) takes its value from ``quick`` with ``--quick``, else from ``full``."""
    args = parser.parse_args(argv)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args
