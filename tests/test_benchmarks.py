"""The benchmarks: their shared modules (page sections, interleaved timing, the four libraries'
flows), the digits transform and the dense floor, and ``--quick`` runs of both scripts whose
printed Markdown tables are parsed and checked."""

from __future__ import annotations

import doctest
import math
import re
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, assert_png, run_script

import flowkit

# The benchmark scripts import each other as top-level modules, as when run from benchmarks/.
sys.path.insert(0, str(REPO / "benchmarks"))

import contenders  # noqa: E402
import quality  # noqa: E402
import report  # noqa: E402
import speed  # noqa: E402
import timing  # noqa: E402

LIBRARY_NAMES = ["flowkit", "Pyro", "zuko", "nflows"]
SPLINE_NAMES = [f"{name} spline" for name in LIBRARY_NAMES]


def markdown_tables(stdout: str) -> list[list[list[str]]]:
    """Every Markdown table in ``stdout``, as rows of cells, header row first (separator left out)."""
    tables, current = [], []
    for line in [line.strip() for line in stdout.splitlines()] + [""]:
        if line.startswith("|") and line.endswith("|"):
            if not set(line) <= set("|-: "):
                current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def table_with(stdout: str, header: str) -> list[dict[str, str]]:
    """The body rows, as ``{column: cell}``, of the one table that has a column ``header``."""
    found = [table for table in markdown_tables(stdout) if header in table[0]]
    assert len(found) == 1, f"expected one table with a column {header!r} in:\n{stdout}"
    head, *body = found[0]
    return [dict(zip(head, row, strict=True)) for row in body]


def number(cell: str) -> float:
    """The first number of a cell: ``"0.42 (zuko)"`` gives 0.42; asserted finite."""
    value = float(cell.split()[0].rstrip(",x"))
    assert math.isfinite(value), cell
    return value


def printed_range(cell: str) -> tuple[float, float]:
    """The values a printed number can stand for: ``"0.29"`` is anything in [0.285, 0.295]."""
    text = cell.split()[0].rstrip(",x")
    half_unit = 0.5 * 10.0 ** -len(text.partition(".")[2])
    return number(cell) - half_unit, number(cell) + half_unit


def assert_printed_ratio(ratio: str, numerator: str, denominator: str) -> None:
    """A printed ratio agrees with the printed numbers it divides, up to their rounding
    (small timings are printed with few digits, so a relative tolerance is not enough)."""
    (low_n, high_n), (low_d, high_d), (low_r, high_r) = map(printed_range, (numerator, denominator, ratio))
    assert low_r <= high_n / low_d and high_r >= low_n / high_d, (ratio, numerator, denominator)


# ------------------------------------------------------------------ report.py
def test_write_section_replaces_only_its_section(tmp_path):
    page = tmp_path / "sub" / "bench.md"  # neither the folder nor the page exists yet
    report.write_section(page, "speed", "first speed")
    report.write_section(page, "quality", "quality table")
    page.write_text(page.read_text() + "\nhand-written prose\n")
    report.write_section(page, "speed", "second speed\n")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "second speed" in text and "first speed" not in text
    assert "quality table" in text and text.endswith("hand-written prose\n")
    assert text.index("<!-- speed:start -->") < text.index("second speed") < text.index("<!-- speed:end -->")
    assert text.index("<!-- speed:end -->") < text.index("<!-- quality:start -->")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- speed:start -->\nonly the start\n", "only one of the markers"),
        ("<!-- speed:end -->\n<!-- speed:start -->\n", "comes before its start"),
        ("<!-- speed:start -->\n<!-- speed:end -->\n<!-- speed:start -->\n<!-- speed:end -->\n", "more than once"),
    ],
)
def test_write_section_rejects_broken_markers(tmp_path, text, message):
    page = tmp_path / "bench.md"
    page.write_text(text)
    with pytest.raises(ValueError, match=message):
        report.write_section(page, "speed", "new")
    assert page.read_text() == text  # left as it was


def test_write_section_rejects_bad_names(tmp_path):
    with pytest.raises(ValueError, match="name"):
        report.write_section(tmp_path / "bench.md", "two words", "text")


def test_markdown_table_checks_row_lengths():
    with pytest.raises(ValueError, match="2 cells per row"):
        report.markdown_table(["a", "b"], [[1, 2, 3]])


