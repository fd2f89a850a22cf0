"""flowkit.datasets' loaders for POWER, GAS, HEPMASS and MINIBOONE, on small files written here
in the format of the paper's release (the real files are large and never downloaded).

Each test checks what the paper's code does to a file: the split (sizes, file order or the
seeded shuffle, disjoint rows), the columns it drops and the standardisation.
"""

import os

import numpy as np
import pytest
import torch

from flowkit.datasets import Splits, load_gas, load_hepmass, load_miniboone, load_power
from maf_dataset_helpers import (
    HEPMASS_DISCRETE,
    HEPMASS_MIN_FIVE_TIMES,
    HEPMASS_MIN_SIX_TIMES,
    gas_frame,
    gas_sensors,
    hepmass_table,
    parts,
    power_table,
    write_gas,
    write_hepmass,
    write_npy,
)

def tail_split_sizes(n):
    """Train, valid, test sizes of the paper's split: the last tenth (rounded down) of the
    rows for testing, the last tenth of the rest for validation."""
    n_test = n // 10
    n_valid = (n - n_test) // 10
    return n - n_test - n_valid, n_valid, n_test


def sizes(splits):
    return len(splits.train), len(splits.valid), len(splits.test)


def standardised(x, reference, ddof):
    return (x - reference.mean(0)) / reference.std(0, ddof=ddof)


def assert_standard_columns(x, ddof):
    """Every column has mean 0 and standard deviation 1 (with ``ddof``)."""
    x = x.double()
    zeros, ones = torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64)
    torch.testing.assert_close(x.mean(0), zeros, rtol=0, atol=1e-10)
    torch.testing.assert_close(x.std(0, correction=ddof), ones, rtol=0, atol=1e-10)


def assert_close_to_array(tensor, array):
    torch.testing.assert_close(tensor, torch.as_tensor(array, dtype=torch.float64), rtol=0, atol=1e-10)


HEPMASS_DROPPED = sorted([HEPMASS_MIN_SIX_TIMES, *HEPMASS_DISCRETE])


HEPMASS_KEPT = [k for k in range(27) if k not in HEPMASS_DROPPED]


# ----------------------------------------------------------------------------- POWER


@pytest.fixture
def power_raw(tmp_path):
    table = power_table(1003)
    write_npy(tmp_path, "power", table)
    return tmp_path, table


def papers_power_recipe(raw):
    """The paper's POWER preprocessing, step by step as its code does them, in float64."""
    rng = np.random.RandomState(42)
    data = raw.copy()
    rng.shuffle(data)
    data = np.delete(data, 3, axis=1)  # global intensity
    data = np.delete(data, 1, axis=1)  # global reactive power
    n = len(data)
    voltage_noise = 0.01 * rng.rand(n, 1)
    active_power_noise = 0.001 * rng.rand(n, 1)
    sub_metering_noise = rng.rand(n, 3)
    data = data + np.hstack((active_power_noise, voltage_noise, sub_metering_noise, np.zeros((n, 1))))
    n_test = int(0.1 * n)
    test, rest = data[n - n_test :], data[: n - n_test]
    n_valid = int(0.1 * len(rest))
    valid, train = rest[len(rest) - n_valid :], rest[: len(rest) - n_valid]
    return [standardised(x, np.vstack((train, valid)), ddof=0) for x in (train, valid, test)]


def test_power_shapes_and_split_sizes(power_raw):
    root, _ = power_raw
    splits = load_power(root)
    assert isinstance(splits, Splits)
    assert splits.dim == 6
    assert sizes(splits) == tail_split_sizes(1003) == (813, 90, 100)
    assert all(part.dtype == torch.float32 for part in parts(splits))


def test_power_is_the_papers_preprocessing(power_raw):
    root, raw = power_raw
    splits = load_power(root, dtype=torch.float64)
    for part, expected in zip(parts(splits), papers_power_recipe(raw)):
        assert_close_to_array(part, expected)


def test_power_standardised_with_train_and_valid(power_raw):
    splits = load_power(power_raw[0], dtype=torch.float64)
    assert_standard_columns(torch.cat([splits.train, splits.valid]), ddof=0)
    assert not torch.allclose(splits.test.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-6)


def test_power_split_is_reproducible_and_independent_of_dtype(power_raw):
    root, _ = power_raw
    first, again, in_float64 = load_power(root), load_power(root), load_power(root, dtype=torch.float64)
    for a, b, c in zip(parts(first), parts(again), parts(in_float64)):
        assert torch.equal(a, b)
        assert torch.equal(c.float(), a)  # the same float64 numbers, rounded once


