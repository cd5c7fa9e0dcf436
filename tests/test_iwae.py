"""The importance-weighted bound L_k as a training objective, and active units.

Burda, Grosse & Salakhutdinov (2015); LECTURE.md "Beyond the notes". Gradients
against central differences in float64, then what a gradient check cannot
see: L_k grows with k, equals log P(x) when q is the exact posterior, has the
ELBO's expected gradient at k = 1, and is what ``log_likelihood`` estimates.
"""

import numpy as np
import pytest
from conftest import GRAD_TOL as TOL
from conftest import make_small_model as small_model

from numpy_vae import VAE
from numpy_vae import distributions as dist
from numpy_vae.gradcheck import (
    check_model_gradients,
    numerical_gradient_array,
    rel_error,
)

LIKELIHOODS = [("bernoulli", "identity"), ("gaussian", "identity"), ("gaussian", "sigmoid"),
               ("gaussian-fixed", "identity"), ("gaussian-fixed", "sigmoid")]


def test_the_new_backward_pairs_match_central_differences():
    """The pieces of the L_k gradient in distributions, each against central differences."""
    rng = np.random.default_rng(0)
    x, mean, logvar = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    dlogp = rng.normal(size=3)
    _, cache = dist.gaussian_log_likelihood(x, mean, logvar)
    dx = dist.gaussian_log_likelihood_x_backward(dlogp, cache)
    num = numerical_gradient_array(lambda a: dist.gaussian_log_likelihood(a, mean, logvar)[0],
                                   x, dlogp)
    assert rel_error(dx, num) < TOL
    dz = dist.standard_normal_log_density_backward(dlogp, x)
    assert rel_error(dz, numerical_gradient_array(dist.standard_normal_log_density, x, dlogp)) < TOL
    log_w = 30 * rng.normal(size=(3, 5))  # weights many orders of magnitude apart
    L, w_tilde = dist.log_mean_exp(log_w)
    num = numerical_gradient_array(lambda a: dist.log_mean_exp(a)[0], log_w, dlogp)
    assert rel_error(dist.log_mean_exp_backward(dlogp, w_tilde), num) < TOL
    np.testing.assert_allclose(L, np.log(np.mean(np.exp(log_w), axis=1)), rtol=1e-12)
    np.testing.assert_allclose(w_tilde.sum(axis=1), 1, rtol=1e-12)
    L_big, _ = dist.log_mean_exp(log_w + 1000)  # no overflow: shifted by the maximum
    np.testing.assert_allclose(L_big, L + 1000, rtol=1e-12)
    ess = dist.effective_sample_size(np.array([[0.25] * 4, [1, 0, 0, 0], [0.5, 0.5, 0, 0]]))
    np.testing.assert_allclose(ess, [4, 1, 2])


@pytest.mark.parametrize("likelihood, decoder_mean", LIKELIHOODS)
@pytest.mark.parametrize("k", [1, 3])
def test_iwae_gradients_match_central_differences(likelihood, decoder_mean, k):
    model, rng = small_model(likelihood, min_variance=0.05, fixed_variance=0.7,
                             decoder_mean=decoder_mean)
    x = rng.uniform(size=(4, 6))
    eps = rng.standard_normal((4, k, 3))
    errors = check_model_gradients(
        model, loss_and_grads=lambda: model.iwae_loss_and_grads(x, k, eps=eps))
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, (worst, errors[worst])


def test_iwae_gradient_check_with_uneven_weights_and_relu():
    """Spread-out posteriors make the normalized weights far from 1/k; relu has kinks."""
    model, rng = small_model("gaussian", "relu", seed=4, min_variance=0.05)
    model.params["encoder.b2"][3:] += 1.5  # logvar up: samples far apart, weights uneven
    x = rng.uniform(size=(3, 6))
    eps = rng.standard_normal((3, 4, 3))
    _, _, terms = model.iwae_loss_and_grads(x, 4, eps=eps)
    assert terms["ess"].min() < 2.5  # not the near-uniform case
    errors = check_model_gradients(
        model, loss_and_grads=lambda: model.iwae_loss_and_grads(x, 4, eps=eps))
    assert max(errors.values()) < TOL, errors


def test_k_equal_1_is_the_elbo_with_a_monte_carlo_kl():
    model, rng = small_model("gaussian", min_variance=0.05)
    x, eps = rng.uniform(size=(5, 6)), rng.standard_normal((5, 1, 3))
    loss, _, terms = model.iwae_loss_and_grads(x, 1, eps=eps)
    rec, kl = model.elbo_terms(x, eps=eps[:, 0])
    mu, logvar = model.encode(x)
    z = mu + np.exp(logvar / 2) * eps[:, 0]
    mc_kl = dist.gaussian_log_likelihood(z, mu, logvar)[0] - dist.standard_normal_log_density(z)
    np.testing.assert_allclose(terms["bound"], rec - mc_kl, rtol=1e-12)
    np.testing.assert_array_equal(terms["ess"], 1.0)
    assert loss == pytest.approx(-np.mean(rec - mc_kl), rel=1e-12)
    assert not np.allclose(mc_kl, kl)  # not the closed form: equal only in expectation


