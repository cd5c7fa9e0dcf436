"""Data sets and preprocessing: ``Dataset``, ``load_dataset``, scaling, binarization, batches.

Images are kept as uint8 ``(N, H, W)``; one batch at a time is turned into model
inputs ``x`` (B, D) by :class:`Preprocessor` (or by :func:`to_unit_interval` and then a
binarization or standardization). The files behind the real data sets (checksums,
downloads, readers, licences) are in ``numpy_vae.datafiles``; the built-in procedural
set is in ``numpy_vae.shapes``. Their public names are available here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ._checks import (
    check_array,
    check_choice,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_rng,
)
from .datafiles import (
    DATA_ENV,
    FASHION_MNIST_CLASSES,
    FREY_FILE,
    FREY_N_TEST,
    FREY_SPLIT_SEED,
    IDX_FILES,
    MIRRORS,
    SHA256,
    SPLITS,
    DataNotFoundError,
    data_dir,
    fetch,
    frey_split_indices,
    read_frey_face,
    read_frey_mat,
    read_idx,
    read_mat_uint8,
    read_mnist,
)
from .errors import InvalidTypeError, InvalidValueError
from .shapes import (
    SHAPE_FACTORS,
    SHAPE_KINDS,
    SHAPE_RADIUS,
    SHAPE_SEEDS,
    SHAPE_SYMMETRY,
    draw_shapes,
)

__all__ = [  # what this module defines, then what it passes on from datafiles and shapes
    "IMAGE_SHAPES", "DATASETS", "PREPROCESSING", "Dataset", "data_dim", "load_dataset",
    "load_mnist", "load_fashion_mnist", "load_frey_face", "make_shapes", "to_unit_interval",
    "binarize_threshold", "binarize_dynamic", "standardize", "Preprocessor",
    "train_validation_split", "minibatches",
    "DATA_ENV", "SPLITS", "IDX_FILES", "FREY_FILE", "FREY_N_TEST", "FREY_SPLIT_SEED",
    "SHA256", "MIRRORS", "FASHION_MNIST_CLASSES", "DataNotFoundError", "data_dir", "fetch",
    "frey_split_indices", "read_idx", "read_mat_uint8", "read_frey_mat", "read_mnist",
    "read_frey_face",
    "SHAPE_KINDS", "SHAPE_SYMMETRY", "SHAPE_FACTORS", "SHAPE_SEEDS", "SHAPE_RADIUS", "draw_shapes",
]

IMAGE_SHAPES = {"shapes": (28, 28), "mnist": (28, 28), "fashion-mnist": (28, 28),
                "frey-face": (28, 20)}  # (rows, columns) of every data set's images
DATASETS = tuple(IMAGE_SHAPES)
NUM_LABELS = {"shapes": len(SHAPE_KINDS), "mnist": 10, "fashion-mnist": 10,
              "frey-face": 0}  # classes of each data set's labels (0: unlabelled)
PREPROCESSING = ("grey", "threshold", "dynamic", "standardize")


def _describe(a: object) -> str:
    """The received value, for a message: dtype and shape of an array, else its type."""
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def data_dim(name: str) -> int:
    """Pixels per image of the data set ``name``, D = rows * columns of IMAGE_SHAPES."""
    rows, cols = IMAGE_SHAPES[check_choice("name", name, DATASETS)]
    return rows * cols


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images with optional class labels and generating factors.

    Shapes: images (N, H, W) uint8; labels (N,) int64 or None; factors (N, F) float64
    or None, column j named factor_names[j].
    """

    images: np.ndarray
    labels: np.ndarray | None
    factors: np.ndarray | None
    factor_names: tuple[str, ...]
    name: str

    def __post_init__(self):
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8:
            raise InvalidTypeError(f"images must be a uint8 np.ndarray, got "
                                   f"{_describe(self.images)}")
        if self.images.ndim != 3:
            raise InvalidValueError(f"images must have shape (N, H, W), got "
                                    f"{self.images.shape}")
        n, f = len(self.images), len(self.factor_names)
        if self.labels is not None and getattr(self.labels, "shape", None) != (n,):
            raise InvalidValueError(f"labels must be None or an array of shape ({n},), got "
                                    f"{_describe(self.labels)}")
        shape = getattr(self.factors, "shape", None)
        if (self.factors is None) != (f == 0) or (f and shape != (n, f)):
            raise InvalidValueError(f"factors must have shape ({n}, {f}) for "
                                    f"{self.factor_names}, got {_describe(self.factors)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.images.shape[1:]

    @property
    def data_dim(self) -> int:
        return self.images.shape[1] * self.images.shape[2]

    def subset(self, idx) -> Dataset:
        """The examples ``idx`` (integer indices or a boolean mask) as a new Dataset.

        Shapes: idx (M,) integers, or (N,) booleans selecting M examples.
        """
        idx = np.asarray(idx)
        if idx.size == 0:
            idx = idx.astype(np.intp)  # np.asarray([]) is float64
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.dtype == bool):
            raise InvalidValueError(f"idx must be a 1-D array of indices or a boolean mask, "
                                    f"got {_describe(idx)}")
        labels = None if self.labels is None else self.labels[idx]
        factors = None if self.factors is None else self.factors[idx]
        return Dataset(self.images[idx], labels, factors, self.factor_names, self.name)


