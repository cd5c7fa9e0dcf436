"""Shared test set-up: no network, and the rule for tests that need real data sets.

Tests that read MNIST, Fashion-MNIST or Frey Face take them from the data folder
(``NUMPY_VAE_DATA``) and never download. Without the files they are skipped
with the reason; with ``NUMPY_VAE_REQUIRE_DATA=1`` (set by ``.ci/run``) the
skip becomes a failure, so CI always runs them.
"""

import os

import matplotlib
import numpy as np
import pytest

from numpy_vae import VAE, data

matplotlib.use("Agg")

REQUIRE_DATA_ENV = "NUMPY_VAE_REQUIRE_DATA"


def _require_data(name, split="train"):
    try:
        return data.load_dataset(name, split, download=False)
    except data.DataNotFoundError as e:
        reason = (f"{name} files not found under {data.data_dir()} "
                  f"(set {data.DATA_ENV} to the data folder): {e}")
        if os.environ.get(REQUIRE_DATA_ENV) == "1":
            pytest.fail(f"{REQUIRE_DATA_ENV}=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture
def require_data():
    """``require_data(name, split)``: the real data set, or skip (fail in CI) when absent."""
    return _require_data


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any test that would open a URL without its own fake opener fails."""
    def refuse(url, timeout=None):
        raise AssertionError(f"test tried to open {url}")
    monkeypatch.setattr("numpy_vae.datafiles._urlopen", refuse)  # the one opener of URLs


# ---------------------------------------------------------------------------- shared by the tests

GRAD_TOL = 1e-6  # the largest relative error (gradcheck.rel_error) any float64 check accepts


def make_small_model(likelihood="bernoulli", activation="tanh", seed=0, **kw):
    """A float64 VAE 6-(5, 4)-3 with non-zero random parameters, and the rng that made it.

    Zero biases could hide a wrong backward, so every parameter gets noise.
    """
    rng = np.random.default_rng(seed)
    model = VAE(data_dim=6, hidden_dims=(5, 4), latent_dim=3, likelihood=likelihood,
                activation=activation, dtype=np.float64, rng=rng, **kw)
    for p in model.params.values():
        p += 0.2 * rng.normal(size=p.shape)
    return model, rng


@pytest.fixture
def small_model():
    """``small_model(likelihood, activation, seed, **VAE options) -> (model, rng)``."""
    return make_small_model
