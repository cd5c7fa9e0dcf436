"""The whole model: every parameter's gradient, the bound, the API and bad input."""

import numpy as np
import pytest
from conftest import GRAD_TOL as TOL
from conftest import make_small_model as small_model

from numpy_vae import VAE, Adam
from numpy_vae import distributions as dist
from numpy_vae.gradcheck import check_model_gradients


@pytest.mark.parametrize("likelihood, decoder_mean", [
    ("bernoulli", "identity"), ("gaussian", "identity"), ("gaussian", "sigmoid"),
    ("gaussian-fixed", "identity"), ("gaussian-fixed", "sigmoid")])
@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus", "leaky_relu"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_loss_and_grads_match_central_differences(likelihood, decoder_mean, activation, beta):
    model, rng = small_model(likelihood, activation, min_variance=0.05,
                             decoder_mean=decoder_mean)
    x = rng.uniform(size=(4, 6))
    eps = rng.standard_normal((4, 3))
    errors = check_model_gradients(model, x, eps, beta=beta)
    assert errors.keys() == model.params.keys()
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, (worst, errors[worst])


def test_gradient_check_covers_the_decoder_variance_floor():
    """Push the decoder's raw log-variance output deep below and above the floor."""
    model, rng = small_model("gaussian", min_variance=0.1)
    model.params["decoder.b2"][6:] = np.array([-8.0, -3.0, 0.0, 2.0, 5.0, 9.0])
    x = rng.uniform(size=(4, 6))
    errors = check_model_gradients(model, x, rng.standard_normal((4, 3)))
    assert max(errors.values()) < TOL
    _, logvar = model.decode(rng.standard_normal((4, 3)))
    assert np.all(logvar >= np.log(0.1)) and logvar.min() < np.log(0.1) + 0.01


@pytest.mark.parametrize("likelihood", ["gaussian", "gaussian-fixed"])
def test_sigmoid_decoder_mean_is_the_sigmoid_of_the_identity_models_mean(likelihood):
    """Same weights, decoder_mean "sigmoid" against "identity": the mean is squashed into
    (0, 1), the variance is untouched, and the ELBO is that of the squashed mean."""
    plain, rng = small_model(likelihood, min_variance=0.05)
    squashed = VAE.from_config({**plain.config.to_dict(), "decoder_mean": "sigmoid"}, rng=rng)
    for k, p in plain.params.items():
        squashed.params[k][...] = p
    z = 3 * rng.standard_normal((5, 3))
    out_plain, out_squashed = plain.decode(z), squashed.decode(z)
    if likelihood == "gaussian":
        (mean_plain, logvar_plain), (mean, logvar) = out_plain, out_squashed
        np.testing.assert_array_equal(logvar, logvar_plain)
    else:
        mean_plain, mean = out_plain, out_squashed
    np.testing.assert_allclose(mean, 1 / (1 + np.exp(-mean_plain)), rtol=1e-12)
    assert np.all((mean > 0) & (mean < 1))
    np.testing.assert_array_equal(squashed.sample(5, rng, z=z), mean)

    x, eps = rng.uniform(size=(5, 6)), rng.standard_normal((5, 3))
    mu, logvar_q = squashed.encode(x)
    z = mu + np.exp(logvar_q / 2) * eps
    if likelihood == "gaussian":
        rec = dist.gaussian_log_likelihood(x, *squashed.decode(z))[0]
    else:
        rec = dist.gaussian_fixed_log_likelihood(x, squashed.decode(z), 1.0)[0]
    kl = dist.kl_standard_normal(mu, logvar_q)[0]
    np.testing.assert_allclose(squashed.elbo(x, eps=eps), rec - kl, rtol=1e-12)


def test_loss_is_minus_the_mean_elbo_and_beta_weighs_the_kl():
    model, rng = small_model()
    x, eps = rng.uniform(size=(5, 6)), rng.standard_normal((5, 3))
    elbo = model.elbo(x, eps=eps)
    loss, _, terms = model.loss_and_grads(x, eps=eps)
    assert elbo.shape == (5,)
    assert loss == pytest.approx(-elbo.mean())
    mu, logvar = model.encode(x)
    kl = dist.kl_standard_normal(mu, logvar)[0]
    z = mu + np.exp(logvar / 2) * eps
    rec = dist.bernoulli_log_likelihood(x, model.decode(z))[0]
    assert np.allclose(elbo, rec - kl)
    loss_beta, _, _ = model.loss_and_grads(x, eps=eps, beta=0.25)
    assert loss_beta == pytest.approx(np.mean(0.25 * kl - rec))
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-12)
    np.testing.assert_allclose(terms["reconstruction"], rec, rtol=1e-12)


