"""Code-health limits that a review would otherwise have to re-measure: every function in
``flowkit/`` stays short enough to read in one screen, and every file in ``tests/`` short
enough to find one's way in (split a growing one by concern, as test_made_*.py are).

A function's length is its code: from its ``def`` line (decorators excluded) to its last
line, without its docstring, which is documentation however long it is (the public
builders document a dozen arguments each).
"""

from __future__ import annotations

import ast

from helpers import REPO

MAX_FUNCTION_LINES = 60
MAX_TEST_FILE_LINES = 500


def function_lengths() -> dict[str, int]:
    """``"path:line name"`` to the code length of every function and method in ``flowkit/``."""
    lengths = {}
    for path in sorted((REPO / "flowkit").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    if isinstance(first.value.value, str):
                        lines -= first.end_lineno - first.lineno + 1
                lengths[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    return lengths


def test_the_measure_finds_the_library_functions():
    lengths = function_lengths()
    assert any(name.endswith(" fit") for name in lengths)
    assert len(lengths) > 100


def test_no_function_in_flowkit_is_longer_than_the_limit():
    too_long = {name: lines for name, lines in function_lengths().items() if lines > MAX_FUNCTION_LINES}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines of code (split them): {too_long}"


def test_no_file_in_tests_is_longer_than_the_limit():
    paths = sorted((REPO / "tests").glob("*.py"))
    assert len(paths) > 10  # the measure finds the test files
    too_long = {}
    for path in paths:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_TEST_FILE_LINES:
            too_long[path.name] = lines
    assert not too_long, f"test files over {MAX_TEST_FILE_LINES} lines (split them by concern): {too_long}"
