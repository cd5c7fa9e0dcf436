"""The checks for notebook 05, the second term of the ELBO: sampling z and log P(x|z).

Lecture: "Maximize the second term": the reparameterization trick, the
Bernoulli and Gaussian log-likelihoods, and the decoder's variance floor (also
"Problem in VAE"), each a forward/backward pair.
"""

import numpy as np

from .. import distributions as dist
from .. import layers
from ._core import N_SIGMA, _behaviour, _first, _run
from ._steps import _check_pair, _forward_only, _library_pair, _scaled, _student_pair
from .kl import _mc_kl

_sp, _sg = layers.softplus, layers.sigmoid


def _trapezoid(f, x):
    """The trapezoid rule along the last axis (``np.trapezoid`` is NumPy >= 2 only)."""
    return np.sum((f[..., 1:] + f[..., :-1]) * np.diff(x, axis=-1), axis=-1) / 2



_reparam_reference = _library_pair(dist.reparameterize, dist.reparameterize_backward,
                                   ("z", "dmu", "dlogvar"))

STD_AS_VARIANCE = ("a standard deviation used as a variance: exp(v) for exp(v/2), so z has "
                   "variance exp(2 v); forward and backward agree (the bug of numpy-ml's VAE), "
                   "only the samples' variance shows it")

_REPARAM_MISTAKES = [
    (STD_AS_VARIANCE,
     lambda mu, v, e, d: {"z": mu + np.exp(v) * e, "dlogvar": d * np.exp(v) * e}),
    ("the 1/2 of the chain rule left out: dz/dlogvar = exp(v/2) eps / 2, not exp(v/2) eps",
     lambda mu, v, e, d: {"dlogvar": d * np.exp(v / 2) * e}),
    ("eps left out of dz/dlogvar: exp(v/2) / 2 for exp(v/2) eps / 2",
     lambda mu, v, e, d: {"dlogvar": 0.5 * d * np.exp(v / 2)}),
    ("a sign: z = mu - exp(v/2) eps (a valid sample too, but not the one this eps gives)",
     lambda mu, v, e, d: {"z": mu - np.exp(v / 2) * e, "dlogvar": -0.5 * d * np.exp(v / 2) * e}),
    ("logvar used as the standard deviation: z = mu + v eps",
     lambda mu, v, e, d: {"z": mu + v * e, "dlogvar": d * e}),
]


