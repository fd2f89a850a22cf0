"""Datasets that never download: files you point at, data packages ship, or data made
here. The loaders of train/validation/test data return a
[`Splits`][flowkit.datasets.Splits] of tensors. Every loader returns CPU tensors, whatever
torch's default device: [`fit`][flowkit.training.fit] moves each minibatch to the model.

* [`load_maf_dataset`][flowkit.datasets.load_maf_dataset]: the MAF paper's five
  density-estimation datasets (POWER, GAS, HEPMASS, MINIBOONE, BSDS300) from the files of
  its code release, split and preprocessed as the paper's code does.
* [`load_made_uci`][flowkit.datasets.load_made_uci]: the MADE paper's binary UCI datasets
  from ``.npz`` files (arrays ``train``, ``valid``, ``test``), in their published splits.
* [`load_digits`][flowkit.datasets.load_digits]: scikit-learn's bundled 8x8 digits.
* [`load_faces`][flowkit.datasets.load_faces]: scikit-image's bundled ``lfw_subset`` (100 faces of 25x25).
* [`toy_2d`][flowkit.datasets.toy_2d]: moons, rings, checkerboard and a mixture of Gaussians, for plots.
* [`gaussian_mixture`][flowkit.datasets.gaussian_mixture]: a random mixture of correlated
  Gaussians in any dimension, with an exact log-density: as many rows as wanted.
"""

from flowkit.datasets.bundled import load_digits, load_faces
from flowkit.datasets.made_uci import load_made_uci
from flowkit.datasets.maf_paper import (
    MAF_DATASETS,
    load_bsds300,
    load_gas,
    load_hepmass,
    load_maf_dataset,
    load_miniboone,
    load_power,
)
from flowkit.datasets.splits import Splits
from flowkit.datasets.synthetic import GaussianMixture, gaussian_mixture
from flowkit.datasets.toy import TOY_2D, toy_2d

__all__ = [
    "GaussianMixture",
    "MAF_DATASETS",
    "Splits",
    "TOY_2D",
    "gaussian_mixture",
    "load_bsds300",
    "load_digits",
    "load_faces",
    "load_gas",
    "load_hepmass",
    "load_maf_dataset",
    "load_made_uci",
    "load_miniboone",
    "load_power",
    "toy_2d",
]
