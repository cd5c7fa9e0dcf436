"""The two terms of the VAE lower bound, each a forward/backward pair, and the decoder heads.

Lecture sections "ELBO / Minimize the first term KL[q(z|x) || P(z)]" and
"Maximize the second term int q(z|x) log P(x|z) dz".

Reduction, stated once for the whole module: every density is **summed over
its last axis** (pixels D or latents Z) and returned **per example**, shape
(B,). Each backward takes the upstream gradient per example, ``d...`` of shape
(B,), and returns gradients with the shapes of the inputs.

The posterior is always ``mu, logvar``: ``logvar`` is a log-*variance*, and the
standard deviation ``exp(logvar / 2)`` is computed only in ``std_from_logvar``.

These functions check only the shapes of their arguments (one line each);
dtypes and finite values are checked once, by the model's public methods.
"""

import numpy as np

from ._checks import check_alike, check_positive_float
from .layers import sigmoid, sigmoid_backward, sigmoid_forward, softplus

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
    check_alike("mu, logvar, eps", mu, logvar, eps)
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


def kl_standard_normal_per_dim(mu, logvar):
    """``KL(N(mu_j, exp(v_j)) || N(0, 1))`` for every latent dimension j separately.

    ``1/2 (exp(v_j) - (1 + v_j) + mu_j^2)`` with ``v = logvar``; ``exp(v) - 1`` is
    computed as ``expm1(v)``, exact near ``v = 0``. The sum over j is the KL of
    the whole diagonal Gaussian (``kl_standard_normal``); the terms alone show
    which dimensions the model uses (posterior collapse).

    Shapes: mu, logvar (B, Z) -> (B, Z).
    """
    check_alike("mu, logvar", mu, logvar)
    return 0.5 * (np.expm1(logvar) - logvar + mu * mu)


def kl_standard_normal(mu, logvar):
    """Closed-form ``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per example.

    ``KL = 1/2 sum_j (exp(v_j) - (1 + v_j) + mu_j^2)``, the sum over j of
    ``kl_standard_normal_per_dim``.

    Shapes: mu, logvar (B, Z) -> kl (B,).
    """
    kl = kl_standard_normal_per_dim(mu, logvar).sum(axis=1)  # (B,)
    return kl, (mu, logvar)


def kl_standard_normal_backward(dkl, cache):
    """``dKL/dmu = mu`` and ``dKL/dlogvar = (exp(logvar) - 1) / 2``, times ``dkl``.

    Shapes: dkl (B,) -> dmu (B, Z), dlogvar (B, Z).
    """
    mu, logvar = cache
    d = dkl[:, None]  # (B, 1)
    return d * mu, 0.5 * d * np.expm1(logvar)


# ---------------------------------------------------------------------------
# log P(x|z): Bernoulli from logits


def bernoulli_log_likelihood(x, logits):
    """``log Bern(x; sigmoid(l)) = sum_d [x_d l_d - softplus(l_d)]`` per example.

    For ``x`` in [0, 1] this is minus the binary cross-entropy. Stable for
    logits of any size: ``softplus(l) = max(l, 0) + log(1 + e)`` with
    ``e = exp(-|l|)`` in (0, 1], and the backward pass reuses the same ``e``
    for the sigmoid: one exponential serves both. (``log(1 + e)`` rather than
    ``log1p(e)``: with e <= 1 it loses nothing that matters in a sum, and NumPy's
    log1p is several times slower than log on CPUs without AVX-512.)

    Shapes: x, logits (B, D) -> logp (B,).
    """
    check_alike("x, logits", x, logits)
    e = np.exp(-np.abs(logits))  # (B, D)
    logp = (x * logits - np.maximum(logits, 0) - np.log(1 + e)).sum(axis=1)  # (B,)
    return logp, (x, logits, e)


def bernoulli_log_likelihood_backward(dlogp, cache):
    """``d logp / dl = x - sigmoid(l)``, times ``dlogp``.

    ``sigmoid(l)`` is ``1 / (1 + e)`` for l >= 0 and ``e / (1 + e)`` for l < 0.

    Shapes: dlogp (B,) -> dlogits (B, D).
    """
    x, logits, e = cache
    p = np.where(logits >= 0, 1, e) / (1 + e)  # sigmoid(l), (B, D)
    return dlogp[:, None] * (x - p)


