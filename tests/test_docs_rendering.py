"""The built site shows its formulas and its code, with no network.

The site is built once (``mkdocs build --strict``, which needs the ``docs`` extra; the
tests skip without it) into a temporary folder. Two checks read its HTML:

* no page loads a script, stylesheet or font from another host (MathJax ships with the
  site, see ``docs_hooks/offline_math.py``);
* every piece of TeX that reaches a page is inside an arithmatex element, where MathJax
  looks for it: a formula that Markdown mangled (a list item cut in two by a line of a
  display formula that starts with ``-``, say) leaves bare TeX in the text.

The others open pages from ``file://`` in headless Chromium (Debian's package
``chromium``; skipped when it is not on PATH), let their scripts run, and read the DOM
Chromium dumps and the console messages it logs: MathJax has typeset every formula and no
script logged anything (an uncaught error included); with MathJax missing, the page keeps
its TeX and still logs nothing; and a code line of ``MAX_DOC_CODE_LINE`` characters fits
in its block in a window 1440 pixels wide. One test feeds the checks a broken page, so that
they are seen to fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import MAX_DOC_CODE_LINE, REPO

DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mathjax")  # mathjax: django-static-mathjax
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",  # console messages go to stderr, as ":CONSOLE" lines
    "--virtual-time-budget=15000",  # let the page's scripts and timers finish before the dump
)  # fmt: skip
# Pages with many formulas, display formulas in a list item, and code blocks.
MATH_PAGES = ("index.html", "benchmarks/index.html", "tutorials/made-and-masks/index.html")
TEX = re.compile(r"\\[A-Za-z]{2,}|\\[()\[\]]")  # a TeX command or delimiter
OFF_SITE = re.compile(r"^(https?:)?//")

needs_docs_extra = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in DOCS_MODULES),
    reason="building the site needs the docs extra: pip install -e '.[docs]'",
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs headless Chromium on PATH (Debian: apt-get install chromium)"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(folder)]
    build = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    return folder


class PageReading(HTMLParser):
    """What the checks need from a page: the addresses it loads, its arithmatex elements
    (each with whether MathJax typeset it), and the text outside formulas and code."""

    SKIPPED = {"code", "pre", "script", "style", "textarea"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, html: str):
        super().__init__()
        self.loaded: list[str] = []
        self.formulas: list[dict] = []  # {"typeset": bool, "tex": str}
        self.prose: list[str] = []
        self._open: list[tuple[str, dict | None]] = []  # tag, and the formula it opened
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.loaded.append(attributes["src"])
        if tag == "link" and {"stylesheet", "preconnect", "preload"} & set(attributes.get("rel", "").split()):
            self.loaded.append(attributes.get("href", ""))
        if tag == "mjx-container" and self._formula():
            self._formula()["typeset"] = True
        if tag in self.VOID:
            return
        formula = None
        if "arithmatex" in attributes.get("class", "").split() and not self._formula():
            formula = {"typeset": False, "tex": ""}
            self.formulas.append(formula)
        self._open.append((tag, formula))

    def handle_endtag(self, tag):
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth][0] == tag:
                del self._open[depth:]
                return

    def handle_data(self, data):
        formula = self._formula()
        if formula is not None:
            formula["tex"] += data
        elif not any(tag in self.SKIPPED for tag, _ in self._open):
            self.prose.append(data)

    def _formula(self) -> dict | None:
        return next((formula for _, formula in reversed(self._open) if formula is not None), None)


def read_page(path: Path) -> PageReading:
    return PageReading(path.read_text(encoding="utf-8"))


def bare_tex(reading: PageReading) -> list[str]:
    return [match.group() for text in reading.prose for match in TEX.finditer(text)]


def open_in_chromium(path: Path) -> tuple[str, list[str]]:
    """The page's DOM once its scripts ran, in a 1440x900 window, and the console messages
    they logged."""
    with tempfile.TemporaryDirectory() as profile:
        command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1440,900"]
        run = subprocess.run([*command, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "<body" in run.stdout, run.stderr[-2000:]
    return run.stdout, [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


# ------------------------------------------------------------------ the built HTML
@needs_docs_extra
def test_pages_load_nothing_from_other_hosts(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 20, pages
    off_site = {
        f"{page.relative_to(site)}: {address}"
        for page in pages
        for address in read_page(page).loaded
        if OFF_SITE.match(address)
    }
    assert not off_site, sorted(off_site)
    assert (site / "assets" / "mathjax" / "tex-chtml.js").is_file()
    assert (site / "assets" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


@needs_docs_extra
def test_all_tex_reaches_mathjax(site):
    pages_with_math = 0
    for page in sorted(site.rglob("*.html")):
        reading = read_page(page)
        pages_with_math += bool(reading.formulas)
        assert not bare_tex(reading), f"{page.relative_to(site)}: TeX outside a formula: {bare_tex(reading)}"
    assert pages_with_math >= 10


def test_page_reading_tells_formulas_from_prose():
    reading = PageReading(
        '<p>Let <span class="arithmatex">\\(x\\)</span> be <code>\\(raw\\)</code>.</p>'
        '<div class="arithmatex"><mjx-container><mjx-math></mjx-math></mjx-container></div>'
        "<p>[\ny = \\operatorname{logit}(p)</p><script src='https://example.org/a.js'></script>"
    )
    assert reading.formulas == [{"typeset": False, "tex": "\\(x\\)"}, {"typeset": True, "tex": ""}]
    assert bare_tex(reading) == ["\\operatorname"]
    assert reading.loaded == ["https://example.org/a.js"]


# ------------------------------------------------------------------ in Chromium
@needs_docs_extra
@needs_chromium
@pytest.mark.parametrize("page", MATH_PAGES)
def test_formulas_render_offline(site, page):
    dom, console = open_in_chromium(site / page)
    reading = PageReading(dom)
    assert len(reading.formulas) >= 5, reading.formulas
    untypeset = [formula["tex"] for formula in reading.formulas if not formula["typeset"]]
    assert not untypeset, f"{page}: formulas MathJax left as TeX: {untypeset[:5]}"
    assert not bare_tex(reading), bare_tex(reading)
    assert not console, console


@needs_docs_extra
@needs_chromium
def test_page_without_mathjax_keeps_its_tex_and_throws_nothing(site, tmp_path):
    """As when MathJax cannot be loaded: the settings script must not fail on its own."""
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    (copy / "assets" / "mathjax" / "tex-chtml.js").unlink()
    dom, console = open_in_chromium(copy / "index.html")
    reading = PageReading(dom)
    assert reading.formulas and not any(formula["typeset"] for formula in reading.formulas)
    assert all(formula["tex"].startswith(("\\(", "\\[")) for formula in reading.formulas), reading.formulas
    assert not console, console


CODE_WIDTH_PROBE = """
<script>
// Code blocks of MAX_DOC_CODE_LINE and of 200 characters in the page's content: how many pixels
// each runs past its box (0 when it fits).
window.addEventListener("load", () => {
  const content = document.querySelector(".md-content .md-typeset");
  const overflow = (characters) => {
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    code.textContent = "x".repeat(characters);
    pre.appendChild(code);
    content.appendChild(pre);
    return Math.max(0, code.scrollWidth - code.clientWidth);
  };
  document.body.dataset.overflow = [overflow(MAX_DOC_CODE_LINE), overflow(200)].join(" ");
});
</script>
"""


@needs_docs_extra
@needs_chromium
def test_longest_code_line_fits_in_a_wide_window(site):
    page = site / "installation" / "index.html"
    probe = CODE_WIDTH_PROBE.replace("MAX_DOC_CODE_LINE", str(MAX_DOC_CODE_LINE))
    probed = page.with_name("code-width-probe.html")  # beside the page: the same relative links
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    dom, console = open_in_chromium(probed)
    found = re.search(r'data-overflow="(\d+) (\d+)"', dom)
    assert found, console
    longest, too_long = map(int, found.groups())
    assert longest == 0, f"a {MAX_DOC_CODE_LINE}-character code line runs {longest} px past its block"
    assert too_long > 0  # the probe measures something


@needs_chromium
def test_chromium_checks_see_a_broken_page(tmp_path):
    """Raw TeX with no MathJax, and a script that throws: both are reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<html><body><p><span class="arithmatex">\\(x^2\\)</span></p>'
        "<script>window.MathJax.startup.output.clearCache();</script></body></html>",
        encoding="utf-8",
    )
    dom, console = open_in_chromium(page)
    assert PageReading(dom).formulas == [{"typeset": False, "tex": "\\(x^2\\)"}]
    assert any("Uncaught TypeError" in line for line in console), console
