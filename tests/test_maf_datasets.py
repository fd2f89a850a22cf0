"""flowkit.datasets' loaders for the MAF paper's five datasets, on small files written here
in the format of the paper's release (the real files are large and never downloaded).

Each test checks what the paper's code does to a file: the split (sizes, file order or the
seeded shuffle, disjoint rows), the columns it drops and the standardisation, and the
errors for absent files and bad arguments.
"""

import os
import sys

import numpy as np
import pytest
import torch

from flowkit.datasets import (
    MAF_DATASETS,
    Splits,
    load_bsds300,
    load_gas,
    load_hepmass,
    load_maf_dataset,
    load_miniboone,
    load_power,
)

LOADERS = {
    "power": load_power,
    "gas": load_gas,
    "hepmass": load_hepmass,
    "miniboone": load_miniboone,
    "bsds300": load_bsds300,
}
FILES = {
    "power": ["power/data.npy"],
    "gas": ["gas/ethylene_CO.pickle"],
    "hepmass": ["hepmass/1000_train.csv", "hepmass/1000_test.csv"],
    "miniboone": ["miniboone/data.npy"],
    "bsds300": ["BSDS300/BSDS300.hdf5"],
}


def tail_split_sizes(n):
    """Train, valid, test sizes of the paper's split: the last tenth (rounded down) of the
    rows for testing, the last tenth of the rest for validation."""
    n_test = n // 10
    n_valid = (n - n_test) // 10
    return n - n_test - n_valid, n_valid, n_test


def sizes(splits):
    return len(splits.train), len(splits.valid), len(splits.test)


def parts(splits):
    return splits.train, splits.valid, splits.test


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


# ------------------------------------------------------------------ small fake files


def power_table(n, seed=0):
    """8 columns like power/data.npy, each on its recording grid; the time is distinct per row."""
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.integers(100, 5000, n) / 1000,  # global active power (kW)
            rng.integers(0, 500, n) / 1000,  # global reactive power (kW), dropped
            rng.integers(22000, 25000, n) / 100,  # voltage (V)
            rng.integers(0, 200, n) / 10,  # global intensity (A), dropped
            rng.integers(0, 40, n),  # sub-metering 1 (Wh)
            rng.integers(0, 40, n),  # sub-metering 2 (Wh)
            rng.integers(0, 20, n),  # sub-metering 3 (Wh)
            np.arange(n),  # time
        ]
    ).astype(np.float64)


def write_npy(root, folder, table):
    os.makedirs(root / folder, exist_ok=True)
    np.save(root / folder / "data.npy", table)


def gas_sensors(n, seed=0):
    """16 sensor columns: 8 base signals, then a near-copy of each (correlation > 0.999).
    Sensors 2 and 3 correlate at about 0.89, below the paper's threshold of 0.98."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 8))
    base[:, 2] = 0.9 * base[:, 1] + 0.45 * base[:, 2]
    copies = 2 * base + 3 + 0.01 * rng.normal(size=(n, 8))
    return np.hstack([base, copies])


def gas_frame(sensors, seed=1):
    """A DataFrame like ethylene_CO.pickle. The paper's code names only the columns Time,
    Meth and Eth; the sensor names here are made up."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    n = len(sensors)
    columns = {"Time": 0.01 * np.arange(n), "Meth": rng.uniform(0, 600, n), "Eth": rng.uniform(0, 20, n)}
    columns.update({f"sensor{k + 1}": sensors[:, k] for k in range(sensors.shape[1])})
    return pd.DataFrame(columns)


def write_gas(root, frame):
    os.makedirs(root / "gas", exist_ok=True)
    frame.to_pickle(root / "gas" / "ethylene_CO.pickle")


HEPMASS_DISCRETE = [5, 9, 13, 17, 21]  # like the number of jets and the b-tags
HEPMASS_MIN_FIVE_TIMES = 0  # its smallest value occurs 5 times among the signal rows: kept
HEPMASS_MIN_SIX_TIMES = 1  # 6 times: dropped
HEPMASS_DROPPED = sorted([HEPMASS_MIN_SIX_TIMES, *HEPMASS_DISCRETE])
HEPMASS_KEPT = [k for k in range(27) if k not in HEPMASS_DROPPED]


