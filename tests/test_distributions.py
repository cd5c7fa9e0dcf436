"""Reparameterization, KL and likelihoods: gradients and behaviour (float64)."""

import numpy as np
import pytest
from conftest import GRAD_TOL as TOL
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from numpy_vae import distributions as dist
from numpy_vae.gradcheck import check_backward, numerical_gradient_array, rel_error


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def vjp_check(forward, backward, inputs, rng):
    """Check ``backward`` against central differences for every input of ``forward``."""
    out, cache = forward(*inputs)
    dout = rng.normal(size=out.shape)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for i, g in enumerate(grads):
        def f(a, i=i):
            args = list(inputs)
            args[i] = a
            return forward(*args)[0]
        err = rel_error(g, numerical_gradient_array(f, inputs[i], dout))
        assert err < TOL, (forward.__name__, i, err)


def test_reparameterize_gradient(rng):
    mu, logvar, eps = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    vjp_check(lambda m, v: dist.reparameterize(m, v, eps), dist.reparameterize_backward,
              (mu, logvar), rng)


def test_kl_gradient_is_mu_and_half_expm1(rng):
    mu, logvar = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    vjp_check(dist.kl_standard_normal, dist.kl_standard_normal_backward, (mu, logvar), rng)
    _, cache = dist.kl_standard_normal(mu, logvar)
    dmu, dlogvar = dist.kl_standard_normal_backward(np.ones(3), cache)
    assert np.allclose(dmu, mu) and np.allclose(dlogvar, (np.exp(logvar) - 1) / 2)


def test_bernoulli_gradient(rng):
    x, logits = rng.uniform(size=(3, 5)), 3 * rng.normal(size=(3, 5))
    vjp_check(lambda l: dist.bernoulli_log_likelihood(x, l), dist.bernoulli_log_likelihood_backward,
              (logits,), rng)


def test_gaussian_gradient(rng):
    x, mean, logvar = rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    vjp_check(lambda m, v: dist.gaussian_log_likelihood(x, m, v),
              dist.gaussian_log_likelihood_backward, (mean, logvar), rng)


def test_gaussian_fixed_gradient(rng):
    x, mean = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    vjp_check(lambda m: dist.gaussian_fixed_log_likelihood(x, m, 0.3),
              dist.gaussian_fixed_log_likelihood_backward, (mean,), rng)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_bounded_logvar_gradient_including_the_floor(rng, scale):
    # scale 10 puts raw far into the floor (softplus ~ 0) and far above it.
    raw = scale * rng.normal(size=(3, 5))
    vjp_check(lambda r: dist.bounded_logvar(r, 1e-2), dist.bounded_logvar_backward, (raw,), rng)


def test_bounded_logvar_never_goes_below_its_floor():
    raw = np.array([[-1e4, -50.0, -5.0, 0.0, 5.0, 1e4]])
    logvar, _ = dist.bounded_logvar(raw, 1e-3)
    assert np.all(logvar >= np.log(1e-3))
    assert logvar[0, 0] == pytest.approx(np.log(1e-3))
    assert logvar[0, -1] == pytest.approx(np.log(1e4 + 1e-3))
    # The log-density of a pixel the mean hits exactly is capped by the floor.
    x = np.zeros((1, 6))
    logp, _ = dist.gaussian_log_likelihood(x, x, logvar)
    assert logp[0] <= -3 * np.log(2 * np.pi * 1e-3) + 1e-9