# ---------------------------------------------------------------------------
# log P(x|z): Gaussian with a learned mean and log-variance


def gaussian_log_likelihood(x, mean, logvar):
    """``log N(x; m, exp(s)) = -1/2 sum_d [log 2pi + s_d + (x_d - m_d)^2 exp(-s_d)]``.

    Lecture: P(x|z) = N(x; mu(z), sigma(z)), a diagonal Gaussian. Also used
    for log q(z|x) and, with zero mean and log-variance, for log P(z).

    Shapes: x, mean, logvar (B, D) -> logp (B,).
    """
    check_alike("x, mean, logvar", x, mean, logvar)
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
    check_alike("raw", raw)
    check_positive_float("min_variance", min_variance)
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
    check_alike("x, mean", x, mean)
    check_positive_float("variance", variance)
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
    check_alike("z", z)
    return -0.5 * (LOG_2PI + z * z).sum(axis=1)


# ---------------------------------------------------------------------------
# Heads: the decoder's last layer h -> the parameters of P(x|z) -> log P(x|z).
# One small object per likelihood, chosen once when the model is built, so the
# model never asks which likelihood it has. Each has the same four methods:
#   params(h)  what ``VAE.decode`` returns      mean(h)  the decoder mean (B, D)
#   log_px(x, h) -> logp (B,), cache             log_px_backward(dlogp, cache) -> dh


def _mean_forward(h, sigmoid_mean):
    """The Gaussian mean: ``h`` as is, or ``sigmoid(h)`` for data in (0, 1)."""
    return sigmoid_forward(h) if sigmoid_mean else (h, None)


def _mean_backward(dmean, cache):
    return dmean if cache is None else sigmoid_backward(dmean, cache)


class BernoulliHead:
    """P(x|z) = Bernoulli(sigmoid(h)): the decoder outputs one logit per pixel, h (B, D)."""

    outputs_per_pixel = 1
    needs_unit_interval = True  # x must lie in [0, 1]
    density = False  # log_px is a log-probability (of binary pixels), never above 0
    mean_can_be_squashed = False  # the logits already pass through a sigmoid

    def params(self, h):
        return h  # the logits

    def mean(self, h):
        return sigmoid(h)  # pixel probabilities

    def log_px(self, x, h):
        return bernoulli_log_likelihood(x, h)

    def log_px_backward(self, dlogp, cache):
        return bernoulli_log_likelihood_backward(dlogp, cache)


class GaussianHead:
    """P(x|z) = N(m, diag(exp(s))), mean and variance learned: h (B, 2D) = [mean | raw].

    The log-variance is ``bounded_logvar(raw, min_variance)`` (a floor); the
    mean passes through a sigmoid if ``sigmoid_mean``.
    """

    outputs_per_pixel = 2
    needs_unit_interval = False
    density = True  # log_px is a log-density of continuous pixels: it can exceed 0
    mean_can_be_squashed = True

    def __init__(self, min_variance, sigmoid_mean=False):
        self.min_variance, self.sigmoid_mean = min_variance, sigmoid_mean

    def _forward(self, h):
        D = h.shape[1] // 2
        mean, mean_cache = _mean_forward(h[:, :D], self.sigmoid_mean)  # (B, D)
        logvar, logvar_cache = bounded_logvar(h[:, D:], self.min_variance)  # (B, D)
        return (mean, logvar), (mean_cache, logvar_cache)

    def params(self, h):
        return self._forward(h)[0]  # (mean, logvar)

    def mean(self, h):
        return self.params(h)[0]

    def log_px(self, x, h):
        (mean, logvar), head_cache = self._forward(h)
        logp, cache = gaussian_log_likelihood(x, mean, logvar)  # (B,)
        return logp, (head_cache, cache)

    def log_px_backward(self, dlogp, cache):
        (mean_cache, logvar_cache), cache = cache
        dmean, dlogvar = gaussian_log_likelihood_backward(dlogp, cache)  # (B, D) each
        dmean = _mean_backward(dmean, mean_cache)
        draw = bounded_logvar_backward(dlogvar, logvar_cache)
        return np.concatenate([dmean, draw], axis=1)  # (B, 2D)


