"""The conditional VAE: q(z|x, y) and P(x|z, y) read a one-hot label ("Beyond the notes").

Gradients for every likelihood with labels, that the labels really condition
the networks, that zero label weights give back the unconditional model, and
that bad labels are refused, naming y.
"""

import numpy as np
import pytest
from conftest import GRAD_TOL as TOL
from conftest import make_small_model as small_model

from numpy_vae import VAE
from numpy_vae.gradcheck import check_model_gradients

LIKELIHOODS = [("bernoulli", "identity"), ("gaussian", "identity"), ("gaussian", "sigmoid"),
               ("gaussian-fixed", "identity"), ("gaussian-fixed", "sigmoid")]
C = 4  # labels 0..3


def conditional_model(likelihood="bernoulli", decoder_mean="identity", seed=0):
    model, rng = small_model(likelihood, seed=seed, min_variance=0.05, fixed_variance=0.7,
                             decoder_mean=decoder_mean, num_labels=C)
    return model, rng


def test_networks_read_the_labels():
    model, _ = conditional_model()
    assert model.params["encoder.W0"].shape == (6 + C, 5)  # [x, onehot(y)]
    assert model.params["decoder.W0"].shape == (3 + C, 4)  # [z, onehot(y)]
    assert model.config.num_labels == C
    assert VAE.from_config(model.config.to_dict()).config == model.config


@pytest.mark.parametrize("likelihood, decoder_mean", LIKELIHOODS)
def test_gradients_with_labels_match_central_differences(likelihood, decoder_mean):
    model, rng = conditional_model(likelihood, decoder_mean)
    x, y = rng.uniform(size=(5, 6)), rng.integers(0, C, 5)
    eps = rng.standard_normal((5, 3))
    errors = check_model_gradients(
        model, loss_and_grads=lambda: model.loss_and_grads(x, eps=eps, beta=0.7, y=y))
    assert max(errors.values()) < TOL, errors
    eps_k = rng.standard_normal((5, 3, 3))
    errors = check_model_gradients(
        model, loss_and_grads=lambda: model.iwae_loss_and_grads(x, 3, eps=eps_k, y=y))
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("likelihood, decoder_mean", LIKELIHOODS)
def test_changing_the_label_changes_the_decoder_output(likelihood, decoder_mean):
    model, rng = conditional_model(likelihood, decoder_mean)
    z = rng.standard_normal((C, 3))
    means = [model.sample(C, rng, z=z, y=np.full(C, label)) for label in range(C)]
    for a in range(C):
        for b in range(a):
            assert np.min(np.abs(means[a] - means[b])) > 1e-6, (a, b)  # every pixel moves
    x = rng.uniform(size=(C, 6))
    mu_0, _ = model.encode(x, y=np.zeros(C, dtype=int))
    mu_1, _ = model.encode(x, y=np.ones(C, dtype=int))
    assert np.min(np.abs(mu_0 - mu_1)) > 1e-6


@pytest.mark.parametrize("likelihood, decoder_mean", LIKELIHOODS)
def test_zero_label_weights_give_the_unconditional_model(likelihood, decoder_mean):
    """Rows D.. of encoder.W0 and Z.. of decoder.W0 read the one-hot columns; zero them and
    every output equals an unconditional model's with the same other weights."""
    model, rng = conditional_model(likelihood, decoder_mean)
    plain = VAE.from_config({**model.config.to_dict(), "num_labels": 0}, rng=rng)
    for name, p in plain.params.items():
        p[...] = model.params[name][:p.shape[0]]  # W0: the first D (or Z) rows
    model.params["encoder.W0"][6:] = 0
    model.params["decoder.W0"][3:] = 0
    x, y = rng.uniform(size=(5, 6)), rng.integers(0, C, 5)
    eps, eps_k = rng.standard_normal((5, 3)), rng.standard_normal((5, 4, 3))

    np.testing.assert_allclose(model.encode(x, y), plain.encode(x), rtol=1e-13)
    np.testing.assert_allclose(model.sample(5, rng, z=eps, y=y), plain.sample(5, rng, z=eps),
                               rtol=1e-13)
    np.testing.assert_allclose(model.elbo(x, eps=eps, y=y), plain.elbo(x, eps=eps), rtol=1e-13)
    np.testing.assert_allclose(model.log_likelihood(x, 4, eps=eps_k, y=y),
                               plain.log_likelihood(x, 4, eps=eps_k), rtol=1e-13)
    for call in (lambda m, **kw: m.loss_and_grads(x, eps=eps, **kw),
                 lambda m, **kw: m.iwae_loss_and_grads(x, 4, eps=eps_k, **kw)):
        loss, grads, _ = call(model, y=y)
        grads = {name: g.copy() for name, g in grads.items()}
        loss_plain, grads_plain, _ = call(plain)
        assert loss == pytest.approx(loss_plain, rel=1e-13)
        for name, g in grads_plain.items():
            np.testing.assert_allclose(grads[name][:g.shape[0]], g, rtol=1e-11, atol=1e-14,
                                       err_msg=name)


def test_label_weights_get_the_gradient_of_their_class_only():
    """d loss / d W0[D + c] sums dh over the examples labelled c: zero for absent classes."""
    model, rng = conditional_model()
    x, y = rng.uniform(size=(6, 6)), np.array([0, 0, 2, 2, 2, 0])
    _, grads, _ = model.loss_and_grads(x, eps=rng.standard_normal((6, 3)), y=y)
    for net, first in (("encoder", 6), ("decoder", 3)):
        g = grads[f"{net}.W0"][first:]  # (C, H): the label rows
        assert np.all(g[[1, 3]] == 0) and np.all(np.abs(g[[0, 2]]).sum(axis=1) > 0), net


def good_y(n):
    return np.arange(n) % C


# Every method that takes labels, called on 4 examples with the labels given.
METHODS = {
    "encode": lambda m, x, y, rng: m.encode(x, y=y),
    "decode": lambda m, x, y, rng: m.decode(rng.standard_normal((4, 3)), y=y),
    "elbo_terms": lambda m, x, y, rng: m.elbo_terms(x, rng=rng, y=y),
    "elbo": lambda m, x, y, rng: m.elbo(x, rng=rng, y=y),
    "loss_and_grads": lambda m, x, y, rng: m.loss_and_grads(x, rng=rng, y=y),
    "iwae_loss_and_grads": lambda m, x, y, rng: m.iwae_loss_and_grads(x, 2, rng=rng, y=y),
    "sample": lambda m, x, y, rng: m.sample(4, rng, y=y),
    "log_likelihood": lambda m, x, y, rng: m.log_likelihood(x, 3, rng=rng, y=y),
    "active_units": lambda m, x, y, rng: m.active_units(x, y=y),
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_takes_and_checks_the_labels(method):
    call = METHODS[method]
    model, rng = conditional_model("gaussian")
    x = rng.uniform(size=(4, 6))
    call(model, x, good_y(4), rng)  # fine
    with pytest.raises(ValueError, match=r"y is required: this model is conditional "
                                         r"\(num_labels=4\); give an int array of shape \(4,\)"):
        call(model, x, None, rng)
    with pytest.raises(ValueError, match=r"y must have shape \(4,\), got \(4, 1\)"):
        call(model, x, good_y(4)[:, None], rng)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 4\), got values in "
                                         r"\[0, 4\]"):
        call(model, x, np.array([0, 1, 4, 2]), rng)
    with pytest.raises(TypeError, match="y must be a NumPy array of integer labels, got float64"):
        call(model, x, good_y(4).astype(float), rng)
    plain, rng = small_model("gaussian")
    with pytest.raises(ValueError, match=r"y must be None: this model is unconditional"):
        call(plain, x, good_y(4), rng)


@pytest.mark.parametrize("y, error, message", [
    (np.array([0, 1, 2]), ValueError, r"y must have shape \(4,\), got \(3,\)"),
    (np.array([0, -1, 2, 3]), ValueError, r"y must hold labels in \[0, 4\), got values in \[-1,"),
    (np.array([True, False, True, False]), TypeError, "integer labels, got bool"),
    ([0, 1, 2, 3], TypeError, "integer labels, got list"),
    (2, TypeError, "integer labels, got int"),
    (np.array([0.0, 1.0, 2.0, 3.0]), TypeError, "integer labels, got float64"),
])
def test_bad_labels_are_refused_before_any_arithmetic(y, error, message):
    model, rng = conditional_model()
    x = rng.uniform(size=(4, 6))
    before = {name: p.copy() for name, p in model.params.items()}
    with pytest.raises(error, match=message):
        model.loss_and_grads(x, rng=rng, y=y)
    assert all(np.array_equal(before[name], p) for name, p in model.params.items())


def test_all_integer_dtypes_are_labels():
    model, rng = conditional_model()
    x = rng.uniform(size=(4, 6))
    ref = model.elbo(x, eps=np.zeros((4, 3)), y=good_y(4))
    for dtype in (np.int8, np.uint8, np.int32, np.uint64):
        np.testing.assert_array_equal(model.elbo(x, eps=np.zeros((4, 3)),
                                                 y=good_y(4).astype(dtype)), ref)


@pytest.mark.parametrize("num_labels, error", [(-1, ValueError), (2.0, TypeError),
                                               (True, TypeError)])
def test_num_labels_must_be_a_count(num_labels, error):
    with pytest.raises(error, match="num_labels must be an integer >= 0"):
        VAE(6, (5,), 3, num_labels=num_labels, rng=np.random.default_rng(0))
