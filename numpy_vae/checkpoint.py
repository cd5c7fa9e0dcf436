"""Save and load a model with its optimizer and run state, safely.

One checkpoint is one ``.npz`` file holding plain numeric arrays only (loaded
with ``allow_pickle=False``, so it can carry no executable content):

- ``param/<name>``: the model's parameters;
- ``adam_m/<name>``, ``adam_v/<name>``: Adam's moment estimates;
- ``meta``: a JSON text (model config, optimizer hyperparameters and step,
  epoch, RNG state, training config and history, library version).

The file is written under a temporary name in the same folder, flushed to
disk, then renamed over the old one (``os.replace`` is atomic), so a run killed
at any moment leaves either the previous checkpoint or the new one, never a
torn file. A readable copy of ``meta`` is written beside it as JSON.

A reader opens the ``.npz`` once and reads everything from that one file, so a
checkpoint replaced while it is being read cannot mix two epochs. The JSON copy
is renamed into place just after the ``.npz``; a reader that finds the two
disagreeing tries again for a moment before calling the copy edited by hand.
"""

import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .errors import NumpyVAEError
from .optim import Adam
from .vae import VAE

FORMAT = 2  # 2: "epoch" counts finished epochs, as the history does (1: the last epoch's index)


class CheckpointError(NumpyVAEError, ValueError):
    """A checkpoint file is missing, damaged, or does not match what was asked for."""


class _CopyDiffers(CheckpointError):
    """The readable JSON copy says something else than the checkpoint (for now)."""


def temporary_name_pattern(name):
    """The glob of the temporary files ``atomic_write`` makes for a file called ``name``."""
    return f".{name}.*.tmp"


def _umask():
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    Nothing is left behind if ``write`` fails. The file gets the permissions a
    plain ``open`` would give it (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def save_checkpoint(path, model, optimizer, meta):
    """Write model parameters, Adam state and ``meta`` (a JSON-able dict) to ``path``."""
    state = optimizer.state_dict()
    full_meta = {
        **meta, "format": FORMAT, "version": __version__, "model_config": model.config.to_dict(),
        "optimizer": {"lr": state["lr"], "betas": list(state["betas"]), "eps": state["eps"],
                      "t": state["t"]},
    }
    arrays = {f"param/{k}": p for k, p in model.params.items()}
    for k in model.params:
        if k in state["m"]:
            arrays[f"adam_m/{k}"], arrays[f"adam_v/{k}"] = state["m"][k], state["v"][k]
    arrays["meta"] = np.array(json.dumps(full_meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))
    write_json(Path(path).with_suffix(".json"), full_meta)


MAX_META_BYTES = 64 << 20  # the JSON of a run's settings and history is far smaller


def _array_headers(file, path):
    """``{name: (shape, dtype, size)}`` of the arrays in the ``.npz`` open as ``file``
    (``path`` names it in errors), from their headers only.

    An ``.npz`` is a zip of ``.npy`` files; each starts with a small header
    giving dtype and shape. Reading only the headers lets an untrusted file be
    checked before anything large is decompressed or allocated. The zip's
    declared size of each member must match its header, so a member cannot
    promise more data than its header describes.
    """
    headers = {}
    with zipfile.ZipFile(file) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"checkpoint {path} holds a non-array member "
                                      f"{info.filename!r}")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise CheckpointError(f"checkpoint {path}: {info.filename} has an "
                                          f"unsupported .npy format {version}")
                if dtype.hasobject:
                    raise CheckpointError(
                        f"checkpoint {path}: {info.filename} holds Python objects (pickled "
                        f"data), never part of a numpy_vae checkpoint: damaged or not ours")
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if info.file_size != f.tell() + nbytes:
                    raise CheckpointError(
                        f"checkpoint {path}: {info.filename} declares {dtype} {shape} "
                        f"({nbytes} bytes) but holds {info.file_size - f.tell()} bytes")
            headers[info.filename[:-4]] = (tuple(shape), dtype, nbytes)
    return headers


