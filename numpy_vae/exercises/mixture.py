"""The check for notebook 07: one EM step for a Gaussian mixture.

Lecture: "VAE and GMM"; Bishop (2006), section 9.2.2. The library has no
mixture model, so the reference is written here (``_em_reference``); the
responsibilities are the library's normalised weights of a log-mean-exp.
"""

import numpy as np

from .. import distributions as dist
from .._checks import check_choice
from ._core import _behaviour, _first, _log_sum_exp, _run
from ._steps import _check_outputs, _student_outputs


def _gmm_log_joint(x, weights, means, covs):
    """``log pi_k + log N(x_n; mu_k, Sigma_k)``. Shapes: x (N, D) -> (N, K)."""
    diff = x[:, None, :] - means[None]  # (N, K, D)
    solved = np.linalg.solve(covs[None], diff[..., None])[..., 0]  # Sigma_k^-1 (x_n - mu_k)
    _, logdet = np.linalg.slogdet(covs)  # (K,)
    maha = np.sum(diff * solved, axis=2)  # (N, K)
    return np.log(weights) - 0.5 * (x.shape[1] * dist.LOG_2PI + logdet + maha)


def _gmm_mean_log_likelihood(x, weights, means, covs):
    return float(np.mean(_log_sum_exp(_gmm_log_joint(x, weights, means, covs))))


def _responsibilities(log_joint):
    """E-step: ``gamma_nk = pi_k N(x_n; mu_k, Sigma_k) / sum_j pi_j N(x_n; mu_j, Sigma_j)``.

    These are the normalised weights of a log-mean-exp over the components.
    Shapes: log_joint (N, K) -> (N, K).
    """
    _, gamma = dist.log_mean_exp(log_joint)
    return gamma


def _m_step(x, gamma, centre=None):
    """M-step (Bishop 2006, section 9.2.2); covariances about ``centre`` (the new means)."""
    Nk = gamma.sum(axis=0)  # (K,)
    means = gamma.T @ x / Nk[:, None]  # (K, D)
    diff = x[:, None, :] - (means if centre is None else centre)[None]  # (N, K, D)
    covs = np.einsum("nk,nki,nkj->kij", gamma, diff, diff) / Nk[:, None, None]  # (K, D, D)
    return {"weights": Nk / len(x), "means": means, "covs": covs}


def _em_reference(x, weights, means, covs):
    return _m_step(x, _responsibilities(_gmm_log_joint(x, weights, means, covs)))


def _em_gamma(x, w, m, c):
    return _responsibilities(_gmm_log_joint(x, w, m, c))


_EM_MISTAKES = [
    ("the responsibilities not normalised over the components: pi_k N(x_n; mu_k, Sigma_k) "
     "used as gamma_nk", lambda x, w, m, c: _m_step(x, np.exp(_gmm_log_joint(x, w, m, c)))),
    ("a wrong axis: the responsibilities normalised over the data points, not the components",
     lambda x, w, m, c: _m_step(x, _responsibilities(_gmm_log_joint(x, w, m, c).T).T)),
    ("the responsibilities without the log-sum-exp shift: 0 / 0 = NaN for a point far from "
     "every component",
     lambda x, w, m, c: _m_step(x, np.exp(_gmm_log_joint(x, w, m, c))
                                / np.exp(_gmm_log_joint(x, w, m, c)).sum(axis=1, keepdims=True))),
    ("the mixing weights not divided by N",
     lambda x, w, m, c: {"weights": _em_gamma(x, w, m, c).sum(axis=0)}),
    ("the M-step's sums not divided by N_k",
     lambda x, w, m, c: {"means": _em_gamma(x, w, m, c).T @ x,
                         "covs": _em_reference(x, w, m, c)["covs"]
                         * _em_gamma(x, w, m, c).sum(axis=0)[:, None, None]}),
    ("the covariances about the old means, not the new ones",
     lambda x, w, m, c: _m_step(x, _em_gamma(x, w, m, c), centre=m)),
    ("the covariances divided by N, not N_k",
     lambda x, w, m, c: {"covs": _em_reference(x, w, m, c)["covs"]
                         * _em_gamma(x, w, m, c).sum(axis=0)[:, None, None] / len(x)}),
]


