"""The API reference is complete: every public name of flowkit appears on an API page.

The pages in ``docs/api/`` render docstrings with mkdocstrings directives such as
``::: flowkit.nn.made``. A name in the ``__all__`` of a public flowkit module counts as
documented when a directive names it (``::: flowkit.nn.made.MADE``), or names a module
that renders it:

* the module whose ``__all__`` lists it (mkdocstrings renders a package's ``__all__``,
  re-exports included: this is how ``::: flowkit.datasets`` covers its loaders, whichever
  file defines them), or the module that defines it;
* and the name has a docstring in the source (mkdocstrings leaves out members without
  one): a function or class docstring, or for a constant a string right below it.

Names that are modules (``flowkit.masks``) are covered by checking their own ``__all__``.
So a new public name without documentation fails here, not only in a reader's browser.

The code blocks of every page also keep their lines within ``MAX_DOC_CODE_LINE``
characters, the width the site shows without scrolling (tests/test_docs_rendering.py
checks that width in a browser).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
from helpers import MAX_DOC_CODE_LINE, REPO

import flowkit

API_PAGES = sorted((REPO / "docs" / "api").glob("*.md"))
DIRECTIVE = re.compile(r"^:::[ \t]+([\w.]+)[ \t]*$", re.MULTILINE)


def directives() -> dict[str, Path]:
    """Each ``::: dotted.path`` of the API pages, with the page it is on."""
    found = {}
    for page in API_PAGES:
        for path in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            found[path] = page
    return found


@cache
def public_modules() -> list[ModuleType]:
    """flowkit and every module under it with no ``_``-prefixed part in its name."""
    names = [info.name for info in pkgutil.walk_packages(flowkit.__path__, prefix="flowkit.")]
    public = [name for name in names if not any(part.startswith("_") for part in name.split("."))]
    return [flowkit, *(importlib.import_module(name) for name in sorted(public))]


def resolve(dotted: str) -> object:
    """The module or object at ``dotted`` (``flowkit.nn.made.MADE.forward`` included)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