def test_shapes_of_the_public_api():
    for likelihood, out_shapes in [("bernoulli", [(7, 6)]), ("gaussian", [(7, 6), (7, 6)]),
                                   ("gaussian-fixed", [(7, 6)])]:
        model, rng = small_model(likelihood)
        mu, logvar = model.encode(rng.uniform(size=(7, 6)))
        assert mu.shape == logvar.shape == (7, 3)
        out = model.decode(rng.standard_normal((7, 3)))
        outs = list(out) if isinstance(out, tuple) else [out]
        assert [o.shape for o in outs] == out_shapes
        loss, grads, terms = model.loss_and_grads(rng.uniform(size=(7, 6)), rng=rng)
        assert {k: t.shape for k, t in terms.items()} == {"reconstruction": (7,), "kl": (7,)}
        assert isinstance(loss, float)
        shapes = {k: p.shape for k, p in model.params.items()}
        assert {k: g.shape for k, g in grads.items()} == shapes
        assert model.sample(4, rng).shape == (4, 6)


def test_float32_model_keeps_float32():
    model = VAE(6, (5,), 3, dtype=np.float32, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(size=(4, 6)).astype(np.float32)
    _, grads, _ = model.loss_and_grads(x, rng=np.random.default_rng(2))
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(g.dtype == np.float32 for g in grads.values())
    Adam().step(model.params, grads)
    assert all(p.dtype == np.float32 for p in model.params.values())


def test_importance_weighted_bound_is_above_the_elbo_and_grows_with_k():
    model, rng = small_model("bernoulli")
    x = (rng.uniform(size=(20, 6)) > 0.5).astype(np.float64)
    # k = 1 is the one-sample ELBO: equal in expectation (two independent estimates).
    x_rep = np.repeat(x, 500, axis=0)
    elbo, ll_1 = model.elbo(x_rep, rng=rng), model.log_likelihood(x_rep, 1, rng=rng)
    stderr = np.sqrt((elbo.var() + ll_1.var()) / len(x_rep))
    assert abs(ll_1.mean() - elbo.mean()) < 5 * stderr
    ll = {k: model.log_likelihood(x, num_samples=k, rng=rng).mean() for k in (10, 1000)}
    assert elbo.mean() < ll[10] < ll[1000]


def test_log_likelihood_does_not_depend_on_the_memory_chunking():
    model, _ = small_model("gaussian")
    x = np.random.default_rng(5).uniform(size=(3, 6))
    a = model.log_likelihood(x, num_samples=50, rng=np.random.default_rng(0), max_rows=10_000)
    b = model.log_likelihood(x, num_samples=50, rng=np.random.default_rng(1), max_rows=7)
    exact_rows = model.log_likelihood(x, num_samples=50, rng=np.random.default_rng(0), max_rows=150)
    assert np.allclose(a, exact_rows)  # same draws in the same order
    assert np.allclose(a, b, atol=0.5)  # different draws, same estimate up to noise


def test_log_likelihood_is_exact_when_q_is_the_true_posterior():
    """Linear Gaussian decoder x = W z + b + noise: with q = p(z|x) every weight equals p(x)."""
    rng = np.random.default_rng(3)
    D, Z, s2 = 4, 2, 0.5
    model = VAE(D, (), Z, likelihood="gaussian-fixed", fixed_variance=s2, rng=rng)
    W, b = rng.normal(size=(Z, D)), rng.normal(size=D)
    model.params["decoder.W0"][:], model.params["decoder.b0"][:] = W, b
    # Posterior of z given x: precision I + W W^T / s2 (diagonal only if W W^T is).
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    W = Q[:Z] * np.array([[1.5], [0.7]])  # orthogonal rows -> W W^T diagonal
    model.params["decoder.W0"][:] = W
    prec = 1 + np.diag(W @ W.T) / s2
    # Encoder (no hidden layer): mu = x A + c, logvar = const.
    model.params["encoder.W0"][:] = np.concatenate([(W.T / s2) / prec, np.zeros((D, Z))], 1)
    model.params["encoder.b0"][:] = np.concatenate([-(b @ W.T / s2) / prec, -np.log(prec)])
    x = rng.normal(size=(5, D))
    cov = W.T @ W + s2 * np.eye(D)
    diff = x - b
    exact = -0.5 * (D * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
                    + np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff))
    est = model.log_likelihood(x, num_samples=3, rng=rng)
    assert np.allclose(est, exact, atol=1e-10)