def test_power_splits_are_disjoint_and_shuffled(power_raw):
    root, raw = power_raw
    splits = load_power(root, dtype=torch.float64)
    # The time column gets no noise and is distinct per row, so it identifies the rows.
    times = [set(part[:, -1].tolist()) for part in parts(splits)]
    assert [len(t) for t in times] == list(sizes(splits))
    assert not (times[0] & times[1]) and not (times[0] & times[2]) and not (times[1] & times[2])
    assert len(times[0] | times[1] | times[2]) == len(raw)
    # Without the shuffle, the test rows would be the file's last rows: the latest times.
    all_times = sorted(times[0] | times[1] | times[2])
    assert times[2] != set(all_times[-len(times[2]) :])


def test_power_drops_reactive_power_and_intensity(power_raw):
    root, raw = power_raw
    splits = load_power(root, dtype=torch.float64)
    everything = torch.cat(parts(splits)).numpy()  # the shuffled rows, in their new order
    shuffled = raw[np.random.RandomState(42).permutation(len(raw))]
    # The noise is small next to each kept column's spread (width 0.001 on a 0.001 grid,
    # 0.01 on a 0.01 grid, 1 on integers), so each output column correlates almost
    # perfectly with the raw column it came from, and not with the dropped ones.
    for out_column, raw_column in enumerate([0, 2, 4, 5, 6, 7]):
        assert np.corrcoef(everything[:, out_column], shuffled[:, raw_column])[0, 1] > 0.99
        for dropped in (1, 3):
            assert abs(np.corrcoef(everything[:, out_column], shuffled[:, dropped])[0, 1]) < 0.2


def test_power_wrong_number_of_columns(tmp_path):
    write_npy(tmp_path, "power", np.zeros((20, 43)))
    with pytest.raises(ValueError, match="root.*8"):
        load_power(tmp_path)


# ------------------------------------------------------------------------------- GAS


def test_gas_shapes_and_split_sizes(tmp_path):
    write_gas(tmp_path, gas_frame(gas_sensors(500)))
    splits = load_gas(tmp_path)
    assert splits.dim == 8
    assert sizes(splits) == tail_split_sizes(500) == (405, 45, 50)


def test_gas_drops_time_concentrations_and_near_copies(tmp_path):
    sensors = gas_sensors(500)
    write_gas(tmp_path, gas_frame(sensors))
    splits = load_gas(tmp_path, dtype=torch.float64)
    # The first column of each near-copy pair goes, so the 8 copies stay (in file order,
    # rows unshuffled); sensors 2 and 3 (correlation ~0.89) both survive in the copies.
    # Standardised over all rows with ddof=1, as pandas' std does.
    assert_close_to_array(torch.cat(parts(splits)), standardised(sensors[:, 8:], sensors[:, 8:], ddof=1))


def test_gas_standardised_over_all_rows(tmp_path):
    write_gas(tmp_path, gas_frame(gas_sensors(500)))
    splits = load_gas(tmp_path, dtype=torch.float64)
    assert_standard_columns(torch.cat(parts(splits)), ddof=1)


def test_gas_keeps_anticorrelated_columns_and_the_last_of_a_chain(tmp_path):
    rng = np.random.default_rng(0)
    a, c = rng.normal(size=(2, 300))
    # a, a + noise, a + more noise: all three correlate above 0.98 with each other; -c is
    # c's mirror (correlation -1), which the paper's test (> 0.98) does not catch.
    sensors = np.column_stack([a, a + 0.01 * rng.normal(size=300), a + 0.02 * rng.normal(size=300), c, -c])
    write_gas(tmp_path, gas_frame(sensors))
    splits = load_gas(tmp_path, dtype=torch.float64)
    kept = sensors[:, [2, 3, 4]]
    assert_close_to_array(torch.cat(parts(splits)), standardised(kept, kept, ddof=1))


def test_gas_needs_the_papers_columns(tmp_path):
    frame = gas_frame(gas_sensors(50)).drop(columns=["Meth"])
    write_gas(tmp_path, frame)
    with pytest.raises(ValueError, match="Meth"):
        load_gas(tmp_path)


def test_gas_rejects_a_pickle_that_is_not_a_dataframe(tmp_path):
    pd = pytest.importorskip("pandas")
    os.makedirs(tmp_path / "gas")
    pd.to_pickle(np.zeros((5, 5)), tmp_path / "gas" / "ethylene_CO.pickle")
    with pytest.raises(ValueError, match="DataFrame"):
        load_gas(tmp_path)


