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
"""

import json
import os
import tempfile
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


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    Nothing is left behind if ``write`` fails.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
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


def load_checkpoint(path):
    """Read a checkpoint; return ``(model, optimizer, meta)``.

    Raises ``CheckpointError`` naming the file and the problem if it is
    missing, truncated, altered, from another library version, or if any
    array has the wrong name, shape or dtype for the config it declares.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} is damaged or not a numpy_vae checkpoint "
                              f"({type(e).__name__}: {e})") from e
    if meta.get("format") == 1 and "epoch" in meta:  # format 1 counted from 0
        meta = {**meta, "format": FORMAT, "epoch": meta["epoch"] + 1}
    if meta.get("format") != FORMAT or meta.get("version") != __version__:
        raise CheckpointError(
            f"checkpoint {path} was written by numpy_vae {meta.get('version')} "
            f"(format {meta.get('format')}); this is numpy_vae {__version__} (format {FORMAT})")
    try:
        model = VAE.from_config(meta["model_config"], rng=np.random.default_rng(0))
        opt_meta = meta["optimizer"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has an invalid config: {e}") from e

    def take(prefix, like):
        a = arrays.pop(f"{prefix}/{name}", None)
        if a is None:
            raise CheckpointError(f"checkpoint {path} lacks the array {prefix}/{name}")
        if a.shape != like.shape or a.dtype != like.dtype:
            raise CheckpointError(
                f"checkpoint {path}: {prefix}/{name} should be {like.dtype} {like.shape}, "
                f"got {a.dtype} {a.shape}")
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"checkpoint {path}: {prefix}/{name} holds NaN or Inf")
        return a

    m, v = {}, {}
    for name, p in model.params.items():
        p[...] = take("param", p)
        if opt_meta["t"] > 0:
            m[name], v[name] = take("adam_m", p), take("adam_v", p)
    if arrays:
        raise CheckpointError(f"checkpoint {path} holds unexpected arrays: {sorted(arrays)}")
    optimizer = Adam()
    optimizer.load_state_dict({**opt_meta, "m": m, "v": v})
    return model, optimizer, meta
