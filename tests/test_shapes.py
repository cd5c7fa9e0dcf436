"""Tests for numpy_vae.shapes: the built-in procedural data set and its generating factors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_vae import shapes
from numpy_vae.shapes import SHAPE_KINDS, SHAPE_RADIUS, SHAPE_SYMMETRY, draw_shapes


def test_shapes_deterministic_and_seeded():
    a, b, c = draw_shapes(300, seed=5), draw_shapes(300, seed=5), draw_shapes(300, seed=6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    d = draw_shapes(300, seed=np.random.default_rng(5))  # a Generator draws the same
    np.testing.assert_array_equal(a[0], d[0])


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 2**32), size=st.integers(8, 40))
def test_shapes_values_ranges_and_border(n, seed, size):
    images, kinds, factors = draw_shapes(n, seed=seed, size=size)
    assert images.shape == (n, size, size) and images.dtype == np.uint8
    assert set(np.unique(images)) <= {0, 255}
    assert kinds.shape == (n,) and kinds.dtype == np.int64
    assert shapes.SHAPE_FACTORS == ("scale", "rotation", "x", "y") and factors.shape == (n, 4)
    scale, rotation, x, y = factors.T
    period = 2 * np.pi / np.asarray(SHAPE_SYMMETRY)[kinds]
    assert np.all((0.5 <= scale) & (scale <= 1)) and np.all((0 <= rotation) & (rotation < period))
    assert np.all((0 <= x) & (x <= 1) & (0 <= y) & (y <= 1))
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]],
                            axis=1)
    assert not border.any()  # a one-pixel empty border: shapes are never cut


def test_shapes_ink_follows_factors():
    images, kinds, factors = draw_shapes(2000, seed=1)
    ink = (images > 0).sum(axis=(1, 2))
    assert set(kinds.tolist()) == set(range(len(SHAPE_KINDS))) and ink.min() > 10
    scale, rotation, x, y = factors.T
    for k in range(len(SHAPE_KINDS)):  # area grows as scale squared
        m = kinds == k
        assert np.corrcoef(scale[m] ** 2, ink[m])[0, 1] > 0.95
    rows, cols = np.mgrid[0:28, 0:28] + 0.5
    w = images / 255.0
    cy, cx = (w * rows).sum((1, 2)) / ink, (w * cols).sum((1, 2)) / ink
    r = scale * SHAPE_RADIUS * 28
    central = kinds != SHAPE_KINDS.index("L")  # centroid = centre by symmetry
    np.testing.assert_allclose(cx[central], (1 + r + x * (26 - 2 * r))[central], atol=0.6)
    np.testing.assert_allclose(cy[central], (1 + r + y * (26 - 2 * r))[central], atol=0.6)
    e = (kinds == SHAPE_KINDS.index("ellipse")) & (scale > 0.7)
    dx, dy = cols - cx[:, None, None], cy[:, None, None] - rows  # y up
    cxx, cyy, cxy = ((w * d).sum((1, 2)) for d in (dx * dx, dy * dy, dx * dy))
    angle = 0.5 * np.arctan2(2 * cxy, cxx - cyy) % np.pi  # major axis, counter-clockwise
    error = np.angle(np.exp(2j * (angle[e] - rotation[e]))) / 2
    assert np.abs(error).max() < 0.1


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n": 0}, ValueError, "n must be a positive integer, got 0"),
    ({"n": 2.0}, TypeError, "n must be a positive integer, got 2.0"),
    ({"size": 7}, ValueError, "size must be an integer >= 8, got 7"),
    ({"seed": -1}, ValueError, "seed must be an integer >= 0, got -1"),
    ({"seed": "0"}, TypeError, "seed must be an integer >= 0, got '0'"),
])
def test_shapes_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        draw_shapes(**{"n": 3, **kwargs})
