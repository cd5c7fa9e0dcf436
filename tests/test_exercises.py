"""The graders: each check passes a right answer and names the mistake in a wrong one.

Every check must pass the library's own functions (or, where the library has
none, a right answer written here), fail each planted mistake below with the
matching diagnosis, and turn a student function that raises, returns None or
the wrong shape into a failed result, never an exception; only an unfilled
blank (NotImplementedError) passes through, recorded as not attempted.
"""

import json

import numpy as np
import pytest

from numpy_vae import VAE, layers
from numpy_vae import distributions as dist
from numpy_vae import exercises as ex
from numpy_vae.optim import Adam

LOG_2PI = np.log(2 * np.pi)


def softplus_naive(t):
    return np.log(1 + np.exp(t))


def sigmoid_naive(t):
    return 1 / (1 + np.exp(-t))


def pair(fwd, bwd):
    """A student's pair: ``fwd(*args) -> out`` with the arguments as the cache."""
    return (lambda *args: (fwd(*args), args)), (lambda d, cache: bwd(d, *cache))


# ---------------------------------------------------------------------------- right answers

def mlp_library(activation="tanh"):
    def forward(x, params):
        net = layers.MLP(ex.MLP_SIZES, activation, params=params)
        return net.forward(x), net

    def backward(dout, net):
        return net.backward(dout), net.grads
    return forward, backward


def adam_library(p, g, m, v, t, lr, b1, b2, eps):
    opt = Adam(lr, (b1, b2), eps)
    opt.load_state_dict({"lr": lr, "betas": (b1, b2), "eps": eps, "t": t - 1,
                         "m": {"p": m}, "v": {"p": v}})
    params = {"p": p}
    opt.step(params, {"p": g})
    return params["p"], opt.m["p"], opt.v["p"]


def log_mean_exp(a):
    """The library's log-mean-exp, the answer key, as a student's function: (B, k) -> (B,)."""
    L, _ = dist.log_mean_exp(a)
    return L


def log_normal(z, mu, logvar):  # z (B, k, Z), mu and logvar (B, 1, Z) -> (B, k)
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mu) ** 2 / np.exp(logvar), axis=-1)


def iw_bound(log_px_z, z, mu, logvar):
    log_w = log_px_z + log_normal(z, 0.0, 0.0) - log_normal(z, mu[:, None], logvar[:, None])
    return log_mean_exp(log_w)


def em_step(x, weights, means, covs, mistake=None):
    """One EM step written out, with an optional planted mistake."""
    N, D = x.shape
    K = len(weights)
    log_joint = np.empty((N, K))
    for k in range(K):
        diff = x - means[k]
        maha = np.sum(diff * np.linalg.solve(covs[k], diff.T).T, axis=1)
        log_joint[:, k] = np.log(weights[k]) - 0.5 * (
            D * LOG_2PI + np.linalg.slogdet(covs[k])[1] + maha)
    if mistake == "no shift":
        gamma = np.exp(log_joint) / np.exp(log_joint).sum(axis=1, keepdims=True)
    elif mistake == "unnormalised":
        gamma = np.exp(log_joint)
    else:
        axis = 0 if mistake == "axis" else 1
        top = log_joint.max(axis=axis, keepdims=True)
        gamma = np.exp(log_joint - top)
        gamma /= gamma.sum(axis=axis, keepdims=True)
    Nk = gamma.sum(axis=0)
    new_means = gamma.T @ x / (1 if mistake == "means not by Nk" else Nk[:, None])
    centre = means if mistake == "old means" else new_means
    new_covs = np.stack([(gamma[:, k, None] * (x - centre[k])).T @ (x - centre[k]) / Nk[k]
                         for k in range(K)])
    return (Nk if mistake == "weights not by N" else Nk / N), new_means, new_covs


def loss_library(params, x, eps, beta=1.0):
    model = VAE(**ex.LOSS_MODEL, dtype=np.float64, rng=np.random.default_rng(0))
    for k in model.params:
        model.params[k][...] = params[k]
    loss, grads, _ = model.loss_and_grads(x, eps=eps, beta=beta)
    return loss, grads


