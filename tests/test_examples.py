"""The examples and the benchmark run, and every Python code block in the documentation runs.

The examples are run as a user runs them, as scripts in a fresh interpreter, with
``--quick`` (tiny models, a few seconds each) and tiny fake data files where they need
some; the tests check that they exit cleanly, print finite numbers and write their
figure. The code blocks of every documentation page (``docs/**/*.md`` and the README)
are executed, page by page, in an empty working directory, so the documentation cannot
silently rot.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import REPO, assert_png, run_script  # noqa: E402


def printed_number(stdout: str, label: str) -> float:
    """The first number printed after ``label`` on the line that starts with it."""
    for line in stdout.splitlines():
        if line.startswith(label):
            token = line[len(label) :].split()[0]
            return float(token)  # also parses "nan" and "inf", which the callers reject
    raise AssertionError(f"no line starting with {label!r} in:\n{stdout}")


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The body rows of the Markdown tables in ``stdout``, by their first cell (header and
    separator rows left out): ``| dna | 12 | 8.5 |`` gives ``{"dna": ["12", "8.5"]}``."""
    lines = [line.strip() for line in stdout.splitlines()]
    is_row = [line.startswith("|") and line.endswith("|") for line in lines]
    is_separator = [row and set(line) <= set("|-: ") for row, line in zip(is_row, lines)]
    rows = {}
    for k, line in enumerate(lines):
        is_header = k + 1 < len(lines) and is_separator[k + 1]
        if is_row[k] and not is_separator[k] and not is_header:
            first, *cells = (cell.strip() for cell in line.strip("|").split("|"))
            rows[first] = cells
    return rows


def finite_numbers(cells: list[str]) -> list[float]:
    """The numbers in table cells, asserted finite: ``"8.83 / 8.60"`` is two numbers,
    ``"1.5x"`` one, and a label such as ``"64x2"`` none (callers check the count)."""
    numbers = []
    for cell in cells:
        for part in cell.split("/"):
            part = part.strip().removesuffix("x")
            try:
                numbers.append(float(part))
            except ValueError:
                continue  # a label such as "64x2"
    assert numbers, f"no numbers in {cells}"
    assert all(math.isfinite(n) for n in numbers), f"non-finite numbers in {cells}"
    return numbers