def load_checkpoint(path, wait=1.0):
    """Read a checkpoint; return ``(model, optimizer, meta)``.

    Raises ``CheckpointError`` naming the file and the problem if it is
    missing, truncated, altered, from another library version, or if any
    array has the wrong name, shape or dtype for the config it declares.
    If the readable JSON copy disagrees with the checkpoint, it is read again
    for up to ``wait`` seconds (a training process may be replacing the pair)
    before the copy is reported as edited by hand.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, "rb") as file:
                return _load(file, path)
        except _CopyDiffers:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
        except OSError as e:
            raise CheckpointError(f"checkpoint {path} cannot be read ({e})") from e


def _load(file, path):
    """``load_checkpoint`` of the checkpoint open as ``file``."""
    try:
        headers = _array_headers(file, path)
        shape, dtype, _ = headers.get("meta", ((), None, 0))
        if dtype is None or dtype.kind != "U" or shape != () or dtype.itemsize > MAX_META_BYTES:
            raise CheckpointError(f"checkpoint {path}: its meta entry is missing or not a text "
                                  f"of at most {MAX_META_BYTES} bytes")
        file.seek(0)
        with np.load(file, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} is damaged or not a numpy_vae checkpoint "
                              f"({type(e).__name__}: {e})") from e
    raw_meta = meta
    if meta.get("format") == 1 and "epoch" in meta:  # format 1 counted from 0
        meta = {**meta, "format": FORMAT, "epoch": meta["epoch"] + 1}
    if meta.get("format") != FORMAT or meta.get("version") != __version__:
        raise CheckpointError(
            f"checkpoint {path} was written by numpy_vae {meta.get('version')} "
            f"(format {meta.get('format')}); this is numpy_vae {__version__} (format {FORMAT})")
    try:
        model = VAE.from_config(meta["model_config"], rng=np.random.default_rng(0))
        opt_meta = meta["optimizer"]
    except (KeyError, TypeError, ValueError, MemoryError) as e:
        raise CheckpointError(f"checkpoint {path} has an invalid config: "
                              f"{type(e).__name__}: {e}") from e
    expected = {f"{prefix}/{name}": p for name, p in model.params.items()
                for prefix in ("param", "adam_m", "adam_v")
                if prefix == "param" or opt_meta.get("t", 0) > 0}
    unexpected = sorted(headers.keys() - expected.keys() - {"meta"})
    if unexpected:
        raise CheckpointError(f"checkpoint {path} holds unexpected arrays: {unexpected}")
    for key, like in expected.items():  # from the headers alone: nothing decompressed yet
        if key not in headers:
            raise CheckpointError(f"checkpoint {path} lacks the array {key}")
        shape, dtype, _ = headers[key]
        if shape != like.shape or dtype != like.dtype:
            raise CheckpointError(f"checkpoint {path}: {key} should be {like.dtype} "
                                  f"{like.shape}, got {dtype} {shape}")
    try:
        file.seek(0)
        with np.load(file, allow_pickle=False) as f:
            arrays = {k: f[k] for k in expected}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} is damaged ({type(e).__name__}: {e})") from e

    def take(prefix, like):
        a = arrays.pop(f"{prefix}/{name}")
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"checkpoint {path}: {prefix}/{name} holds NaN or Inf")
        return a

    m, v = {}, {}
    for name, p in model.params.items():
        p[...] = take("param", p)
        if opt_meta["t"] > 0:
            m[name], v[name] = take("adam_m", p), take("adam_v", p)
    optimizer = Adam()
    optimizer.load_state_dict({**opt_meta, "m": m, "v": v})
    readable = path.with_suffix(".json")
    if readable.is_file():  # the readable copy must say what the checkpoint says
        try:
            copy = json.loads(readable.read_text())
        except (OSError, ValueError) as e:
            copy = f"unreadable ({e})"
        if copy != raw_meta:
            raise _CopyDiffers(
                f"{readable} differs from {path} (edited by hand?); the run's settings live in "
                f"{path.name} and the .json is only a copy: undo the edit, and change the "
                f"settings that may change (learning rate, epochs) with the options of "
                f"numpy-vae train --resume")
    return model, optimizer, meta