def test_a_small_model_learns():
    rng = np.random.default_rng(0)
    prototypes = (rng.uniform(size=(3, 16)) > 0.5).astype(float)
    data = prototypes[rng.integers(0, 3, 300)]
    data = np.where(rng.uniform(size=data.shape) < 0.05, 1 - data, data)
    model = VAE(16, (32,), 2, rng=rng)
    opt = Adam(lr=3e-3)
    losses = []
    for _step in range(400):
        x = data[rng.integers(0, 300, 32)]
        loss, grads, _ = model.loss_and_grads(x, rng=rng)
        opt.step(model.params, grads)
        losses.append(loss)
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < 0.6 * first, (first, last)
    assert last < 16 * np.log(2) * 0.6  # far better than coin flips per pixel


@pytest.mark.parametrize("kwargs, error, message", [
    ({"likelihood": "poisson"}, ValueError, "likelihood must be one of"),
    ({"activation": "gelu"}, ValueError, "activation must be one of"),
    ({"latent_dim": 0}, ValueError, "latent_dim must be a positive integer, got 0"),
    ({"hidden_dims": (4, -1)}, ValueError, r"hidden_dims\[1\] must be a positive integer"),
    ({"hidden_dims": 4}, TypeError, "hidden_dims must be a sequence"),
    ({"data_dim": 2.5}, TypeError, "data_dim must be a positive integer"),
    ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
    ({"rng": 0}, TypeError, "rng must be a numpy.random.Generator"),
    ({"decoder_mean": "tanh"}, ValueError, "decoder_mean must be one of"),
    ({"decoder_mean": "sigmoid"}, ValueError, "decoder_mean must be 'identity' for the bernoulli"),
])
def test_constructor_rejects_bad_arguments(kwargs, error, message):
    args = dict(data_dim=6, hidden_dims=(5,), latent_dim=3, rng=np.random.default_rng(0))
    with pytest.raises(error, match=message):
        VAE(**{**args, **kwargs})


def test_methods_reject_bad_input_before_any_arithmetic():
    model, rng = small_model()
    good = rng.uniform(size=(4, 6))
    with pytest.raises(ValueError, match=r"x must have shape \(any, 6\), got \(4, 5\)"):
        model.loss_and_grads(np.zeros((4, 5)), rng=rng)
    with pytest.raises(TypeError, match="x must have dtype float64 .* got float32"):
        model.loss_and_grads(good.astype(np.float32), rng=rng)
    with pytest.raises(TypeError, match="floating-point"):
        model.encode(np.zeros((4, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="finite"):
        model.elbo(np.where(good > 0.5, np.nan, good), rng=rng)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\] for the Bernoulli"):
        model.loss_and_grads(good + 1, rng=rng)
    with pytest.raises(ValueError, match=r"eps must have shape \(4, 3\), got \(4, 2\)"):
        model.loss_and_grads(good, eps=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="give either eps"):
        model.loss_and_grads(good)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        model.loss_and_grads(good, rng=rng, beta=-1.0)
    with pytest.raises(ValueError, match="must not be empty"):
        model.encode(np.zeros((0, 6)))
    with pytest.raises(ValueError, match=r"z must have shape \(any, 3\)"):
        model.decode(np.zeros((2, 4)))
    before = {k: p.copy() for k, p in model.params.items()}
    with pytest.raises(ValueError):
        model.loss_and_grads(good + 1, rng=rng)
    assert all(np.array_equal(before[k], p) for k, p in model.params.items())


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself warns
def test_matrix_and_masked_arrays_are_refused_naming_the_argument():
    """np.matrix makes * a matrix product and masked arrays skip entries in sums: both would
    change the mathematics silently, so the boundary refuses them."""
    model, rng = small_model()
    x = rng.uniform(size=(4, 6))
    for wrapped in (np.asmatrix(x), np.ma.masked_array(x, mask=x > 0.9)):
        with pytest.raises(TypeError, match=r"x must be a plain NumPy array, got (matrix|Masked)"):
            model.loss_and_grads(wrapped, rng=rng)
    with pytest.raises(TypeError, match="eps must be a plain NumPy array"):
        model.elbo(x, eps=np.asmatrix(rng.standard_normal((4, 3))))