def loss_by_hand(params, x, eps, mistake=None):
    """The loss assembled from the library's pieces, as a student would, with a planted mistake."""
    B = len(x)
    enc = layers.MLP((4, 3, 4), "tanh", params=params, prefix="encoder.")
    dec = layers.MLP((2, 3, 4), "tanh", params=params, prefix="decoder.")
    h = enc.forward(x)
    mu, logvar = h[:, :2], h[:, 2:]
    if mistake == "std as variance":
        z = mu + np.exp(logvar) * eps
    else:
        z, rep_cache = dist.reparameterize(mu, logvar, eps)
    logits = dec.forward(z)
    log_px, px_cache = dist.bernoulli_log_likelihood(x, logits)
    kl, kl_cache = dist.kl_standard_normal(mu, logvar)
    loss = np.mean(kl - log_px)
    dz = dec.backward(dist.bernoulli_log_likelihood_backward(np.full(B, -1 / B), px_cache))
    if mistake == "std as variance":
        dmu, dlogvar = dz, dz * np.exp(logvar) * eps
    else:
        dmu, dlogvar = dist.reparameterize_backward(dz, rep_cache)
    if mistake == "no logvar gradient":
        dlogvar = 0 * dlogvar
    if mistake != "no KL gradient":
        dmu_kl, dlogvar_kl = dist.kl_standard_normal_backward(np.full(B, 1 / B), kl_cache)
        dmu, dlogvar = dmu + dmu_kl, dlogvar + dlogvar_kl
    enc.backward(np.concatenate([dmu, dlogvar], axis=1))
    return float(loss), {**enc.grads, **dec.grads}


def run_all_right_answers():
    """Every check, given a right answer: the library's own functions where it has them."""
    yield ex.check_kl(dist.kl_standard_normal, dist.kl_standard_normal_backward, verbose=False)
    yield ex.check_reparameterize(dist.reparameterize, dist.reparameterize_backward,
                                  verbose=False)
    yield ex.check_bernoulli(dist.bernoulli_log_likelihood,
                             dist.bernoulli_log_likelihood_backward, verbose=False)
    yield ex.check_gaussian(dist.gaussian_log_likelihood, dist.gaussian_log_likelihood_backward,
                            verbose=False)
    yield ex.check_variance_floor(dist.bounded_logvar, dist.bounded_logvar_backward,
                                  verbose=False)
    yield ex.check_affine(layers.affine_forward, layers.affine_backward, verbose=False)
    for name in ("relu", "tanh", "sigmoid"):
        yield ex.check_activation(name, *layers.ACTIVATIONS[name], verbose=False)
    for activation in ("tanh", "relu", "sigmoid"):
        yield ex.check_mlp_backward(*mlp_library(activation), activation=activation,
                                    verbose=False)
    yield ex.check_adam_step(adam_library, verbose=False)
    yield ex.check_em_step(em_step, dim=1, verbose=False)
    yield ex.check_em_step(em_step, dim=2, verbose=False)
    yield ex.check_log_mean_exp(log_mean_exp, verbose=False)
    yield ex.check_importance_weighted_log_px(iw_bound, verbose=False)
    yield ex.check_loss_and_grads(loss_library, verbose=False)
    yield ex.check_loss_and_grads(loss_by_hand, verbose=False)


def test_every_check_passes_a_right_answer():
    for result in run_all_right_answers():
        assert result.passed, result.report
        assert result.diagnosis is None and bool(result)
        assert 0 <= result.worst_error < 1e-8, result
        assert result.report == (f"passed: {result.exercise} "
                                 f"(worst relative error {result.worst_error:.1e})")


def test_a_pass_prints_one_line_and_a_failure_prints_the_numbers(capsys):
    ex.check_kl(dist.kl_standard_normal, dist.kl_standard_normal_backward)
    out = capsys.readouterr().out
    assert out.startswith("passed: kl (worst relative error ") and out.count("\n") == 1

    def kl_twice(mu, logvar):
        kl, cache = dist.kl_standard_normal(mu, logvar)
        return 2 * kl, cache
    result = ex.check_kl(kl_twice, dist.kl_standard_normal_backward)
    out = capsys.readouterr().out
    assert not result and out == result.report + "\n"
    assert "FAILED: kl" in out and "yours" in out and "worst entry" in out
    assert "missing 1/2" in result.diagnosis and result.worst_error > 0.1


# ---------------------------------------------------------------------------- planted mistakes
# Each case: (a name, a function running the check on the mutant, a phrase of the diagnosis).

def kl_mistake(terms, dmu, dlogvar):
    """A student's KL from per-dimension terms and gradient formulas."""
    return pair(lambda mu, v: terms(mu, v).sum(axis=1),
                lambda d, mu, v: (d[:, None] * dmu(mu, v), d[:, None] * dlogvar(mu, v)))


