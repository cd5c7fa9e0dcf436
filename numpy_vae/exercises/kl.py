"""The check for notebook 04: KL(q(z|x) || P(z)) in closed form, and its gradient.

Lecture: "ELBO / Minimize the first term KL[q(z|x) || P(z)]".
"""

import numpy as np

from .. import distributions as dist
from ._core import N_SIGMA, _behaviour, _first, _run
from ._steps import _check_pair, _forward_only, _library_pair, _scaled

_kl_reference = _library_pair(dist.kl_standard_normal, dist.kl_standard_normal_backward,
                              ("kl", "dmu", "dlogvar"))

_KL_MISTAKES = [
    ("the missing 1/2: sum_j (exp(v) - (1 + v) + mu^2) is twice the KL (a beta = 2 VAE)",
     lambda mu, v, d: _scaled(_kl_reference(mu, v, d), 2.0)),
    ("a sign: -KL (the ELBO's term) returned as the KL, which is >= 0",
     lambda mu, v, d: _scaled(_kl_reference(mu, v, d), -1.0)),
    ("a sign: +(1 + v) for -(1 + v)",
     lambda mu, v, d: {"kl": 0.5 * (np.exp(v) + 1 + v + mu * mu).sum(axis=1),
                       "dlogvar": 0.5 * d[:, None] * (np.exp(v) + 1)}),
    ("a standard deviation used as a variance: exp(v/2) for exp(v)",
     lambda mu, v, d: {"kl": 0.5 * (np.exp(v / 2) - 1 - v + mu * mu).sum(axis=1),
                       "dlogvar": 0.5 * d[:, None] * (0.5 * np.exp(v / 2) - 1)}),
    ("exp(v) for exp(v) - 1 in dKL/dlogvar",
     lambda mu, v, d: {"dlogvar": 0.5 * d[:, None] * np.exp(v)}),
    ("the mean over the latents for the sum",
     lambda mu, v, d: _scaled(_kl_reference(mu, v, d), 1.0 / mu.shape[1])),
    ("the 1/2 left out of dKL/dmu: 2 mu for mu",
     lambda mu, v, d: {"dmu": 2 * d[:, None] * mu}),
]


def _mc_kl(z, mu, logvar):
    """Mean and standard error over draws of ``log q(z) - log P(z)``.

    Shapes: z (n, B, Z), mu, logvar (B, Z) -> (B,), (B,).
    """
    n, B, Z = z.shape
    flat = z.reshape(n * B, Z)  # row i B + b is draw i for example b
    log_q, _ = dist.gaussian_log_likelihood(flat, np.tile(mu, (n, 1)), np.tile(logvar, (n, 1)))
    log_ratio = (log_q - dist.standard_normal_log_density(flat)).reshape(n, B)  # (n, B)
    return log_ratio.mean(axis=0), log_ratio.std(axis=0) / np.sqrt(n)


def check_kl(kl_fn, kl_backward_fn, verbose=True):
    """Grade ``KL(N(mu, diag(exp(logvar))) || N(0, I))`` and its gradient.

    Lecture: "ELBO / Minimize the first term KL[q(z|x) || P(z)]". With v = logvar,

        kl_fn(mu, logvar) -> (kl, cache),    kl = 1/2 sum_j (exp(v_j) - (1 + v_j) + mu_j^2)
        kl_backward_fn(dkl, cache) -> (dmu, dlogvar),
                                              dmu = dkl mu,  dlogvar = dkl (exp(v) - 1) / 2

    (dkl broadcast over the latents). Answer key: ``distributions.kl_standard_normal``
    and its backward. Behaviour: the Monte-Carlo KL, the mean of
    ``log q(z) - log P(z)`` over 20000 draws ``z ~ q``, against the student's KL.

    Mistakes it names: the missing 1/2; a sign (of the whole KL, or of 1 + v);
    a standard deviation used as a variance (exp(v/2) for exp(v)); exp(v) for
    exp(v) - 1; the mean over the latents for the sum; 2 mu for mu; a wrong
    axis (summed over the batch); the upstream gradient ignored.

    Shapes: mu, logvar (B, Z) -> kl (B,); dkl (B,) -> dmu, dlogvar (B, Z).
    """
    def body(log):
        rng = np.random.default_rng(0)
        B, Z = 4, 3
        small = (rng.normal(size=(B, Z)), rng.normal(size=(B, Z)))
        moderate = (rng.normal(size=(5, Z)), 0.7 * rng.normal(size=(5, Z)))
        zero, r = np.zeros((1, Z)), rng.normal(size=(4, Z))
        edge = (np.vstack([r[:2], zero, r[2:], [[3.0, -1.0, 0.5]], [[30.0, -30.0, 0.0]]]),
                np.vstack([r[1:3], zero, np.full((1, Z), 20.0), np.full((1, Z), -20.0),
                           [[20.0, -20.0, 0.0]], zero]))
        hints = {"kl": {(B, Z): "not summed over the latents: the KL is one number per example",
                        (): "summed over the batch too: the KL is one number per example",
                        (1,): "summed over the batch too: the KL is one number per example",
                        (B, 1): "keepdims left on: the KL has shape (B,)",
                        (Z,): "a wrong axis: summed over the batch (axis 0), not the latents"}}
        _check_pair(log, kl_fn, kl_backward_fn, ("kl_fn", "kl_backward_fn"), ("mu", "logvar"),
                    _kl_reference, {"dmu": 0, "dlogvar": 1}, _KL_MISTAKES,
                    (small, moderate, edge), hints,
                    "1/2 sum_j (exp(v_j) - (1 + v_j) + mu_j^2), dmu = mu, "
                    "dlogvar = (exp(v) - 1) / 2", rng)

        log.step = "behaviour (Monte-Carlo KL of draws from q)"
        mu = np.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]])
        logvar = np.array([[0.3, -1.2, 1.0], [-0.5, 0.8, 0.0]])
        kl = _forward_only(kl_fn, "kl_fn", (mu, logvar), "kl", (2,))
        z = mu + dist.std_from_logvar(logvar) * rng.standard_normal((20000, *mu.shape))
        mc, se = _mc_kl(z, mu, logvar)
        _behaviour(log, np.all(np.abs(kl - mc) <= N_SIGMA * se),
                   [f"Monte-Carlo E_q[log q(z) - log P(z)]: {_first(mc)} +- {_first(se)}",
                    f"your KL: {_first(kl)}"],
                   "your KL is not E_q[log q(z) - log P(z)]: recheck the closed form")
    return _run("kl", body, verbose)