def check_reparameterize(reparameterize_fn, reparameterize_backward_fn, verbose=True):
    """Grade the reparameterization trick and its gradient.

    Lecture: "Maximize the second term": draw z ~ q(z|x) = N(mu, diag(exp(v))) as

        reparameterize_fn(mu, logvar, eps) -> (z, cache),   z = mu + exp(v / 2) * eps
        reparameterize_backward_fn(dz, cache) -> (dmu, dlogvar),
                                        dmu = dz,  dlogvar = dz * exp(v / 2) * eps / 2

    Answer key: ``distributions.reparameterize`` and its backward. Behaviour
    (blind to gradient checks): with 20000 draws of eps, the samples' mean and
    variance against mu and exp(logvar), and their Monte-Carlo KL
    ``E[log q(z) - log P(z)]`` against the closed form.

    Mistakes it names: a standard deviation used as a variance (exp(v) for
    exp(v/2)); the chain rule's 1/2 left out; eps left out of dz/dlogvar; a
    sign (mu - std eps); logvar used as the standard deviation; the upstream
    gradient ignored.

    Shapes: mu, logvar, eps (B, Z) -> z (B, Z); dz (B, Z) -> dmu, dlogvar (B, Z).
    """
    def body(log):
        rng = np.random.default_rng(1)
        B, Z = 4, 3
        small = tuple(rng.normal(size=(B, Z)) for _ in range(3))
        moderate = (rng.normal(size=(2, Z)), 0.7 * rng.normal(size=(2, Z)),
                    rng.normal(size=(2, Z)))
        zero, r = np.zeros((1, Z)), rng.normal(size=(3, Z))
        edge = (np.vstack([r[:1], zero, r[1:], [[30.0, -30.0, 0.0]], zero]),
                np.vstack([r[1:], zero, np.full((1, Z), 20.0), np.full((1, Z), -20.0),
                           [[20.0, -20.0, 0.0]]]),
                np.vstack([rng.normal(size=(4, Z)), zero, rng.normal(size=(1, Z))]))
        _check_pair(log, reparameterize_fn, reparameterize_backward_fn,
                    ("reparameterize_fn", "reparameterize_backward_fn"), ("mu", "logvar", "eps"),
                    _reparam_reference, {"dmu": 0, "dlogvar": 1}, _REPARAM_MISTAKES,
                    (small, moderate, edge), {},
                    "z = mu + exp(v/2) eps, dmu = dz, dlogvar = dz exp(v/2) eps / 2", rng)

        log.step = "behaviour (sample mean, variance and Monte-Carlo KL)"
        mu = np.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]])
        logvar = np.array([[0.3, -1.2, 1.0], [-0.5, 0.8, 1.5]])
        n, var = 20000, np.exp(logvar)
        eps = rng.standard_normal((n, *mu.shape))
        z = _forward_only(reparameterize_fn, "reparameterize_fn",
                          (np.tile(mu, (n, 1)), np.tile(logvar, (n, 1)), eps.reshape(-1, Z)),
                          "z", (2 * n, Z)).reshape(n, *mu.shape)
        mean, sample_var = z.mean(axis=0), z.var(axis=0, ddof=1)
        mc, se = _mc_kl(z, mu, logvar)
        kl, _ = dist.kl_standard_normal(mu, logvar)
        ok = (np.all(np.abs(mean - mu) <= N_SIGMA * np.sqrt(var / n))
              and np.all(np.abs(sample_var - var) <= N_SIGMA * var * np.sqrt(2 / (n - 1)))
              and np.all(np.abs(mc - kl) <= N_SIGMA * se))
        ratio = sample_var / var
        _behaviour(log, ok,
                   [f"sample mean {_first(mean)} vs mu {_first(mu)}",
                    f"sample variance {_first(sample_var)} vs exp(logvar) {_first(var)}",
                    f"Monte-Carlo KL of your samples {_first(mc)} vs the closed form {_first(kl)}"],
                   STD_AS_VARIANCE if np.allclose(ratio, var, rtol=0.1) else
                   "your samples are not draws from N(mu, exp(logvar))")
    return _run("reparameterize", body, verbose)


# ---------------------------------------------------------------------------
# 3. log P(x|z): Bernoulli from logits


_bernoulli_reference = _library_pair(dist.bernoulli_log_likelihood,
                                     dist.bernoulli_log_likelihood_backward, ("logp", "dlogits"))

_BERNOULLI_MISTAKES = [
    ("softplus of the wrong argument: softplus(-l) for softplus(l)",
     lambda x, l, d: {"logp": (x * l - _sp(-l)).sum(axis=1),
                      "dlogits": d[:, None] * (x + _sg(-l))}),
    ("sigmoid of the wrong argument: x - sigmoid(-l) for x - sigmoid(l)",
     lambda x, l, d: {"dlogits": d[:, None] * (x - _sg(-l))}),
    ("a sign: the cross-entropy (minus the log-likelihood)",
     lambda x, l, d: _scaled(_bernoulli_reference(x, l, d), -1.0)),
    ("a sign in the gradient: sigmoid(l) - x for x - sigmoid(l)",
     lambda x, l, d: {"dlogits": d[:, None] * (_sg(l) - x)}),
    ("log(1 + exp(l)) computed as written: it overflows for large logits; use "
     "max(l, 0) + log1p(exp(-|l|)) (and a sigmoid that never forms exp of a large number)",
     lambda x, l, d: {"logp": (x * l - np.log(1 + np.exp(l))).sum(axis=1),
                      "dlogits": d[:, None] * (x - np.exp(l) / (1 + np.exp(l)))}),
    ("probabilities first, then their logs: log sigmoid(l) and log(1 - sigmoid(l)) give -inf "
     "(or lose digits) for large |l|; use x l - softplus(l)",
     lambda x, l, d: {"logp": (x * np.log(_sg(l)) + (1 - x) * np.log(1 - _sg(l))).sum(axis=1)}),
    ("the mean over the pixels for the sum",
     lambda x, l, d: _scaled(_bernoulli_reference(x, l, d), 1.0 / x.shape[1])),
]


