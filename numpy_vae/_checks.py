"""Argument checks shared by the public functions.

Every public entry point validates its arrays here *before* any arithmetic, so
a bad input fails with a message that names the argument, what was expected
and what came, instead of a NumPy broadcasting error three calls deeper.
"""

import numbers

import numpy as np


def check_array(name, a, ndim=None, shape=None, dtype=None, finite=True):
    """Return ``a`` if it is a floating ndarray of the expected form, else raise.

    ``shape`` may contain ``None`` for an axis of any length. ``dtype`` (if
    given) is the exact floating dtype required. Empty batches are refused.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise TypeError(
            f"{name} must have dtype {np.dtype(dtype)} (the model's dtype), got {a.dtype}; "
            f"convert it with .astype(np.{np.dtype(dtype)})"
        )
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if shape is not None:
        if a.ndim != len(shape) or any(s not in (None, n) for s, n in zip(shape, a.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if finite and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must contain only finite values, found NaN or Inf")
    return a


def check_same_shape(names, *arrays):
    """Raise unless all ``arrays`` have one shape; ``names`` is e.g. "mu, logvar"."""
    shapes = [a.shape for a in arrays]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"{names} must have the same shape, got {', '.join(map(str, shapes))}")


def check_unit_interval(name, x):
    """Raise unless every entry of ``x`` lies in [0, 1] (the Bernoulli support's hull)."""
    if x.min() < 0 or x.max() > 1:
        raise ValueError(
            f"{name} must lie in [0, 1] for the Bernoulli likelihood, "
            f"got values in [{x.min():g}, {x.max():g}]"
        )


def check_positive_int(name, n):
    """Return ``n`` as an int if it is a positive integer, else raise."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {n!r}")
    if n <= 0:
        raise ValueError(f"{name} must be a positive integer, got {n}")
    return int(n)


def check_positive_float(name, v, allow_zero=False):
    """Return ``v`` as a float if it is a finite number > 0 (or >= 0), else raise."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {v!r}")
    v = float(v)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {v}")
    return v


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise naming them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_rng(name, rng):
    """Return ``rng`` if it is a ``np.random.Generator``, else raise."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{name} must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng
