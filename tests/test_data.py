"""Tests for numpy_vae.data: Dataset, load_dataset, the data facts, preprocessing, batches.

The file readers and downloads are tested in test_datafiles.py, the procedural
"shapes" in test_shapes.py.
"""

import ast
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy_vae
from numpy_vae import data, shapes
from numpy_vae.data import (
    Dataset,
    Preprocessor,
    binarize_dynamic,
    binarize_threshold,
    load_dataset,
    make_shapes,
    minibatches,
    standardize,
    to_unit_interval,
    train_validation_split,
)
from numpy_vae.errors import NumpyVAEError

# ----------------------------------------------------------------------------- the module


USED_ELSEWHERE = (  # names that train.py, cli.py, the tests, notebooks and benchmarks use
    "load_dataset", "Dataset", "DATASETS", "DATA_ENV", "DataNotFoundError", "data_dir",
    "make_shapes", "FASHION_MNIST_CLASSES", "to_unit_interval", "binarize_threshold",
    "binarize_dynamic", "standardize", "train_validation_split", "minibatches", "load_mnist",
    "load_fashion_mnist", "load_frey_face", "SHA256", "MIRRORS", "IDX_FILES", "FREY_FILE",
    "fetch", "read_idx", "read_mat_uint8", "read_frey_mat", "frey_split_indices",
    "SHAPE_KINDS", "SHAPE_SYMMETRY", "SHAPE_FACTORS", "SHAPE_SEEDS",
    "IMAGE_SHAPES", "data_dim", "PREPROCESSING", "Preprocessor",
)


def test_public_names_stay_in_data():
    missing = [name for name in USED_ELSEWHERE if not hasattr(data, name)]
    assert missing == []
    assert set(data.__all__) <= set(dir(data)) and set(USED_ELSEWHERE) <= set(data.__all__)


def test_data_modules_import_only_checks_and_errors():
    allowed = {"_checks", "errors", "data", "datafiles", "shapes"}
    package = pathlib.Path(numpy_vae.__file__).parent
    for module in ("data", "datafiles", "shapes"):
        tree = ast.parse((package / f"{module}.py").read_text())
        project = {node.module.split(".")[0] for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.level == 1}
        absolute = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names if alias.name.startswith("numpy_vae")}
        assert project <= allowed and not absolute, (module, project, absolute)


def test_image_shapes_and_data_dim():
    assert data.DATASETS == tuple(data.IMAGE_SHAPES)
    assert [data.data_dim(name) for name in data.DATASETS] == [784, 784, 784, 560]
    with pytest.raises(ValueError, match=r"name must be one of .*'mnist'.*got 'cifar'"):
        data.data_dim("cifar")
    for split in data.SPLITS:
        ds = load_dataset("shapes", split)
        assert ds.image_shape == data.IMAGE_SHAPES["shapes"]
        assert ds.data_dim == data.data_dim("shapes")


# ----------------------------------------------------------------------------- Dataset


