"""Datasets that never download: files you point at, data packages ship, or data made
here.

* [`load_made_uci`][flowkit.datasets.load_made_uci]: the MADE paper's binary UCI datasets from ``.npz`` files
  (arrays ``train``, ``valid``, ``test``), in their published splits.
* [`load_digits`][flowkit.datasets.load_digits]: scikit-learn's bundled 8x8 digits.
* [`load_faces`][flowkit.datasets.load_faces]: scikit-image's bundled ``lfw_subset`` (100 faces of 25x25).
* [`toy_2d`][flowkit.datasets.toy_2d]: moons, rings, checkerboard and a mixture of Gaussians, for plots.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Splits", "load_digits", "load_faces", "load_made_uci", "toy_2d", "TOY_2D"]

TOY_2D = ("moons", "rings", "checkerboard", "gaussians")


@dataclass
class Splits:
    """Train, validation and test rows (float tensors unless said otherwise)."""

    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def dim(self) -> int:
        """The number of columns."""
        return self.train.shape[-1]


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
        parts = [torch.as_tensor(np.asarray(arrays[name]), dtype=dtype) for name in ("train", "valid", "test")]
    for name, part in zip(("train", "valid", "test"), parts):
        if part.dim() != 2 or not ((part == 0) | (part == 1)).all():
            raise ValueError(f"path: array {name!r} of {path!r} must be a 2-D array of 0/1 values")
    return Splits(*parts)


def _split_rows(x: Tensor, fractions: tuple[float, float], seed: int) -> Splits:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_valid, n_test = (int(round(f * len(x))) for f in fractions)
    valid, test, train = order[:n_valid], order[n_valid : n_valid + n_test], order[n_valid + n_test :]
    return Splits(x[train], x[valid], x[test])


def load_digits(binarize: bool = True, seed: int = 0, fractions: tuple[float, float] = (0.1, 0.2)) -> Splits:
    """scikit-learn's 8x8 digits (1,797 images, 64 pixels with values 0..16), shuffled
    with ``seed`` into train/valid/test (``fractions`` gives valid and test).

    Args:
        binarize: Threshold at 8 to 0/1 floats; else pixel values 0..16 as floats.
        seed: The split's seed.
        fractions: The validation and test fractions.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    pixels = torch.as_tensor(sklearn_digits().data, dtype=torch.float32)
    return _split_rows((pixels >= 8).float() if binarize else pixels, fractions, seed)


def load_faces(num_train: int = 80, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The 100 faces (25x25, grey levels in [0, 1]) of scikit-image's bundled
    ``lfw_subset``, flattened to 625 columns and split at random into ``num_train``
    training faces and the rest for testing."""
    if isinstance(num_train, bool) or not isinstance(num_train, int) or not 0 < num_train < 100:
        raise ValueError(f"num_train: expected an int in [1, 99], got {num_train!r}")
    from skimage.data import lfw_subset

    faces = torch.as_tensor(lfw_subset()[:100].reshape(100, -1), dtype=torch.float32)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(seed))
    return faces[order[:num_train]], faces[order[num_train:]]


def toy_2d(name: str, num_samples: int, seed: int = 0) -> Tensor:
    """Samples from a 2-D toy density: ``"moons"``, ``"rings"``, ``"checkerboard"`` or
    ``"gaussians"`` (eight Gaussians on a circle). Roughly centred, scale ~1-4.

    Examples:
        >>> toy_2d("moons", 5).shape
        torch.Size([5, 2])
    """
    if name not in TOY_2D:
        raise ValueError(f"name: expected one of {TOY_2D}, got {name!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
    g = torch.Generator().manual_seed(seed)
    n = num_samples
    if name == "moons":
        t = math.pi * torch.rand(n, generator=g)
        upper = torch.rand(n, generator=g) < 0.5
        x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
        points = torch.stack([x - 0.5, y - 0.25], -1) * 2
        return points + 0.1 * torch.randn(n, 2, generator=g)
    if name == "rings":
        radius = 1.0 + torch.randint(0, 3, (n,), generator=g).float()
        angle = 2 * math.pi * torch.rand(n, generator=g)
        points = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        return points + 0.08 * torch.randn(n, 2, generator=g)
    if name == "checkerboard":
        x = 4 * torch.rand(n, generator=g) - 2
        y = torch.rand(n, generator=g) + torch.randint(0, 2, (n,), generator=g).float() * 2 - 2
        y = y + (torch.floor(x) % 2)
        return torch.stack([x, y], -1) * 2
    angle = 2 * math.pi * torch.randint(0, 8, (n,), generator=g).float() / 8
    centres = 3 * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centres + 0.3 * torch.randn(n, 2, generator=g)