KL_CASES = [
    ("missing half", kl_mistake(lambda mu, v: np.exp(v) - 1 - v + mu**2,
                                lambda mu, v: 2 * mu, lambda mu, v: np.exp(v) - 1),
     "missing 1/2"),
    ("exp(v) in the gradient", kl_mistake(lambda mu, v: 0.5 * (np.exp(v) - 1 - v + mu**2),
                                          lambda mu, v: mu, lambda mu, v: 0.5 * np.exp(v)),
     "exp(v) for exp(v) - 1"),
    ("std as variance", kl_mistake(lambda mu, v: 0.5 * (np.exp(v / 2) - 1 - v + mu**2),
                                   lambda mu, v: mu, lambda mu, v: 0.5 * (0.5 * np.exp(v / 2) - 1)),
     "standard deviation used as a variance"),
    ("mean over latents", pair(lambda mu, v: 0.5 * (np.exp(v) - 1 - v + mu**2).mean(axis=1),
                               lambda d, mu, v: (d[:, None] * mu / 3,
                                                 d[:, None] * np.expm1(v) / 6)),
     "mean over the latents"),
    ("sign", kl_mistake(lambda mu, v: -0.5 * (np.exp(v) - 1 - v + mu**2),
                        lambda mu, v: -mu, lambda mu, v: -0.5 * np.expm1(v)), "a sign"),
    ("summed over the batch", pair(lambda mu, v: 0.5 * (np.exp(v) - 1 - v + mu**2).sum(axis=0),
                                   lambda d, mu, v: (mu, v)), "wrong axis"),
    ("no broadcast", pair(lambda mu, v: 0.5 * (np.exp(v) - 1 - v + mu**2).sum(axis=1),
                          lambda d, mu, v: (d * mu, 0.5 * d * np.expm1(v))), "wrong broadcast"),
    ("upstream ignored", pair(lambda mu, v: 0.5 * (np.exp(v) - 1 - v + mu**2).sum(axis=1),
                              lambda d, mu, v: (mu, 0.5 * np.expm1(v))), "upstream gradient"),
]

REPARAM_CASES = [
    ("exp(v) as the std", pair(lambda mu, v, e: mu + np.exp(v) * e,
                               lambda d, mu, v, e: (d, d * np.exp(v) * e)),
     "standard deviation used as a variance"),
    ("chain rule's 1/2", pair(lambda mu, v, e: mu + np.exp(v / 2) * e,
                              lambda d, mu, v, e: (d, d * np.exp(v / 2) * e)), "1/2 of the chain"),
    ("sign", pair(lambda mu, v, e: mu - np.exp(v / 2) * e,
                  lambda d, mu, v, e: (d, -0.5 * d * np.exp(v / 2) * e)), "a sign"),
    ("logvar as the std", pair(lambda mu, v, e: mu + v * e, lambda d, mu, v, e: (d, d * e)),
     "logvar used as the standard deviation"),
    ("eps left out", pair(lambda mu, v, e: mu + np.exp(v / 2) * e,
                          lambda d, mu, v, e: (d, 0.5 * d * np.exp(v / 2))), "eps left out"),
]

BERNOULLI_CASES = [
    ("softplus(-l)", pair(lambda x, l: (x * l - dist.softplus(-l)).sum(axis=1),
                          lambda d, x, l: d[:, None] * (x - layers.sigmoid(l))),
     "softplus of the wrong argument"),
    ("sigmoid(-l)", pair(lambda x, l: (x * l - dist.softplus(l)).sum(axis=1),
                         lambda d, x, l: d[:, None] * (x - layers.sigmoid(-l))),
     "sigmoid of the wrong argument"),
    ("cross-entropy", pair(lambda x, l: (dist.softplus(l) - x * l).sum(axis=1),
                           lambda d, x, l: d[:, None] * (layers.sigmoid(l) - x)), "a sign"),
    ("naive softplus", pair(lambda x, l: (x * l - softplus_naive(l)).sum(axis=1),
                            lambda d, x, l: d[:, None] * (x - sigmoid_naive(l))), "overflows"),
    ("probabilities first", pair(
        lambda x, l: (x * np.log(sigmoid_naive(l))
                      + (1 - x) * np.log(1 - sigmoid_naive(l))).sum(axis=1),
        lambda d, x, l: d[:, None] * (x - sigmoid_naive(l))), "probabilities first"),
    ("mean over pixels", pair(lambda x, l: (x * l - dist.softplus(l)).mean(axis=1),
                              lambda d, x, l: d[:, None] * (x - layers.sigmoid(l)) / 5),
     "mean over the pixels"),
    ("summed over the batch", pair(lambda x, l: (x * l - dist.softplus(l)).sum(axis=0),
                                   lambda d, x, l: x), "wrong axis"),
]


def gaussian(logp_terms, dmean, dlogvar):
    return pair(lambda x, m, s: logp_terms(x, m, s).sum(axis=1),
                lambda d, x, m, s: (d[:, None] * dmean(x, m, s), d[:, None] * dlogvar(x, m, s)))