@pytest.mark.parametrize("likelihood, decoder_mean", LIKELIHOODS)
def test_loss_is_minus_the_mean_of_log_likelihood_for_the_same_samples(likelihood, decoder_mean):
    model, rng = small_model(likelihood, min_variance=0.05, decoder_mean=decoder_mean)
    x, eps = rng.uniform(size=(5, 6)), rng.standard_normal((5, 7, 3))
    loss, _, terms = model.iwae_loss_and_grads(x, 7, eps=eps)
    for max_rows in (8192, 3):  # one decoder call, and many chunks of the same eps
        ll = model.log_likelihood(x, num_samples=7, eps=eps, max_rows=max_rows)
        np.testing.assert_allclose(terms["bound"], ll, rtol=1e-12)
    assert loss == pytest.approx(-ll.mean(), rel=1e-12)
    ess = terms["ess"]
    assert ess.shape == (5,) and np.all((ess >= 1) & (ess <= 7))


def test_bound_grows_with_k_and_stays_below_log_px():
    """E[L_1] < E[L_5] < E[L_50] <= log P(x), each gap more than 5 standard errors.

    L_1, L_5 and L_50 share their first samples (eps[:, :k]), so each gap is
    estimated from paired differences. The posterior is made too wide (logvar
    + 1), the case where the extra samples help most.
    """
    model, rng = small_model("bernoulli", seed=1)
    model.params["encoder.b2"][3:] += 1.0  # the logvar half of the encoder's output
    x = (rng.uniform(size=(4, 6)) > 0.5).astype(np.float64)
    reps = 1000  # Monte-Carlo repetitions of each L_k(x), per example
    x_rep = np.repeat(x, reps, axis=0)  # (4 reps, 6)
    eps = rng.standard_normal((len(x_rep), 50, 3))  # (4 reps, 50, 3)
    bound = {k: model.iwae_loss_and_grads(x_rep, k, eps=eps[:, :k])[2]["bound"].reshape(4, reps)
             for k in (1, 5, 50)}
    for small, large in [(1, 5), (5, 50)]:
        d = bound[large] - bound[small]  # (4, reps)
        gap, se = d.mean(axis=1), d.std(axis=1) / np.sqrt(reps)
        assert np.all(gap > 5 * se), (small, large, gap, se)
    # log P(x) estimated with k = 100000: itself a lower bound, but a far tighter one.
    log_px = model.log_likelihood(x, num_samples=100_000, rng=rng, max_rows=50_000)
    mean, se = bound[50].mean(axis=1), bound[50].std(axis=1) / np.sqrt(reps)
    assert np.all(mean < log_px + 3 * se), (mean, log_px, se)


def exact_posterior_model(rng):
    """Probabilistic PCA x = W z + b + N(0, s2 I) with q(z|x) set to the exact posterior.

    The test bed of test_vae's ``test_log_likelihood_is_exact_when_q_is_the_true_posterior``:
    W has orthogonal rows, so the posterior covariance (I + W W^T / s2)^-1 is diagonal,
    and a linear encoder gives its mean and log-variance. Returns the model and
    ``exact(x)``, the closed-form log P(x).
    """
    D, Z, s2 = 4, 2, 0.5
    model = VAE(D, (), Z, likelihood="gaussian-fixed", fixed_variance=s2, rng=rng)
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    W, b = Q[:Z] * np.array([[1.5], [0.7]]), rng.normal(size=D)  # (Z, D), (D,)
    model.params["decoder.W0"][:], model.params["decoder.b0"][:] = W, b
    prec = 1 + np.diag(W @ W.T) / s2  # (Z,), the posterior precision
    model.params["encoder.W0"][:] = np.concatenate([(W.T / s2) / prec, np.zeros((D, Z))], 1)
    model.params["encoder.b0"][:] = np.concatenate([-(b @ W.T / s2) / prec, -np.log(prec)])
    cov = W.T @ W + s2 * np.eye(D)  # (D, D), the marginal covariance of x

    def exact(x):
        diff = x - b
        return -0.5 * (D * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
                       + np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff))
    return model, exact


