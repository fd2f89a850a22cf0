"""Datasets that never download: files you point at, data packages ship, or data made
here. The loaders of train/validation/test data return a
[`Splits`][flowkit.datasets.Splits] of tensors.

* [`load_made_uci`][flowkit.datasets.load_made_uci]: the MADE paper's binary UCI datasets
  from ``.npz`` files (arrays ``train``, ``valid``, ``test``), in their published splits.
* [`load_digits`][flowkit.datasets.load_digits]: scikit-learn's bundled 8x8 digits.
* [`load_faces`][flowkit.datasets.load_faces]: scikit-image's bundled ``lfw_subset`` (100 faces of 25x25).
* [`toy_2d`][flowkit.datasets.toy_2d]: moons, rings, checkerboard and a mixture of Gaussians, for plots.
"""

from flowkit.datasets.bundled import load_digits, load_faces
from flowkit.datasets.made_uci import load_made_uci
from flowkit.datasets.splits import Splits
from flowkit.datasets.toy import TOY_2D, toy_2d

__all__ = [
    "Splits",
    "TOY_2D",
    "load_digits",
    "load_faces",
    "load_made_uci",
    "toy_2d",
]