def test_likelihoods_equal_their_textbook_densities(rng):
    x, mean, logvar = rng.uniform(size=(2, 4)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    var = np.exp(logvar)
    direct = np.log(np.exp(-(x - mean) ** 2 / (2 * var)) / np.sqrt(2 * np.pi * var)).sum(1)
    assert np.allclose(dist.gaussian_log_likelihood(x, mean, logvar)[0], direct)
    direct_fixed = np.log(np.exp(-(x - mean) ** 2 / 0.6) / np.sqrt(2 * np.pi * 0.3)).sum(1)
    assert np.allclose(dist.gaussian_fixed_log_likelihood(x, mean, 0.3)[0], direct_fixed)
    p = 1 / (1 + np.exp(-mean))
    assert np.allclose(dist.bernoulli_log_likelihood(x, mean)[0],
                       (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1))
    assert np.allclose(dist.standard_normal_log_density(x),
                       dist.gaussian_log_likelihood(x, np.zeros_like(x), np.zeros_like(x))[0])


def test_kl_is_zero_at_the_prior_and_matches_a_one_dimensional_case():
    assert np.all(dist.kl_standard_normal(np.zeros((2, 3)), np.zeros((2, 3)))[0] == 0)
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2
    m, s = 0.7, 1.9
    kl, _ = dist.kl_standard_normal(np.array([[m]]), np.array([[2 * np.log(s)]]))
    assert kl[0] == pytest.approx(-np.log(s) + (s**2 + m**2) / 2 - 0.5)


def test_sampler_moments_match_mu_and_exp_logvar(rng):
    """z = mu + exp(logvar/2) eps must have variance exp(logvar), not exp(logvar)^2."""
    mu, logvar = np.array([[1.5, -2.0, 0.0]]), np.array([[-1.0, 0.5, 2.0]])
    n = 200_000
    z, _ = dist.reparameterize(np.repeat(mu, n, 0), np.repeat(logvar, n, 0),
                               rng.standard_normal((n, 3)))
    var = np.exp(logvar[0])
    # Standard errors: sqrt(var/n) for the mean, var*sqrt(2/n) for the variance.
    assert np.all(np.abs(z.mean(0) - mu[0]) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(z.var(0) - var) < 5 * var * np.sqrt(2 / n))


def test_monte_carlo_kl_of_the_sampler_matches_the_closed_form(rng):
    """E_q[log q(z) - log p(z)] over the sampler's own z equals the closed-form KL.

    A sampler using exp(logvar) as a standard deviation passes every gradient
    check together with this KL, but fails here.
    """
    mu, logvar = np.array([[0.8, -0.3, 1.2]]), np.array([[-0.7, 0.9, 0.1]])
    n = 400_000
    mu_n, logvar_n = np.repeat(mu, n, 0), np.repeat(logvar, n, 0)
    z, _ = dist.reparameterize(mu_n, logvar_n, rng.standard_normal((n, 3)))
    log_q = dist.gaussian_log_likelihood(z, mu_n, logvar_n)[0]
    log_ratio = log_q - dist.standard_normal_log_density(z)
    closed = dist.kl_standard_normal(mu, logvar)[0][0]
    stderr = log_ratio.std() / np.sqrt(n)
    assert abs(log_ratio.mean() - closed) < 5 * stderr, (log_ratio.mean(), closed, stderr)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
                  elements=st.floats(-30, 30)),
       st.data())
def test_kl_is_nonnegative_and_finite_for_extreme_logvar(logvar, data):
    mu = data.draw(hnp.arrays(np.float64, logvar.shape, elements=st.floats(-1e3, 1e3)))
    kl, cache = dist.kl_standard_normal(mu, logvar)
    dmu, dlogvar = dist.kl_standard_normal_backward(np.ones(len(kl)), cache)
    assert np.all(kl >= 0)
    assert all(np.all(np.isfinite(a)) for a in (kl, dmu, dlogvar))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
                  elements=st.floats(-1e4, 1e4)),
       st.data())
def test_bernoulli_is_nonpositive_and_finite_for_huge_logits(logits, data):
    x = data.draw(hnp.arrays(np.float64, logits.shape, elements=st.floats(0, 1)))
    logp, cache = dist.bernoulli_log_likelihood(x, logits)
    dlogits = dist.bernoulli_log_likelihood_backward(np.ones(len(logp)), cache)
    assert np.all(logp <= 0)
    assert np.all(np.isfinite(logp)) and np.all(np.isfinite(dlogits))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
                  elements=st.floats(-1e4, 1e4)),
       st.floats(1e-6, 1.0))
def test_gaussian_with_bounded_variance_is_finite_for_any_raw_output(raw, min_variance):
    logvar, bcache = dist.bounded_logvar(raw, min_variance)
    x = np.zeros_like(raw)
    logp, cache = dist.gaussian_log_likelihood(x, x + 1.0, logvar)
    dmean, dlogvar = dist.gaussian_log_likelihood_backward(np.ones(len(logp)), cache)
    draw = dist.bounded_logvar_backward(dlogvar, bcache)
    assert all(np.all(np.isfinite(a)) for a in (logvar, logp, dmean, dlogvar, draw))