def _per_example_hints(out, B, D, what):
    return {out: {(B, D): f"not summed over the {what}: one number per example",
                  (): "summed over the batch too: one number per example",
                  (B, 1): "keepdims left on: the shape is (B,)",
                  (D,): f"a wrong axis: summed over the batch (axis 0), not the {what}"}}


def check_bernoulli(log_likelihood_fn, backward_fn, verbose=True):
    """Grade the Bernoulli log-likelihood from logits and its gradient.

    Lecture: "Maximize the second term", binary pixels. With l = logits,

        log_likelihood_fn(x, logits) -> (logp, cache),
                        logp = sum_d [x_d l_d - softplus(l_d)] = log Bern(x; sigmoid(l))
        backward_fn(dlogp, cache) -> dlogits,   dlogits = dlogp (x - sigmoid(l))

    stable for any logits (the check uses |l| = 800). Answer key:
    ``distributions.bernoulli_log_likelihood`` and its backward. Behaviour:
    ``P(x=0) + P(x=1) = 1`` for every logit.

    Mistakes it names: softplus or sigmoid of the wrong argument (of -l); a
    sign (the cross-entropy, or sigmoid(l) - x); log(1 + exp(l)) as written
    (overflow); probabilities first, then logs; the mean over pixels for the
    sum; a wrong axis; the upstream gradient ignored.

    Shapes: x, logits (B, D) -> logp (B,); dlogp (B,) -> dlogits (B, D).
    """
    def body(log):
        rng = np.random.default_rng(2)
        B, D = 4, 5
        small = (rng.integers(0, 2, (B, D)).astype(np.float64), rng.normal(size=(B, D)))
        moderate = (rng.uniform(size=(3, D)), 2 * rng.normal(size=(3, D)))
        edge = (np.vstack([[1, 1, 0, 0, 0.5], [1, 0, 0, 1, 1], [0, 1, 1, 0, 0.5],
                           rng.integers(0, 2, (2, D))]).astype(np.float64),
                np.vstack([[800, -800, 800, -800, 0], [30, -30, 30, -30, 0],
                           [-800, 800, 0, 0, 800], 5 * rng.normal(size=(2, D))]).astype(float))
        _check_pair(log, log_likelihood_fn, backward_fn, ("log_likelihood_fn", "backward_fn"),
                    ("x", "logits"), _bernoulli_reference, {"dlogits": 1}, _BERNOULLI_MISTAKES,
                    (small, moderate, edge), _per_example_hints("logp", B, D, "pixels"),
                    "sum_d [x_d l_d - softplus(l_d)] and dlogits = x - sigmoid(l)", rng)

        log.step = "behaviour (P(x=0) + P(x=1) = 1)"
        logits = np.array([[-800.0], [-30.0], [-2.0], [0.0], [0.4], [3.0], [30.0], [800.0]])
        one = _forward_only(log_likelihood_fn, "log_likelihood_fn",
                            (np.ones_like(logits), logits), "logp", (8,))
        zero = _forward_only(log_likelihood_fn, "log_likelihood_fn",
                             (np.zeros_like(logits), logits), "logp", (8,))
        total = np.exp(one) + np.exp(zero)
        _behaviour(log, np.all(np.abs(total - 1) <= 1e-9),
                   [f"logits {_first(logits, 8)}", f"P(x=0) + P(x=1): {_first(total, 8)}"],
                   "your likelihood is not a distribution over x in {0, 1}: recheck softplus")
    return _run("bernoulli", body, verbose)


