"""The five density-estimation datasets of the MAF paper (Papamakarios, Pavlakou & Murray,
2017, *Masked Autoregressive Flow for Density Estimation*): POWER, GAS, HEPMASS and
MINIBOONE from the UCI repository, and BSDS300 image patches.

flowkit never downloads them. The paper's code (<https://github.com/gpapamak/maf>) reads
them, already preprocessed, from a folder ``data/`` that its README tells you to download
from [Zenodo record 1161203](https://zenodo.org/record/1161203). Unpack that download and
pass the folder holding the sub-folders below as ``root``; the folder of one dataset
(``.../data/gas``) works too. The loaders split and preprocess the files exactly as the
paper's code does, so dimensions and row counts are the paper's:

| name        | files under ``root``                            | dim | train     | valid   | test    |
|-------------|-------------------------------------------------|----:|----------:|--------:|--------:|
| `power`     | ``power/data.npy``                              |   6 | 1,659,917 | 184,435 | 204,928 |
| `gas`       | ``gas/ethylene_CO.pickle``                      |   8 |   852,174 |  94,685 | 105,206 |
| `hepmass`   | ``hepmass/1000_train.csv``, ``1000_test.csv``   |  21 |   315,123 |  35,013 | 174,987 |
| `miniboone` | ``miniboone/data.npy``                          |  43 |    29,556 |   3,284 |   3,648 |
| `bsds300`   | ``BSDS300/BSDS300.hdf5``                        |  63 | 1,000,000 |  50,000 | 250,000 |

Where the paper's code splits a table itself, the test set is the last tenth of the rows
(rounded down) and the validation set the last tenth of the rest, in file order (for POWER,
after a seeded shuffle). GAS reads a pandas pickle and HEPMASS CSV files with pandas,
BSDS300 reads HDF5 with h5py: install them with ``pip install "flowkit[datasets]"``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from flowkit.datasets.splits import Splits

if TYPE_CHECKING:
    import pandas

__all__ = [
    "MAF_DATASETS",
    "load_bsds300",
    "load_gas",
    "load_hepmass",
    "load_maf_dataset",
    "load_miniboone",
    "load_power",
]

_WHERE_TO_GET_THEM = (
    "flowkit never downloads data: get the MAF paper's preprocessed datasets from Zenodo record 1161203 "
    "(https://zenodo.org/record/1161203, linked from https://github.com/gpapamak/maf), unpack them and pass "
    "the folder holding power/, gas/, hepmass/, miniboone/ and BSDS300/ as root."
)


# ----------------------------------------------------------------------------- helpers


def _check_root(root: str | os.PathLike) -> str:
    if not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root: expected a path (str or os.PathLike), got {root!r}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"root: no folder at {root!r}. {_WHERE_TO_GET_THEM}")
    return root


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch.dtype such as torch.float32, got {dtype!r}")


def _locate(root: str | os.PathLike, folder: str, filenames: tuple[str, ...]) -> list[str]:
    """The paths of ``filenames`` in ``root/folder``, or in ``root`` itself when ``root``
    is that dataset's own folder."""
    root = _check_root(root)
    for directory in (os.path.join(root, folder), root):
        paths = [os.path.join(directory, name) for name in filenames]
        if all(os.path.isfile(path) for path in paths):
            return paths
    expected = " and ".join(repr(os.path.join(root, folder, name)) for name in filenames)
    raise FileNotFoundError(
        f"root: expected {expected} (or the same directly in root, if root is the {folder} folder). "
        f"{_WHERE_TO_GET_THEM}"
    )


def _require(module: str, loader: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f'{loader} needs {module}: pip install "flowkit[datasets]"') from error


def _load_npy(path: str, num_columns: int) -> np.ndarray:
    data = np.load(path)  # allow_pickle stays False: an .npy here is plain numbers
    if data.ndim != 2 or data.shape[1] != num_columns:
        raise ValueError(f"root: {path!r} holds an array of shape {data.shape}, expected (rows, {num_columns})")
    return np.asarray(data, dtype=np.float64)