class GaussianFixedHead:
    """P(x|z) = N(m, variance I) with a fixed ``variance``: h (B, D) is the mean."""

    outputs_per_pixel = 1
    needs_unit_interval = False
    density = True
    mean_can_be_squashed = True

    def __init__(self, variance, sigmoid_mean=False):
        self.variance, self.sigmoid_mean = variance, sigmoid_mean

    def params(self, h):
        return _mean_forward(h, self.sigmoid_mean)[0]  # the mean

    mean = params

    def log_px(self, x, h):
        mean, mean_cache = _mean_forward(h, self.sigmoid_mean)  # (B, D)
        logp, cache = gaussian_fixed_log_likelihood(x, mean, self.variance)  # (B,)
        return logp, (mean_cache, cache)

    def log_px_backward(self, dlogp, cache):
        mean_cache, cache = cache
        return _mean_backward(gaussian_fixed_log_likelihood_backward(dlogp, cache), mean_cache)


# ---------------------------------------------------------------------------
# The importance-weighted bound (Burda et al. 2015): the pieces its gradient needs.
# log w = log P(x|z) + log P(z) - log q(z|x) at z = mu + exp(logvar / 2) eps, so log P(z)
# and log q(z|x) need their gradients in z too (z depends on mu and logvar).


def gaussian_log_likelihood_x_backward(dlogp, cache):
    """The gradient of ``gaussian_log_likelihood`` in its first argument, times ``dlogp``.

    ``d/dx log N(x; m, exp(s)) = -(x - m) exp(-s)``, minus ``d/dm``. Needed for
    log q(z|x) at a reparameterized sample, where the point z moves with mu
    and logvar. ``cache`` is the one ``gaussian_log_likelihood`` returned.

    Shapes: dlogp (B,) -> dx (B, D).
    """
    diff, inv_var, _ = cache
    return -dlogp[:, None] * diff * inv_var


def standard_normal_log_density_backward(dlogp, z):
    """``d/dz log N(z; 0, I) = -z``, times ``dlogp`` (the forward's only cache is z itself).

    Shapes: dlogp (B,), z (B, Z) -> dz (B, Z).
    """
    return -dlogp[:, None] * z


def log_mean_exp(log_w):
    """``L = log (1/k) sum_i exp(log_w_i)`` over the k samples of each example, and its cache.

    Computed as ``m + log mean_i exp(log_w_i - m)`` with ``m = max_i log_w_i``, so no
    exponential overflows. The cache is the normalized weights
    ``w~_i = w_i / sum_j w_j = softmax_i(log_w)``, which are ``dL / dlog_w_i``.
    Lecture: "Beyond the notes", the importance-weighted bound L_k.

    Shapes: log_w (B, k) -> L (B,), w~ (B, k).
    """
    check_alike("log_w", log_w)
    top = log_w.max(axis=1, keepdims=True)  # (B, 1)
    w = np.exp(log_w - top)  # (B, k), the largest is 1
    total = w.sum(axis=1, keepdims=True)  # (B, 1), in [1, k]
    L = top[:, 0] + np.log(total[:, 0] / log_w.shape[1])  # (B,)
    return L, w / total


def log_mean_exp_backward(dL, w_tilde):
    """``dL / dlog_w_i = w~_i``, times ``dL``. Shapes: dL (B,) -> dlog_w (B, k)."""
    return dL[:, None] * w_tilde


def effective_sample_size(w_tilde):
    """``1 / sum_i w~_i^2`` of normalized weights: k when all are equal, 1 when one takes all.

    Shapes: w~ (B, k) -> (B,).
    """
    check_alike("w_tilde", w_tilde)
    return 1.0 / np.sum(w_tilde * w_tilde, axis=1)
