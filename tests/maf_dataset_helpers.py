"""Helpers shared by the MAF-dataset test files (test_maf_datasets*.py): small fake POWER, GAS
and HEPMASS files in the format of the paper's release, and the parts of a split."""

import os

import numpy as np
import pytest

def parts(splits):
    return splits.train, splits.valid, splits.test


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
