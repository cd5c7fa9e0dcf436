"""Argument checks shared by the public functions.

Every public entry point validates its arrays here *before* any arithmetic, so
a bad input fails with a message that names the argument, what was expected
and what came, instead of a NumPy broadcasting error three calls deeper.
"""

import numbers

import numpy as np

from .errors import InvalidTypeError, InvalidValueError


def check_array(name, a, ndim=None, shape=None, dtype=None, finite=True):
    """Return ``a`` if it is a floating ndarray of the expected form, else raise.

    ``shape`` may contain ``None`` for an axis of any length. ``dtype`` (if
    given) is the exact floating dtype required. Empty batches are refused.
    """
    if type(a) is not np.ndarray:  # np.matrix and masked arrays change what * and sum mean
        raise InvalidTypeError(f"{name} must be a plain NumPy array, got {type(a).__name__}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InvalidTypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise InvalidTypeError(
            f"{name} must have dtype {np.dtype(dtype)} (the model's dtype), got {a.dtype}; "
            f"convert it with .astype(np.{np.dtype(dtype)})"
        )
    if ndim is not None and a.ndim != ndim:
        raise InvalidValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if shape is not None:
        if a.ndim != len(shape) or any(s not in (None, n) for s, n in zip(shape, a.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise InvalidValueError(f"{name} must have shape {want}, got {a.shape}")
    if a.size == 0:
        raise InvalidValueError(f"{name} must not be empty, got shape {a.shape}")
    if finite and not np.all(np.isfinite(a)):
        raise InvalidValueError(f"{name} must contain only finite values, found NaN or Inf")
    return a


def check_same_shape(names, *arrays):
    """Raise unless all ``arrays`` have one shape; ``names`` is e.g. "mu, logvar"."""
    shapes = [a.shape for a in arrays]
    if any(s != shapes[0] for s in shapes):
        raise InvalidValueError(
            f"{names} must have the same shape, got {', '.join(map(str, shapes))}")


def check_alike(names, *arrays, ndim=2):
    """One-line check for a math function: floating ``ndim``-D arrays of one shape.

    ``names`` is e.g. "x, logits". Only type, dtype and shape are looked at (no
    scan of the data): dtypes and finite values are checked once, at the public
    entry points (``VAE``'s methods).
    """
    for name, a in zip(names.split(", "), arrays):
        if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
            raise InvalidTypeError(f"{name} must be a floating-point array, got "
                                   f"{getattr(a, 'dtype', type(a).__name__)}")
        if a.ndim != ndim:
            raise InvalidValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    check_same_shape(names, *arrays)


def check_width(name, a, width):
    """One-line check for a math function: a floating 2-D array with ``width`` columns.

    Only the type, dtype and shape are looked at (no scan of the data).
    """
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
        raise InvalidTypeError(f"{name} must be a floating-point array, got "
                               f"{getattr(a, 'dtype', type(a).__name__)}")
    if a.ndim != 2 or a.shape[1] != width:
        raise InvalidValueError(f"{name} must have shape (any, {width}), got {a.shape}")


def check_unit_interval(name, x):
    """Raise unless every entry of ``x`` lies in [0, 1] (the Bernoulli support's hull)."""
    if x.min() < 0 or x.max() > 1:
        raise InvalidValueError(
            f"{name} must lie in [0, 1] for the Bernoulli likelihood, "
            f"got values in [{x.min():g}, {x.max():g}]"
        )


def check_positive_int(name, n):
    """Return ``n`` as an int if it is a positive integer, else raise."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise InvalidTypeError(f"{name} must be a positive integer, got {n!r}")
    if n <= 0:
        raise InvalidValueError(f"{name} must be a positive integer, got {n}")
    return int(n)


def check_positive_float(name, v, allow_zero=False):
    """Return ``v`` as a float if it is a finite number > 0 (or >= 0), else raise."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InvalidTypeError(f"{name} must be a real number, got {v!r}")
    v = float(v)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidValueError(f"{name} must be a finite number {bound}, got {v}")
    return v


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise naming them."""
    if value not in choices:
        raise InvalidValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_rng(name, rng):
    """Return ``rng`` if it is a ``np.random.Generator``, else raise."""
    if not isinstance(rng, np.random.Generator):
        raise InvalidTypeError(
            f"{name} must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def check_nonnegative_int(name, n):
    """Return ``n`` as an int if it is an integer >= 0 (a count that may be zero), else raise."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer >= 0, got {n!r}")
    if n < 0:
        raise InvalidValueError(f"{name} must be an integer >= 0, got {n}")
    return int(n)