# --------------------------------------------------------------------------- HEPMASS


@pytest.fixture
def hepmass_files(tmp_path):
    pytest.importorskip("pandas")
    train, test = hepmass_table(300, seed=0), hepmass_table(160, seed=1, offset=0.5)
    write_hepmass(tmp_path, train, test)
    return tmp_path, train, test


def signal_features(table):
    return table[table[:, 0] == 1, 1:28]


def test_hepmass_shapes_and_split_sizes(hepmass_files):
    root, train, test = hepmass_files
    splits = load_hepmass(root)
    assert splits.dim == 21 == len(HEPMASS_KEPT)
    n_signal = int((train[:, 0] == 1).sum())
    assert sizes(splits) == (n_signal - n_signal // 10, n_signal // 10, int((test[:, 0] == 1).sum()))


def test_hepmass_keeps_the_signal_rows_standardised_with_the_training_file(hepmass_files):
    root, train, test = hepmass_files
    splits = load_hepmass(root, dtype=torch.float64)
    reference = signal_features(train)[:, HEPMASS_KEPT]
    # signal rows only, in file order, the last tenth of the training file for validation
    assert_close_to_array(torch.cat([splits.train, splits.valid]), standardised(reference, reference, ddof=1))
    assert_close_to_array(splits.test, standardised(signal_features(test)[:, HEPMASS_KEPT], reference, ddof=1))
    assert splits.valid.shape[0] == len(reference) // 10


def test_hepmass_statistics_come_from_the_training_file(hepmass_files):
    splits = load_hepmass(hepmass_files[0], dtype=torch.float64)
    assert_standard_columns(torch.cat([splits.train, splits.valid]), ddof=1)
    # the test file's signal is shifted by 0.5, which its own statistics would hide
    # (feature 0, the first column, also holds five outliers, so it is left out here)
    assert splits.test[:, 1:].mean() > 0.3


def test_hepmass_drops_features_whose_smallest_value_repeats(hepmass_files):
    root, train, _ = hepmass_files
    features = signal_features(train)
    counts = (features == features.min(0)).sum(0)
    assert counts[HEPMASS_MIN_FIVE_TIMES] == 5 and counts[HEPMASS_MIN_SIX_TIMES] == 6  # the boundary
    assert [k for k in range(27) if counts[k] > 5] == HEPMASS_DROPPED
    splits = load_hepmass(root, dtype=torch.float64)
    # feature 0 (kept) comes first, with its five smallest values tied
    first = torch.cat([splits.train, splits.valid])[:, 0]
    assert (first == first.min()).sum() == 5


def test_hepmass_too_few_columns(tmp_path):
    pytest.importorskip("pandas")
    os.makedirs(tmp_path / "hepmass")
    for name in ("1000_train.csv", "1000_test.csv"):
        np.savetxt(tmp_path / "hepmass" / name, np.ones((4, 10)), delimiter=",", header="a" + ",b" * 9, comments="")
    with pytest.raises(ValueError, match="27 feature"):
        load_hepmass(tmp_path)


# ------------------------------------------------------------------------- MINIBOONE


@pytest.fixture
def miniboone_raw(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(200, 43)) * rng.uniform(0.5, 20, 43) + rng.uniform(-5, 5, 43)
    write_npy(tmp_path, "miniboone", table)
    return tmp_path, table


def test_miniboone_split_in_file_order_standardised_with_train_and_valid(miniboone_raw):
    root, raw = miniboone_raw
    splits = load_miniboone(root, dtype=torch.float64)
    assert splits.dim == 43
    assert sizes(splits) == tail_split_sizes(200) == (162, 18, 20)
    rest = raw[:180]
    assert_close_to_array(splits.train, standardised(raw[:162], rest, ddof=0))
    assert_close_to_array(splits.valid, standardised(raw[162:180], rest, ddof=0))
    assert_close_to_array(splits.test, standardised(raw[180:], rest, ddof=0))
    assert_standard_columns(torch.cat([splits.train, splits.valid]), ddof=0)


def test_miniboone_refuses_the_power_file(tmp_path):
    # Both datasets are a data.npy: pointing at the wrong folder must not pass silently.
    write_npy(tmp_path, "miniboone", power_table(30))
    with pytest.raises(ValueError, match="43"):
        load_miniboone(tmp_path)