# ---------------------------------------------------------------------------
# 4. log P(x|z): Gaussian with a learned mean and log-variance


_gaussian_reference = _library_pair(dist.gaussian_log_likelihood,
                                    dist.gaussian_log_likelihood_backward,
                                    ("logp", "dmean", "dlogvar"))


def _gauss(x, m, s, d, c):
    """A planted Gaussian whose variance is ``exp(c s)`` (c = 1 when right), with its gradients."""
    diff, v = x - m, np.exp(c * s)
    return {"logp": -0.5 * (dist.LOG_2PI + s + diff * diff / v).sum(axis=1),
            "dmean": d[:, None] * diff / v,
            "dlogvar": 0.5 * d[:, None] * (c * diff * diff / v - 1)}


_GAUSSIAN_MISTAKES = [
    ("the missing 1/2: -sum [log 2 pi + s + (x - m)^2 exp(-s)] is twice the log-density",
     lambda x, m, s, d: _scaled(_gaussian_reference(x, m, s, d), 2.0)),
    ("a standard deviation used as a variance: (x - m)^2 / exp(s/2) for (x - m)^2 / exp(s)",
     lambda x, m, s, d: _gauss(x, m, s, d, 0.5)),
    ("the variance multiplied, not divided: (x - m)^2 exp(s)",
     lambda x, m, s, d: _gauss(x, m, s, d, -1.0)),
    ("log(2 pi) left out: not a density any more (it does not integrate to 1)",
     lambda x, m, s, d: {"logp": _gaussian_reference(x, m, s, d)["logp"]
                         + 0.5 * x.shape[1] * dist.LOG_2PI}),
    ("a sign in d/dmean: (m - x) exp(-s) for (x - m) exp(-s)",
     lambda x, m, s, d: {"dmean": -_gaussian_reference(x, m, s, d)["dmean"]}),
    ("the -1 left out of d/dlogvar: (x - m)^2 exp(-s) / 2",
     lambda x, m, s, d: {"dlogvar": 0.5 * d[:, None] * (x - m) ** 2 * np.exp(-s)}),
    ("the log-variance term -s/2 left out of log N",
     lambda x, m, s, d: {"logp": -0.5 * (dist.LOG_2PI + (x - m) ** 2 * np.exp(-s)).sum(axis=1)}),
    ("the mean over the pixels for the sum",
     lambda x, m, s, d: _scaled(_gaussian_reference(x, m, s, d), 1.0 / x.shape[1])),
]


def check_gaussian(log_likelihood_fn, backward_fn, verbose=True):
    """Grade the diagonal Gaussian log-likelihood and its gradient.

    Lecture: "Maximize the second term", P(x|z) = N(x; mu(z), sigma(z)). With
    mean m and log-variance s,

        log_likelihood_fn(x, mean, logvar) -> (logp, cache),
            logp = -1/2 sum_d [log(2 pi) + s_d + (x_d - m_d)^2 exp(-s_d)]
        backward_fn(dlogp, cache) -> (dmean, dlogvar),
            dmean = dlogp (x - m) exp(-s),  dlogvar = dlogp ((x - m)^2 exp(-s) - 1) / 2

    Answer key: ``distributions.gaussian_log_likelihood`` and its backward.
    Behaviour: for one pixel, the density integrates to 1 over x and the
    score has mean zero, ``int P(x) d log P(x) / d(m, s) dx = 0``.

    Mistakes it names: the missing 1/2; a standard deviation used as a
    variance; the variance multiplied instead of divided; log(2 pi) left out;
    a sign in d/dmean; the -1 left out of d/dlogvar; the -s/2 left out; the
    mean over pixels for the sum; a wrong axis; the upstream gradient ignored.

    Shapes: x, mean, logvar (B, D) -> logp (B,); dlogp (B,) -> dmean, dlogvar (B, D).
    """
    def body(log):
        rng = np.random.default_rng(3)
        B, D = 4, 5
        small = tuple(rng.normal(size=(B, D)) for _ in range(3))
        moderate = tuple(rng.normal(size=(3, D)) for _ in range(3))
        m = rng.normal(size=(6, D))
        x = m + rng.normal(size=(6, D))
        x[2] = m[2]  # x exactly at the mean
        x[5] = m[5] + 50.0
        s = np.vstack([np.full((1, D), 20.0), np.full((1, D), -20.0), np.zeros((1, D)),
                       [[20, -20, 0, 5, -5]], rng.normal(size=(2, D))]).astype(float)
        _check_pair(log, log_likelihood_fn, backward_fn, ("log_likelihood_fn", "backward_fn"),
                    ("x", "mean", "logvar"), _gaussian_reference, {"dmean": 1, "dlogvar": 2},
                    _GAUSSIAN_MISTAKES, (small, moderate, (x, m, s)),
                    _per_example_hints("logp", B, D, "pixels"),
                    "-1/2 sum_d [log 2pi + s_d + (x_d - m_d)^2 exp(-s_d)] and its gradient", rng)

        log.step = "behaviour (the density integrates to 1, the score has mean 0)"
        mean, logvar = np.array([0.3, -1.0, 2.0]), np.array([-2.0, 0.0, 1.5])
        t = np.linspace(-12, 12, 4801)
        grid = mean[:, None] + np.exp(logvar / 2)[:, None] * t  # (3, G)
        G = t.size
        args = (grid.reshape(-1, 1), np.repeat(mean, G)[:, None], np.repeat(logvar, G)[:, None])
        shapes = {"logp": (3 * G,), "dmean": (3 * G, 1), "dlogvar": (3 * G, 1)}
        out = _student_pair(log_likelihood_fn, backward_fn, ("log_likelihood_fn", "backward_fn"),
                            (), args, np.ones(3 * G), shapes, {})
        p = np.exp(out["logp"]).reshape(3, G)
        mass = _trapezoid(p, grid)
        score_m = _trapezoid(p * out["dmean"].reshape(3, G), grid)
        score_s = _trapezoid(p * out["dlogvar"].reshape(3, G), grid)
        ok = (np.all(np.abs(mass - 1) <= 1e-6) and np.all(np.abs(score_m) <= 1e-6)
              and np.all(np.abs(score_s) <= 1e-6))
        _behaviour(log, ok,
                   [f"int P(x) dx: {_first(mass)} (should be 1)",
                    f"int P(x) dlogp/dmean dx: {_first(score_m)}, "
                    f"int P(x) dlogp/dlogvar dx: {_first(score_s)} (should be 0)"],
                   "your log-likelihood is not the log of a normalised density, or its "
                   "gradient is not its derivative")
    return _run("gaussian", body, verbose)


# ---------------------------------------------------------------------------
# 5. The decoder's variance floor


_floor_reference = _library_pair(dist.bounded_logvar, dist.bounded_logvar_backward,
                                 ("logvar", "draw"))

FLOOR_OVERFLOW = "log(1 + exp(raw)) computed as written: it overflows for large raw"