GAUSSIAN_CASES = [
    ("missing half", gaussian(lambda x, m, s: -(LOG_2PI + s + (x - m) ** 2 * np.exp(-s)),
                              lambda x, m, s: 2 * (x - m) * np.exp(-s),
                              lambda x, m, s: (x - m) ** 2 * np.exp(-s) - 1), "missing 1/2"),
    ("std as variance", gaussian(lambda x, m, s: -0.5 * (LOG_2PI + s + (x - m) ** 2
                                                          / np.exp(s / 2)),
                                 lambda x, m, s: (x - m) / np.exp(s / 2),
                                 lambda x, m, s: 0.5 * (0.5 * (x - m) ** 2 / np.exp(s / 2) - 1)),
     "standard deviation used as a variance"),
    ("no log 2 pi", gaussian(lambda x, m, s: -0.5 * (s + (x - m) ** 2 * np.exp(-s)),
                             lambda x, m, s: (x - m) * np.exp(-s),
                             lambda x, m, s: 0.5 * ((x - m) ** 2 * np.exp(-s) - 1)),
     "log(2 pi) left out"),
    ("sign of dmean", gaussian(lambda x, m, s: -0.5 * (LOG_2PI + s + (x - m) ** 2 * np.exp(-s)),
                               lambda x, m, s: (m - x) * np.exp(-s),
                               lambda x, m, s: 0.5 * ((x - m) ** 2 * np.exp(-s) - 1)),
     "sign in d/dmean"),
    ("no -1", gaussian(lambda x, m, s: -0.5 * (LOG_2PI + s + (x - m) ** 2 * np.exp(-s)),
                       lambda x, m, s: (x - m) * np.exp(-s),
                       lambda x, m, s: 0.5 * (x - m) ** 2 * np.exp(-s)), "the -1 left out"),
    ("mean over pixels", pair(lambda x, m, s: -0.5 * (LOG_2PI + s + (x - m) ** 2
                                                      * np.exp(-s)).mean(axis=1),
                              lambda d, x, m, s: (d[:, None] * (x - m) * np.exp(-s) / 5,
                                                  d[:, None] * ((x - m) ** 2 * np.exp(-s) - 1)
                                                  / 10)),
     "mean over the pixels"),
]


def floor(logvar, draw):
    return pair(logvar, lambda d, r, mv: d * draw(r, mv))


FLOOR_CASES = [
    ("floor after the log", floor(lambda r, mv: np.log(dist.softplus(r)) + mv,
                                  lambda r, mv: layers.sigmoid(r) / dist.softplus(r)),
     "floor added after the log"),
    ("softplus(-raw)", floor(lambda r, mv: np.log(mv + dist.softplus(-r)),
                             lambda r, mv: -layers.sigmoid(-r) / (mv + dist.softplus(-r))),
     "softplus of the wrong argument"),
    ("no chain rule", floor(lambda r, mv: np.log(mv + dist.softplus(r)),
                            lambda r, mv: layers.sigmoid(r)), "chain rule through the log"),
    ("naive softplus", floor(lambda r, mv: np.log(mv + softplus_naive(r)),
                             lambda r, mv: sigmoid_naive(r) / (mv + softplus_naive(r))),
     "overflows"),
    ("no floor", floor(lambda r, mv: np.log(dist.softplus(r)),
                       lambda r, mv: layers.sigmoid(r) / dist.softplus(r)), "floor left out"),
    ("exp for softplus", floor(lambda r, mv: np.log(mv + np.exp(r)),
                               lambda r, mv: np.exp(r) / (mv + np.exp(r))), "exp for softplus"),
]


def affine(forward=lambda x, W, b: x @ W + b, dx=lambda d, x, W: d @ W.T,
           dW=lambda d, x, W: x.T @ d, db=lambda d: d.sum(axis=0)):
    return pair(forward, lambda d, x, W, b: (dx(d, x, W), dW(d, x, W), db(d)))


def affine_updating_W():
    fwd, bwd = affine()

    def backward(d, cache):
        dx, dW, db = bwd(d, cache)
        W = cache[1]
        W -= 0.1 * dW  # an optimiser step inside backward
        return dx, dW, db
    return fwd, backward


AFFINE_CASES = [
    ("db mean", affine(dW=lambda d, x, W: x.T @ d / len(x), db=lambda d: d.mean(axis=0)),
     "mean over the batch"),
    ("sign", affine(dx=lambda d, x, W: -d @ W.T, dW=lambda d, x, W: -x.T @ d,
                    db=lambda d: -d.sum(axis=0)), "a sign"),
    ("dW transposed", affine(dW=lambda d, x, W: d.T @ x), "dW transposed"),
    ("db not summed", affine(db=lambda d: d), "db not summed"),
    ("no bias", affine(forward=lambda x, W, b: x @ W), "bias left out"),
    ("update inside backward", affine_updating_W(), "changed their input W"),
]

