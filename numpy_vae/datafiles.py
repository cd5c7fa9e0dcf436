"""Data files: where they live, their SHA-256 sums and mirrors, checked downloads, readers.

Real data live in ``data_dir()/<dataset>/<file>``, unmodified, and are checked against
the SHA-256 of the original file before use. The readers return plain uint8 arrays;
``numpy_vae.data`` wraps them in a ``Dataset``.

Licences of the data sets:

- MNIST (Y. LeCun, C. Cortes, C. J. C. Burges): copyright Yann LeCun and Corinna Cortes;
  commonly distributed under the Creative Commons Attribution-Share Alike 3.0 licence.
- Fashion-MNIST (H. Xiao, K. Rasul, R. Vollgraf, Zalando Research): MIT licence,
  copyright 2017 Zalando SE.
- Frey Face (Brendan Frey's face, from Sam Roweis's data page): no licence has been
  published; it is used for research and teaching, with credit to Brendan Frey.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import struct
import tempfile
import urllib.request
import zlib

import numpy as np
from tqdm import tqdm

from ._checks import check_choice
from .errors import InvalidValueError, NumpyVAEError

DATA_ENV = "NUMPY_VAE_DATA"
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


class DataNotFoundError(NumpyVAEError, FileNotFoundError):
    """A data file is absent, unreadable or could not be downloaded; the message says why."""


_CAUSES = {  # the OSErrors a misplaced or protected data folder gives, in words
    IsADirectoryError: "it is a folder, where the data file should be",
    NotADirectoryError: "a part of the path is a file, not a folder",
    PermissionError: "permission denied",
}


def _unreadable(path: os.PathLike | str, e: OSError, what: str = "read the data file"):
    """A one-line DataNotFoundError naming the path and the cause, for open()'s OSErrors."""
    cause = next((text for cls, text in _CAUSES.items() if isinstance(e, cls)),
                 e.strerror or str(e))
    return DataNotFoundError(f"cannot {what} {path}: {cause}")


