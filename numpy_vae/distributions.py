"""The two terms of the VAE lower bound, each a forward/backward pair.

Lecture sections "ELBO / Minimize the first term KL[q(z|x) || P(z)]" and
"Maximize the second term int q(z|x) log P(x|z) dz".

Reduction, stated once for the whole module: every density is **summed over
its last axis** (pixels D or latents Z) and returned **per example**, shape
(B,). Each backward takes the upstream gradient per example, ``d...`` of shape
(B,), and returns gradients with the shapes of the inputs.

The posterior is always ``mu, logvar``: ``logvar`` is a log-*variance*, and the
standard deviation ``exp(logvar / 2)`` is computed only in ``std_from_logvar``.
"""

import numpy as np

from ._checks import check_array, check_positive_float, check_same_shape
from .layers import sigmoid, softplus

LOG_2PI = float(np.log(2 * np.pi))


def std_from_logvar(logvar):
    """Standard deviation from a log-variance: ``exp(logvar / 2)``."""
    return np.exp(0.5 * logvar)


# ---------------------------------------------------------------------------
# The reparameterization trick


def reparameterize(mu, logvar, eps):
    """Draw ``z ~ N(mu, exp(logvar))`` as ``z = mu + exp(logvar / 2) * eps``.

    The noise ``eps ~ N(0, I)`` is passed in, so ``z`` is a differentiable
    function of ``mu`` and ``logvar`` (lecture: "the reparameterization trick").

    Shapes: mu, logvar, eps (B, Z) -> z (B, Z).
    """
    for name, a in (("mu", mu), ("logvar", logvar), ("eps", eps)):
        check_array(name, a, ndim=2, finite=False)
    check_same_shape("mu, logvar, eps", mu, logvar, eps)
    std = std_from_logvar(logvar)  # (B, Z)
    z = mu + std * eps  # (B, Z)
    return z, (std, eps)


def reparameterize_backward(dz, cache):
    """``dz/dmu = 1`` and ``dz/dlogvar = exp(logvar / 2) * eps / 2``.

    Shapes: dz (B, Z) -> dmu (B, Z), dlogvar (B, Z).
    """
    std, eps = cache
    return dz, 0.5 * dz * std * eps


# ---------------------------------------------------------------------------
# KL(q(z|x) || P(z)) for a diagonal Gaussian q and P(z) = N(0, I)


def kl_standard_normal(mu, logvar):
    """Closed-form ``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per example.

    ``KL = 1/2 sum_j (exp(v_j) - (1 + v_j) + mu_j^2)`` with ``v = logvar``;
    ``exp(v) - 1`` is computed as ``expm1(v)``, exact near ``v = 0``.

    Shapes: mu, logvar (B, Z) -> kl (B,).
    """
    check_array("mu", mu, ndim=2, finite=False)
    check_array("logvar", logvar, ndim=2, finite=False)
    check_same_shape("mu, logvar", mu, logvar)
    expm1_v = np.expm1(logvar)  # (B, Z)
    kl = 0.5 * (expm1_v - logvar + mu * mu).sum(axis=1)  # (B,)
    return kl, (mu, expm1_v)


def kl_standard_normal_backward(dkl, cache):
    """``dKL/dmu = mu`` and ``dKL/dlogvar = (exp(logvar) - 1) / 2``, times ``dkl``.

    Shapes: dkl (B,) -> dmu (B, Z), dlogvar (B, Z).
    """
    mu, expm1_v = cache
    d = dkl[:, None]
    return d * mu, 0.5 * d * expm1_v


# ---------------------------------------------------------------------------
# log P(x|z): Bernoulli from logits


def bernoulli_log_likelihood(x, logits):
    """``log Bern(x; sigmoid(l)) = sum_d [x_d l_d - softplus(l_d)]`` per example.

    Stable for logits of any size without clipping: ``softplus(l) = max(l, 0)
    + log(1 + e)`` with ``e = exp(-|l|) <= 1``; the same ``e`` gives the sigmoid
    in the backward pass, so one exponential serves both. For ``x`` in [0, 1]
    this is minus the binary cross-entropy.

    ``log(1 + e)`` rather than ``log1p(e)``: as ``e <= 1`` its absolute error is
    below one unit in the last place of 1 (the terms are summed, so only
    absolute error matters), and on CPUs without AVX-512 NumPy's log1p runs a
    scalar loop, 5-10x slower than log: it was the costliest line of a
    training step. ``x l - max(l, 0)`` is written ``l (x - [l > 0])``.

    Shapes: x, logits (B, D) -> logp (B,).
    """
    check_array("x", x, ndim=2, finite=False)
    check_array("logits", logits, ndim=2, finite=False)
    check_same_shape("x, logits", x, logits)
    e = np.abs(logits)  # (B, D), then exp(-|l|) in place
    np.negative(e, out=e)
    np.exp(e, out=e)
    one_plus_e = e + 1  # (B, D)
    terms = logits * (x - (logits > 0))  # x l - max(l, 0), (B, D)
    terms -= np.log(one_plus_e)
    logp = terms.sum(axis=1)  # (B,)
    return logp, (x, logits, e, one_plus_e)