ACTIVATION_CASES = [
    ("relu", "output as slope", pair(lambda x: np.maximum(x, 0),
                                     lambda d, x: d * np.maximum(x, 0)),
     "output used as the slope"),
    ("relu", "mask from dout", pair(lambda x: np.maximum(x, 0), lambda d, x: d * (d > 0)),
     "mask taken from dout"),
    ("relu", "leaky", pair(lambda x: np.where(x > 0, x, 0.01 * x),
                           lambda d, x: np.where(x > 0, d, 0.01 * d)), "leaky"),
    ("tanh", "no square", pair(np.tanh, lambda d, x: d * (1 - np.tanh(x))), "square left out"),
    ("tanh", "slope from the input", pair(np.tanh, lambda d, x: d * (1 - x * x)),
     "slope from the input"),
    ("tanh", "sigmoid's slope", pair(np.tanh, lambda d, x: d * np.tanh(x) * (1 - np.tanh(x))),
     "sigmoid's slope"),
    ("sigmoid", "of -x", pair(lambda x: layers.sigmoid(-x),
                              lambda d, x: -d * layers.sigmoid(x) * (1 - layers.sigmoid(x))),
     "wrong argument"),
    ("sigmoid", "slope from the input", pair(layers.sigmoid, lambda d, x: d * x * (1 - x)),
     "slope from the input"),
    ("sigmoid", "exp / (1 + exp)", pair(lambda x: np.exp(x) / (1 + np.exp(x)),
                                        lambda d, x: d * np.exp(x) / (1 + np.exp(x)) ** 2),
     "computed as written"),
]


def mlp_by_hand(mistake=None):
    """A student's MLP from the layer pairs, with a planted mistake."""
    store = {}

    def forward(x, params):
        caches, h, n = [], x, 3
        for i in range(n):
            h, affine_cache = layers.affine_forward(h, params[f"W{i}"], params[f"b{i}"])
            act_cache = None
            if i < n - 1 or mistake == "act on output":
                h, act_cache = layers.tanh_forward(h)
            caches.append((affine_cache, act_cache))
        return h, (caches, params)

    def backward(dout, cache):
        caches, params = cache
        grads = store if mistake == "accumulate" else {}
        dh = dout
        for i in reversed(range(3)):
            affine_cache, act_cache = caches[i]
            if act_cache is not None and mistake != "no slope":
                dh = layers.tanh_backward(dh, act_cache)
            dh, dW, db = layers.affine_backward(dh, affine_cache)
            if mistake == "db mean":
                db = db / len(dout)
            if mistake == "dW transposed":
                dW = dW.T
            if mistake == "update":
                params[f"W{i}"] -= 0.01 * dW
            grads[f"W{i}"] = grads.get(f"W{i}", 0) + dW
            grads[f"b{i}"] = grads.get(f"b{i}", 0) + db
        return dh, dict(grads)
    return forward, backward


MLP_CASES = [
    ("no slope", "slope left out"),
    ("act on output", "after the last layer"),
    ("db mean", "mean over the batch"),
    ("dW transposed", "dW transposed"),
    ("accumulate", "accumulate"),
    ("update", "changed params"),
]


def adam(mistake=None):
    def step(p, g, m, v, t, lr, b1, b2, eps):
        if mistake == "betas swapped":
            b1, b2 = b2, b1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g if mistake == "v from g" else g * g)
        tc = {"t - 1": t - 1, "t + 1": t + 1}.get(mistake, t)
        m_hat, v_hat = m / (1 - b1**tc), v / (1 - b2**tc)
        if mistake == "no bias correction":
            m_hat, v_hat = m, v
        denom = np.sqrt(v_hat + eps) if mistake == "eps inside" else np.sqrt(v_hat) + eps
        return p + (1 if mistake == "sign" else -1) * lr * m_hat / denom, m, v
    return step


ADAM_CASES = [
    ("no bias correction", "without bias correction"),
    ("t - 1", "off by one"),
    ("t + 1", "off by one"),
    ("eps inside", "eps inside the square root"),
    ("sign", "a sign"),
    ("v from g", "v from g"),
    ("betas swapped", "b1 and b2 swapped"),
]

EM_CASES = [
    ("unnormalised", "not normalised over the components"),
    ("axis", "wrong axis"),
    ("no shift", "log-sum-exp shift"),
    ("weights not by N", "weights not divided by N"),
    ("means not by Nk", "not divided by N_k"),
    ("old means", "old means"),
]