def data_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Folder holding ``mnist/``, ``fashion-mnist/``, ``frey-face/`` (need not exist).

    The argument if given, else ``$NUMPY_VAE_DATA``, else ``$XDG_CACHE_HOME/numpy_vae``
    (default ``~/.cache/numpy_vae``).
    """
    if path is None:
        path = os.environ.get(DATA_ENV)
    if path is None:
        try:
            cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
        except (RuntimeError, KeyError):  # no HOME and no entry in the user database
            raise DataNotFoundError(f"no data folder: HOME is not set; set {DATA_ENV} to the "
                                    f"data folder, or pass --data-dir") from None
        path = pathlib.Path(cache) / "numpy_vae"
    return pathlib.Path(path).expanduser()


_data_dir = data_dir  # the loaders' argument `data_dir` shadows the function


# ----------------------------------------------------------------------------- readers


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a gzip'd IDX file of unsigned bytes (magic 0x0801 labels, 0x0803 images).

    Shapes: (N,) for labels, (N, rows, cols) for images; dtype uint8, read-only.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # before OSError: BadGzipFile is one
        raise InvalidValueError(f"{path}: not a readable gzip file ({e})") from e
    except OSError as e:
        raise _unreadable(path, e) from e
    if len(raw) < 4:
        raise InvalidValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic not in (0x0801, 0x0803):
        raise InvalidValueError(f"{path}: IDX magic 0x{magic:08x}, expected 0x00000801 "
                                "(labels) or 0x00000803 (images) of unsigned bytes")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InvalidValueError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise InvalidValueError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes of "
                                f"data, file has {len(raw) - header} (truncated or corrupt)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


_MI_INT8, _MI_UINT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 2, 5, 6, 14, 15


def read_mat_uint8(path: str | os.PathLike, name: str = "ff") -> np.ndarray:
    """Read the 2-D variable ``name``, stored as uint8, from an uncompressed MAT-5 file.

    Pure NumPy: a 128-byte header ending in the endian indicator, then one miMATRIX
    element per variable holding sub-elements array flags, dimensions, name, real part.
    Shapes: (rows, cols) as in MATLAB (the file stores them column-major).
    """
    try:
        raw = pathlib.Path(path).read_bytes()
    except OSError as e:
        raise _unreadable(path, e) from e

    def bad(why: str) -> InvalidValueError:
        return InvalidValueError(f"{path}: not a supported MAT-5 file: {why}")

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
        raise InvalidValueError(f"{path}: variable 'ff' has shape {ff.shape}, expected "
                                "(560, N) with one 28x20 face per column")
    return np.ascontiguousarray(ff.T).reshape(-1, 28, 20)


# ----------------------------------------------------------------------------- downloads


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


def _umask() -> int:
    mask = os.umask(0o022)  # the umask can only be read by setting it: put it straight back
    os.umask(mask)
    return mask


def _download(url: str, dest: pathlib.Path, expected: str) -> None:
    """Stream url into a temporary file beside dest, check its SHA-256, move it in place."""
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:  # the folder, not the mirror, is at fault
        raise _unreadable(dest.parent, e, "write to the data folder") from e
    try:
        h, got = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as f, _urlopen(url, timeout=60) as resp:
            length = getattr(resp, "headers", {}).get("Content-Length")
            total = int(length) if length else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=None, leave=False) as bar:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        if total is not None and got != total:
            raise OSError(f"truncated: received {got} of {total} bytes")
        if h.hexdigest() != expected:
            raise ValueError(f"SHA-256 mismatch: expected {expected}, got {h.hexdigest()}")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600; a data file is like any other
        os.replace(tmp, dest)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def fetch(dataset: str, filename: str, data_dir: str | os.PathLike | None = None,
          download: bool = True) -> pathlib.Path:
    """Path of a checked data file, downloading it from ``MIRRORS`` if absent.

    An existing file with the wrong SHA-256 is refused (InvalidValueError); a file that is
    absent and cannot be downloaded, or cannot be read, raises DataNotFoundError.
    """
    check_choice("dataset", dataset, tuple(SHA256))
    check_choice("filename", filename, tuple(SHA256[dataset]))
    folder = _data_dir(data_dir) / dataset
    path, expected = folder / filename, SHA256[dataset][filename]
    try:
        actual = _sha256(path)
    except FileNotFoundError:
        actual = None
    except OSError as e:  # a folder in its place, no permission: say so, do not download
        raise _unreadable(path, e) from e
    if actual is not None:
        if actual != expected:
            raise InvalidValueError(
                f"{path} is not the original file: SHA-256 {actual}, expected {expected}. "
                "Delete it to download it again, or replace it with the original.")
        return path
    if not download:
        raise DataNotFoundError(f"{path} not found and download=False. "
                                + _by_hand(dataset, folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unreadable(folder, e, "create the data folder") from e
    errors = []
    for base in MIRRORS[dataset]:
        url = base + filename
        try:
            _download(url, path, expected)
            return path
        except DataNotFoundError:  # the local folder is at fault; another mirror won't help
            raise
        except Exception as e:  # network error, truncation, HTTP error, wrong bytes: next
            errors.append(f"  {url}: {type(e).__name__}: {e}")
    raise DataNotFoundError(f"could not download {filename}; tried:\n" + "\n".join(errors)
                            + "\n" + _by_hand(dataset, folder))


# ----------------------------------------------------------------------------- data sets


def read_mnist(dataset: str = "mnist", split: str = "train", data_dir=None,
               download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels 0..9 of "mnist" or "fashion-mnist" (the same IDX format).

    Shapes: images (60000 train | 10000 test, 28, 28) uint8; labels (N,) int64.
    """
    check_choice("dataset", dataset, ("mnist", "fashion-mnist"))
    check_choice("split", split, SPLITS)
    images, labels = (read_idx(fetch(dataset, f, data_dir, download)) for f in IDX_FILES[split])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InvalidValueError(f"{dataset} {split}: images {images.shape} and labels "
                                f"{labels.shape} do not match")
    return images, labels.astype(np.int64)


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


def read_frey_face(split: str = "train", data_dir=None, download: bool = True) -> np.ndarray:
    """Frey Face frames: "train" (1765) and "test" (200) by :func:`frey_split_indices`,
    or "all" (1965, in video order). There is no official test set.

    Shapes: (N, 28, 20) uint8.
    """
    check_choice("split", split, (*SPLITS, "all"))
    faces = read_frey_mat(fetch("frey-face", FREY_FILE, data_dir, download))
    if split != "all":
        if len(faces) != 1965:
            raise InvalidValueError(f"Frey Face has {len(faces)} frames, the split needs 1965")
        faces = faces[frey_split_indices()[SPLITS.index(split)]]
    return faces
