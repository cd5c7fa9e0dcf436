"""Data sets and preprocessing: a built-in procedural set, MNIST, Fashion-MNIST, Frey Face.

Images are kept as uint8 ``(N, H, W)``; the caller converts one batch at a time to
float with :func:`to_unit_interval` and then binarizes or standardizes it.
Real data live in ``data_dir()/<dataset>/<file>`` and are checked against SHA-256 sums.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import struct
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
from tqdm import tqdm

DATA_ENV = "NUMPY_VAE_DATA"
DATASETS = ("shapes", "mnist", "fashion-mnist", "frey-face")
SPLITS = ("train", "test")

IDX_FILES = {  # split -> (images, labels); the same names for MNIST and Fashion-MNIST
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FREY_FILE = "frey_rawface.mat"
_IDX_NAMES = (*IDX_FILES["train"], *IDX_FILES["test"])
SHA256 = {  # dataset -> file -> SHA-256 of the original file, as downloaded
    "mnist": dict(zip(_IDX_NAMES, (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ), strict=True)),
    "fashion-mnist": dict(zip(_IDX_NAMES, (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ), strict=True)),
    "frey-face": {FREY_FILE: "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64"},
}
MIRRORS = {  # tried in order
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    "frey-face": ("https://cs.nyu.edu/~roweis/data/",),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_urlopen = urllib.request.urlopen  # tests replace this; the library never opens URLs otherwise
_CHUNK = 1 << 16


class DataNotFoundError(FileNotFoundError):
    """A data file is absent and could not be downloaded; the message says how to add it."""


def _fail(name: str, expected: str, value: object, exc: type[Exception] = ValueError) -> NoReturn:
    raise exc(f"{name} must be {expected}, got {value!r}")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        _fail(name, "an int", value, TypeError)
    if value < minimum:
        _fail(name, f"an int >= {minimum}", value)
    return int(value)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        _fail(name, f"one of {allowed}", value)
    return value  # type: ignore[return-value]


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        _fail("rng", "a np.random.Generator (np.random.default_rng(seed))", rng, TypeError)


# ----------------------------------------------------------------------------- files


def data_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Folder holding ``mnist/``, ``fashion-mnist/``, ``frey-face/`` (need not exist).

    The argument if given, else ``$NUMPY_VAE_DATA``, else ``$XDG_CACHE_HOME/numpy_vae``
    (default ``~/.cache/numpy_vae``).
    """
    if path is None:
        path = os.environ.get(DATA_ENV) or pathlib.Path(
            os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "numpy_vae"
    return pathlib.Path(path).expanduser()


_data_dir = data_dir  # the loaders' argument `data_dir` shadows the function


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a gzip'd IDX file of unsigned bytes (magic 0x0801 labels, 0x0803 images).

    Shapes: (N,) for labels, (N, rows, cols) for images; dtype uint8, read-only.
    """
    with gzip.open(path, "rb") as f:
        try:
            raw = f.read()
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: not a readable gzip file ({e})") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic not in (0x0801, 0x0803):
        raise ValueError(f"{path}: IDX magic 0x{magic:08x}, expected 0x00000801 (labels) "
                         "or 0x00000803 (images) of unsigned bytes")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes of data, "
                         f"file has {len(raw) - header} (truncated or corrupt)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


_MI_INT8, _MI_UINT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 2, 5, 6, 14, 15


def read_mat_uint8(path: str | os.PathLike, name: str = "ff") -> np.ndarray:
    """Read the 2-D variable ``name``, stored as uint8, from an uncompressed MAT-5 file.

    Pure NumPy: a 128-byte header ending in the endian indicator, then one miMATRIX
    element per variable holding sub-elements array flags, dimensions, name, real part.
    Shapes: (rows, cols) as in MATLAB (the file stores them column-major).
    """
    raw = pathlib.Path(path).read_bytes()

    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: not a supported MAT-5 file: {why}")

    if len(raw) < 136 or not raw.startswith(b"MATLAB 5.0 MAT-file"):
        raise bad("no 'MATLAB 5.0 MAT-file' header")
    order = {b"IM": "<", b"MI": ">"}.get(raw[126:128])  # b"IM": written little-endian
    if order is None:
        raise bad(f"endian indicator {raw[126:128]!r}, expected b'IM' or b'MI'")

    def element(pos: int, end: int, want: tuple[int, ...], what: str):
        """(type, data bytes, start of the next element) of the element at pos.

        Data types: 1 miINT8, 2 miUINT8, 5 miINT32, 6 miUINT32, 14 miMATRIX."""
        if pos + 8 > end:
            raise bad(f"{what}: tag at byte {pos} runs past byte {end}")
        mtype, nbytes = struct.unpack(order + "II", raw[pos:pos + 8])
        if mtype >> 16:  # small element: 2-byte size, 2-byte type, data in the next 4 bytes
            mtype, nbytes, start, nxt = mtype & 0xFFFF, mtype >> 16, pos + 4, pos + 8
        else:
            start = pos + 8
            nxt = start + nbytes + (-nbytes % 8)  # elements are padded to 8 bytes
        if mtype == _MI_COMPRESSED:
            raise bad("compressed (miCOMPRESSED) variables are not supported; save with "
                      "MATLAB '-v6' or scipy savemat(do_compression=False)")
        if mtype not in want:
            raise bad(f"{what} at byte {pos} has data type {mtype}, expected {want}")
        if start + nbytes > end:
            raise bad(f"{what} at byte {pos} ({nbytes} bytes) runs past byte {end}")
        return mtype, raw[start:start + nbytes], nxt

    pos, names = 128, []
    while pos < len(raw):
        _, _, nxt = element(pos, len(raw), (_MI_MATRIX,), "variable")
        _, flags, p = element(pos + 8, nxt, (_MI_UINT32,), "array flags")
        _, dims, p = element(p, nxt, (_MI_INT32,), "dimensions")
        _, var, p = element(p, nxt, (_MI_INT8,), "array name")
        names.append(var.decode("ascii", "replace"))
        if names[-1] == name:
            word = struct.unpack(order + "I", flags[:4])[0]  # class byte, then flag bits
            mclass, is_complex = word & 0xFF, bool(word & 0x0800)
            dims = np.frombuffer(dims, order + "i4")
            if not 6 <= mclass <= 15 or is_complex or len(dims) != 2:
                raise bad(f"'{name}' is MATLAB class {mclass}, complex {is_complex}, "
                          f"dimensions {tuple(dims)}; expected a real numeric matrix")
            _, data, _ = element(p, nxt, (_MI_UINT8,), f"data of '{name}'")
            if len(data) != dims.prod():
                raise bad(f"'{name}' holds {len(data)} values, dimensions {tuple(dims)} "
                          f"need {dims.prod()}")
            return np.frombuffer(data, np.uint8).reshape(tuple(dims), order="F")
        pos = nxt
    raise bad(f"no variable named '{name}' (found {names})")


def read_frey_mat(path: str | os.PathLike) -> np.ndarray:
    """Read Frey Face ``frey_rawface.mat``: one face per column of ``ff`` (560, N).

    Shapes: (N, 28, 20) uint8, N = 1965 for the original file; 28 rows x 20 columns.
    """
    ff = read_mat_uint8(path, "ff")  # (560, N)
    if ff.shape[0] != 28 * 20:
        raise ValueError(f"{path}: variable 'ff' has shape {ff.shape}, expected (560, N) "
                         "with one 28x20 face per column")
    return np.ascontiguousarray(ff.T).reshape(-1, 28, 20)


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _by_hand(dataset: str, folder: pathlib.Path) -> str:
    files = ", ".join(SHA256[dataset])
    return (f"To install by hand, download {files} from one of {list(MIRRORS[dataset])} "
            f"and place them unmodified in {folder}{os.sep} (or set {DATA_ENV} to a folder "
            f"that contains {dataset}{os.sep}<files>).")


def _download(url: str, dest: pathlib.Path, expected: str) -> None:
    """Stream url into a temporary file beside dest, check its SHA-256, move it in place."""
    tmp = tempfile.NamedTemporaryFile(delete=False, dir=dest.parent,
                                      prefix=f".{dest.name}.", suffix=".part")
    try:
        h, got = hashlib.sha256(), 0
        with tmp, _urlopen(url, timeout=60) as resp:
            length = getattr(resp, "headers", {}).get("Content-Length")
            total = int(length) if length else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=None, leave=False) as bar:
                while chunk := resp.read(_CHUNK):
                    tmp.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        if total is not None and got != total:
            raise OSError(f"truncated: received {got} of {total} bytes")
        if h.hexdigest() != expected:
            raise ValueError(f"SHA-256 mismatch: expected {expected}, got {h.hexdigest()}")
        os.replace(tmp.name, dest)
    except BaseException:
        pathlib.Path(tmp.name).unlink(missing_ok=True)
        raise


def fetch(dataset: str, filename: str, data_dir: str | os.PathLike | None = None,
          download: bool = True) -> pathlib.Path:
    """Path of a checked data file, downloading it from ``MIRRORS`` if absent.

    An existing file with the wrong SHA-256 is refused (ValueError); a file that is
    absent and cannot be downloaded raises DataNotFoundError with the URLs tried.
    """
    _check_choice("dataset", dataset, tuple(SHA256))
    _check_choice("filename", filename, tuple(SHA256[dataset]))
    folder = _data_dir(data_dir) / dataset
    path, expected = folder / filename, SHA256[dataset][filename]
    if path.exists():
        actual = _sha256(path)
        if actual != expected:
            raise ValueError(f"{path} is not the original file: SHA-256 {actual}, expected "
                             f"{expected}. Delete it to download it again, or replace it "
                             "with the original.")
        return path
    if not download:
        raise DataNotFoundError(f"{path} not found and download=False. "
                                + _by_hand(dataset, folder))
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in MIRRORS[dataset]:
        url = base + filename
        try:
            _download(url, path, expected)
            return path
        except Exception as e:  # network error, truncation, HTTP error, wrong bytes: next
            errors.append(f"  {url}: {type(e).__name__}: {e}")
    raise DataNotFoundError(f"could not download {filename}; tried:\n" + "\n".join(errors)
                            + "\n" + _by_hand(dataset, folder))


# ----------------------------------------------------------------------------- data sets


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
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            _fail("images", "uint8 of shape (N, H, W)",
                  f"{self.images.dtype} {self.images.shape}")
        if self.labels is not None and self.labels.shape != (n,):
            _fail("labels", f"of shape ({n},)", self.labels.shape)
        f = len(self.factor_names)
        if (self.factors is None) != (f == 0) or (f and self.factors.shape != (n, f)):
            _fail("factors", f"of shape ({n}, {f}) for {self.factor_names}",
                  None if self.factors is None else self.factors.shape)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.images.shape[1:]

    @property
    def data_dim(self) -> int:
        return self.images.shape[1] * self.images.shape[2]


def _load_idx_pair(dataset: str, split: str, data_dir, download: bool) -> Dataset:
    _check_choice("split", split, SPLITS)
    images, labels = (read_idx(fetch(dataset, f, data_dir, download)) for f in IDX_FILES[split])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{dataset} {split}: images {images.shape} and labels "
                         f"{labels.shape} do not match")
    return Dataset(images, labels.astype(np.int64), None, (), dataset)


def load_mnist(split: str = "train", data_dir=None, download: bool = True) -> Dataset:
    """MNIST digits, labels 0..9. Shapes: images (60000 train | 10000 test, 28, 28)."""
    return _load_idx_pair("mnist", split, data_dir, download)


def load_fashion_mnist(split: str = "train", data_dir=None, download: bool = True) -> Dataset:
    """Fashion-MNIST, labels 0..9 (names in FASHION_MNIST_CLASSES). Shapes: as MNIST."""
    return _load_idx_pair("fashion-mnist", split, data_dir, download)


FREY_N_TEST = 200
FREY_SPLIT_SEED = 2013


def frey_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Fixed frame indices (sorted) of the Frey Face train (1765) and test (200) splits.

    A seeded permutation from the PCG64 raw stream, which NumPy keeps identical across
    versions. Frames are consecutive video frames, so test faces have near neighbours in
    train: the split measures fit, not generalisation to new poses.
    Shapes: (1765,), (200,) int64.
    """
    keys = np.random.PCG64(FREY_SPLIT_SEED).random_raw(1965)
    order = np.argsort(keys, kind="stable")
    return np.sort(order[FREY_N_TEST:]), np.sort(order[:FREY_N_TEST])


def load_frey_face(split: str = "train", data_dir=None, download: bool = True) -> Dataset:
    """Frey Face, 1965 frames of 28x20 (no labels).

    There is no official test set: ``split`` "train" (1765) and "test" (200) use
    :func:`frey_split_indices`; "all" gives the 1965 frames in video order.
    Shapes: images (N, 28, 20) uint8.
    """
    _check_choice("split", split, (*SPLITS, "all"))
    faces = read_frey_mat(fetch("frey-face", FREY_FILE, data_dir, download))
    if split != "all":
        if len(faces) != 1965:
            raise ValueError(f"Frey Face has {len(faces)} frames, the split needs 1965")
        faces = faces[frey_split_indices()[SPLITS.index(split)]]
    return Dataset(faces, None, None, (), "frey-face")


SHAPE_KINDS = ("square", "ellipse", "triangle", "cross", "L")
SHAPE_SYMMETRY = (4, 2, 3, 4, 1)  # rotation by 2*pi/k maps the shape onto itself
SHAPE_FACTORS = ("scale", "rotation", "x", "y")
SHAPE_SEEDS = {"train": (0, 20000), "test": (1, 5000)}  # split -> (seed, n)
_R_MAX = 0.35  # circumradius at scale 1, as a fraction of the image side


def _inside(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of local points (u, v) in shape kind; every shape fits the unit disk."""
    au, av = np.abs(u), np.abs(v)
    if kind == 0:  # square with corners on the unit circle
        return np.maximum(au, av) <= np.sqrt(0.5)
    if kind == 1:  # ellipse, semi-axes 1 and 0.5
        return u**2 + (2 * v) ** 2 <= 1
    if kind == 2:  # equilateral triangle, apex up; inradius 1/2
        s3 = np.sqrt(3) / 2
        return (-v <= 0.5) & (s3 * u + 0.5 * v <= 0.5) & (-s3 * u + 0.5 * v <= 0.5)
    if kind == 3:  # plus sign, arm half-width 0.3
        w, arm = 0.3, np.sqrt(1 - 0.3**2)
        return ((au <= w) & (av <= arm)) | ((av <= w) & (au <= arm))
    a, t = np.sqrt(0.5), 0.6  # "L": two bars along the left and bottom of the square
    box = np.maximum(au, av) <= a
    return box & ((u <= -a + t) | (v <= -a + t))


def make_shapes(n: int = 20000, seed: int | np.random.Generator = 0, size: int = 28) -> Dataset:
    """Binary images of simple shapes with their generating factors.

    Kinds (labels) 0..4 = SHAPE_KINDS, drawn uniformly. Factors, drawn uniformly and
    independently: "scale" in [0.5, 1] (circumradius = scale * 0.35 * size pixels);
    "rotation" in radians, counter-clockwise, in [0, 2*pi/k) where k = SHAPE_SYMMETRY
    (square 4, ellipse 2, triangle 3, cross 4, L 1), so each image has one rotation;
    "x", "y" in [0, 1]: from the leftmost/topmost to the rightmost/bottommost centre
    that keeps a one-pixel empty border whatever the rotation.
    Shapes: images (n, size, size) uint8 in {0, 255}; labels (n,); factors (n, 4).
    """
    n, size = _check_int("n", n, 1), _check_int("size", size, 8)
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(SHAPE_KINDS), n)
    scale = rng.uniform(0.5, 1.0, n)
    rotation = rng.uniform(0, 1, n) * 2 * np.pi / np.asarray(SHAPE_SYMMETRY)[kind]
    x, y = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    r = scale * _R_MAX * size  # circumradius in pixels
    cx = 1 + r + x * (size - 2 - 2 * r)  # centre; the shape stays in [1, size - 1]
    cy = 1 + r + y * (size - 2 - 2 * r)
    grid = np.arange(size) + 0.5  # pixel centres
    images = np.zeros((n, size, size), np.uint8)
    for start in range(0, n, 2048):  # chunks bound the float temporaries
        sl = slice(start, start + 2048)
        dx = (grid[None, None, :] - cx[sl, None, None]) / r[sl, None, None]  # (b, 1, S)
        dy = (cy[sl, None, None] - grid[None, :, None]) / r[sl, None, None]  # (b, S, 1) up
        c, s = np.cos(rotation[sl])[:, None, None], np.sin(rotation[sl])[:, None, None]
        u, v = c * dx + s * dy, c * dy - s * dx  # (b, S, S) rotate by -rotation
        block = images[sl]
        for k in range(len(SHAPE_KINDS)):
            m = kind[sl] == k
            block[m] = np.where(_inside(k, u[m], v[m]), 255, 0)
    factors = np.stack([scale, rotation, x, y], axis=1)
    return Dataset(images, kind.astype(np.int64), factors, SHAPE_FACTORS, "shapes")


def load_dataset(name: str, split: str = "train", data_dir=None,
                 download: bool = True) -> Dataset:
    """Load a data set by name: "shapes" (built in: 20000 train, 5000 test), "mnist",
    "fashion-mnist" or "frey-face" (see :func:`load_frey_face` for its split)."""
    _check_choice("name", name, DATASETS)
    _check_choice("split", split, SPLITS)
    if name == "shapes":
        return make_shapes(SHAPE_SEEDS[split][1], seed=SHAPE_SEEDS[split][0])
    loader = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
              "frey-face": load_frey_face}[name]
    return loader(split, data_dir=data_dir, download=download)


# ----------------------------------------------------------------------------- preprocessing


def _check_float(name: str, x: object) -> None:
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        _fail(name, "a floating-point np.ndarray (use to_unit_interval first)",
              getattr(x, "dtype", type(x)), TypeError)


def to_unit_interval(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Grey levels / 255, one flattened row per image.

    Shapes: (N, H, W) or (N, D) uint8 -> (N, D) float, values in [0, 1].
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim < 2:
        _fail("images", "a uint8 np.ndarray of shape (N, H, W) or (N, D)",
              f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}",
              TypeError)
    if not np.issubdtype(np.dtype(dtype), np.floating):
        _fail("dtype", "a floating dtype", dtype, TypeError)
    x = images.reshape(len(images), -1).astype(dtype)  # (N, D)
    x /= 255
    return x


def binarize_threshold(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Fixed binarization: 1 where x > threshold, else 0, in x's dtype. Shapes: any."""
    _check_float("x", x)
    if not 0 <= threshold <= 1:
        _fail("threshold", "in [0, 1]", threshold)
    return (x > threshold).astype(x.dtype)


def binarize_dynamic(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dynamic binarization (Burda et al. 2015): a fresh draw b ~ Bernoulli(p = x) per call.

    Call it on every batch of every epoch, so the model never sees the same binary image
    twice. Shapes: any; values of x must be in [0, 1]; returns x's dtype.
    """
    _check_float("x", x)
    _check_rng(rng)
    if x.size and (x.min() < 0 or x.max() > 1):
        _fail("x", "probabilities in [0, 1]", f"values in [{x.min()}, {x.max()}]")
    udtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    return (rng.random(x.shape, dtype=udtype) < x).astype(x.dtype)  # P(U < p) = p


def standardize(x: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel standardization z = (x - mean) / std, for Gaussian decoders.

    Without mean/std they are computed from x, with std = sqrt(var + eps) so constant
    pixels do not divide by zero; pass the training set's mean/std for the test set.
    Inverse: x = z * std + mean. Shapes: x (N, D); mean, std (D,); z (N, D), x's dtype.
    """
    _check_float("x", x)
    if x.ndim != 2:
        _fail("x", "of shape (N, D)", x.shape)
    if (mean is None) != (std is None):
        _fail("mean and std", "both given or both None", (type(mean), type(std)))
    if mean is None:
        mean = x.mean(axis=0, dtype=np.float64).astype(x.dtype)
        std = np.sqrt(x.var(axis=0, dtype=np.float64) + eps).astype(x.dtype)
    mean, std = np.asarray(mean), np.asarray(std)
    for name, a in (("mean", mean), ("std", std)):
        if a.shape != x.shape[1:]:
            _fail(name, f"of shape {x.shape[1:]}", a.shape)
    if np.any(std <= 0):
        _fail("std", "positive everywhere", f"min {std.min()}")
    return ((x - mean) / std).astype(x.dtype, copy=False), mean, std


def train_validation_split(n: int, n_validation: int,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint indices covering range(n), each sorted.

    Shapes: (n - n_validation,), (n_validation,) int64.
    """
    n = _check_int("n", n, 1)
    n_validation = _check_int("n_validation", n_validation, 0)
    if n_validation >= n:
        _fail("n_validation", f"< n = {n}", n_validation)
    _check_rng(rng)
    perm = rng.permutation(n)
    return np.sort(perm[n_validation:]), np.sort(perm[:n_validation])


def minibatches(n: int, batch_size: int,
                rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays covering range(n) once: shuffled if rng is given, last batch partial.

    Shapes: each (batch_size,) int64, the last (n % batch_size,) when non-zero.
    """
    n, batch_size = _check_int("n", n, 0), _check_int("batch_size", batch_size, 1)
    if rng is not None:
        _check_rng(rng)
    order = np.arange(n) if rng is None else rng.permutation(n)
    return (order[i:i + batch_size] for i in range(0, n, batch_size))
