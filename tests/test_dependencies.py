"""Every third-party module the project imports is declared in pyproject.toml.

Reads the import statements of ``flowkit/``, ``tests/``, ``examples/``, ``benchmarks/`` and
``docs_hooks/`` (the docs build's hooks)
(and the string handed to ``flowkit.datasets``' ``_require``), maps each top-level module to
the distribution that installs it, and checks that distribution is declared where a user
would look for it: the core dependencies, or the extra that installs that folder's needs.
No network: module names map to distributions through the installed metadata, so a module
that is not installed at all fails too.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]

# The extra that installs what each folder needs beyond the core dependencies. The test
# suite runs the examples' and the benchmarks' quick modes and builds the docs, so ``test``
# covers all of them.
FOLDER_EXTRAS = {
    "flowkit": ["datasets"],
    "examples": ["examples"],
    "benchmarks": ["bench"],
    "docs_hooks": ["docs"],
    "tests": ["test"],
}
SUITE_RUNS = list(FOLDER_EXTRAS)


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> tuple[str, list[str]]:
    """The distribution and the extras a requirement string names: ``"a[b,c]>=1"`` -> ``("a", ["b", "c"])``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    return normalise(match.group(1)), extras


def declared(extras: list[str]) -> set[str]:
    """The distributions that ``pip install "flowkit[extras]"`` asks for by name, following
    extras that name flowkit itself (``test = ["flowkit[bench]", ...]``)."""
    names = {requirement_name(r)[0] for r in PYPROJECT["dependencies"]}
    seen, todo = set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in PYPROJECT["optional-dependencies"][extra]:
            name, nested = requirement_name(requirement)
            if name == normalise(PYPROJECT["name"]):
                todo += nested
            else:
                names.add(name)
    return names


def imported_modules(path: Path) -> set[str]:
    """Top-level module names imported by a Python file (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
        elif (  # flowkit.datasets imports optional packages by name: _require("pandas", ...)
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "_require"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            modules.add(node.args[0].value.split(".")[0])
    return modules


def local_modules() -> set[str]:
    """Names that resolve to the repository's own files (flowkit, test helpers, the
    examples' and benchmarks' shared modules)."""
    names = {"flowkit"}
    for folder in SUITE_RUNS:
        names.update(p.stem for p in (REPO / folder).rglob("*.py"))
    return names


def third_party_imports(folder: str) -> dict[str, list[str]]:
    """Third-party top-level modules imported in ``folder``, each with the files that import it."""
    skip = set(sys.stdlib_module_names) | local_modules() | {"__future__"}
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        for module in imported_modules(path) - skip:
            found.setdefault(module, []).append(str(path.relative_to(REPO)))
    return found


@functools.cache
def _module_providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide top-level module ``module``."""
    return {normalise(d) for d in _module_providers().get(module, [])}


@pytest.mark.parametrize("folder", SUITE_RUNS)
def test_every_import_is_declared(folder):
    """Each folder's third-party imports are in the core dependencies or that folder's extra."""
    allowed = declared(FOLDER_EXTRAS[folder])
    missing = []
    for module, files in third_party_imports(folder).items():
        providers = distributions_of(module)
        if not providers & allowed:
            hint = f"installed by {sorted(providers)}" if providers else "not installed at all"
            missing.append(f"{module} ({hint}; imported in {files[0]})")
    extras = " or ".join(FOLDER_EXTRAS[folder])
    assert not missing, f"imports in {folder}/ not declared in dependencies or extra {extras}: {missing}"


def test_the_test_extra_installs_what_the_suite_runs():
    """The suite imports flowkit's optional loaders and runs the examples and benchmarks, so
    ``pip install -e ".[test]"`` must install the needs of every folder."""
    allowed = declared(["test"])
    for folder in SUITE_RUNS:
        for module, files in third_party_imports(folder).items():
            assert distributions_of(module) & allowed, f"{module} (imported in {files[0]}) is not in the test extra"


def test_the_import_scan_finds_known_imports():
    """The scan itself works: it sees imports nested in functions and the optional ones."""
    assert {"torch", "pyro", "tqdm"} <= set(third_party_imports("flowkit"))
    assert {"sklearn", "skimage", "pandas", "h5py"} <= set(third_party_imports("flowkit"))
    assert {"zuko", "nflows"} <= set(third_party_imports("benchmarks"))
    assert "mkdocs" in third_party_imports("docs_hooks")
    assert "helpers" not in third_party_imports("tests")  # a local module


def test_declared_follows_extras_that_name_flowkit():
    assert requirement_name('flowkit[examples, bench]>=0') == ("flowkit", ["examples", "bench"])
    assert requirement_name("scikit_learn>=1.3") == ("scikit-learn", [])
    assert declared([]) == {requirement_name(r)[0] for r in PYPROJECT["dependencies"]}
