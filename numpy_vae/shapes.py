"""The built-in "shapes" data set: binary images of five simple shapes and their factors.

Every image is drawn from known, independent generating factors (the kind, scale,
rotation and position), so a learned latent space can be compared with the truth.
It needs no download; ``numpy_vae.data.make_shapes`` wraps it in a ``Dataset``.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_nonnegative_int, check_positive_int
from .errors import InvalidValueError

SHAPE_KINDS = ("square", "ellipse", "triangle", "cross", "L")
SHAPE_SYMMETRY = (4, 2, 3, 4, 1)  # rotation by 2*pi/k maps the shape onto itself
SHAPE_FACTORS = ("scale", "rotation", "x", "y")
SHAPE_SEEDS = {"train": (0, 20000), "test": (1, 5000)}  # split -> (seed, n)
SHAPE_RADIUS = 0.35  # circumradius at scale 1, as a fraction of the image side


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


def draw_shapes(n: int = 20000, seed: int | np.random.Generator = 0,
                size: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary images of simple shapes, their kinds and their generating factors.

    Kinds 0..4 = SHAPE_KINDS, drawn uniformly. Factors (SHAPE_FACTORS), drawn uniformly
    and independently: "scale" in [0.5, 1] (circumradius = scale * SHAPE_RADIUS * size
    pixels); "rotation" in radians, counter-clockwise, in [0, 2*pi/k) where
    k = SHAPE_SYMMETRY (square 4, ellipse 2, triangle 3, cross 4, L 1), so each image
    has one rotation; "x", "y" in [0, 1]: from the leftmost/topmost to the
    rightmost/bottommost centre that keeps a one-pixel empty border whatever the rotation.
    ``seed`` is an int >= 0 or a ``np.random.Generator`` (then it is advanced).
    Shapes: images (n, size, size) uint8 in {0, 255}; kinds (n,) int64; factors (n, 4).
    """
    n = check_positive_int("n", n)
    size = check_positive_int("size", size)
    if size < 8:  # below 8 pixels the smallest shapes are a pixel or two
        raise InvalidValueError(f"size must be an integer >= 8, got {size}")
    if not isinstance(seed, np.random.Generator):
        seed = check_nonnegative_int("seed", seed)
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(SHAPE_KINDS), n)
    scale = rng.uniform(0.5, 1.0, n)
    rotation = rng.uniform(0, 1, n) * 2 * np.pi / np.asarray(SHAPE_SYMMETRY)[kind]
    x, y = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    r = scale * SHAPE_RADIUS * size  # circumradius in pixels
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
    factors = np.stack([scale, rotation, x, y], axis=1)  # (n, 4)
    return images, kind.astype(np.int64), factors
