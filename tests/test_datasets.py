"""flowkit.datasets: the MADE UCI .npz loader (on small files made here), the bundled
digits and faces, and the 2-D toy densities."""

import numpy as np
import pytest
import torch

from flowkit import datasets
from flowkit.datasets import TOY_2D, Splits, load_digits, load_faces, load_made_uci, toy_2d

# ----------------------------------------------------------------------- helpers


def binary_array(rows, cols, seed):
    return np.random.default_rng(seed).integers(0, 2, size=(rows, cols))


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def sorted_rows(x):
    """Rows in lexicographic order, so two tensors can be compared as multisets."""
    x = x.double()
    for column in reversed(range(x.shape[1])):
        x = x[torch.sort(x[:, column], stable=True).indices]
    return x


def as_row_set(x):
    return {tuple(row) for row in x.tolist()}


# ----------------------------------------------------------------- MADE UCI


@pytest.fixture
def uci_file(tmp_path):
    return write_npz(
        tmp_path / "tiny.npz",
        train=binary_array(20, 6, seed=0),
        valid=binary_array(5, 6, seed=1),
        test=binary_array(7, 6, seed=2),
    )


def test_load_made_uci_shapes_dtype_and_values(uci_file):
    splits = load_made_uci(uci_file)
    assert isinstance(splits, Splits)
    assert splits.train.shape == (20, 6)
    assert splits.valid.shape == (5, 6)
    assert splits.test.shape == (7, 6)
    assert splits.dim == 6
    for part, seed in ((splits.train, 0), (splits.valid, 1), (splits.test, 2)):
        assert part.dtype == torch.float32
        # the arrays come back unchanged and in their published order
        assert torch.equal(part, torch.as_tensor(binary_array(len(part), 6, seed), dtype=torch.float32))


def test_load_made_uci_dtype_and_str_path(uci_file):
    splits = load_made_uci(str(uci_file), dtype=torch.float64)
    assert splits.train.dtype == splits.valid.dtype == splits.test.dtype == torch.float64


def test_load_made_uci_accepts_boolean_and_float_arrays(tmp_path):
    path = write_npz(
        tmp_path / "bool.npz",
        train=binary_array(4, 3, 0).astype(bool),
        valid=binary_array(2, 3, 1).astype(np.float64),
        test=binary_array(2, 3, 2).astype(np.uint8),
    )
    splits = load_made_uci(path)
    assert torch.equal(splits.train, torch.as_tensor(binary_array(4, 3, 0), dtype=torch.float32))


def test_load_made_uci_missing_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="path") as info:
        load_made_uci(missing)
    message = str(info.value)
    assert "nope.npz" in message
    for name in ("train", "valid", "test"):
        assert name in message  # says which arrays the file must hold


def test_load_made_uci_a_directory_is_not_a_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        load_made_uci(tmp_path)


def test_load_made_uci_lacking_valid(tmp_path):
    path = write_npz(tmp_path / "novalid.npz", train=binary_array(4, 3, 0), test=binary_array(2, 3, 1))
    with pytest.raises(ValueError, match="valid"):
        load_made_uci(path)


@pytest.mark.parametrize("bad_part", ["train", "valid", "test"])
@pytest.mark.parametrize("bad_value", [2, -1, 0.5])
def test_load_made_uci_non_binary(tmp_path, bad_part, bad_value):
    arrays = {name: binary_array(4, 3, seed).astype(np.float64) for seed, name in enumerate(("train", "valid", "test"))}
    arrays[bad_part][1, 2] = bad_value
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=bad_part):
        load_made_uci(path)


def test_load_made_uci_not_two_dimensional(tmp_path):
    path = write_npz(tmp_path / "flat.npz", train=np.ones(5), valid=np.ones((2, 5)), test=np.ones((2, 5)))
    with pytest.raises(ValueError, match="train"):
        load_made_uci(path)


# -------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sklearn_pixels():
    from sklearn.datasets import load_digits as sklearn_digits

    return torch.as_tensor(sklearn_digits().data, dtype=torch.float32)


@pytest.fixture(scope="module")
def digits_binary():
    return load_digits()


@pytest.fixture(scope="module")
def digits_raw():
    return load_digits(binarize=False)