def test_bad_input_is_refused_with_the_argument_named():
    a = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"mu, logvar must have the same shape"):
        dist.kl_standard_normal(a, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="eps must be a floating-point array"):
        dist.reparameterize(a, a, np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="logits must have 2 dimension"):
        dist.bernoulli_log_likelihood(a, np.zeros(6))
    with pytest.raises(ValueError, match="min_variance must be a finite number > 0, got 0"):
        dist.bounded_logvar(a, 0.0)
    with pytest.raises(ValueError, match="variance must be a finite number > 0"):
        dist.gaussian_fixed_log_likelihood(a, a, -1.0)


def test_kl_per_dimension_sums_to_the_kl():
    rng = np.random.default_rng(11)
    mu, logvar = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    per_dim = dist.kl_standard_normal_per_dim(mu, logvar)
    assert per_dim.shape == (4, 5) and np.all(per_dim >= 0)
    np.testing.assert_allclose(per_dim.sum(axis=1), dist.kl_standard_normal(mu, logvar)[0],
                               rtol=1e-14)
    np.testing.assert_allclose(per_dim, 0.5 * (np.exp(logvar) - 1 - logvar + mu**2), rtol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
def test_bernoulli_matches_logaddexp_and_the_textbook_sigmoid(scale):
    """The one shared exponential gives log(1 + exp(l)) and sigmoid(l) for logits of any size."""
    rng = np.random.default_rng(2)
    logits = scale * rng.normal(size=(5, 40))
    x = np.where(rng.uniform(size=logits.shape) < 0.3, rng.uniform(size=logits.shape),
                 (rng.uniform(size=logits.shape) < 0.5).astype(float))
    logp, cache = dist.bernoulli_log_likelihood(x, logits)
    np.testing.assert_allclose(logp, (x * logits - np.logaddexp(0, logits)).sum(axis=1),
                               rtol=1e-13, atol=1e-13 * logits.shape[1])
    dlogp = rng.normal(size=5)
    sigmoid = 0.5 * (1 + np.tanh(logits / 2))  # another closed form of 1 / (1 + exp(-l))
    np.testing.assert_allclose(dist.bernoulli_log_likelihood_backward(dlogp, cache),
                               dlogp[:, None] * (x - sigmoid), rtol=1e-12, atol=1e-15)


HEADS = {
    "bernoulli": (dist.BernoulliHead(), 1),
    "gaussian": (dist.GaussianHead(0.05), 2),
    "gaussian, sigmoid mean": (dist.GaussianHead(0.05, sigmoid_mean=True), 2),
    "gaussian-fixed": (dist.GaussianFixedHead(0.7), 1),
    "gaussian-fixed, sigmoid mean": (dist.GaussianFixedHead(0.7, sigmoid_mean=True), 1),
}


@pytest.mark.parametrize("name", HEADS)
def test_each_head_backward_matches_random_direction_differences(name):
    """log_px_backward of every head against central differences of log_px along
    random directions of the decoder output (gradcheck.check_backward)."""
    head, per_pixel = HEADS[name]
    rng = np.random.default_rng(12)
    x = rng.uniform(size=(4, 6))
    h = 2 * rng.normal(size=(4, per_pixel * 6))
    h[0, -1] = -8.0  # deep below the variance floor, for the Gaussian
    dlogp = rng.normal(size=4)
    _, cache = head.log_px(x, h)
    dh = head.log_px_backward(dlogp, cache)
    assert dh.shape == h.shape
    errors = check_backward(lambda h: head.log_px(x, h)[0], {"h": h}, {"h": dh}, dlogp, rng,
                            n_directions=5)
    assert errors["h"] < TOL, errors
    # and the pieces: the mean the head reports is what the likelihood uses
    mean = head.mean(h)
    assert mean.shape == x.shape
    if name == "bernoulli":
        np.testing.assert_allclose(mean, 1 / (1 + np.exp(-h)), rtol=1e-12)
    elif "sigmoid" in name:
        assert np.all((mean > 0) & (mean < 1))