def load_example(name: str):
    """An example script imported as a module, to test its functions in-process."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def figure_texts(fig) -> list[str]:
    """Every non-empty piece of text in a figure, its subfigures and axes included."""
    return [text.get_text() for text in fig.findobj(matplotlib.text.Text) if text.get_text()]


def test_made_digits_quick(tmp_path):
    stdout = run_script("examples/made_digits.py", "--quick", "--no-progress", "--out", str(tmp_path)).stdout

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
    best, worst = (float(v) for v in re.search(r"best (\S+), worst (\S+)$", stdout, re.MULTILINE).groups())
    assert best <= per_mask <= worst
    assert "the top half: True" in stdout, stdout  # natural order completes exactly
    assert_png(tmp_path / "made_digits.png")
    assert re.search(r"^figure: .*made_digits\.png$", stdout, re.MULTILINE), stdout


def test_face_completion_quick(tmp_path):
    stdout = run_script("examples/face_completion.py", "--quick", "--no-progress", "--out", str(tmp_path)).stdout
    rows = table_rows(stdout)
    assert set(rows) >= {"faces", "digits"}, stdout
    for cells in rows.values():
        dim, levels, nll, bits_per_pixel, uniform = finite_numbers(cells)
        assert nll > 0 and uniform == pytest.approx(dim * math.log(levels), abs=0.05), cells
        assert bits_per_pixel == pytest.approx(nll / dim / math.log(2), abs=2e-3), cells
    assert_png(tmp_path / "face_completion.png")


def test_face_completion_figure_explains_itself():
    """A reader of the figure alone learns what it shows, each dataset's test NLL, what
    each row and column is, and that blue marks the hidden half."""
    example = load_example("face_completion")
    images = torch.zeros(2, 16, dtype=torch.long)
    data = {"side": 4, "levels": 3}
    panels = [
        example.Panel("faces", data, 1234.5, images, [("greedy completion", images), ("sampled completion 1", images)]),
        example.Panel("digits", data, 67.8, images, [("sampled completion 1", images)]),
    ]
    fig = example.figure(panels)
    texts = figure_texts(fig)
    plt.close(fig)
    joined = "\n".join(texts)
    assert fig.get_suptitle().startswith("A CategoricalMADE completes the bottom half of held-out images"), texts
    assert "test NLL 1234.5 nats/image" in joined and "test NLL 67.8 nats/image" in joined, texts
    assert {"original", "visible top half", "greedy completion", "sampled completion 1"} <= set(texts), texts
    assert {"test image 1", "test image 2"} <= set(texts), texts
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert any("hidden" in text for text in legend), legend


def test_made_uci_quick(tmp_path):
    """Tiny fake data (the real files are not in the repository): dna is there,
    mushrooms is not and is skipped."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, 2, size=(rows, 12)) for name, rows in (("train", 60), ("valid", 20), ("test", 20))}
    np.savez(data / "dna.npz", **arrays)
    stdout = run_script(
        "examples/made_uci.py", "--quick", "--no-progress", "--data-dir", str(data), "--out", str(tmp_path),
        "--datasets", "dna", "mushrooms", "--json", str(tmp_path / "results.json"),
    ).stdout  # fmt: skip
    assert re.search(r"^skipping mushrooms: no file .*mushrooms\.npz$", stdout, re.MULTILINE), stdout
    rows = table_rows(stdout)
    assert "dna" in rows and "mushrooms" not in rows, stdout
    dim, *nlls, _seconds = finite_numbers(rows["dna"])
    # 1 mask (ours, paper), mask sampling (ours, paper)
    assert dim == 12 and len(nlls) == 4, rows["dna"]
    assert all(0 < nll < 100 for nll in nlls), rows["dna"]
    assert nlls[1] == 83.63 and nlls[3] == 79.66, rows["dna"]  # the paper's column
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"dna"} and set(results["dna"]) == {"one_mask", "mask_sampling"}, results
    assert math.isclose(results["dna"]["mask_sampling"], nlls[2], abs_tol=0.006), (results, rows["dna"])
    assert_png(tmp_path / "made_uci_masks.png")


def tiny_binary_splits(example, tmp_path):
    """A random 6-D binary dataset of 40/20/20 rows, saved as the example's files are and
    loaded by its own loader."""
    rng = np.random.default_rng(0)
    path = tmp_path / "nips.npz"
    sizes = {"train": 40, "valid": 20, "test": 20}
    np.savez(path, **{name: rng.integers(0, 2, size=(rows, 6)) for name, rows in sizes.items()})
    return example.load_made_uci(path)


def test_made_uci_cycled_mask_sets_are_tested_by_their_ensemble(tmp_path):
    """A recipe that cycles K mask sets trains a MADE holding K sets, and its test NLL is the
    ensemble of those K sets (the masks it was trained with), not of fresh masks."""
    example = load_example("made_uci")
    splits = tiny_binary_splits(example, tmp_path)
    recipe = example.Recipe(torch.optim.Adagrad, 0.01, mask_sets=3)
    settings = example.Settings(hidden=16, epochs=2, valid_masks=2, test_masks=5, seed=0, progress=False)
    model = example.train_made(splits, recipe, settings)
    assert model.made.num_masks == 3
    curve = example.ensemble_curve(model, splits.test, recipe, settings)
    with torch.no_grad():
        ensemble = -model.log_prob_ensemble(splits.test).mean().item()
    assert max(curve) == 3 and math.isclose(curve[3], ensemble, rel_tol=1e-6), (curve, ensemble)