def test_load_dataset_rejects_unknown():
    with pytest.raises(ValueError, match=r"name must be one of .*'shapes'.*got 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match=r"split must be one of .*'test'.*got 'valid'"):
        load_dataset("shapes", "valid")


def test_dataset_checks_its_arrays():
    with pytest.raises(TypeError, match="images must be a uint8 np.ndarray, got float64"):
        Dataset(np.zeros((2, 3, 3)), None, None, (), "x")
    images = np.zeros((2, 3, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images must have shape \(N, H, W\), got \(2, 9\)"):
        Dataset(images.reshape(2, 9), None, None, (), "x")
    with pytest.raises(ValueError, match=r"labels must be .*\(2,\), got int64 .*\(3,\)"):
        Dataset(images, np.zeros(3, np.int64), None, (), "x")
    with pytest.raises(ValueError, match=r"factors must have shape \(2, 1\) for \('a',\)"):
        Dataset(images, None, None, ("a",), "x")


def test_make_shapes_wraps_draw_shapes():
    ds = make_shapes(50, seed=3, size=12)
    images, kinds, factors = shapes.draw_shapes(50, seed=3, size=12)
    assert ds.name == "shapes" and ds.factor_names == shapes.SHAPE_FACTORS
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, kinds)
    np.testing.assert_array_equal(ds.factors, factors)


def test_load_dataset_shapes_splits():
    train, test = load_dataset("shapes", "train"), load_dataset("shapes", "test")
    assert train.images.shape == (20000, 28, 28) and test.images.shape == (5000, 28, 28)
    assert train.name == "shapes" and train.labels.dtype == np.int64
    assert not np.array_equal(train.images[:5000], test.images)


def test_subset():
    ds = make_shapes(10, seed=0)
    idx = np.array([7, 2, 2])
    part = ds.subset(idx)
    assert isinstance(part, Dataset) and len(part) == 3 and part.name == ds.name
    np.testing.assert_array_equal(part.images, ds.images[idx])
    np.testing.assert_array_equal(part.labels, ds.labels[idx])
    np.testing.assert_array_equal(part.factors, ds.factors[idx])
    assert part.factor_names == ds.factor_names
    mask = ds.labels == ds.labels[0]
    np.testing.assert_array_equal(ds.subset(mask).images, ds.images[mask])
    assert len(ds.subset([])) == 0
    bare = Dataset(ds.images, None, None, (), "bare").subset([1])
    assert bare.labels is None and bare.factors is None and len(bare) == 1
    with pytest.raises(ValueError, match="idx must be a 1-D array .* got int64 array of shape"):
        ds.subset(3)
    with pytest.raises(ValueError, match="idx must be a 1-D array .* got float64"):
        ds.subset(np.array([0.5]))


# ----------------------------------------------------------------------------- preprocessing


def test_to_unit_interval():
    images = np.array([[[0, 255], [51, 102]]], np.uint8)
    x = to_unit_interval(images)
    assert x.dtype == np.float32 and x.shape == (1, 4)
    np.testing.assert_allclose(x, [[0, 1, 0.2, 0.4]], rtol=1e-7)
    assert to_unit_interval(images, np.float64).dtype == np.float64
    with pytest.raises(TypeError, match="images.*uint8"):
        to_unit_interval(x)
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*int32"):
        to_unit_interval(images, np.int32)
    with pytest.raises(ValueError, match=r"images must have shape .*, got \(4,\)"):
        to_unit_interval(images.ravel())


def test_binarize_threshold():
    x = np.array([[0.0, 0.5, 0.51, 1.0]], np.float32)
    b = binarize_threshold(x)
    assert b.dtype == np.float32 and b.tolist() == [[0, 0, 1, 1]]
    assert binarize_threshold(x, 0.2).tolist() == [[0, 1, 1, 1]]
    with pytest.raises(TypeError, match="x.*floating"):
        binarize_threshold(np.array([0, 255], np.uint8))


def test_binarize_dynamic_is_bernoulli():
    p = np.array([0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
    n = 20000
    x = np.tile(p, (n, 1))  # (n, 6)
    rng = np.random.default_rng(0)
    b1, b2 = binarize_dynamic(x, rng), binarize_dynamic(x, rng)
    assert b1.dtype == x.dtype and set(np.unique(b1)) <= {0.0, 1.0}
    tol = 5 * np.sqrt(p * (1 - p) / n)  # five binomial standard deviations
    assert np.all(np.abs(b1.mean(axis=0) - p) <= tol)  # exact at p = 0 and p = 1
    assert not np.array_equal(b1, b2)  # a fresh draw each call
    assert binarize_dynamic(x.astype(np.float32), rng).dtype == np.float32
    with pytest.raises(ValueError, match=r"x must be probabilities in \[0, 1\]"):
        binarize_dynamic(np.array([0.5, 1.5]), rng)
    with pytest.raises(TypeError, match="rng.*Generator"):
        binarize_dynamic(x, 0)


def test_standardize_round_trip():
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 1, (500, 6)).astype(np.float32)
    train[:, 0] = 0.25  # a constant pixel
    z, mean, std = standardize(train)
    assert z.dtype == np.float32 and np.all(np.isfinite(z)) and np.all(z[:, 0] == 0)
    np.testing.assert_allclose(z[:, 1:].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, 1:].std(0), 1, atol=1e-3)
    np.testing.assert_allclose(z * std + mean, train, atol=1e-6)
    test = rng.uniform(0, 1, (50, 6)).astype(np.float32)
    zt, mean2, std2 = standardize(test, mean, std)
    assert mean2 is mean or np.array_equal(mean2, mean)
    np.testing.assert_allclose(zt * std + mean, test, atol=1e-6)
    with pytest.raises(ValueError, match="mean and std"):
        standardize(test, mean=mean)
    with pytest.raises(ValueError, match=r"mean must have shape \(6\), got \(3,\)"):
        standardize(test, mean[:3], std[:3])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), frac=st.floats(0, 0.99), seed=st.integers(0, 99))
def test_train_validation_split(n, frac, seed):
    n_val = int(frac * n)
    train, val = train_validation_split(n, n_val, np.random.default_rng(seed))
    assert len(val) == n_val and len(train) == n - n_val
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(n))


def test_train_validation_split_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_validation must be < n = 5, got 5"):
        train_validation_split(5, 5, rng)
    with pytest.raises(TypeError, match="n must be a positive integer, got 5.0"):
        train_validation_split(5.0, 1, rng)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 200), batch_size=st.integers(1, 64), shuffle=st.booleans())