def test_figure_path_is_beside_the_page(tmp_path):
    path, link = report.figure_path(tmp_path / "bench.md", "speed")
    assert path == tmp_path / "assets" / "bench_speed.png" and link == "assets/bench_speed.png"


@pytest.mark.parametrize("module", [report, timing, contenders], ids=lambda m: m.__name__)
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


# ------------------------------------------------------------------ timing.py
def test_interleaved_times_rotate_the_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = timing.interleaved_times(fns, repeats=3, min_time=0.0)
    assert set(times) == set("abc") and all(t >= 0 for t in times.values())
    # Two warm-up calls each (warm-up and calibration), then rounds a b c, b c a, c a b.
    assert calls == list("aabbcc") + list("abcbcacab")


def test_interleaved_times_rejects_no_repeats():
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved_times({"a": lambda: None}, repeats=0)


# ------------------------------------------------------------------ contenders.py
@pytest.mark.parametrize("bijection", contenders.BIJECTIONS)
@pytest.mark.parametrize("direction", contenders.DIRECTIONS)
def test_contenders_are_the_same_flow(direction, bijection):
    """Equal parameter counts, nearly equal connectivity, and each library's density of its
    own samples agrees with its log_prob of them (scored afresh, the other direction)."""
    dim, hidden = 5, [12, 12]
    built = [
        contenders.build(lib, direction, dim, 3, hidden, seed=0, bijection=bijection) for lib in contenders.LIBRARIES
    ]
    assert len({c.num_parameters for c in built}) == 1
    per_input = 2 if bijection == "affine" else 3 * contenders.SPLINE_BINS - 1
    expected = 3 * (dim * 12 + 12 + 12 * 12 + 12 + 12 * per_input * dim + per_input * dim)
    assert built[0].num_parameters == expected
    for contender in built:
        assert abs(contender.active_weights - built[0].active_weights) <= 0.05 * built[0].active_weights
        with torch.no_grad():
            x, log_q = contender.sample_and_log_prob(16)
            assert x.shape == (16, dim) and contender.sample(4).shape == (4, dim)
            torch.testing.assert_close(contender.log_prob(x.clone()), log_q, atol=1e-4, rtol=1e-4)


def test_contender_build_checks_arguments():
    with pytest.raises(ValueError, match="library"):
        contenders.build("tensorflow", "maf", 3, 2, [8, 8])
    with pytest.raises(ValueError, match="direction"):
        contenders.build("zuko", "nice", 3, 2, [8, 8])
    with pytest.raises(ValueError, match="hidden_dims"):
        contenders.build("nflows", "maf", 3, 2, [8, 16])
    with pytest.raises(ValueError, match="bijection"):
        contenders.build("flowkit", "maf", 3, 2, [8, 8], bijection="glow")


# ------------------------------------------------------------------ speed.py, quality.py pieces
def test_dense_floor_is_flowkits_chain_without_masks():
    """With every mask set to ones, flowkit's last MADE computes exactly the floor's chain."""
    flow = contenders.build("flowkit", "maf", 4, 2, [9, 9]).module
    for module in flow.modules():
        if hasattr(module, "mask") and module.mask.dtype == torch.bool:
            module.mask.fill_(True)
    x = torch.randn(6, 4)
    last_made = [m for m in flow.modules() if isinstance(m, flowkit.MADE)][-1]
    with torch.no_grad():
        torch.testing.assert_close(speed.dense_floor(flow, x)(), last_made.raw_output(x).flatten(-2))


