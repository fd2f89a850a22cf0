"""Datasets that scikit-learn and scikit-image ship: the 8x8 digits and a subset of faces."""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit.datasets.splits import Splits

__all__ = ["load_digits", "load_faces"]


def _split_rows(x: Tensor, fractions: tuple[float, float], seed: int) -> Splits:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed), device="cpu")
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

    pixels = torch.as_tensor(sklearn_digits().data, dtype=torch.float32, device="cpu")
    return _split_rows((pixels >= 8).float() if binarize else pixels, fractions, seed)


def load_faces(num_train: int = 80, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The 100 faces (25x25, grey levels in [0, 1]) of scikit-image's bundled
    ``lfw_subset``, flattened to 625 columns and split at random into ``num_train``
    training faces and the rest for testing.

    Args:
        num_train: Faces for training (1 to 99); the rest are for testing.
        seed: Fixes the split.

    Returns:
        ``(train, test)`` tensors of shape ``(num_train, 625)`` and ``(100 - num_train, 625)``.
    """
    if isinstance(num_train, bool) or not isinstance(num_train, int) or not 0 < num_train < 100:
        raise ValueError(f"num_train: expected an int in [1, 99], got {num_train!r}")
    from skimage.data import lfw_subset

    faces = torch.as_tensor(lfw_subset()[:100].reshape(100, -1), dtype=torch.float32, device="cpu")
    order = torch.randperm(100, generator=torch.Generator().manual_seed(seed), device="cpu")
    return faces[order[:num_train]], faces[order[num_train:]]