LME_CASES = [
    ("log-sum-exp", lambda a: np.log(np.sum(np.exp(a - a.max(1, keepdims=True)), axis=1))
     + a.max(1), "without the 1/k"),
    ("no shift", lambda a: np.log(np.mean(np.exp(a), axis=1)), "no max shift"),
    ("max not added back",
     lambda a: np.log(np.mean(np.exp(a - a.max(1, keepdims=True)), axis=1)), "not added back"),
    ("global max", lambda a: a.max() + np.log(np.mean(np.exp(a - a.max()), axis=1)),
     "whole array"),
    ("mean of logs", lambda a: a.mean(axis=1), "mean of the logs"),
    ("axis 0", lambda a: a.max(0) + np.log(np.mean(np.exp(a - a.max(0)), axis=0)), "wrong axis"),
]


def iw(mistake=None):
    def bound(log_px_z, z, mu, logvar):
        mu, logvar = (mu[None], logvar[None]) if mistake == "broadcast" else (
            mu[:, None], logvar[:, None])
        log_q = log_normal(z, mu, logvar / 2 if mistake == "std as variance" else logvar)
        log_pz = 0.0 if mistake == "no prior" else log_normal(z, 0.0, 0.0)
        log_w = log_px_z + log_pz + (log_q if mistake == "sign" else -log_q)
        if mistake == "mean of log w":
            return log_w.mean(axis=1)
        if mistake == "no shift":
            return np.log(np.mean(np.exp(log_w), axis=1))
        return log_mean_exp(log_w) + (np.log(log_w.shape[1]) if mistake == "no 1/k" else 0)
    return bound


IW_CASES = [
    ("mean of log w", "one-sample bound L_1"),
    ("no 1/k", "without the 1/k"),
    ("no shift", "no max shift"),
    ("sign", "a sign"),
    ("std as variance", "standard deviation used as a variance"),
    ("no prior", "log P(z) left out"),
    ("broadcast", "wrong broadcast"),
]


def accumulating_loss():
    total = {}

    def fn(params, x, eps):
        loss, grads = loss_library(params, x, eps)
        for k, g in grads.items():
            total[k] = total.get(k, 0) + g
        return loss, dict(total)
    return fn


def updating_loss(params, x, eps):
    loss, grads = loss_library(params, x, eps)
    for k in params:
        params[k] -= 1e-3 * grads[k]
    return loss, grads


def scaled_loss(c):
    def fn(params, x, eps):
        loss, grads = loss_library(params, x, eps)
        return c(x) * loss, {k: c(x) * g for k, g in grads.items()}
    return fn


LOSS_CASES = [
    ("KL without its 1/2", lambda p, x, e: loss_library(p, x, e, beta=2.0), "beta = 2"),
    ("no KL", lambda p, x, e: loss_library(p, x, e, beta=0.0), "KL left out"),
    ("sum over the batch", scaled_loss(len), "sum over the batch"),
    ("the ELBO", scaled_loss(lambda x: -1.0), "a sign"),
    ("std as variance", lambda p, x, e: loss_by_hand(p, x, e, "std as variance"),
     "standard deviation used as a variance"),
    ("no KL gradient", lambda p, x, e: loss_by_hand(p, x, e, "no KL gradient"),
     "KL's gradient not sent to the encoder"),
    ("no logvar gradient", lambda p, x, e: loss_by_hand(p, x, e, "no logvar gradient"),
     "gradient into logvar left out"),
    ("accumulating", accumulating_loss(), "keeps state between calls"),
    ("updating params", updating_loss, "changed params"),
]