def hepmass_table(n, seed, offset=0.0):
    """Label, 27 features and the mass, rounded to 6 decimals as written. Signal rows
    (label 1) have standard-normal features (plus ``offset``) and 5 discrete ones;
    background rows sit far away (+50), so using them anywhere would show."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.float64)
    features = rng.normal(size=(n, 27)) + offset
    features[:, HEPMASS_DISCRETE] = rng.integers(0, 3, size=(n, len(HEPMASS_DISCRETE)))
    features[labels == 0] += 50
    signal = np.flatnonzero(labels == 1)
    features[signal[:5], HEPMASS_MIN_FIVE_TIMES] = -10.0
    features[signal[5:11], HEPMASS_MIN_SIX_TIMES] = -10.0
    # Two background rows share feature 0's smallest value: counted, they would push it to 7.
    features[np.flatnonzero(labels == 0)[:2], HEPMASS_MIN_FIVE_TIMES] = -10.0
    mass = np.where(labels == 1, 1000.0, rng.choice([500.0, 750.0, 1250.0, 1500.0], n))
    return np.round(np.column_stack([labels, features, mass]), 6)


def write_hepmass_csv(path, table, header_names_mass):
    """The release's layout: 1000_test.csv's header names the mass column, 1000_train.csv's
    header does not (its rows still carry the value)."""
    names = ["# label"] + [f"f{k}" for k in range(27)] + (["mass"] if header_names_mass else [])
    np.savetxt(path, table, fmt="%.6f", delimiter=",", header=",".join(names), comments="")


def write_hepmass(root, train_table, test_table):
    os.makedirs(root / "hepmass", exist_ok=True)
    write_hepmass_csv(root / "hepmass" / "1000_train.csv", train_table, header_names_mass=False)
    write_hepmass_csv(root / "hepmass" / "1000_test.csv", test_table, header_names_mass=True)


def bsds300_arrays(seed=0):
    rng = np.random.default_rng(seed)
    rows = {"train": 20, "validation": 5, "test": 7}
    return {name: rng.uniform(-0.5, 0.5, size=(n, 63)).astype(np.float32) for name, n in rows.items()}


def write_bsds300(root, arrays):
    h5py = pytest.importorskip("h5py")
    os.makedirs(root / "BSDS300", exist_ok=True)
    with h5py.File(root / "BSDS300" / "BSDS300.hdf5", "w") as file:
        for name, array in arrays.items():
            file.create_dataset(name, data=array)


@pytest.fixture
def all_five(tmp_path):
    """A root folder holding small versions of all five datasets."""
    write_npy(tmp_path, "power", power_table(60))
    write_gas(tmp_path, gas_frame(gas_sensors(60)))
    write_hepmass(tmp_path, hepmass_table(80, seed=0), hepmass_table(30, seed=1))
    write_npy(tmp_path, "miniboone", np.random.default_rng(0).normal(size=(50, 43)))
    write_bsds300(tmp_path, bsds300_arrays())
    return tmp_path


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


# --------------------------------------------------------------------------- BSDS300


def test_bsds300_returns_the_files_arrays(tmp_path):
    arrays = bsds300_arrays()
    write_bsds300(tmp_path, arrays)
    splits = load_bsds300(tmp_path)
    assert splits.dim == 63
    for part, name in zip(parts(splits), ("train", "validation", "test")):
        assert part.dtype == torch.float32
        assert torch.equal(part, torch.as_tensor(arrays[name]))
    assert load_bsds300(tmp_path, dtype=torch.float64).test.dtype == torch.float64


def test_bsds300_lacking_validation(tmp_path):
    arrays = bsds300_arrays()
    del arrays["validation"]
    write_bsds300(tmp_path, arrays)
    with pytest.raises(ValueError, match="validation"):
        load_bsds300(tmp_path)


def test_bsds300_wrong_width(tmp_path):
    arrays = bsds300_arrays()
    arrays["test"] = arrays["test"][:, :60]
    write_bsds300(tmp_path, arrays)
    with pytest.raises(ValueError, match="63"):
        load_bsds300(tmp_path)


# ------------------------------------------------------------ entry point and folders


@pytest.mark.parametrize("name", MAF_DATASETS)
def test_load_maf_dataset_dispatches_by_name_in_any_case(all_five, name):
    direct = LOADERS[name](all_five)
    for spelling in (name, name.upper()):
        by_name = load_maf_dataset(spelling, all_five)
        for a, b in zip(parts(by_name), parts(direct)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", MAF_DATASETS)
def test_root_may_be_the_datasets_own_folder(all_five, name):
    folder = os.path.dirname(FILES[name][0])
    from_root, from_folder = LOADERS[name](all_five), LOADERS[name](all_five / folder)
    for a, b in zip(parts(from_root), parts(from_folder)):
        assert torch.equal(a, b)


def test_maf_datasets_names():
    assert MAF_DATASETS == ("power", "gas", "hepmass", "miniboone", "bsds300")


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", MAF_DATASETS)
def test_missing_files_say_where_to_get_them(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="root") as info:
        load_maf_dataset(name, tmp_path)
    message = str(info.value)
    for relative in FILES[name]:
        assert os.path.join(str(tmp_path), *relative.split("/")) in message
    assert "zenodo.org/record/1161203" in message and "github.com/gpapamak/maf" in message
    assert "never downloads" in message


def test_hepmass_with_only_the_training_file(tmp_path):
    os.makedirs(tmp_path / "hepmass")
    write_hepmass_csv(tmp_path / "hepmass" / "1000_train.csv", hepmass_table(20, seed=0), header_names_mass=False)
    with pytest.raises(FileNotFoundError, match="1000_test.csv"):
        load_hepmass(tmp_path)


def test_missing_root_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="root.*no folder"):
        load_power(tmp_path / "nope")


@pytest.mark.parametrize("name", ["mnist", "Power ", "", None, 3])
def test_unknown_name(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        load_maf_dataset(name, tmp_path)


@pytest.mark.parametrize("root", [None, 3, ["data"]])
@pytest.mark.parametrize("name", MAF_DATASETS)
def test_root_not_a_path(name, root):
    with pytest.raises(ValueError, match="root"):
        load_maf_dataset(name, root)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, "float32", np.float32])
@pytest.mark.parametrize("name", MAF_DATASETS)
def test_dtype_not_floating(tmp_path, name, dtype):
    with pytest.raises(ValueError, match="dtype"):
        load_maf_dataset(name, tmp_path, dtype=dtype)


@pytest.mark.parametrize(("name", "module"), [("gas", "pandas"), ("hepmass", "pandas"), ("bsds300", "h5py")])
def test_missing_optional_dependency(all_five, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=module) as info:
        load_maf_dataset(name, all_five)
    assert 'pip install "flowkit[datasets]"' in str(info.value)
