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


def test_learning_curves_of_a_run_on_the_k_sample_bound():
    # L_k has no reconstruction and KL split: those panels show the validation terms
    # alone, and the first panel says the training curve is L_k (a finished IWAE run's
    # pictures once failed here with a KeyError).
    rows = [{"epoch": e, "train_loss": 90.0 - e, "train_ess": 1.6, "val_elbo": -95.0 + e,
             "val_reconstruction": -70.0 + e, "val_kl": 25.0} for e in (1, 2, 3)]
    fig = plots.learning_curves(rows)
    assert [len(ax.lines) for ax in fig.axes] == [2, 1, 1]
    assert fig.axes[0].get_title().startswith("L_k")
    assert fig.axes[0].lines[0].get_ydata().tolist() == [-89.0, -88.0, -87.0]
    elbo_rows = [{**r, "train_reconstruction": -65.0, "train_kl": 24.0} for r in rows]
    assert [len(ax.lines) for ax in plots.learning_curves(elbo_rows).axes] == [2, 2, 2]
