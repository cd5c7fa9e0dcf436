"""The Variational Autoencoder: encoder, reparameterization, decoder, lower bound.

Lecture sections "Lower bound", "VAE lower bound of log P_theta(x)" and "ELBO".
The model maximises, per example,

    L_b(x) = E_{z ~ q(z|x)}[log P(x|z)] - KL(q(z|x) || P(z))

with q(z|x) = N(mu(x), diag(exp(logvar(x)))) from the encoder, P(z) = N(0, I)
and P(x|z) from the decoder. The expectation is estimated with one
reparameterized sample z = mu + exp(logvar / 2) * eps per example.

Reduction, stated once: log-densities and KL are summed over pixels and
latents (see ``distributions``); the **loss is the batch mean** of
``-(reconstruction - beta * KL)``, in nats per example.
"""

import numpy as np

from . import distributions as dist
from ._checks import (
    check_array,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_rng,
    check_unit_interval,
)
from .layers import ACTIVATIONS, INITS, MLP, sigmoid, sigmoid_backward, sigmoid_forward
from .optim import tile_views

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-fixed")
DECODER_MEANS = ("identity", "sigmoid")


class VAE:
    """A VAE with MLP encoder and decoder, trained by ``loss_and_grads`` and an optimizer.

    Parameters
    ----------
    data_dim : int
        D, the number of pixels.
    hidden_dims : tuple of int
        Hidden widths of the encoder; the decoder mirrors them.
    latent_dim : int
        Z, the dimension of the latent code.
    likelihood : {"bernoulli", "gaussian", "gaussian-fixed"}
        P(x|z): Bernoulli from logits (x in [0, 1]); Gaussian with learned mean
        and log-variance (the lecture's N(mu(z), sigma(z))), the variance
        bounded below by ``min_variance`` (see ``distributions.bounded_logvar``);
        or Gaussian with learned mean and fixed ``fixed_variance``.
    activation : str
        One of ``layers.ACTIVATIONS`` (except "identity"), used in hidden layers.
    dtype : float32 or float64
        The dtype of every parameter; inputs must have it too.
    rng : np.random.Generator
        Initialises the weights (fresh entropy when None).
    init : {"he-glorot", "uniform"}
        The weight initialisation (see ``layers.init_dense``).
    decoder_mean : {"identity", "sigmoid"}
        For the Gaussian likelihoods: the decoder's mean is its output as is,
        or squashed into (0, 1) by a sigmoid, for data in [0, 1] (Kingma &
        Welling 2013 did so for Frey Face). The Bernoulli decoder's logits
        already pass through a sigmoid, so it takes "identity" only.

    Attributes
    ----------
    params : dict of str -> ndarray
        The only parameter storage; optimizers update its arrays in place.
        Each array is a view into ``flat_params``.
    flat_params : ndarray, shape (num_params,)
        One contiguous buffer behind every array of ``params``, in the order
        of ``params``, so that an optimizer can update all parameters with a
        few whole-array operations (see ``optim.flat_buffer``). Change
        parameters in place (``params[name][...] = new``): assigning a new
        array to a key (``params[name] = new``) cuts that key off the buffer;
        the model and the optimizers still work, on the slower per-key path.
    last_terms : dict
        Batch means of "reconstruction" and "kl" from the last ``loss_and_grads``.
    """

    def __init__(self, data_dim, hidden_dims=(400,), latent_dim=20, likelihood="bernoulli",
                 activation="relu", dtype=np.float64, rng=None, min_variance=1e-4,
                 fixed_variance=1.0, init="he-glorot", decoder_mean="identity"):
        self.data_dim = check_positive_int("data_dim", data_dim)
        if isinstance(hidden_dims, (int, np.integer)) or not hasattr(hidden_dims, "__iter__"):
            raise TypeError(f"hidden_dims must be a sequence of positive ints, got {hidden_dims!r}")
        self.hidden_dims = tuple(
            check_positive_int(f"hidden_dims[{i}]", h) for i, h in enumerate(hidden_dims))
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.activation = check_choice(
            "activation", activation, [a for a in ACTIVATIONS if a != "identity"])
        try:
            self.dtype = np.dtype(dtype) if dtype is not None else None
        except Exception:  # np.dtype raises TypeError, ValueError or even SyntaxError
            self.dtype = None
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
        self.min_variance = check_positive_float("min_variance", min_variance)
        self.fixed_variance = check_positive_float("fixed_variance", fixed_variance)
        self.init = check_choice("init", init, INITS)
        self.decoder_mean = check_choice("decoder_mean", decoder_mean, DECODER_MEANS)
        if self.likelihood == "bernoulli" and self.decoder_mean != "identity":
            raise ValueError(f"decoder_mean must be 'identity' for the Bernoulli likelihood "
                             f"(its logits already pass through a sigmoid), got {decoder_mean!r}")
        rng = check_rng("rng", np.random.default_rng() if rng is None else rng)

        D, Z, H = self.data_dim, self.latent_dim, self.hidden_dims
        out_dim = 2 * D if self.likelihood == "gaussian" else D
        self.params = {}
        # The encoder's head outputs mu and logvar side by side: one matrix product.
        self.encoder = MLP((D, *H, 2 * Z), self.activation, self.params, "encoder.")
        self.decoder = MLP((Z, *reversed(H), out_dim), self.activation, self.params, "decoder.")
        initial = {**self.encoder.init_params(rng, self.dtype, self.init),
                   **self.decoder.init_params(rng, self.dtype, self.init)}
        self.flat_params = np.concatenate([p.ravel() for p in initial.values()])
        self.params.update(tile_views(self.flat_params, initial))
        self.last_terms = {}

    @property
    def config(self):
        """The constructor's arguments (without ``rng``), JSON-serialisable."""
        return {
            "data_dim": self.data_dim, "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim, "likelihood": self.likelihood,
            "activation": self.activation, "dtype": self.dtype.name,
            "min_variance": self.min_variance, "fixed_variance": self.fixed_variance,
            "init": self.init, "decoder_mean": self.decoder_mean,
        }

    @property
    def num_params(self):
        return sum(p.size for p in self.params.values())

    # -- checks --------------------------------------------------------------

    def _check_x(self, x):
        check_array("x", x, shape=(None, self.data_dim), dtype=self.dtype)
        if self.likelihood == "bernoulli":
            check_unit_interval("x", x)
        return x

    def _check_z(self, name, z, n=None):
        return check_array(name, z, shape=(n, self.latent_dim), dtype=self.dtype)

    def _noise(self, eps, rng, n, name="eps"):
        """``eps`` if given (checked), else a fresh N(0, I) draw of shape (n, Z) from ``rng``."""
        if eps is not None:
            return self._check_z(name, eps, n)
        if rng is None:
            raise ValueError(f"give either {name} (an (n, Z) array) or rng")
        return check_rng("rng", rng).standard_normal((n, self.latent_dim), dtype=self.dtype)

    # -- the two networks ----------------------------------------------------

    def encode(self, x):
        """q(z|x): the posterior's mean and log-variance. Shapes: x (B, D) -> (B, Z), (B, Z)."""
        self._check_x(x)
        return self._encode(x)

    def _encode(self, x):
        h = self.encoder.forward(x, check=False)  # (B, 2Z); x was checked by the caller
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def decode(self, z):
        """The parameters of P(x|z).

        Returns logits (B, D) for "bernoulli", ``(mean, logvar)`` each (B, D)
        for "gaussian" (logvar already bounded), and the mean (B, D) for
        "gaussian-fixed"; a Gaussian mean has passed ``decoder_mean``. Shapes: z (B, Z).
        """
        self._check_z("z", z)
        out, _ = self._decode(z)
        return out

    def _decode(self, z):
        """Decoder forward; returns the likelihood's parameters and the head's cache.

        The head turns the decoder's last layer into those parameters: for the
        Gaussians, the optional sigmoid on the mean and the floored log-variance;
        its cache is ``(mean_cache, logvar_cache)`` (None where nothing is done).
        ``z`` is checked by the public callers (``decode``, ``sample``) or computed
        from a checked ``x``; if training diverges, the loss comes out NaN.
        """
        h = self.decoder.forward(z, check=False)  # (B, D) or (B, 2D); z was checked or computed
        if self.likelihood == "bernoulli":
            return h, None
        mean = h[:, :self.data_dim]  # (B, D)
        mean_cache = None
        if self.decoder_mean == "sigmoid":
            mean, mean_cache = sigmoid_forward(mean)
        if self.likelihood == "gaussian-fixed":
            return mean, (mean_cache, None)
        logvar, logvar_cache = dist.bounded_logvar(h[:, self.data_dim:], self.min_variance)
        return (mean, logvar), (mean_cache, logvar_cache)

    def _log_px(self, x, out):
        """log P(x|z) per example and its cache, for decoder output ``out``."""
        if self.likelihood == "bernoulli":
            return dist.bernoulli_log_likelihood(x, out)
        if self.likelihood == "gaussian":
            return dist.gaussian_log_likelihood(x, *out)
        return dist.gaussian_fixed_log_likelihood(x, out, self.fixed_variance)

    def _log_px_backward(self, dlogp, cache, head_cache):
        """Gradient of the decoder's output (B, D) or (B, 2D) from d log P(x|z)."""
        if self.likelihood == "bernoulli":
            return dist.bernoulli_log_likelihood_backward(dlogp, cache)
        mean_cache, logvar_cache = head_cache
        if self.likelihood == "gaussian-fixed":
            dmean = dist.gaussian_fixed_log_likelihood_backward(dlogp, cache)
        else:
            dmean, dlogvar = dist.gaussian_log_likelihood_backward(dlogp, cache)
        if mean_cache is not None:  # through the sigmoid on the mean
            dmean = sigmoid_backward(dmean, mean_cache)
        if self.likelihood == "gaussian-fixed":
            return dmean  # (B, D)
        draw = dist.bounded_logvar_backward(dlogvar, logvar_cache)
        return np.concatenate([dmean, draw], axis=1)  # (B, 2D)

    # -- the lower bound -------------------------------------------------------

    def _terms(self, x, eps):
        """Forward pass of the bound: (log P(x|z), KL) per example, with every cache."""
        mu, logvar = self._encode(x)  # (B, Z), (B, Z)
        z, rep_cache = dist.reparameterize(mu, logvar, eps)  # (B, Z)
        out, head_cache = self._decode(z)  # (B, D) or 2 x (B, D)
        rec, rec_cache = self._log_px(x, out)  # (B,)
        kl, kl_cache = dist.kl_standard_normal(mu, logvar)  # (B,)
        return rec, kl, (rep_cache, head_cache, rec_cache, kl_cache)

    def elbo_terms(self, x, eps=None, rng=None):
        """The two terms of the bound per example: ``(log P(x|z), KL(q(z|x) || P(z)))``.

        One reparameterized sample z per example. Shapes: x (B, D), eps (B, Z) -> (B,), (B,).
        """
        self._check_x(x)
        eps = self._noise(eps, rng, x.shape[0])
        rec, kl, _ = self._terms(x, eps)
        return rec, kl

    def elbo(self, x, eps=None, rng=None):
        """One-sample estimate of the lower bound per example: ``log P(x|z) - KL``.

        Shapes: x (B, D), eps (B, Z) -> (B,).
        """
        rec, kl = self.elbo_terms(x, eps, rng)
        return rec - kl

    def loss_and_grads(self, x, eps=None, beta=1.0, rng=None):
        """The training loss and its gradient for every parameter.

        ``loss = mean_B -(log P(x|z) - beta * KL(q(z|x) || P(z)))`` with
        ``z = mu + exp(logvar / 2) * eps``; ``beta = 1`` gives minus the ELBO.
        Sets ``self.last_terms`` to the batch means of both terms. The gradients
        are views into one new flat array laid out like ``flat_params``, which
        lets an optimizer update everything at once.

        Shapes: x (B, D), eps (B, Z) -> loss float, grads {name: shape of params[name]}.
        """
        self._check_x(x)
        eps = self._noise(eps, rng, x.shape[0])
        beta = check_positive_float("beta", beta, allow_zero=True)
        B = x.shape[0]

        rec, kl, (rep_cache, head_cache, rec_cache, kl_cache) = self._terms(x, eps)
        loss = float(np.mean(beta * kl - rec))
        self.last_terms = {"reconstruction": float(rec.mean()), "kl": float(kl.mean())}

        # Backward, in reverse order: d loss / d rec_i = -1/B, d loss / d kl_i = beta/B.
        drec = np.full(B, -1.0 / B, dtype=self.dtype)  # (B,)
        dout = self._log_px_backward(drec, rec_cache, head_cache)  # (B, D) or (B, 2D)
        flat_grads = np.empty_like(self.flat_params)  # written by the two backward passes
        grads = tile_views(flat_grads, self.params)
        dz = self.decoder.backward(dout, out=grads)  # (B, Z)
        dmu, dlogvar = dist.reparameterize_backward(dz, rep_cache)  # (B, Z) each
        dkl = np.full(B, beta / B, dtype=self.dtype)  # (B,)
        dmu_kl, dlogvar_kl = dist.kl_standard_normal_backward(dkl, kl_cache)
        dh = np.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1)  # (B, 2Z)
        self.encoder.backward(dh, need_dx=False, out=grads)  # no gradient for the data x
        return loss, grads

    # -- generation and evaluation ---------------------------------------------

    def sample(self, n, rng, z=None):
        """Decode ``n`` draws ``z ~ P(z) = N(0, I)`` (or the given ``z``) to the decoder mean.

        The mean is the pixel probabilities for "bernoulli" and the Gaussian
        mean otherwise. Shapes: -> (n, D).
        """
        n = check_positive_int("n", n)
        z = self._noise(z, rng, n, name="z")
        out, _ = self._decode(z)
        if self.likelihood == "bernoulli":
            return sigmoid(out)
        return out[0] if self.likelihood == "gaussian" else out

    def log_likelihood(self, x, num_samples=5000, rng=None, max_rows=8192):
        """Importance-weighted estimate of log P(x) per example (Burda et al., 2015).

        ``log (1/k) sum_{i=1..k} P(x, z_i) / q(z_i|x)`` with ``z_i ~ q(z|x)``: a
        lower bound on log P(x) that is the ELBO for k = 1 and tightens as k
        grows (lecture: the gap between L_b and log P(x)). At most ``max_rows``
        (example, sample) pairs go through the decoder at once, so memory stays
        bounded for any k.

        Shapes: x (B, D) -> (B,).
        """
        self._check_x(x)
        k = check_positive_int("num_samples", num_samples)
        rng = check_rng("rng", rng)
        max_rows = check_positive_int("max_rows", max_rows)
        mu, logvar = self._encode(x)  # (B, Z)
        B, Z = mu.shape
        out = np.empty(B, dtype=np.float64)
        block = max(1, max_rows // k)  # examples per block; a block holds block * k samples
        for i in range(0, B, block):
            b = min(block, B - i)
            log_w = np.empty((b, k), dtype=np.float64)  # log P(x, z_s) - log q(z_s|x)
            chunk = max(1, max_rows // b)  # samples per example per decoder call
            for s in range(0, k, chunk):
                n = min(chunk, k - s)
                rows = np.repeat(np.arange(i, i + b), n)  # example of each row, (b n,)
                mu_r, logvar_r = mu[rows], logvar[rows]  # (b n, Z)
                eps = rng.standard_normal((b * n, Z), dtype=self.dtype)
                z, _ = dist.reparameterize(mu_r, logvar_r, eps)  # (b n, Z)
                log_px, _ = self._log_px(x[rows], self._decode(z)[0])  # (b n,)
                log_qz, _ = dist.gaussian_log_likelihood(z, mu_r, logvar_r)  # (b n,)
                log_pz = dist.standard_normal_log_density(z)  # (b n,)
                log_w[:, s:s + n] = (log_px + log_pz - log_qz).reshape(b, n)
            top = log_w.max(axis=1, keepdims=True)  # log-mean-exp, shifted for stability
            out[i:i + b] = top[:, 0] + np.log(np.mean(np.exp(log_w - top), axis=1))
        return out
