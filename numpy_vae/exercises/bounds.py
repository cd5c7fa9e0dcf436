"""The checks for notebook 02: the log-mean-exp and the importance-weighted bound L_k.

Lecture: "Lower bound" and "Beyond the notes" (Burda et al. 2015). The answer
key is the library's ``distributions.log_mean_exp``.
"""

import numpy as np

from .. import distributions as dist
from ._core import _behaviour, _first, _log_sum_exp, _run
from ._steps import _check_outputs, _student_outputs


def _lme(a):
    """The library's log-mean-exp, without its weights. Shapes: a (B, k) -> (B,)."""
    L, _ = dist.log_mean_exp(a)
    return L


_LME_MISTAKES = [
    ("the log-sum-exp without the 1/k: log k too high",
     lambda a: {"lme": _log_sum_exp(a)}),
    ("no max shift: log(mean(exp(a))) overflows to inf (or underflows to -inf) for large |a|",
     lambda a: {"lme": np.log(np.mean(np.exp(a), axis=1))}),
    ("the max subtracted but not added back", lambda a: {"lme": _lme(a) - a.max(axis=1)}),
    ("a wrong axis: the max of the whole array, not of each row (rows far below it underflow)",
     lambda a: {"lme": a.max() + np.log(np.mean(np.exp(a - a.max()), axis=1))}),
    ("the mean of the logs, not the log of the mean (Jensen: only a lower bound)",
     lambda a: {"lme": a.mean(axis=1)}),
]


def check_log_mean_exp(log_mean_exp_fn, verbose=True):
    """Grade a log-mean-exp over the last axis, safe from overflow.

    Lecture: "Beyond the notes", the importance-weighted bound:

        log_mean_exp_fn(a) -> log (1/k) sum_i exp(a_i)  =  m + log (1/k) sum_i exp(a_i - m)

    with m the row's largest entry, so that no exp overflows (the check uses
    |a| = 1000). The reference is ``distributions.log_mean_exp``. Behaviour: adding c
    to a row adds c to the result (c = +-700), and mean(a) <= result <= max(a).

    Mistakes it names: the log-sum-exp without the 1/k; no max shift
    (overflow); the max not added back; the max of the whole array (a wrong
    axis); the mean of the logs; a wrong axis in the result's shape.

    Shapes: a (B, k) -> (B,).
    """
    def body(log):
        rng = np.random.default_rng(10)
        B, k = 3, 5
        edge = np.vstack([[1000, 999, 998, 1000, 0], [-1000, -1001, -1002, -999, -1000],
                          np.zeros((1, k)), [800, -800, 0, 3, -3], 5 * rng.normal(size=(2, k))])
        hints = {"lme": {(k,): "a wrong axis: averaged over the batch (axis 0), not the samples",
                         (B, 1): "keepdims left on: the shape is (B,)",
                         (): "reduced over every axis: one number per row"}}
        _check_outputs(log, log_mean_exp_fn, "log_mean_exp_fn", lambda a: {"lme": _lme(a)},
                       _LME_MISTAKES, ((rng.normal(size=(B, k)),), (3 * rng.normal(size=(4, 6)),),
                                       (edge,)), hints, "m + log mean exp(a - m), m the row's max")

        log.step = "behaviour (shift by c, bounds)"
        a = 3 * rng.normal(size=(4, 6))
        out = {c: _student_outputs(log_mean_exp_fn, "log_mean_exp_fn", (a + c,),
                                   {"lme": (4,)})["lme"] for c in (0.0, 700.0, -700.0)}
        ok = (all(np.all(np.abs(out[c] - out[0.0] - c) <= 1e-9 * (1 + abs(c))) for c in out)
              and np.all(a.mean(axis=1) <= out[0.0] + 1e-12)
              and np.all(out[0.0] <= a.max(axis=1) + 1e-12))
        _behaviour(log, ok,
                   [f"yours on a: {_first(out[0.0])}",
                    f"on a + 700, minus 700: {_first(out[700.0] - 700)}",
                    f"on a - 700, plus 700: {_first(out[-700.0] + 700)}"],
                   "your log-mean-exp is not shift-invariant or leaves [mean(a), max(a)]: "
                   "shift each row by its max")
    return _run("log_mean_exp", body, verbose)


def _iw_log_w(log_px_z, z, mu, logvar, log_q_sign=-1.0, q_logvar_scale=1.0, prior=True):
    """``log w_i = log P(x|z_i) + log P(z_i) - log q(z_i|x)`` (planted mistakes change one term)."""
    B, k, Z = z.shape
    flat = z.reshape(B * k, Z)  # row b k + i is sample i of example b
    log_q, _ = dist.gaussian_log_likelihood(flat, np.repeat(mu, k, axis=0),
                                            q_logvar_scale * np.repeat(logvar, k, axis=0))
    log_pz = dist.standard_normal_log_density(flat) if prior else 0.0
    return log_px_z + (log_pz + log_q_sign * log_q).reshape(B, k)  # (B, k)


def _iw_reference(log_px_z, z, mu, logvar):
    return {"L_k": _lme(_iw_log_w(log_px_z, z, mu, logvar))}