def check_em_step(em_step_fn, dim=2, verbose=True):
    """Grade one EM step for a Gaussian mixture in ``dim`` = 1 or 2 dimensions.

    Lecture: "VAE and GMM"; Bishop (2006), section 9.2.2:

        em_step_fn(x, weights, means, covs) -> (weights, means, covs)

    E-step: ``gamma_nk = pi_k N(x_n; mu_k, Sigma_k) / sum_j pi_j N(x_n; mu_j, Sigma_j)``
    (computed in logs, so a point far from every component gives no 0 / 0);
    M-step: ``N_k = sum_n gamma_nk``, ``pi_k = N_k / N``,
    ``mu_k = sum_n gamma_nk x_n / N_k``,
    ``Sigma_k = sum_n gamma_nk (x_n - mu_k)(x_n - mu_k)^T / N_k`` about the new mu_k.
    The reference is written here (``_em_reference``): the library has no
    mixture model. Behaviour: 25 steps from a start never lower the
    log-likelihood, the weights sum to 1 and every covariance stays
    symmetric positive definite.

    Mistakes it names: the responsibilities not normalised, normalised over
    the wrong axis, or without the log-sum-exp shift; the weights not divided
    by N; the M-step's sums not divided by N_k; the covariances about the old
    means, or divided by N.

    Shapes: x (N, D), weights (K,), means (K, D), covs (K, D, D) -> the same
    shapes, D = dim (for dim = 1 the covariances are (K, 1, 1)).
    """
    check_choice("dim", dim, (1, 2))

    def body(log):
        rng = np.random.default_rng(9)
        K, D = 3, dim

        def state(N):
            a = rng.normal(size=(K, D, D))
            return (2 * rng.normal(size=(N, D)), rng.dirichlet(np.ones(K)),
                    2 * rng.normal(size=(K, D)), a @ a.transpose(0, 2, 1) + 0.5 * np.eye(D))
        x, w, m, c = state(12)
        far = np.vstack([x, np.full((1, D), 80.0)])  # a point with log N ~ -3000 for every k
        sets = (state(10), state(12), (far, w, m, c))
        _check_outputs(log, em_step_fn, "em_step_fn", _em_reference, _EM_MISTAKES, sets, {},
                       "the E-step and M-step of Bishop (2006), section 9.2.2")

        log.step = "behaviour (EM never lowers the likelihood)"
        centres = np.array([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]])[:, :D]
        x = np.vstack([c + rng.normal(size=(50, D)) for c in centres])  # (150, D)
        shapes = {"weights": (K,), "means": (K, D), "covs": (K, D, D)}
        params = (np.full(K, 1 / K), x[rng.choice(len(x), K, replace=False)],
                  np.repeat(np.atleast_2d(np.cov(x.T))[None], K, axis=0))
        lls = [_gmm_mean_log_likelihood(x, *params)]
        for _ in range(25):
            out = _student_outputs(em_step_fn, "em_step_fn", (x, *params), shapes)
            params = (out["weights"], out["means"], out["covs"])
            lls.append(_gmm_mean_log_likelihood(x, *params))
        w, _, covs = params
        ok = (np.all(np.isfinite(lls)) and np.all(np.diff(lls) >= -1e-9 * abs(lls[0]))
              and abs(w.sum() - 1) <= 1e-9 and np.allclose(covs, covs.transpose(0, 2, 1))
              and np.all(np.linalg.eigvalsh(covs) > 0))
        _behaviour(log, ok,
                   [f"mean log-likelihood over 25 of your steps: {_first(lls, 26)}",
                    f"weights sum to {w.sum():.12g}"],
                   "your steps lower the likelihood (or leave the weights unnormalised, or a "
                   "covariance not positive definite): EM never does")
    return _run("em_step", body, verbose)


