"""flowkit.datasets: the BSDS300 loader, the entry point over all five MAF datasets and its
folders, and the errors for absent files and bad arguments (on small fake files)."""

import os
import sys

import numpy as np
import pytest
import torch

from flowkit.datasets import (
    MAF_DATASETS,
    load_bsds300,
    load_gas,
    load_hepmass,
    load_maf_dataset,
    load_miniboone,
    load_power,
)
from maf_dataset_helpers import (
    gas_frame,
    gas_sensors,
    hepmass_table,
    parts,
    power_table,
    write_gas,
    write_hepmass,
    write_hepmass_csv,
    write_npy,
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
