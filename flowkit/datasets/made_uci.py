"""The MADE paper's binary UCI datasets, from ``.npz`` files you provide."""

from __future__ import annotations

import os

import numpy as np
import torch

from flowkit.datasets.splits import Splits

__all__ = ["load_made_uci"]


def load_made_uci(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Splits:
    """Loads one of the MADE paper's binary datasets from an ``.npz`` file holding the
    arrays ``train``, ``valid`` and ``test`` (0/1 values).

    Args:
        path: The ``.npz`` file, e.g. ``.../made-uci/dna.npz``.
        dtype: The tensor dtype.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"path: no file at {path!r}. The MADE paper's binary datasets (adult, connect4, dna, mushrooms, "
            "nips, ocr_letters, rcv1, web) come with its code release; store each as an .npz file with "
            "arrays 'train', 'valid' and 'test'."
        )
    with np.load(path) as arrays:
        missing = {"train", "valid", "test"} - set(arrays.files)
        if missing:
            raise ValueError(f"path: {path!r} lacks the arrays {sorted(missing)}")
        parts = [torch.as_tensor(np.asarray(arrays[name]), dtype=dtype, device="cpu") for name in ("train", "valid", "test")]
    for name, part in zip(("train", "valid", "test"), parts):
        if part.dim() != 2 or not ((part == 0) | (part == 1)).all():
            raise ValueError(f"path: array {name!r} of {path!r} must be a 2-D array of 0/1 values")
    return Splits(*parts)