def _split_off_tail(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, valid and test rows the way the paper's code splits a table: the last tenth
    (rounded down) for testing, the last tenth of the rest for validation."""
    rest, test = np.split(data, [len(data) - len(data) // 10])
    train, valid = np.split(rest, [len(rest) - len(rest) // 10])
    return train, valid, test


def _standardise(parts: tuple[np.ndarray, ...], reference: np.ndarray, ddof: int) -> tuple[np.ndarray, ...]:
    """Each part minus the column means of ``reference``, over its column standard deviations."""
    mean, std = reference.mean(axis=0), reference.std(axis=0, ddof=ddof)
    return tuple((part - mean) / std for part in parts)


def _to_splits(parts: tuple[np.ndarray, np.ndarray, np.ndarray], dtype: torch.dtype) -> Splits:
    return Splits(*(torch.as_tensor(part, dtype=dtype, device="cpu") for part in parts))


# ---------------------------------------------------------------------------- loaders


def load_power(root: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Splits:
    """POWER: household electric power consumption, 6 dimensions; 1,659,917 training,
    184,435 validation and 204,928 test rows.

    ``power/data.npy`` holds 8 columns: global active power, global reactive power,
    voltage, global intensity, the three sub-meterings and the time. As the paper's code
    does, this shuffles the rows with ``numpy.random.RandomState(42)``, drops global reactive
    power and global intensity, adds uniform noise of width 0.001 to active power, 0.01 to
    voltage and 1 to each sub-metering (their recording resolutions; the draws come from the
    same generator, in the same order, so the numbers are the paper's), splits off the last
    tenth as test and the last tenth of the rest as validation, and standardises every
    column with the mean and standard deviation of train and validation together. The work
    is done in float64 and converted to ``dtype`` at the end, so the split does not depend
    on ``dtype``.

    Arguments and errors as in [`load_maf_dataset`][flowkit.datasets.load_maf_dataset].
    """
    _check_dtype(dtype)
    (path,) = _locate(root, "power", ("data.npy",))
    raw = _load_npy(path, num_columns=8)
    rng = np.random.RandomState(42)
    data = np.delete(raw[rng.permutation(len(raw))], [1, 3], axis=1)  # permutation == the paper's rng.shuffle
    n = len(data)
    voltage_noise = 0.01 * rng.rand(n, 1)  # drawn before the active power's noise, as in the paper
    active_power_noise = 0.001 * rng.rand(n, 1)
    sub_metering_noise = rng.rand(n, 3)
    data += np.hstack([active_power_noise, voltage_noise, sub_metering_noise, np.zeros((n, 1))])
    train, valid, test = _split_off_tail(data)
    return _to_splits(_standardise((train, valid, test), np.concatenate([train, valid]), ddof=0), dtype)


def _drop_correlated_columns(frame: pandas.DataFrame, threshold: float) -> pandas.DataFrame:
    """Drops, one at a time, the first column whose Pearson correlation with some other
    column exceeds ``threshold``, until no such pair is left (the later column of each
    near-copy pair stays). Only positive correlations count, as in the paper's code."""
    while True:
        has_near_copy = (frame.corr().to_numpy() > threshold).sum(axis=1) > 1  # each column counts itself once
        if not has_near_copy.any():
            return frame
        frame = frame.drop(columns=frame.columns[np.argmax(has_near_copy)])


def load_gas(root: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Splits:
    """GAS: 16 chemical sensors exposed to ethylene and CO, 8 dimensions; 852,174 training,
    94,685 validation and 105,206 test rows.

    ``gas/ethylene_CO.pickle`` is a pickled pandas DataFrame with the columns ``Time``,
    ``Meth``, ``Eth`` and one per sensor. As the paper's code does, this drops ``Time``,
    ``Meth`` and ``Eth``, then removes highly correlated sensors one at a time (while some
    column has a correlation above 0.98 with another, the first such column goes),
    standardises every column with the mean and standard deviation (``ddof=1``, pandas'
    default) of all rows, and splits off the last tenth as test and the last tenth of the
    rest as validation, in file order.

    Warning:
        Loading a pickle runs code stored in the file: only load a file you trust, such as
        the one from the paper's release.

    Needs pandas; arguments and errors as in [`load_maf_dataset`][flowkit.datasets.load_maf_dataset].
    """
    _check_dtype(dtype)
    (path,) = _locate(root, "gas", ("ethylene_CO.pickle",))
    pd = _require("pandas", "load_gas")
    frame = pd.read_pickle(path)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"root: {path!r} holds a {type(frame).__name__}, expected a pandas DataFrame")
    missing = {"Time", "Meth", "Eth"} - set(frame.columns)
    if missing or frame.shape[1] < 4:
        raise ValueError(
            f"root: {path!r} must hold the columns 'Time', 'Meth', 'Eth' and the sensors; "
            f"it has {list(frame.columns)}"
        )
    sensors = _drop_correlated_columns(frame.drop(columns=["Time", "Meth", "Eth"]), threshold=0.98)
    data = sensors.to_numpy(dtype=np.float64)
    (data,) = _standardise((data,), data, ddof=1)
    return _to_splits(_split_off_tail(data), dtype)


def _read_hepmass_signal(pd: ModuleType, path: str) -> np.ndarray:
    """The 27 features of the signal rows (label 1) of a HEPMASS CSV file.

    Column 0 is the label and columns 1-27 the features ``f0``-``f26``. Columns after them
    (the mass, which the paper's code leaves out of both files) are ignored. The two files'
    header lines do not match (the test file's names one column more), so the header is
    skipped and the columns are taken by position.
    """
    try:
        table = pd.read_csv(path, header=None, skiprows=1, usecols=range(28), dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"root: {path!r} must have a label and 27 feature columns ({error})") from error
    table = table.to_numpy()
    return table[table[:, 0] == 1, 1:]


def load_hepmass(root: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Splits:
    """HEPMASS: particle collisions (the '1000' set, signal mass 1000), 21 dimensions;
    315,123 training, 35,013 validation and 174,987 test rows.

    As the paper's code does, this keeps the signal rows (label 1) of
    ``hepmass/1000_train.csv`` and ``hepmass/1000_test.csv`` and their 27 features,
    standardises both with the mean and standard deviation (``ddof=1``, pandas' default) of
    the training file's rows, and drops every feature whose smallest value occurs more than
    5 times in the training file (the discrete features: the paper's code counts the
    smallest value's repeats). The last tenth of the training file's rows, in file order,
    becomes the validation set; the test file is the test set.

    Needs pandas; arguments and errors as in [`load_maf_dataset`][flowkit.datasets.load_maf_dataset].
    """
    _check_dtype(dtype)
    train_path, test_path = _locate(root, "hepmass", ("1000_train.csv", "1000_test.csv"))
    pd = _require("pandas", "load_hepmass")
    train, test = _read_hepmass_signal(pd, train_path), _read_hepmass_signal(pd, test_path)
    # Standardising is per column, so dropping columns before it gives the same numbers.
    continuous = (train == train.min(axis=0)).sum(axis=0) <= 5
    train, test = _standardise((train[:, continuous], test[:, continuous]), train[:, continuous], ddof=1)
    train, valid = np.split(train, [len(train) - len(train) // 10])
    return _to_splits((train, valid, test), dtype)


def load_miniboone(root: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Splits:
    """MINIBOONE: particle identification in the MiniBooNE experiment (signal and
    background events, outliers already removed), 43 dimensions; 29,556 training, 3,284
    validation and 3,648 test rows.

    As the paper's code does, this splits the 43 columns of ``miniboone/data.npy`` in file
    order (the last tenth for testing, the last tenth of the rest for validation) and
    standardises every column with the mean and standard deviation of train and validation
    together.

    Arguments and errors as in [`load_maf_dataset`][flowkit.datasets.load_maf_dataset].
    """
    _check_dtype(dtype)
    (path,) = _locate(root, "miniboone", ("data.npy",))
    train, valid, test = _split_off_tail(_load_npy(path, num_columns=43))
    return _to_splits(_standardise((train, valid, test), np.concatenate([train, valid]), ddof=0), dtype)


def load_bsds300(root: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Splits:
    """BSDS300: 8x8 patches of natural images with the bottom-right pixel left out, 63
    dimensions; 1,000,000 training, 50,000 validation and 250,000 test patches.

    The arrays ``train``, ``validation`` and ``test`` of ``BSDS300/BSDS300.hdf5``, as they
    are (the paper's code uses them unchanged).

    Needs h5py; arguments and errors as in [`load_maf_dataset`][flowkit.datasets.load_maf_dataset].
    """
    _check_dtype(dtype)
    (path,) = _locate(root, "BSDS300", ("BSDS300.hdf5",))
    h5py = _require("h5py", "load_bsds300")
    with h5py.File(path, "r") as file:
        missing = [name for name in ("train", "validation", "test") if name not in file]
        if missing:
            raise ValueError(f"root: {path!r} lacks the arrays {missing}")
        parts = tuple(np.asarray(file[name][()]) for name in ("train", "validation", "test"))
    for name, part in zip(("train", "validation", "test"), parts):
        if part.ndim != 2 or part.shape[1] != 63:
            raise ValueError(f"root: array {name!r} of {path!r} has shape {part.shape}, expected (rows, 63)")
    return _to_splits(parts, dtype)


MAF_DATASETS = ("power", "gas", "hepmass", "miniboone", "bsds300")
"""The names [`load_maf_dataset`][flowkit.datasets.load_maf_dataset] takes."""
_LOADERS: dict[str, Callable[..., Splits]] = dict(
    zip(MAF_DATASETS, (load_power, load_gas, load_hepmass, load_miniboone, load_bsds300))
)


def load_maf_dataset(name: str, root: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Splits:
    """One of the MAF paper's datasets by name: ``"power"``, ``"gas"``, ``"hepmass"``,
    ``"miniboone"`` or ``"bsds300"`` (any case), through [`load_power`][flowkit.datasets.load_power],
    [`load_gas`][flowkit.datasets.load_gas], [`load_hepmass`][flowkit.datasets.load_hepmass],
    [`load_miniboone`][flowkit.datasets.load_miniboone] or [`load_bsds300`][flowkit.datasets.load_bsds300].

    Args:
        name: The dataset, one of [`MAF_DATASETS`][flowkit.datasets.MAF_DATASETS].
        root: The folder holding the paper's ``power/``, ``gas/``, ``hepmass/``,
            ``miniboone/`` and ``BSDS300/`` (the release's ``data/``), or the dataset's
            own folder.
        dtype: The tensor dtype (floating).

    Raises:
        ValueError: For an unknown ``name``, a ``root`` that is not a path, a ``dtype``
            that is not floating, or a file that does not hold what the paper's release does.
        FileNotFoundError: When a file is absent (flowkit never downloads), with where to get it.
        ImportError: Without pandas for GAS and HEPMASS, without h5py for BSDS300
            (``pip install "flowkit[datasets]"``).

    Examples:
        A stand-in for ``miniboone/data.npy`` (random numbers, 100 rows of 43 columns):

        >>> import os, tempfile
        >>> import numpy as np
        >>> table = np.random.default_rng(0).normal(size=(100, 43))
        >>> with tempfile.TemporaryDirectory() as root:
        ...     os.mkdir(os.path.join(root, "miniboone"))
        ...     np.save(os.path.join(root, "miniboone", "data.npy"), table)
        ...     splits = load_maf_dataset("MINIBOONE", root)
        >>> splits.dim, len(splits.train), len(splits.valid), len(splits.test)
        (43, 81, 9, 10)
    """
    key = name.lower() if isinstance(name, str) else None
    if key not in _LOADERS:
        raise ValueError(f"name: expected one of {MAF_DATASETS} (any case), got {name!r}")
    return _LOADERS[key](root, dtype)