CASES = (
    [(f"kl: {n}", lambda f=f: ex.check_kl(*f, verbose=False), d) for n, f, d in KL_CASES]
    + [(f"reparameterize: {n}", lambda f=f: ex.check_reparameterize(*f, verbose=False), d)
       for n, f, d in REPARAM_CASES]
    + [(f"bernoulli: {n}", lambda f=f: ex.check_bernoulli(*f, verbose=False), d)
       for n, f, d in BERNOULLI_CASES]
    + [(f"gaussian: {n}", lambda f=f: ex.check_gaussian(*f, verbose=False), d)
       for n, f, d in GAUSSIAN_CASES]
    + [(f"variance floor: {n}", lambda f=f: ex.check_variance_floor(*f, verbose=False), d)
       for n, f, d in FLOOR_CASES]
    + [(f"affine: {n}", lambda f=f: ex.check_affine(*f, verbose=False), d)
       for n, f, d in AFFINE_CASES]
    + [(f"{a}: {n}", lambda a=a, f=f: ex.check_activation(a, *f, verbose=False), d)
       for a, n, f, d in ACTIVATION_CASES]
    + [(f"mlp: {m}", lambda m=m: ex.check_mlp_backward(*mlp_by_hand(m), verbose=False), d)
       for m, d in MLP_CASES]
    + [(f"adam: {m}", lambda m=m: ex.check_adam_step(adam(m), verbose=False), d)
       for m, d in ADAM_CASES]
    + [(f"em (dim {dim}): {m}",
        lambda m=m, dim=dim: ex.check_em_step(lambda *a: em_step(*a, mistake=m), dim=dim,
                                              verbose=False), d)
       for m, d in EM_CASES for dim in (1, 2)]
    + [(f"log_mean_exp: {n}", lambda f=f: ex.check_log_mean_exp(f, verbose=False), d)
       for n, f, d in LME_CASES]
    + [(f"iw: {m}", lambda m=m: ex.check_importance_weighted_log_px(iw(m), verbose=False), d)
       for m, d in IW_CASES]
    + [(f"loss: {n}", lambda f=f: ex.check_loss_and_grads(f, verbose=False), d)
       for n, f, d in LOSS_CASES]
)


@pytest.mark.parametrize("run, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_planted_mistake_fails_with_its_diagnosis(run, phrase):
    result = run()
    assert isinstance(result, ex.Result) and not result.passed and not result
    assert phrase in result.diagnosis, result.report
    assert result.worst_error > 0


def test_at_least_three_mistakes_are_planted_per_exercise():
    counts = {}
    for name, _, _ in CASES:
        exercise = name.split(":")[0].split(" (")[0]
        counts[exercise] = counts.get(exercise, 0) + 1
    assert len(counts) == 15 and min(counts.values()) >= 3, counts


def test_exp_logvar_as_a_std_passes_central_differences_and_fails_later():
    """numpy-ml's bug: forward and backward agree, so the gradient step alone is blind."""
    result = ex.check_reparameterize(*REPARAM_CASES[0][1], verbose=False)
    assert not result and "at step 'the reference" in result.report


# ---------------------------------------------------------------------------- broken functions

def raises(*args):
    raise ZeroDivisionError("a bug in the student's code")


def returns_none(*args):
    return None


def wrong_shape(*args):
    return np.zeros(7)


CHECKS = {
    "kl": lambda f: ex.check_kl(f, f, verbose=False),
    "reparameterize": lambda f: ex.check_reparameterize(f, f, verbose=False),
    "bernoulli": lambda f: ex.check_bernoulli(f, f, verbose=False),
    "gaussian": lambda f: ex.check_gaussian(f, f, verbose=False),
    "variance floor": lambda f: ex.check_variance_floor(f, f, verbose=False),
    "affine": lambda f: ex.check_affine(f, f, verbose=False),
    "relu": lambda f: ex.check_activation("relu", f, f, verbose=False),
    "mlp": lambda f: ex.check_mlp_backward(f, f, verbose=False),
    "adam": lambda f: ex.check_adam_step(f, verbose=False),
    "em": lambda f: ex.check_em_step(f, verbose=False),
    "log_mean_exp": lambda f: ex.check_log_mean_exp(f, verbose=False),
    "iw": lambda f: ex.check_importance_weighted_log_px(f, verbose=False),
    "loss": lambda f: ex.check_loss_and_grads(f, verbose=False),
}


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
@pytest.mark.parametrize("bad, phrase", [(raises, "raised ZeroDivisionError"),
                                         (returns_none, "None"), (wrong_shape, "(7,)")],
                         ids=["raises", "returns None", "wrong shape"])
def test_a_broken_function_gives_a_failed_result_not_an_exception(check, bad, phrase):
    result = check(bad)
    assert isinstance(result, ex.Result) and not result.passed
    assert phrase in result.diagnosis and result.worst_error == float("inf")


def not_filled_in(*args):
    raise NotImplementedError("write kl = 1/2 sum_j (exp(v) - (1 + v) + mu^2)")


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_an_unfilled_blank_passes_through_with_its_hint(check):
    with pytest.raises(NotImplementedError, match="write kl = 1/2"):
        check(not_filled_in)


def test_every_check_run_is_recorded_for_the_grader(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv(ex.RECORD_ENV, str(record))
    ex.check_kl(dist.kl_standard_normal, dist.kl_standard_normal_backward, verbose=False)
    ex.check_kl(*KL_CASES[0][1], verbose=False)
    with pytest.raises(NotImplementedError):
        ex.check_kl(not_filled_in, not_filled_in)
    ex.check_log_mean_exp(raises, verbose=False)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["exercise"], r["status"]) for r in lines] == [
        ("kl", "passed"), ("kl", "failed"), ("kl", "not attempted"), ("log_mean_exp", "failed")]
    assert "missing 1/2" in lines[1]["diagnosis"] and lines[0]["diagnosis"] is None
    assert "raised ZeroDivisionError" in lines[3]["diagnosis"]


