"""Figures: tiling, colour scales, grids of latent codes."""

import numpy as np

from numpy_vae import plots


def test_tile_places_each_image_in_its_cell():
    images = np.arange(6 * 2 * 3, dtype=float).reshape(6, 2, 3)
    canvas = plots.tile(images, ncols=4, pad=1, fill=-1)
    assert canvas.shape == (2 * 3 - 1, 4 * 4 - 1)
    assert np.array_equal(canvas[3:5, 4:7], images[5])  # row 1, column 1
    assert np.all(canvas[:, 3] == -1) and np.all(canvas[3:, 8:] == -1)  # gaps and empty cells


def test_colour_scale_covers_the_images_only():
    fig = plots.image_grid(np.full((4, 5, 5), 0.05), 2, colorbar=True)
    assert fig.axes[0].images[0].get_clim()[1] < 0.1


def test_prior_grid_and_traversals():
    z = plots.prior_grid(5)
    assert z.shape == (25, 2)
    assert np.allclose(np.unique(z[:, 0]), -np.unique(z[:, 0])[::-1])  # symmetric quantiles
    assert z[12].tolist() == [0.0, 0.0]  # the median in the middle
    t = plots.traversal_latents(np.array([0.5, -1.0, 2.0]), n_steps=4, span=1.5)
    assert t.shape == (12, 3)
    assert np.allclose(t[4:8, 1], np.linspace(-1.5, 1.5, 4))
    assert np.all(t[4:8, [0, 2]] == [0.5, 2.0])