_IW_MISTAKES = [
    ("the mean of log w, the one-sample bound L_1 (the ELBO), not the log of the mean weight",
     lambda *a: {"L_k": _iw_log_w(*a).mean(axis=1)}),
    ("the log-sum-exp without the 1/k: log k too high",
     lambda *a: {"L_k": _log_sum_exp(_iw_log_w(*a))}),
    ("no max shift: the weights exp(log w) underflow to 0 (log 0 = -inf) or overflow",
     lambda *a: {"L_k": np.log(np.mean(np.exp(_iw_log_w(*a)), axis=1))}),
    ("a sign: P(x, z) q(z|x) for P(x, z) / q(z|x) (+ log q for - log q)",
     lambda *a: {"L_k": _lme(_iw_log_w(*a, log_q_sign=1.0))}),
    ("a standard deviation used as a variance in log q: N(z; mu, exp(v/2)) for N(z; mu, exp(v))",
     lambda *a: {"L_k": _lme(_iw_log_w(*a, q_logvar_scale=0.5))}),
    ("log P(z) left out: w = P(x|z) / q(z|x) for P(x|z) P(z) / q(z|x)",
     lambda *a: {"L_k": _lme(_iw_log_w(*a, prior=False))}),
]


def check_importance_weighted_log_px(iw_fn, verbose=True):
    """Grade the importance-weighted bound L_k (Burda et al. 2015) from k samples.

    Lecture: "Beyond the notes" and "Problem in VAE" (the gap of L_b):

        iw_fn(log_px_z, z, mu, logvar) -> L_k = log (1/k) sum_i w_i,
        log w_i = log P(x|z_i) + log N(z_i; 0, I) - log N(z_i; mu, diag(exp(logvar)))

    where ``log_px_z[b, i] = log P(x_b|z_bi)`` comes from the decoder and the
    z_bi were drawn from q(z|x_b) = N(mu_b, diag(exp(logvar_b))). Answer key:
    ``distributions.gaussian_log_likelihood``, ``standard_normal_log_density``
    and ``log_mean_exp``. Behaviour: with q the exact posterior of a
    linear-Gaussian model every weight is P(x), so L_k = log P(x) for every
    k; with q the prior, the mean of L_k over 300 draws rises with k
    (L_1 <= L_5 <= L_50) and stays below log P(x).

    Mistakes it names: the mean of log w (L_1); the log-sum-exp without the
    1/k; no max shift (underflow); + log q for - log q; a standard deviation
    used as a variance in log q; log P(z) left out; a wrong broadcast or axis.

    Shapes: log_px_z (B, k), z (B, k, Z), mu, logvar (B, Z) -> (B,).
    """
    def body(log):
        rng = np.random.default_rng(11)
        B, k, Z = 3, 5, 2

        def state(B, logvar=None, log_px_z=None):
            mu = rng.normal(size=(B, Z))
            logvar = rng.normal(size=(B, Z)) if logvar is None else logvar
            z = mu[:, None] + np.exp(logvar / 2)[:, None] * rng.normal(size=(B, k, Z))
            log_px_z = -3 * rng.uniform(size=(B, k)) if log_px_z is None else log_px_z
            return log_px_z, z, mu, logvar
        edge = state(4, np.array([[20.0, -20.0], [0.0, 0.0], [-20.0, 20.0], [1.0, -1.0]]),
                     np.vstack([-3000 - rng.uniform(size=(1, k)), np.zeros((1, k)),
                                -rng.uniform(size=(2, k))]))
        hints = {"L_k": {(k,): "a wrong axis: averaged over the batch, not the k samples",
                         (B, k): "log w returned: the log-mean-exp over the samples is missing",
                         (): "reduced over every axis: L_k is one number per example"}}
        _check_outputs(log, iw_fn, "iw_fn", _iw_reference, _IW_MISTAKES,
                       (state(B), state(B), edge), hints,
                       "log mean_i exp(log P(x|z_i) + log P(z_i) - log q(z_i|x))")

        log.step = "behaviour (exact posterior, and L_k rising with k)"
        noise = 0.1  # P(x|z) = N(x; z, noise I), P(z) = N(0, I): P(z|x) = N(x / (1 + noise), ...)
        x = np.array([[1.5, -1.0], [0.0, 0.5], [-2.0, 2.0]])  # (3, Z)
        post_mu, post_logvar = x / (1 + noise), np.full(x.shape, np.log(noise / (1 + noise)))
        log_px, _ = dist.gaussian_log_likelihood(x, np.zeros_like(x),
                                                 np.full(x.shape, np.log(1 + noise)))

        def bound(x, mu, logvar, k):  # the student's L_k for every row of x
            n = len(x)
            z = mu[:, None] + np.exp(logvar / 2)[:, None] * rng.normal(size=(n, k, Z))
            log_px_z, _ = dist.gaussian_log_likelihood(
                np.repeat(x, k, axis=0), z.reshape(n * k, Z), np.full((n * k, Z), np.log(noise)))
            return _student_outputs(iw_fn, "iw_fn", (log_px_z.reshape(n, k), z, mu, logvar),
                                    {"L_k": (n,)})["L_k"]
        exact = bound(x, post_mu, post_logvar, 4)
        xs = np.repeat(x[:1], 300, axis=0)
        prior = [bound(xs, np.zeros_like(xs), np.zeros_like(xs), kk).mean() for kk in (1, 5, 50)]
        ok = (np.all(np.abs(exact - log_px) <= 1e-9 * np.abs(log_px))
              and prior[0] < prior[1] < prior[2] < log_px[0])
        _behaviour(log, ok,
                   [f"q the exact posterior: your L_4 {_first(exact)} vs log P(x) {_first(log_px)}",
                    f"q the prior: mean L_1, L_5, L_50 {_first(prior)} (should rise, below "
                    f"log P(x) = {log_px[0]:.4f})"],
                   "your bound is not log mean_i w_i: with the exact posterior every w_i = P(x)")
    return _run("importance_weighted_log_px", body, verbose)