def test_a_backward_that_breaks_only_after_a_good_forward_is_named():
    fwd, _ = pair(lambda mu, v: 0.5 * (np.exp(v) - 1 - v + mu**2).sum(axis=1), None)
    result = ex.check_kl(fwd, lambda d, cache: [1, 2], verbose=False)
    assert not result and "kl_backward_fn's dmu must be a NumPy array" in result.diagnosis
    assert "got an int" in result.diagnosis
    result = ex.check_kl(fwd, lambda d, cache: (d, d), verbose=False)
    assert not result and "dmu has shape (4,), expected (4, 3)" in result.diagnosis


def test_float32_and_a_forward_without_its_cache_are_named():
    result = ex.check_kl(lambda mu, v: dist.kl_standard_normal(mu.astype(np.float32), v)[0],
                         dist.kl_standard_normal_backward, verbose=False)
    assert not result and "must return a pair (kl, cache)" in result.diagnosis
    result = ex.check_log_mean_exp(lambda a: log_mean_exp(a).astype(np.float32), verbose=False)
    assert not result and "dtype float32" in result.diagnosis


def test_a_misused_check_raises_for_the_teacher():
    with pytest.raises(ValueError, match="name must be one of"):
        ex.check_activation("gelu", np.tanh, np.tanh)
    with pytest.raises(ValueError, match="dim must be one of"):
        ex.check_em_step(em_step, dim=3)


# ---------------------------------------------------------------------------- the behaviour step
# A function right on the check's small inputs but wrong on the large ones of step 4: only the
# behaviour test can fail it, so these show that each behaviour test does its work.

def reparameterize_wrong_when_large(mu, logvar, eps):
    std = np.exp(logvar / 2) if len(mu) < 100 else np.exp(logvar)
    return mu + std * eps, (std, eps)


def gaussian_wrong_for_one_pixel(x, mean, logvar):
    logp, cache = dist.gaussian_log_likelihood(x, mean, logvar)
    return (logp + 0.5 * LOG_2PI if x.shape[1] == 1 else logp), cache


def floor_wrong_for_one_row(raw, min_variance):
    return dist.bounded_logvar(raw, min_variance if len(raw) > 1 else 1e-12)


def adam_wrong_for_one_row(p, g, m, v, t, lr, b1, b2, eps):
    if len(p) > 1:
        return adam_library(p, g, m, v, t, lr, b1, b2, eps)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    return p - lr * m / (np.sqrt(v) + eps), m, v  # no bias correction


def em_wrong_for_many_points(x, weights, means, covs):
    w, m, c = em_step(x, weights, means, covs)
    return (w if len(x) < 50 else 2 * w), m, c


def kl_wrong_for_two_rows(mu, logvar):
    kl, cache = dist.kl_standard_normal(mu, logvar)
    return (2 * kl if len(mu) == 2 else kl), cache


BEHAVIOUR_CASES = [
    ("kl", lambda: ex.check_kl(kl_wrong_for_two_rows, dist.kl_standard_normal_backward,
                               verbose=False), "Monte-Carlo", "E_q[log q(z) - log P(z)]"),
    ("reparameterize", lambda: ex.check_reparameterize(
        reparameterize_wrong_when_large, dist.reparameterize_backward, verbose=False),
     "sample variance", "standard deviation used as a variance"),
    ("gaussian", lambda: ex.check_gaussian(gaussian_wrong_for_one_pixel,
                                           dist.gaussian_log_likelihood_backward, verbose=False),
     "int P(x) dx", "normalised density"),
    ("variance floor", lambda: ex.check_variance_floor(
        floor_wrong_for_one_row, dist.bounded_logvar_backward, verbose=False),
     "your variance", "min_variance"),
    ("adam", lambda: ex.check_adam_step(adam_wrong_for_one_row, verbose=False),
     "your first step / lr", "bias correction"),
    ("em", lambda: ex.check_em_step(em_wrong_for_many_points, verbose=False),
     "weights sum to 2", "EM never does"),
]


@pytest.mark.parametrize("run, shown, phrase", [c[1:] for c in BEHAVIOUR_CASES],
                         ids=[c[0] for c in BEHAVIOUR_CASES])
def test_the_behaviour_step_fails_what_the_small_inputs_miss(run, shown, phrase):
    result = run()
    assert not result and "at step 'behaviour" in result.report, result.report
    assert shown in result.report and phrase in result.diagnosis, result.report