def test_dense_train_floor_steps_copies_of_the_flows_layers():
    """Every copied weight and bias takes an Adam step; the flow's own parameters stay."""
    flow = contenders.build("flowkit", "maf", 4, 2, [9, 9]).module
    before = [p.detach().clone() for p in flow.parameters()]
    step = speed.dense_train_floor(flow, torch.randn(6, 4))
    optimizer = step.optimizer
    copies = [p.detach().clone() for group in optimizer.param_groups for p in group["params"]]
    layers = [m for m in flow.modules() if isinstance(m, flowkit.nn.MaskedLinear) and m.bias is not None]
    assert len(copies) == 2 * len(layers)
    step()
    after = [p for group in optimizer.param_groups for p in group["params"]]
    assert all(not torch.equal(a, b) for a, b in zip(after, copies, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(flow.parameters(), before, strict=True))


def test_speed_widths_and_their_option():
    assert speed.widths(16, [None, 64, 256]) == [64, 256]  # default is max(64, 3D + 1), kept once
    assert speed.widths(64, [None, 256]) == [193, 256]
    assert speed.parse_args(["--hidden", "default", "512", "--page", "/tmp/x.md"]).hidden == [None, 512]
    for bad in ("0", "wide"):
        with pytest.raises(SystemExit):
            speed.parse_args(["--hidden", bad])


def test_digits_log_jacobian_matches_autograd():
    dequantised = (torch.rand(3, 64, dtype=torch.float64) * 17).requires_grad_(True)
    y = quality.Digits.logit(dequantised)
    (derivative,) = torch.autograd.grad(y.sum(), dequantised)  # the transform is elementwise
    torch.testing.assert_close(quality.Digits.log_jacobian(y.detach()), derivative.log().sum(-1))


# ------------------------------------------------------------------ --quick runs
def test_outcomes_over_seeds_average_the_nlls_and_keep_the_worst_row():
    outcomes = [quality.Outcome(2.0, 1.0, 100, 4.0, worst=50.0, parameters=7),
                quality.Outcome(4.0, 3.0, 300, 6.0, diverged_at=9, worst=20.0, parameters=7)]  # fmt: skip
    combined = quality.combine(outcomes)
    assert (combined.test_nll, combined.test_median, combined.best_step, combined.seconds) == (3.0, 2.0, 200, 5.0)
    assert (combined.worst, combined.diverged_at, combined.parameters) == (50.0, 9, 7)


def test_digits_are_standardised_and_their_log_jacobian_counts_it():
    task = quality.digits_task(test_draws=1, seed=0)
    inside = (task.valid.abs() <= 5).float().mean().item()
    assert inside > 0.99 and task.valid.mean(0).abs().max() < 0.5, inside
    # The offset is that of the logits plus the standardisation's sum of log std.
    logits = quality.Digits.to_logit(task.train, torch.Generator().manual_seed(1))
    std = logits.std(0).double()
    test_logits = task.test.double() * std + logits.mean(0).double()
    expected = quality.Digits.log_jacobian(test_logits) - std.log().sum()
    torch.testing.assert_close(task.test_log_jacobian, expected, rtol=0, atol=1e-3)


def test_speed_quick(tmp_path):
    page = tmp_path / "benchmarks.md"
    docs_page = REPO / "docs" / "benchmarks.md"
    before = docs_page.read_bytes() if docs_page.exists() else None
    stdout = run_script("benchmarks/speed.py", "--quick", "--page", str(page)).stdout
    assert "1 intra-op thread" in stdout, stdout

    architectures = table_with(stdout, "flow")
    assert [(row["D"], row["H"], row["flow"].split()[-1]) for row in architectures] == [
        ("3", width, bijection) for width in ("8", "12") for bijection in ("affine", "spline")
    ]
    for row in architectures:
        counts = {row[name] for name in LIBRARY_NAMES}
        parameters = {cell.split()[0] for cell in counts}
        assert len(parameters) == 1, row  # the same architecture in every library

    times = table_with(stdout, "flowkit / best other")
    assert len(times) == 2 * 9, times  # five affine and four spline measurements at each (D, H)
    assert sum(row["measurement"].startswith("spline ") for row in times) == 2 * 4, times
    for row in times:
        ms = [number(row[f"{name} (ms)"]) for name in LIBRARY_NAMES]
        assert all(t > 0 for t in ms), row
        best = min(LIBRARY_NAMES[1:], key=lambda name: number(row[f"{name} (ms)"]))
        assert_printed_ratio(row["flowkit / best other"], row[f"{LIBRARY_NAMES[0]} (ms)"], row[f"{best} (ms)"])
        if row["measurement"] in ("train step", "log_prob"):  # the same table holds the dense floor
            assert_printed_ratio(row["flowkit / floor"], row["flowkit (ms)"], row["dense floor (ms)"])
        else:
            assert row["dense floor (ms)"] == row["flowkit / floor"] == "-", row

    text = page.read_text()
    assert "<!-- speed:start -->" in text and "![speed ratios](assets/bench_speed.png)" in text
    assert_png(tmp_path / "assets" / "bench_speed.png")
    assert (docs_page.read_bytes() if docs_page.exists() else None) == before  # --quick leaves the docs alone


def test_quality_quick(tmp_path):
    """Tiny fake MADE data: dna is there, mushrooms is not and is skipped."""
    data = tmp_path / "made-uci"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(data / "dna.npz", **{part: rng.integers(0, 2, size=(rows, 12)) for part, rows in
                                  (("train", 60), ("valid", 20), ("test", 20))})  # fmt: skip
    page = tmp_path / "benchmarks.md"
    stdout = run_script(
        "benchmarks/quality.py", "--quick", "--no-progress", "--page", str(page),
        "--made-uci-dir", str(data), "--made-uci", "dna", "mushrooms",
    ).stdout  # fmt: skip
    assert f"skipping mushrooms: no file {data / 'mushrooms.npz'}" in stdout, stdout

    [nll_table] = [t for t in markdown_tables(stdout) if "Gaussian" in t[0] and "rows" in t[0]]
    nll = {row[0]: dict(zip(nll_table[0], row, strict=True)) for row in nll_table[1:]}
    assert set(nll) == {"moons", "breast_cancer", "digits"}, stdout
    worst = {row["worst row of"]: row for row in table_with(stdout, "worst row of")}
    for dataset, row in nll.items():
        for name in LIBRARY_NAMES + SPLINE_NAMES + ["Gaussian"]:
            mean, median = (float(v) for v in re.fullmatch(r"(\S+) \((\S+)\)", row[name]).groups())
            assert math.isfinite(mean) and math.isfinite(median), row
            assert number(worst[dataset][name]) >= mean - 1e-3 * abs(mean), (row, worst[dataset])

    digits = {row["model"]: row for row in table_with(stdout, "bits/pixel")}
    uniform = digits["uniform over 17 levels"]
    assert number(uniform["NLL pixels (nats)"]) == pytest.approx(64 * math.log(17), abs=0.01)
    offsets = []
    for name in LIBRARY_NAMES + SPLINE_NAMES + ["Gaussian"]:
        row = digits[name]
        pixels, logits = number(row["NLL pixels (nats)"]), number(row["NLL logit space"])
        assert number(row["bits/pixel"]) == pytest.approx(pixels / 64 / math.log(2), abs=2e-3), row
        assert pixels == pytest.approx(number(nll["digits"][name]), abs=0.01), row
        offsets.append(logits - pixels)
    # One log-Jacobian, the same for every model, and the one the text names.
    printed = float(re.search(r"over the test images, (\S+) nats", stdout).group(1))
    assert all(offset == pytest.approx(printed, abs=0.011) for offset in offsets), (printed, digits)

    training = {row["dataset"]: row for row in table_with(stdout, "hidden")}
    for row in training.values():  # each bijection's flows have one parameter count
        for names in (LIBRARY_NAMES, SPLINE_NAMES):
            assert len({row[name].split(",")[0] for name in names}) == 1, row

    made = {row["dataset"]: row for row in table_with(stdout, "flowkit 1 mask")}
    assert set(made) == {"dna"}, stdout
    # A Bernoulli NLL is positive; the kept weights are at worst the initial ones, near 12 log 2.
    assert 0 < number(made["dna"]["flowkit 1 mask"]) < 2 * 12 * math.log(2), made

    text = page.read_text()
    assert "<!-- quality:start -->" in text and "![test NLL](assets/bench_quality.png)" in text
    assert_png(tmp_path / "assets" / "bench_quality.png")


def test_quality_without_made_files_says_so(tmp_path):
    stdout = run_script(
        "benchmarks/quality.py", "--quick", "--no-progress", "--datasets", "moons",
        "--made-uci-dir", str(tmp_path / "nowhere"),
    ).stdout  # fmt: skip
    assert "skipping dna: no file" in stdout and "No MADE paper dataset found" in stdout, stdout
    assert "wrote" not in stdout, stdout  # --quick without --page writes no page


def test_compile_quick(tmp_path):
    """aot_eager in quick mode: the script's logic, not inductor's code generation."""
    page = tmp_path / "benchmarks.md"
    stdout = run_script("benchmarks/compile.py", "--quick", "--page", str(page)).stdout
    rows = table_with(stdout, "compiled (ms)")
    assert [row["what"] for row in rows] == [
        "MAF train step", "MAF log_prob", "MAF sample", "IAF sample + log_prob", "MADE train step", "MADE sample",
    ]  # fmt: skip
    for row in rows:
        eager, compiled = number(row["eager (ms)"]), number(row["compiled (ms)"])
        assert eager > 0 and compiled > 0 and number(row["compile (s)"]) >= 0, row
        assert_printed_ratio(row["speed-up"], row["eager (ms)"], row["compiled (ms)"])
    text = page.read_text()
    assert "<!-- compile:start -->" in text and "| MAF train step | 2 |" in text


def test_scaling_quick(tmp_path):
    """Fresh processes: one, then two sharing every minibatch through gloo."""
    page = tmp_path / "benchmarks.md"
    stdout = run_script("benchmarks/scaling.py", "--quick", "--page", str(page)).stdout
    rows = table_with(stdout, "rows/s")
    assert [(row["processes"], row["threads each"], row["rows per step each"]) for row in rows] == [
        ("1", "1", "256"), ("2", "1", "256"),
    ]  # fmt: skip
    one, two = rows
    assert number(one["steps each"]) == math.ceil(2000 / 256) and number(two["steps each"]) == math.ceil(1000 / 256)
    for row in rows:
        rows_per_second = number(row["rows/s"].replace(",", ""))
        assert rows_per_second == pytest.approx(2000 / number(row["epoch (s)"]), rel=0.1), row
        peaks = [number(cell.replace(",", "")) for cell in row["peak, each process (MiB)"].split("/")]
        with_data = number(row["with data and model (MiB)"].replace(",", ""))
        assert len(peaks) == int(row["processes"]) and all(peak >= with_data for peak in peaks), row
    assert number(one["speed-up"].rstrip("x")) == 1.0
    assert "<!-- scaling:start -->" in page.read_text()


def test_masked_product_quick():
    """Dense against blocked masked products: every ratio agrees with the printed times'
    columns, and the automatic rule keeps the dense product at these tiny sizes."""
    stdout = run_script("benchmarks/masked_product.py", "--quick").stdout
    (row,) = table_with(stdout, "auto: pick, fwd / fwd+bwd ratio")
    assert (row["D"], row["H"], row["B"]) == ("4", "16", "8"), row
    assert number(row["forward dense (ms)"]) > 0 and number(row["fwd+bwd dense (ms)"]) > 0, row
    for kind in ("forward", "fwd+bwd"):
        assert all(number(row[f"{kind} {k} blocks / dense"]) > 0 for k in (2, 4, 8)), row
    kept = [float(share) for share in row["work kept (2/4/8 blocks)"].split("/")]
    assert kept == sorted(kept, reverse=True) and 0 < kept[-1] < 1, row
    assert row["auto: pick, fwd / fwd+bwd ratio"].startswith("dense: "), row


def test_svi_quick(tmp_path):
    page = tmp_path / "benchmarks.md"
    stdout = run_script("benchmarks/svi.py", "--quick", "--page", str(page)).stdout
    rows = table_with(stdout, "ms per step")
    guides = [
        "Pyro AutoIAFNormal",
        "flowkit AutoIAF, stick_the_landing=False",
        "flowkit AutoIAF (path derivative)",
        "flowkit AutoIAF, all defaults",
    ]
    assert [(row["model"], row["D"], row["guide"]) for row in rows] == [
        (model, dim, guide) for model, dim in (("gaussian", "5"), ("logistic", "31")) for guide in guides
    ]
    pyro_rows = {row["model"]: row for row in rows if row["guide"] == guides[0]}
    for row in rows:
        assert number(row["ms per step"]) > 0, row
        assert_printed_ratio(row["vs Pyro"], row["ms per step"], pyro_rows[row["model"]]["ms per step"])
    assert pyro_rows["gaussian"]["vs Pyro"] == "1.00x"
    assert "<!-- svi:start -->" in page.read_text()


def test_construction_quick():
    """Building each library's MADE and flowkit's mask redraw: one row each, ratios against
    flowkit's construction that agree with the printed times."""
    stdout = run_script("benchmarks/construction.py", "--quick").stdout
    rows = table_with(stdout, "over flowkit's construction")
    names = [row["what"] for row in rows]
    assert [name.split(":")[0] for name in names] == ["flowkit", "Pyro", "zuko", "nflows", "flowkit", "flowkit"]
    build = rows[0]["time (ms)"]
    for row in rows:
        assert number(row["time (ms)"]) > 0, row
        assert_printed_ratio(row["over flowkit's construction"], row["time (ms)"], build)
    assert "resample_masks" in names[4]