def bernoulli_log_likelihood_backward(dlogp, cache):
    """``d logp / dl = x - sigmoid(l)``, times ``dlogp``.

    ``sigmoid(l)`` is ``1 / (1 + e)`` for l >= 0 and ``e / (1 + e)`` for l < 0;
    since ``e <= 1``, the numerator is ``max(e, [l >= 0])``.

    Shapes: dlogp (B,) -> dlogits (B, D).
    """
    x, logits, e, one_plus_e = cache
    p = np.maximum(e, logits >= 0)  # numerator: 1 where l >= 0, else e, (B, D)
    p /= one_plus_e  # sigmoid(l)
    dlogits = np.subtract(x, p, out=p)  # (B, D)
    dlogits *= dlogp[:, None]
    return dlogits


# ---------------------------------------------------------------------------
# log P(x|z): Gaussian with a learned mean and log-variance


def gaussian_log_likelihood(x, mean, logvar):
    """``log N(x; m, exp(s)) = -1/2 sum_d [log 2pi + s_d + (x_d - m_d)^2 exp(-s_d)]``.

    Lecture: P(x|z) = N(x; mu(z), sigma(z)), a diagonal Gaussian. Also used
    for log q(z|x) and, with zero mean and log-variance, for log P(z).

    Shapes: x, mean, logvar (B, D) -> logp (B,).
    """
    for name, a in (("x", x), ("mean", mean), ("logvar", logvar)):
        check_array(name, a, ndim=2, finite=False)
    check_same_shape("x, mean, logvar", x, mean, logvar)
    inv_var = np.exp(-logvar)  # (B, D)
    diff = x - mean  # (B, D)
    sq = diff * diff * inv_var  # (B, D)
    logp = -0.5 * (LOG_2PI + logvar + sq).sum(axis=1)  # (B,)
    return logp, (diff, inv_var, sq)


def gaussian_log_likelihood_backward(dlogp, cache):
    """``d/dm = (x - m) exp(-s)`` and ``d/ds = ((x - m)^2 exp(-s) - 1) / 2``, times ``dlogp``.

    Shapes: dlogp (B,) -> dmean (B, D), dlogvar (B, D).
    """
    diff, inv_var, sq = cache
    d = dlogp[:, None]
    return d * diff * inv_var, 0.5 * d * (sq - 1)


def bounded_logvar(raw, min_variance):
    """The decoder's log-variance with a floor: ``log(min_variance + softplus(raw))``.

    A learned variance that can shrink to 0 sends the likelihood of a constant
    pixel to +infinity; with this parameterization the variance never falls
    below ``min_variance`` and the log-density of one pixel is at most
    ``-log(2 pi min_variance) / 2``.

    Shapes: raw (B, D) -> logvar (B, D).
    """
    check_array("raw", raw, ndim=2, finite=False)
    min_variance = check_positive_float("min_variance", min_variance)
    var = min_variance + softplus(raw)  # (B, D)
    return np.log(var), (raw, var)


def bounded_logvar_backward(dlogvar, cache):
    """``d logvar / d raw = sigmoid(raw) / (min_variance + softplus(raw))``.

    Shapes: dlogvar (B, D) -> draw (B, D).
    """
    raw, var = cache
    return dlogvar * sigmoid(raw) / var



# ---------------------------------------------------------------------------
# log P(x|z): Gaussian with a fixed variance


def gaussian_fixed_log_likelihood(x, mean, variance):
    """``log N(x; m, variance I)`` with a fixed scalar ``variance`` > 0.

    Shapes: x, mean (B, D) -> logp (B,).
    """
    check_array("x", x, ndim=2, finite=False)
    check_array("mean", mean, ndim=2, finite=False)
    check_same_shape("x, mean", x, mean)
    variance = check_positive_float("variance", variance)
    diff = x - mean  # (B, D)
    D = x.shape[1]
    logp = -0.5 * (D * (LOG_2PI + np.log(variance)) + (diff * diff).sum(axis=1) / variance)
    return logp, (diff, variance)


def gaussian_fixed_log_likelihood_backward(dlogp, cache):
    """``d/dm = (x - m) / variance``, times ``dlogp``. Shapes: dlogp (B,) -> dmean (B, D)."""
    diff, variance = cache
    return dlogp[:, None] * diff / variance


def standard_normal_log_density(z):
    """``log N(z; 0, I)`` per example, the prior P(z). Shapes: z (B, Z) -> (B,)."""
    check_array("z", z, ndim=2, finite=False)
    return -0.5 * (LOG_2PI + z * z).sum(axis=1)
