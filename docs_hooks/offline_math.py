"""mkdocs hook: the site carries its own copy of MathJax, so formulas render offline.

MathJax 3 comes from the PyPI package ``django-static-mathjax`` (in the ``docs`` extra;
despite its name it needs no Django): it installs MathJax's release files under
``mathjax/static/mathjax/es5``. This hook adds to the site, under ``assets/mathjax/``,
the component that mkdocs.yml loads (``tex-chtml.js``) and the files it fetches
later, relative to its own address: TeX extensions, the CHTML fonts, the menu and the
accessibility modules. The other combined components and the SVG output are left out.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

SITE_FOLDER = "assets/mathjax"
COMPONENT = "tex-chtml.js"
LEFT_OUT = ("output/svg",)  # the site uses the CHTML output only


def mathjax_release() -> Path:
    """The folder of MathJax's release files (``es5``) that django-static-mathjax installs."""
    spec = importlib.util.find_spec("mathjax")
    folder = None if spec is None or spec.origin is None else Path(spec.origin).parent / "static" / "mathjax"
    if folder is None or not (folder / "es5" / COMPONENT).is_file():
        raise PluginError(
            "MathJax for the docs is missing: install the docs extra, pip install -e '.[docs]' "
            "(it brings the package django-static-mathjax)"
        )
    return folder


def release_files(folder: Path) -> dict[str, Path]:
    """Site path -> file, for the component, what it loads, and MathJax's licence."""
    es5 = folder / "es5"
    chosen = {f"{SITE_FOLDER}/LICENSE": folder / "LICENSE", f"{SITE_FOLDER}/{COMPONENT}": es5 / COMPONENT}
    for path in sorted(es5.rglob("*")):
        relative = path.relative_to(es5).as_posix()
        in_a_subfolder = "/" in relative
        if path.is_file() and in_a_subfolder and not relative.startswith(LEFT_OUT):
            chosen[f"{SITE_FOLDER}/{relative}"] = path
    return chosen


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for site_path, path in release_files(mathjax_release()).items():
        files.append(File.generated(config, site_path, abs_src_path=str(path)))
    return files