@cache
def source_docstrings(module_name: str) -> dict[str, bool]:
    """For each top-level name the source of ``module_name`` defines: whether it has a
    docstring (a string statement right after an assignment counts, as for mkdocstrings)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    found = {}
    for node, following in zip(tree.body, [*tree.body[1:], None]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = ast.get_docstring(node) is not None
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            documented = (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            )
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = documented
    return found


def home(module: ModuleType, name: str) -> tuple[str, str]:
    """``(module, name)`` where ``module.name`` is defined: classes and functions know it;
    a constant is defined in the public module whose source assigns it (else where listed)."""
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return obj.__module__, obj.__qualname__
    for other in public_modules():
        if getattr(other, name, None) is obj and name in source_docstrings(other.__name__):
            return other.__name__, name
    return module.__name__, name


def is_documented(module: ModuleType, name: str, documented_paths: set[str]) -> bool:
    defined_in, defined_as = home(module, name)
    if {f"{module.__name__}.{name}", f"{defined_in}.{defined_as}"} & documented_paths:
        return True  # a directive for the object itself renders it, docstring or not
    rendered_by_a_module = module.__name__ in documented_paths or (
        defined_in in documented_paths and not defined_as.startswith("_")
    )
    return rendered_by_a_module and source_docstrings(defined_in).get(defined_as, False)


def undocumented_names() -> list[str]:
    documented_paths = set(directives())
    missing = []
    for module in public_modules():
        for name in module.__all__:
            if inspect.ismodule(getattr(module, name)):
                continue  # a public module: its own __all__ is checked
            if not is_documented(module, name, documented_paths):
                missing.append(f"{module.__name__}.{name}")
    return missing


def test_api_pages_have_directives():
    assert len(directives()) >= 8, directives()


@pytest.mark.parametrize("module", public_modules(), ids=lambda module: module.__name__)
def test_public_module_declares_all(module):
    """The completeness check reads ``__all__``; a public module without one would escape it."""
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), f"{module.__name__} has no __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{module.__name__}.__all__ lists {name!r}, which it does not define"


def test_modules_listed_in_all_are_public_flowkit_modules():
    public = {module.__name__ for module in public_modules()}
    for module in public_modules():
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.ismodule(value):
                assert value.__name__ in public, f"{module.__name__}.{name} is {value.__name__}, not checked here"


@pytest.mark.parametrize(("path", "page"), [pytest.param(path, page, id=path) for path, page in directives().items()])
def test_directive_names_an_object(path, page):
    try:
        resolve(path)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{page.relative_to(REPO)}: `::: {path}` names nothing importable ({error})")


def test_every_public_name_is_on_an_api_page():
    missing = sorted(undocumented_names())
    assert not missing, (
        "public names without documentation: add a `::: module` or `::: module.name` directive to a page "
        f"in docs/api/ (and a docstring): {missing}"
    )


def test_checker_sees_a_missing_name():
    """The check is not vacuous: with no directives every name is missing, and
    ``::: flowkit.training`` covers exactly the names of flowkit.training, also where
    flowkit re-exports them."""
    training = importlib.import_module("flowkit.training")
    assert not any(is_documented(training, name, set()) for name in training.__all__)
    assert all(is_documented(training, name, {"flowkit.training"}) for name in training.__all__)
    assert is_documented(flowkit, "fit", {"flowkit.training"})
    assert not is_documented(flowkit, "MADE", {"flowkit.training"})


def test_checker_needs_a_docstring_for_a_module_wide_directive(tmp_path, monkeypatch):
    """A constant or function without a docstring is not rendered by its module's
    directive (mkdocstrings leaves it out); one named by its own directive is."""
    (tmp_path / "doc_check_sample.py").write_text(
        '__all__ = ["SHAPES", "COLOURS", "area", "bare"]\n'
        'SHAPES = ("square", "circle")\n'
        '"""The shapes area() knows."""\n'
        'COLOURS = ("red",)\n'
        'def area(shape):\n'
        '    """The area of a unit shape."""\n'
        'def bare(shape):\n'
        '    return shape\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sample = importlib.import_module("doc_check_sample")
    module_wide = {"doc_check_sample"}
    covered = {name: is_documented(sample, name, module_wide) for name in sample.__all__}
    assert covered == {"SHAPES": True, "COLOURS": False, "area": True, "bare": False}
    assert is_documented(sample, "COLOURS", {"doc_check_sample.COLOURS"})


# ------------------------------------------------------------------ code line length
DOC_PAGES = sorted((REPO / "docs").rglob("*.md"))


def long_code_lines(path: Path, limit: int = MAX_DOC_CODE_LINE) -> list[tuple[int, int]]:
    """``(line number, length)`` of each line of a fenced block longer than ``limit``. A
    block indented under a list item is measured from its fence's indentation, which the
    rendered block leaves out."""
    found, fence_indent = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if fence_indent is None:
            if stripped.startswith("```"):
                fence_indent = len(line) - len(line.lstrip())
        elif stripped == "```":  # only a bare fence closes a block
            fence_indent = None
        elif len(line) - fence_indent > limit:
            found.append((number, len(line) - fence_indent))
    return found


def test_doc_code_lines_fit_the_page():
    too_long = {
        f"{path.relative_to(REPO)}:{number}": length for path in DOC_PAGES for number, length in long_code_lines(path)
    }
    assert len(DOC_PAGES) >= 20, DOC_PAGES
    assert not too_long, f"code lines over {MAX_DOC_CODE_LINE} characters (file:line: length): {too_long}"


def test_long_code_line_check_sees_long_lines(tmp_path):
    page = tmp_path / "page.md"
    lines = ["prose " * 30, "", "```python", "x" * 89, "y" * 88, "```", "- item", "", "    ```text", "    " + "z" * 88]
    page.write_text("\n".join([*lines, "    ```", ""]))
    assert long_code_lines(page) == [(4, 89)]  # prose is not code; the indented block is 88 wide
    assert long_code_lines(page, limit=80) == [(4, 89), (5, 88), (10, 88)]