def test_load_digits_shapes(digits_binary):
    sizes = [len(part) for part in (digits_binary.train, digits_binary.valid, digits_binary.test)]
    assert sum(sizes) == 1797
    # default fractions: 10% validation, 20% test
    assert sizes[1] == round(0.1 * 1797) and sizes[2] == round(0.2 * 1797)
    assert digits_binary.dim == 64
    assert all(part.shape[1] == 64 and part.dtype == torch.float32 for part in vars(digits_binary).values())


def test_load_digits_binarized_values(digits_binary, sklearn_pixels):
    everything = torch.cat([digits_binary.train, digits_binary.valid, digits_binary.test])
    assert set(everything.unique().tolist()) == {0.0, 1.0}
    # documented threshold: pixel >= 8 -> 1
    assert torch.equal(sorted_rows(everything), sorted_rows((sklearn_pixels >= 8).float()))


def test_load_digits_raw_values(digits_raw, sklearn_pixels):
    everything = torch.cat([digits_raw.train, digits_raw.valid, digits_raw.test])
    assert everything.min() == 0 and everything.max() == 16
    assert torch.equal(everything, everything.round())
    assert len(everything.unique()) > 2
    # the splits partition the original rows (a multiset equality: every row used once)
    assert torch.equal(sorted_rows(everything), sorted_rows(sklearn_pixels))


def test_load_digits_splits_are_disjoint(digits_raw, sklearn_pixels):
    assert len(as_row_set(sklearn_pixels)) == 1797
    # the 1,797 raw digit images are all distinct, so overlapping row sets would mean a
    # row was used in two splits
    train, valid, test = (as_row_set(part) for part in (digits_raw.train, digits_raw.valid, digits_raw.test))
    assert not (train & valid) and not (train & test) and not (valid & test)


def test_load_digits_split_is_deterministic_for_a_seed(digits_binary):
    again = load_digits(seed=0)
    for a, b in zip(vars(digits_binary).values(), vars(again).values()):
        assert torch.equal(a, b)


def test_load_digits_another_seed_gives_another_split(digits_raw):
    other = load_digits(binarize=False, seed=1)
    assert not torch.equal(other.test, digits_raw.test)
    assert as_row_set(other.test) != as_row_set(digits_raw.test)
    assert len(other.test) == len(digits_raw.test)


def test_load_digits_fractions():
    splits = load_digits(fractions=(0.25, 0.25))
    assert (len(splits.valid), len(splits.test)) == (round(0.25 * 1797), round(0.25 * 1797))
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 1797


# --------------------------------------------------------------------- faces


@pytest.fixture(scope="module")
def faces():
    from skimage.data import lfw_subset

    return torch.as_tensor(lfw_subset()[:100].reshape(100, -1), dtype=torch.float32)


def test_load_faces_shapes_and_range(faces):
    train, test = load_faces()
    assert train.shape == (80, 625) and test.shape == (20, 625)
    assert train.dtype == test.dtype == torch.float32
    for part in (train, test):
        assert part.min() >= 0 and part.max() <= 1
    # together they are the 100 faces, each once
    assert torch.equal(sorted_rows(torch.cat([train, test])), sorted_rows(faces))


def test_load_faces_num_train_and_seed():
    train, test = load_faces(num_train=30, seed=3)
    assert train.shape == (30, 625) and test.shape == (70, 625)
    again_train, _ = load_faces(num_train=30, seed=3)
    other_train, _ = load_faces(num_train=30, seed=4)
    assert torch.equal(train, again_train)
    assert not torch.equal(train, other_train)


@pytest.mark.parametrize("num_train", [1, 99])
def test_load_faces_num_train_bounds_accepted(num_train):
    train, test = load_faces(num_train=num_train)
    assert len(train) == num_train and len(test) == 100 - num_train


@pytest.mark.parametrize("num_train", [0, 100, -5, 150])
def test_load_faces_num_train_out_of_range(num_train):
    with pytest.raises(ValueError, match="num_train"):
        load_faces(num_train=num_train)


# -------------------------------------------------------------------- toy 2-D


@pytest.mark.parametrize("name", TOY_2D)
def test_toy_2d_shape_and_values(name):
    points = toy_2d(name, 500)
    assert points.shape == (500, 2)
    assert points.dtype == torch.float32
    assert torch.isfinite(points).all()
    assert points.abs().max() < 10  # "roughly centred, scale ~1-4"
    assert points.std(0).min() > 0.3  # spread in both coordinates, not a point mass