def test_made_uci_sorted_recipe_trains_and_tests_on_sorted_fresh_masks(tmp_path, monkeypatch):
    """A recipe with sort_degrees hands it to fit, and its test masks are sorted fresh draws too."""
    example = load_example("made_uci")
    splits = tiny_binary_splits(example, tmp_path)
    recipe = example.Recipe(torch.optim.Adagrad, 0.01, resample_masks="full", sort_degrees=True)
    settings = example.Settings(hidden=16, epochs=1, valid_masks=2, test_masks=3, seed=0, progress=False)
    options = {}
    real_fit = example.flowkit.fit

    def recording_fit(*args, **kwargs):
        options.update(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(example.flowkit, "fit", recording_fit)
    model = example.train_made(splits, recipe, settings)
    assert options["sort_degrees"] is True and options["resample_masks"] == "full"
    hidden = []
    for _ in example.each_test_mask(model, recipe, settings):
        hidden.append(model.made.degrees()[1].clone())
    assert len(hidden) == 3 and all(bool((h[1:] >= h[:-1]).all()) for h in hidden)
    assert "sorted degrees" in recipe.describe()


def test_spline_vs_affine_quick(tmp_path):
    stdout = run_script("examples/spline_vs_affine.py", "--quick", "--no-progress", "--out", str(tmp_path)).stdout
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ")]
    body = {(cells[0].strip(), cells[1].strip()): finite_numbers(cells[2:]) for cells in rows[1:]}
    flows = ("affine MAF", "spline MAF (8 bins)")
    assert set(body) == {(name, flow) for name in ("checkerboard", "moons") for flow in flows}, stdout
    for name in ("checkerboard", "moons"):
        (affine_params, affine_nll, _), (spline_params, spline_nll, _) = (body[name, flow] for flow in flows)
        # The affine flow is widened to at least the spline flow's size, and not much more.
        assert spline_params <= affine_params <= 1.1 * spline_params, body
        # Two epochs fit little; the NLLs are plausible for 2-D data of scale ~1-4 (a normal
        # with the data's variances gives ~4.5 nats on the checkerboard, ~3.3 on the moons).
        assert 2 < affine_nll < 6 and 2 < spline_nll < 6, body
    assert_png(tmp_path / "spline_vs_affine.png")
    assert re.search(r"^figure: .*spline_vs_affine\.png$", stdout, re.MULTILINE), stdout


def test_spline_vs_affine_figure_explains_itself():
    """Each density panel names its flow, its test NLL and its size; every axis is labelled."""
    example = load_example("spline_vs_affine")
    args = example.parse_args(["--quick"])
    test = torch.randn(50, 2)
    scaler = example.Standardiser.fit(test)
    spline = example.spline_flow(args)
    results = [
        example.Result("affine MAF", example.affine_flow(args, example.num_params(spline)), 10, 1.234, 0.5),
        example.Result("spline MAF (8 bins)", spline, 9, 0.987, 0.5),
    ]
    fig = example.figure([("moons", test, scaler, results)], grid_size=10)
    texts = figure_texts(fig)
    axes = [ax for ax in fig.axes if ax.get_title()]  # the panels, not the colour bar
    plt.close(fig)
    assert "lower NLL is better" in fig.get_suptitle(), fig.get_suptitle()
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "moons: 50 test points", titles
    assert "affine MAF: test NLL 1.234 nats" in titles[1] and "(10 parameters)" in titles[1], titles
    assert "spline MAF (8 bins): test NLL 0.987 nats" in titles[2], titles
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in axes), titles
    assert "log-density (nats)" in texts, texts


def test_sequential_benchmark_quick():
    stdout = run_script("benchmarks/sequential.py", "--quick").stdout
    rows = table_rows(stdout)
    assert {"2", "4"} <= set(rows), stdout
    for dim in ("2", "4"):
        assert len(finite_numbers(rows[dim])) == 7, rows[dim]  # the "64x2" hidden label is not a number