# ----------------------------------------------------------------------------- data sets


def load_mnist(split: str = "train", data_dir=None, download: bool = True) -> Dataset:
    """MNIST digits, labels 0..9. Shapes: images (60000 train | 10000 test, 28, 28)."""
    return Dataset(*read_mnist("mnist", split, data_dir, download), None, (), "mnist")


def load_fashion_mnist(split: str = "train", data_dir=None, download: bool = True) -> Dataset:
    """Fashion-MNIST, labels 0..9 (names in FASHION_MNIST_CLASSES). Shapes: as MNIST."""
    images, labels = read_mnist("fashion-mnist", split, data_dir, download)
    return Dataset(images, labels, None, (), "fashion-mnist")


def load_frey_face(split: str = "train", data_dir=None, download: bool = True) -> Dataset:
    """Frey Face, no labels: "train" (1765), "test" (200) or "all" (1965 in video order).

    The split is :func:`frey_split_indices` (there is no official test set).
    Shapes: images (N, 28, 20) uint8.
    """
    return Dataset(read_frey_face(split, data_dir, download), None, None, (), "frey-face")


def make_shapes(n: int = 20000, seed: int | np.random.Generator = 0, size: int = 28) -> Dataset:
    """The built-in shapes: labels are the kinds, factors "scale", "rotation", "x", "y".

    How kinds and factors are drawn: ``numpy_vae.shapes.draw_shapes``.
    Shapes: images (n, size, size) uint8 in {0, 255}; labels (n,); factors (n, 4).
    """
    images, kinds, factors = draw_shapes(n, seed, size)
    return Dataset(images, kinds, factors, SHAPE_FACTORS, "shapes")


def load_dataset(name: str, split: str = "train", data_dir=None,
                 download: bool = True) -> Dataset:
    """Load a data set by name: "shapes" (built in: 20000 train, 5000 test), "mnist",
    "fashion-mnist" or "frey-face" (see :func:`load_frey_face` for its split)."""
    check_choice("name", name, DATASETS)
    check_choice("split", split, SPLITS)
    if name == "shapes":
        seed, n = SHAPE_SEEDS[split]
        return make_shapes(n, seed=seed)
    loader = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
              "frey-face": load_frey_face}[name]
    return loader(split, data_dir=data_dir, download=download)


# ----------------------------------------------------------------------------- preprocessing


def _float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not np.issubdtype(dt, np.floating):
        raise InvalidTypeError(f"dtype must be a floating dtype such as np.float32, "
                               f"got {dtype!r}")
    return dt


def _check_x(x: object, ndim: int | None = None) -> np.ndarray:
    """Floating, finite, non-empty x; NaN would otherwise binarize silently to 0."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:  # the likely slip: raw images
        raise InvalidTypeError("x must be a floating-point array of grey levels, got uint8 "
                               "images; convert them with to_unit_interval first")
    return check_array("x", x, ndim=ndim)


def to_unit_interval(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Grey levels / 255, one flattened row per image.

    Shapes: (N, H, W) or (N, D) uint8 -> (N, D) float, values in [0, 1].
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise InvalidTypeError(f"images must be a uint8 np.ndarray, got {_describe(images)}")
    if images.ndim < 2:
        raise InvalidValueError(f"images must have shape (N, H, W) or (N, D), got "
                                f"{images.shape}")
    x = images.reshape(len(images), -1).astype(_float_dtype(dtype))  # (N, D)
    x /= 255
    return x


def binarize_threshold(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Fixed binarization: 1 where x > threshold, else 0, in x's dtype. Shapes: any."""
    _check_x(x)
    if check_positive_float("threshold", threshold, allow_zero=True) > 1:
        raise InvalidValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return (x > threshold).astype(x.dtype)