@pytest.mark.parametrize("name", TOY_2D)
def test_toy_2d_is_reproducible_by_seed(name):
    assert torch.equal(toy_2d(name, 100, seed=1), toy_2d(name, 100, seed=1))
    assert not torch.equal(toy_2d(name, 100, seed=1), toy_2d(name, 100, seed=2))


@pytest.mark.parametrize("name", TOY_2D)
def test_toy_2d_does_not_touch_the_global_rng(name):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    toy_2d(name, 10)
    assert torch.equal(torch.rand(3), expected)


def test_toy_2d_names_give_different_densities():
    samples = {name: toy_2d(name, 200) for name in TOY_2D}
    for a in TOY_2D:
        for b in TOY_2D:
            if a < b:
                assert not torch.allclose(samples[a], samples[b])


def test_toy_2d_single_sample():
    assert toy_2d("rings", 1).shape == (1, 2)


@pytest.mark.parametrize("name", ["spiral", "Moons", "", None])
def test_toy_2d_bad_name(name):
    with pytest.raises(ValueError, match="name"):
        toy_2d(name, 10)


@pytest.mark.parametrize("num_samples", [0, -3, 2.5, True, "10"])
def test_toy_2d_bad_num_samples(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        toy_2d("moons", num_samples)


def test_module_exports():
    assert set(datasets.__all__) == {
        "Splits",
        "load_digits",
        "load_faces",
        "load_made_uci",
        "toy_2d",
        "TOY_2D",
        # the MAF paper's datasets, tested in test_maf_datasets.py
        "MAF_DATASETS",
        "load_maf_dataset",
        "load_power",
        "load_gas",
        "load_hepmass",
        "load_miniboone",
        "load_bsds300",
        "gaussian_mixture",
        "GaussianMixture",
    }
    for name in datasets.__all__:
        assert hasattr(datasets, name), name


def test_gaussian_mixture_is_a_fixed_normalised_multimodal_density():
    target = datasets.gaussian_mixture(2, num_components=4, seed=3)
    assert torch.equal(target.component_distribution.loc, datasets.gaussian_mixture(2, 4, seed=3).component_distribution.loc)
    assert not torch.equal(target.component_distribution.loc, datasets.gaussian_mixture(2, 4, seed=4).component_distribution.loc)
    # the density integrates to 1 (trapezoid rule on a grid wide enough for every component)
    grid = torch.linspace(-15.0, 15.0, 601, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2).float()
    density = target.log_prob(points).exp().double().reshape(601, 601)
    assert torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid).item() == pytest.approx(1.0, abs=1e-3)
    torch.manual_seed(0)
    x = target.sample((20000,))
    # samples follow the density: their mean NLL is its entropy, estimated the same way twice
    assert (-target.log_prob(x).mean()).item() == pytest.approx((-target.log_prob(target.sample((20000,))).mean()).item(), abs=0.05)
    assert x.std(0).min() > 1.0  # spread over several modes, not one unit Gaussian


@pytest.mark.parametrize(("name", "value"), [("dim", 0), ("num_components", 1.5), ("dim", True)])
def test_gaussian_mixture_bad_sizes(name, value):
    kwargs = {"dim": 2, "num_components": 3, name: value}
    with pytest.raises(ValueError, match=name):
        datasets.gaussian_mixture(**kwargs)


def test_gaussian_mixture_samples_have_the_mixture_moments():
    """Each row from its own component: the sample mean and covariance are the mixture's,
    sum_k pi_k mu_k and sum_k pi_k (Sigma_k + mu_k mu_k^T) - mu mu^T."""
    target = datasets.gaussian_mixture(3, num_components=4, seed=1)
    weights = target.mixture_distribution.probs.double()
    loc = target.component_distribution.loc.double()
    covariances = target.component_distribution.covariance_matrix.double()
    mean = weights @ loc
    second_moment = torch.einsum("k,kij->ij", weights, covariances + loc[:, :, None] * loc[:, None, :])
    torch.manual_seed(0)
    x = target.sample((100_000,)).double()
    assert x.shape == (100_000, 3)
    assert torch.allclose(x.mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(x.T), second_moment - torch.outer(mean, mean), atol=0.15, rtol=0.02)
    assert target.sample((2, 5)).shape == (2, 5, 3)


def test_gaussian_mixture_sample_shape_may_be_an_int():
    target = datasets.gaussian_mixture(3, num_components=4, seed=1)
    assert target.sample(5).shape == target.sample([5]).shape == (5, 3)
    with pytest.raises(TypeError, match="sample_shape: expected"):
        target.sample(5.0)