@pytest.mark.parametrize("k", [1, 4])
def test_bound_is_log_px_for_every_eps_when_q_is_the_exact_posterior(k):
    """Every weight w_i = P(x, z_i) / P(z_i|x) = P(x): L_k = log P(x) whatever the noise."""
    rng = np.random.default_rng(3)
    model, exact = exact_posterior_model(rng)
    x = rng.normal(size=(5, 4))
    for _ in range(3):
        eps = 3 * rng.standard_normal((5, k, 2))  # far-out samples too
        loss, _, terms = model.iwae_loss_and_grads(x, k, eps=eps)
        np.testing.assert_allclose(terms["bound"], exact(x), rtol=0, atol=1e-10)
        np.testing.assert_allclose(terms["ess"], k, rtol=1e-12)
        assert loss == pytest.approx(-exact(x).mean(), abs=1e-10)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_k_equal_1_gradient_has_the_expectation_of_the_analytic_kl_gradient(likelihood):
    """Same eps for both: the reconstruction parts are identical, and the Monte-Carlo KL's
    gradient minus the closed form's must average to zero, entry by entry.

    The same test must also see a real difference: the gradient with beta = 0.8 is off.
    """
    model, rng = small_model(likelihood, seed=2, min_variance=0.05)
    x = rng.uniform(size=(4, 6))
    batches, reps = 60, 100  # each batch: every example repeated reps times
    x_rep = np.repeat(x, reps, axis=0)  # (4 reps, 6)
    diffs, diffs_beta = [], []
    for _ in range(batches):
        eps = rng.standard_normal((len(x_rep), 1, 3))
        _, g_iwae, _ = model.iwae_loss_and_grads(x_rep, 1, eps=eps)
        g_iwae = {n: g.copy() for n, g in g_iwae.items()}
        _, g_elbo, _ = model.loss_and_grads(x_rep, eps=eps[:, 0])
        g_elbo = {n: g.copy() for n, g in g_elbo.items()}
        _, g_beta, _ = model.loss_and_grads(x_rep, eps=eps[:, 0], beta=0.8)
        diffs.append(np.concatenate([(g_iwae[n] - g_elbo[n]).ravel() for n in g_elbo]))
        diffs_beta.append(np.concatenate([(g_iwae[n] - g_beta[n]).ravel() for n in g_elbo]))

    def t_stats(d):
        d = np.array(d)  # (batches, number of parameters)
        return d.mean(axis=0) / (d.std(axis=0, ddof=1) / np.sqrt(batches) + 1e-12)
    t, t_beta = t_stats(diffs), t_stats(diffs_beta)
    assert np.max(np.abs(t)) < 5, np.max(np.abs(t))
    assert np.max(np.abs(t_beta)) > 10, np.max(np.abs(t_beta))  # the test has the power


@pytest.mark.parametrize("call, message", [
    (lambda m, x, rng: m.iwae_loss_and_grads(x, 3, eps=np.zeros((4, 3))),
     r"eps must have shape \(4, 3, 3\), got \(4, 3\)"),
    (lambda m, x, rng: m.iwae_loss_and_grads(x, 2, eps=np.zeros((4, 3, 3))),
     r"eps must have shape \(4, 2, 3\)"),
    (lambda m, x, rng: m.iwae_loss_and_grads(x, 0, rng=rng), "k must be a positive integer"),
    (lambda m, x, rng: m.iwae_loss_and_grads(x, 2.0, rng=rng), "k must be a positive integer"),
    (lambda m, x, rng: m.iwae_loss_and_grads(x, 3), "give either eps"),
    (lambda m, x, rng: m.iwae_loss_and_grads(x + 1, 3, rng=rng), r"x must lie in \[0, 1\]"),
    (lambda m, x, rng: m.log_likelihood(x, 3, eps=np.zeros((4, 2, 3))),
     r"eps must have shape \(4, 3, 3\)"),
    (lambda m, x, rng: m.active_units(x, threshold=-1.0), "threshold must be a finite number"),
])
def test_bad_arguments_are_refused(call, message):
    model, rng = small_model()
    with pytest.raises((ValueError, TypeError), match=message):
        call(model, rng.uniform(size=(4, 6)), rng)


def test_float32_model_keeps_float32():
    model = VAE(6, (5,), 3, dtype=np.float32, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(size=(4, 6)).astype(np.float32)
    loss, grads, terms = model.iwae_loss_and_grads(x, 5, rng=np.random.default_rng(2))
    assert isinstance(loss, float) and np.isfinite(loss)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert terms["bound"].shape == terms["ess"].shape == (4,)


# ---------------------------------------------------------------------------- active units


def test_active_units_counts_the_dimensions_whose_posterior_mean_varies():
    """A linear encoder mu = x A + c: dimension u's variance over x is A_u^T Cov(x) A_u."""
    rng = np.random.default_rng(0)
    D, Z = 6, 5
    model = VAE(D, (), Z, likelihood="gaussian", rng=rng)
    A = np.zeros((D, Z))
    A[:, 0] = rng.normal(size=D)  # varies a lot
    A[:, 3] = 0.02 * rng.normal(size=D)  # varies, but below the 0.01 threshold
    A[:, 4] = 0.3 * rng.normal(size=D)  # varies
    model.params["encoder.W0"][:, :Z] = A  # dims 1 and 2 read nothing: constant mu
    model.params["encoder.b0"][:Z] = rng.normal(size=Z)  # constants do not count
    x = rng.normal(size=(500, D))
    count, variances = model.active_units(x)
    np.testing.assert_allclose(variances, np.var(x @ A, axis=0), rtol=1e-10, atol=1e-20)
    assert variances[3] < 0.01 < min(variances[0], variances[4])
    assert np.all(variances[1:3] < 1e-25)
    assert count == 2
    assert model.active_units(x, threshold=1e-20)[0] == 3  # the small one, not the constants
    assert model.active_units(x, threshold=10 * variances.max())[0] == 0