def test_minibatches_cover_each_index_once(n, batch_size, shuffle):
    rng = np.random.default_rng(n) if shuffle else None
    batches = list(minibatches(n, batch_size, rng))
    assert len(batches) == -(-n // batch_size)
    assert all(len(b) == batch_size for b in batches[:-1])
    everything = np.concatenate(batches) if batches else np.array([], int)
    assert np.array_equal(np.sort(everything), np.arange(n))
    if not shuffle:
        assert np.array_equal(everything, np.arange(n))


def test_minibatches_shuffle_and_errors():
    first = np.concatenate(list(minibatches(100, 32, np.random.default_rng(0))))
    assert not np.array_equal(first, np.arange(100))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        minibatches(10, 0)  # raised at the call, not at the first batch
    with pytest.raises(TypeError, match="rng"):
        minibatches(10, 2, rng=np.random.RandomState(0))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_preprocessing_refuses_nan(bad):
    x = np.array([[0.2, bad, 0.9]], np.float32)  # a NaN used to become 0 (or 1) silently
    rng = np.random.default_rng(0)
    for call in (lambda: binarize_threshold(x), lambda: binarize_dynamic(x, rng),
                 lambda: standardize(x), lambda: standardize(np.ones((2, 3)), x[0], x[0])):
        with pytest.raises(ValueError, match=r"(x|mean) must contain only finite values") as e:
            call()
        assert isinstance(e.value, NumpyVAEError)


def test_preprocessing_errors_name_the_argument():
    x = np.full((2, 3), 0.5)
    with pytest.raises(TypeError, match="x must be a floating-point array .*to_unit_interval"):
        binarize_dynamic(np.zeros((2, 3), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 1.5"):
        binarize_threshold(x, 1.5)
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0, got -0.1"):
        binarize_threshold(x, -0.1)
    with pytest.raises(ValueError, match="std must be positive everywhere"):
        standardize(x, np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="n_validation must be an integer >= 0, got -1"):
        train_validation_split(5, -1, np.random.default_rng(0))


# ----------------------------------------------------------------------------- Preprocessor


def test_preprocessor_kinds_match_the_functions():
    images = make_shapes(40, seed=2).images
    grey = to_unit_interval(images, np.float64)
    np.testing.assert_array_equal(Preprocessor("grey", "float64")(images), grey)
    np.testing.assert_array_equal(Preprocessor("threshold", np.float32)(images),
                                  binarize_threshold(grey.astype(np.float32)))
    x = Preprocessor("dynamic", "float32")(images, np.random.default_rng(4))
    assert x.dtype == np.float32 and x.shape == (40, 784)
    np.testing.assert_array_equal(  # the rng's draws, and only them
        x, binarize_dynamic(grey.astype(np.float32), np.random.default_rng(4)))
    assert data.PREPROCESSING == ("grey", "threshold", "dynamic", "standardize")


def test_preprocessor_dynamic_uses_the_rng():
    images = np.full((200, 4, 4), 128, np.uint8)  # p = 0.502 everywhere
    pre, rng = Preprocessor("dynamic", "float64"), np.random.default_rng(0)
    a, b = pre(images, rng), pre(images, rng)
    assert not np.array_equal(a, b)  # a fresh draw per call
    np.testing.assert_array_equal(a, pre(images, np.random.default_rng(0)))  # same seed, same
    assert abs(a.mean() - 128 / 255) < 0.05
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        pre(images)


def test_preprocessor_standardize_uses_training_statistics():
    train, test = make_shapes(300, seed=0).images, make_shapes(50, seed=1).images
    pre = Preprocessor("standardize", "float32", train)
    _, mean, std = standardize(to_unit_interval(train, np.float64))
    np.testing.assert_allclose(pre.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(pre.std, std, rtol=1e-6)
    z = pre(test)  # the test set is scaled by the training set's mean and std
    assert z.dtype == np.float32 and z.shape == (50, 784)
    np.testing.assert_allclose(z, (to_unit_interval(test, np.float64) - mean) / std,
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(pre.to_images(z), to_unit_interval(test), atol=1e-5)
    with pytest.raises(ValueError, match="train_images must be .* for kind 'standardize'"):
        Preprocessor("standardize", "float32")


def test_preprocessor_to_images_round_trip():
    images = make_shapes(20, seed=3).images
    for kind in ("grey", "threshold"):
        pre = Preprocessor(kind, "float64")
        x = pre(images)
        np.testing.assert_array_equal(pre.to_images(x), x)  # already in [0, 1]
    pre = Preprocessor("grey", "float64")
    np.testing.assert_array_equal(pre.to_images(np.array([[-0.5, 0.25, 1.5]])), [[0, 0.25, 1]])


def test_preprocessor_checks_its_arguments():
    with pytest.raises(ValueError, match=r"kind must be one of .*'dynamic'.*got 'binary'"):
        Preprocessor("binary", "float32")
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*'int8'"):
        Preprocessor("grey", "int8")
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*'nonsense'"):
        Preprocessor("grey", "nonsense")