_FLOOR_MISTAKES = [
    ("the floor added after the log: log(softplus(raw)) + min_variance",
     lambda r, mv, d: {"logvar": np.log(_sp(r)) + mv, "draw": d * _sg(r) / _sp(r)}),
    ("the floor left out: log(softplus(raw)), whose variance can still reach 0",
     lambda r, mv, d: {"logvar": np.log(_sp(r)), "draw": d * _sg(r) / _sp(r)}),
    ("softplus of the wrong argument: softplus(-raw) for softplus(raw)",
     lambda r, mv, d: {"logvar": np.log(mv + _sp(-r)), "draw": -d * _sg(-r) / (mv + _sp(-r))}),
    ("the chain rule through the log left out: sigmoid(raw), not "
     "sigmoid(raw) / (min_variance + softplus(raw))",
     lambda r, mv, d: {"draw": d * _sg(r)}),
    ("sigmoid of the wrong argument: sigmoid(-raw) for sigmoid(raw)",
     lambda r, mv, d: {"draw": d * _sg(-r) / (mv + _sp(r))}),
    (FLOOR_OVERFLOW,  # with either of the two sigmoids a student might write
     lambda r, mv, d: {"logvar": np.log(mv + np.log(1 + np.exp(r))),
                       "draw": d * np.exp(r) / (1 + np.exp(r)) / (mv + np.log(1 + np.exp(r)))}),
    (FLOOR_OVERFLOW,
     lambda r, mv, d: {"draw": d / (1 + np.exp(-r)) / (mv + np.log(1 + np.exp(r)))}),
    ("exp for softplus: log(min_variance + exp(raw))",
     lambda r, mv, d: {"logvar": np.log(mv + np.exp(r)), "draw": d * np.exp(r) / (mv + np.exp(r))}),
]


def check_variance_floor(floor_fn, floor_backward_fn, verbose=True):
    """Grade the decoder's bounded log-variance and its gradient.

    Lecture: "Maximize the second term" (the project's variance floor) and
    "Problem in VAE" (a learned variance collapsing on constant pixels):

        floor_fn(raw, min_variance) -> (logvar, cache),
                                  logvar = log(min_variance + softplus(raw))
        floor_backward_fn(dlogvar, cache) -> draw,
                                  draw = dlogvar sigmoid(raw) / (min_variance + softplus(raw))

    stable for any raw (the check uses |raw| = 800). Answer key:
    ``distributions.bounded_logvar`` and its backward. Behaviour: the variance
    tends to min_variance as raw -> -inf, to raw as raw -> +inf, and rises
    with raw.

    Mistakes it names: the floor added after the log; the floor left out;
    softplus or sigmoid of the wrong argument (of -raw); the chain rule through
    the log left out; log(1 + exp(raw)) as written (overflow); exp for
    softplus; the upstream gradient ignored.

    Shapes: raw (B, D), min_variance a float > 0 -> logvar (B, D); dlogvar (B, D) -> draw (B, D).
    """
    def body(log):
        rng = np.random.default_rng(4)
        small = (rng.normal(size=(4, 5)), 0.01)
        moderate = (2 * rng.normal(size=(3, 4)), 0.05)
        raw = np.vstack([[800, -800, 30, -30, 0], [-50, 50, 5, -5, 0.1],
                         4 * rng.normal(size=(3, 5))]).astype(float)
        _check_pair(log, floor_fn, floor_backward_fn, ("floor_fn", "floor_backward_fn"),
                    ("raw", "min_variance"), _floor_reference, {"draw": 0}, _FLOOR_MISTAKES,
                    (small, moderate, (raw, 1e-4)), {},
                    "log(min_variance + softplus(raw)) and sigmoid(raw) / (min_variance + "
                    "softplus(raw))", rng)

        log.step = "behaviour (the variance's limits)"
        mv, raw = 1e-3, np.array([[-700.0, -50.0, -5.0, 0.0, 5.0, 50.0, 700.0]])
        var = np.exp(_forward_only(floor_fn, "floor_fn", (raw, mv), "logvar", raw.shape))[0]
        ok = (abs(var[0] - mv) <= 1e-9 * mv and abs(var[-1] - (700 + mv)) <= 1e-9 * 700
              and np.all(np.diff(var) >= 0) and np.all(var >= mv * (1 - 1e-12)))
        _behaviour(log, ok,
                   [f"raw {_first(raw, 7)}",
                    f"your variance {_first(var, 7)} (min_variance = {mv})"],
                   "your variance does not run from min_variance (raw -> -inf) up to about "
                   "raw (raw -> +inf)")
    return _run("variance_floor", body, verbose)