@pytest.mark.parametrize("processes", [1, 2])
def test_train_distributed_quick(processes):
    """Under torchrun with two gloo processes, and as a plain script."""
    launcher = ("-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}") if processes > 1 else ()
    stdout = run_script("examples/train_distributed.py", "--quick", launcher=launcher).stdout
    rows = table_rows(stdout)
    assert list(rows) == [str(processes)], stdout
    epochs, steps, rows_per_second, test_nll, best = finite_numbers([cell.replace(",", "") for cell in rows[str(processes)]])
    assert epochs == 2 and steps == 2 * math.ceil(2000 // processes / 64)  # each process: its share of the rows
    assert rows_per_second > 0 and best < test_nll < best + 30  # learning, above the best possible


def test_plot_masks(tmp_path):
    out = tmp_path / "figures" / "made_masks.png"  # the folder does not exist yet
    stdout = run_script("examples/plot_masks.py", "--out", str(out)).stdout
    assert_png(out)
    assert str(out) in stdout


def test_plot_masks_other_shapes(tmp_path):
    """In-process (the figure code is what matters here): three hidden layers and a random
    order give more mask panels than the default figure."""
    module = load_example("plot_masks")
    out = tmp_path / "masks.png"
    module.main(["--out", str(out), "--inputs", "5", "--hidden", "6", "6", "6", "--order", "random", "--seed", "1"])
    assert_png(out)


# ------------------------------------------------------------------ documentation
# Every Markdown page of the site (docs/ and its subfolders) and the README. The ```python
# blocks of a page run in order, in one namespace and an empty working directory: a page
# is read top to bottom, so a later block may use what an earlier one defined (a tutorial
# fits a model in one block and samples it in the next). Shell commands and printed output
# go in ```bash and ```text blocks, which are not run, as are a few data formats; any other
# fence fails, so that no block of Python can hide from this test as ```py or ```pycon.
DOC_PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
CODE_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
FENCE_LANGUAGES = {"python", "bash", "console", "text", "json", "toml", "yaml"}


def code_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, each padded with blank lines so that line
    numbers in a traceback are line numbers in the file."""
    text = path.read_text(encoding="utf-8")
    return ["\n" * text.count("\n", 0, match.start(1)) + match.group(1) for match in CODE_BLOCK.finditer(text)]


def fence_languages(path: Path) -> list[tuple[int, str]]:
    """``(line number, language)`` of every fenced block that a page opens, indented or not;
    an opening fence with no language gives ``""``."""
    fences, inside = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped.startswith("```"):
            continue
        if inside:
            inside = stripped != "```"  # only a bare fence closes a block
        else:
            fences.append((number, stripped[3:].strip()))
            inside = True
    return fences


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


DOC_PAGES_WITH_CODE = [path for path in DOC_PAGES if code_blocks(path)]


def test_docs_have_code_blocks():
    pages = {page_id(path) for path in DOC_PAGES_WITH_CODE}
    assert any(page.startswith("docs/tutorials/") for page in pages), pages
    assert any(page.startswith("docs/howto/") for page in pages), pages
    assert "docs/index.md" in pages, pages


@pytest.mark.parametrize("path", DOC_PAGES, ids=page_id)
def test_doc_fences_are_known(path):
    """Every block is python (run below) or a known language that is not code to run; and
    every python block is one that the runner finds (not indented)."""
    fences = fence_languages(path)
    unknown = [(line, language) for line, language in fences if language not in FENCE_LANGUAGES]
    assert not unknown, f"{page_id(path)}: fences other than {sorted(FENCE_LANGUAGES)} at (line, language) {unknown}"
    python_fences = sum(language == "python" for _, language in fences)
    assert python_fences == len(code_blocks(path)), f"{page_id(path)}: an indented ```python block would not run"


def test_fence_scanner_sees_what_it_should(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n```\n\n- item\n\n    ```py\n    y = 2\n    ```\n```\nbare\n```\n")
    assert fence_languages(page) == [(1, "python"), (7, "py"), (10, "")]
    assert code_blocks(page) == ["\nx = 1\n"]


@pytest.mark.parametrize("path", DOC_PAGES_WITH_CODE, ids=page_id)
def test_doc_page_runs(path, tmp_path, monkeypatch):
    """The page's python blocks run, in order and in one namespace, without an error."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc_page__"}
    try:
        for code in code_blocks(path):
            exec(compile(code, str(path), "exec"), namespace)  # noqa: S102 (running the docs is the point)
    finally:
        pyro.clear_param_store()  # pages train guides; leave no parameters to later tests
        plt.close("all")