def binarize_dynamic(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dynamic binarization (Burda et al. 2015): a fresh draw b ~ Bernoulli(p = x) per call.

    Call it on every batch of every epoch, so the model never sees the same binary image
    twice. Shapes: any; values of x must be in [0, 1]; returns x's dtype.
    """
    _check_x(x)
    check_rng("rng", rng)
    if x.min() < 0 or x.max() > 1:
        raise InvalidValueError(f"x must be probabilities in [0, 1], got values in "
                                f"[{x.min()}, {x.max()}]")
    udtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    return (rng.random(x.shape, dtype=udtype) < x).astype(x.dtype)  # P(U < p) = p


def standardize(x: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel standardization z = (x - mean) / std, for Gaussian decoders.

    Without mean/std they are computed from x, with std = sqrt(var + eps) so constant
    pixels do not divide by zero; pass the training set's mean/std for the test set.
    Inverse: x = z * std + mean. Shapes: x (N, D); mean, std (D,); z (N, D), x's dtype.
    """
    _check_x(x, ndim=2)
    eps = check_positive_float("eps", eps)
    if (mean is None) != (std is None):
        raise InvalidValueError(f"mean and std must be both given or both None, got "
                                f"{_describe(mean)} and {_describe(std)}")
    if mean is None:
        mean = x.mean(axis=0, dtype=np.float64).astype(x.dtype)
        std = np.sqrt(x.var(axis=0, dtype=np.float64) + eps).astype(x.dtype)
    check_array("mean", mean, shape=x.shape[1:])
    check_array("std", std, shape=x.shape[1:])
    if np.any(std <= 0):
        raise InvalidValueError(f"std must be positive everywhere, got min {std.min()}")
    return ((x - mean) / std).astype(x.dtype, copy=False), mean, std


class Preprocessor:
    """Turns uint8 images into model inputs x, one batch at a time, as ``kind`` says.

    Kinds (PREPROCESSING): "grey" levels in [0, 1]; "threshold" at 0.5; "dynamic", a
    fresh Bernoulli draw per call (pass rng); "standardize" with the per-pixel mean and
    std of ``train_images`` (needed for it), reused for every batch, test sets included.
    Shapes: images (B, H, W) uint8 -> x (B, D) of ``dtype``; to_images (B, D) -> (B, D).
    """

    def __init__(self, kind: str, dtype, train_images: np.ndarray | None = None):
        self.kind = check_choice("kind", kind, PREPROCESSING)
        self.dtype = _float_dtype(dtype)
        self.mean = self.std = None
        if self.kind == "standardize":  # statistics of the training set, reused on test
            if train_images is None:
                raise InvalidValueError("train_images must be the training images (uint8, "
                                        "(N, H, W)) for kind 'standardize', got None")
            x = to_unit_interval(train_images, np.float64)  # (N, D)
            _, mean, std = standardize(x)
            self.mean, self.std = mean.astype(self.dtype), std.astype(self.dtype)  # (D,)

    def __call__(self, images: np.ndarray, rng: np.random.Generator | None = None):
        x = to_unit_interval(images, self.dtype)  # (B, D)
        if self.kind == "threshold":
            return binarize_threshold(x)
        if self.kind == "dynamic":
            return binarize_dynamic(x, rng)
        if self.kind == "standardize":
            return standardize(x, self.mean, self.std)[0]
        return x

    def to_images(self, x: np.ndarray) -> np.ndarray:
        """Model-space values back to [0, 1] grey levels for pictures. Shapes: (B, D)."""
        if self.kind == "standardize":
            x = x * self.std + self.mean  # (B, D)
        return np.clip(x, 0, 1)


# ----------------------------------------------------------------------------- batches


def train_validation_split(n: int, n_validation: int,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint indices covering range(n), each sorted.

    Shapes: (n - n_validation,), (n_validation,) int64.
    """
    n = check_positive_int("n", n)
    n_validation = check_nonnegative_int("n_validation", n_validation)
    if n_validation >= n:
        raise InvalidValueError(f"n_validation must be < n = {n}, got {n_validation}")
    check_rng("rng", rng)
    perm = rng.permutation(n)
    return np.sort(perm[n_validation:]), np.sort(perm[:n_validation])


def minibatches(n: int, batch_size: int,
                rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays covering range(n) once: shuffled if rng is given, last batch partial.

    Shapes: each (batch_size,) int64, the last (n % batch_size,) when non-zero.
    """
    n = check_nonnegative_int("n", n)
    batch_size = check_positive_int("batch_size", batch_size)
    if rng is not None:
        check_rng("rng", rng)
    order = np.arange(n) if rng is None else rng.permutation(n)
    return (order[i:i + batch_size] for i in range(0, n, batch_size))
