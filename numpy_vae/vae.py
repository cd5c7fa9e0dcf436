"""The Variational Autoencoder: encoder, reparameterization, decoder, lower bound.

Lecture sections "Lower bound", "VAE lower bound of log P_theta(x)" and "ELBO".
The model maximises, per example,

    L_b(x) = E_{z ~ q(z|x)}[log P(x|z)] - KL(q(z|x) || P(z))

with q(z|x) = N(mu(x), diag(exp(logvar(x)))) from the encoder, P(z) = N(0, I)
and P(x|z) from the decoder. The expectation is estimated with one
reparameterized sample z = mu + exp(logvar / 2) * eps per example
(``loss_and_grads``), or the tighter importance-weighted bound L_k is trained
with k samples (``iwae_loss_and_grads``). With ``num_labels`` > 0 both networks
also read a label y (the conditional VAE). Both from "Beyond the notes".

Reduction, stated once: log-densities and KL are summed over pixels and
latents (see ``distributions``); the **loss is the batch mean** of
``-(reconstruction - beta * KL)`` (or of ``-L_k``), in nats per example.
"""

import dataclasses

import numpy as np

from . import distributions as dist
from ._checks import (
    check_array,
    check_choice,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_rng,
    check_unit_interval,
)
from .errors import InvalidTypeError, InvalidValueError
from .layers import ACTIVATIONS, INITS, MLP

# Each likelihood's head (see distributions), built from the model's settings:
# the one place that knows the likelihoods by name.
HEADS = {
    "bernoulli": lambda c: dist.BernoulliHead(),
    "gaussian": lambda c: dist.GaussianHead(c.min_variance, c.decoder_mean == "sigmoid"),
    "gaussian-fixed": lambda c: dist.GaussianFixedHead(c.fixed_variance,
                                                       c.decoder_mean == "sigmoid"),
}
LIKELIHOODS = tuple(HEADS)
HIDDEN_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a != "identity")
DECODER_MEANS = ("identity", "sigmoid")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The settings of a VAE, validated once here (``VAE`` and ``TrainConfig`` reuse it).

    See ``VAE`` for what each field means. ``hidden_dims`` becomes a tuple of
    ints and ``dtype`` the name "float32" or "float64".
    """

    data_dim: int
    hidden_dims: tuple = (400,)
    latent_dim: int = 20
    likelihood: str = "bernoulli"
    activation: str = "relu"
    dtype: str = "float64"
    min_variance: float = 1e-4
    fixed_variance: float = 1.0
    init: str = "he-glorot"
    decoder_mean: str = "identity"
    num_labels: int = 0

    def __post_init__(self):
        hidden = self.hidden_dims
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise InvalidTypeError(f"hidden_dims must be a sequence of positive ints, "
                                   f"got {hidden!r}")
        hidden = tuple(check_positive_int(f"hidden_dims[{i}]", h) for i, h in enumerate(hidden))
        try:
            dtype = np.dtype(self.dtype).name
        except Exception:  # np.dtype raises TypeError, ValueError or even SyntaxError
            dtype = None
        if dtype not in DTYPES:
            raise InvalidTypeError(f"dtype must be float32 or float64, got {self.dtype!r}")
        fields = {
            "data_dim": check_positive_int("data_dim", self.data_dim),
            "hidden_dims": hidden,
            "latent_dim": check_positive_int("latent_dim", self.latent_dim),
            "likelihood": check_choice("likelihood", self.likelihood, LIKELIHOODS),
            "activation": check_choice("activation", self.activation, HIDDEN_ACTIVATIONS),
            "dtype": dtype,
            "min_variance": check_positive_float("min_variance", self.min_variance),
            "fixed_variance": check_positive_float("fixed_variance", self.fixed_variance),
            "init": check_choice("init", self.init, INITS),
            "decoder_mean": check_choice("decoder_mean", self.decoder_mean, DECODER_MEANS),
            "num_labels": check_nonnegative_int("num_labels", self.num_labels),
        }
        for name, value in fields.items():  # normalised values (frozen: bypass __setattr__)
            object.__setattr__(self, name, value)
        if self.decoder_mean == "sigmoid" and not self.head().mean_can_be_squashed:
            raise InvalidValueError(
                f"decoder_mean must be 'identity' for the {self.likelihood} likelihood (its "
                f"output already passes through a sigmoid), got {self.decoder_mean!r}")

    def head(self):
        """A new head (``distributions``) for this likelihood and these settings."""
        return HEADS[self.likelihood](self)

    def to_dict(self):
        """JSON-serialisable fields (``hidden_dims`` as a list)."""
        return {**dataclasses.asdict(self), "hidden_dims": list(self.hidden_dims)}


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
        One of ``HIDDEN_ACTIVATIONS``, used in the hidden layers.
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
    num_labels : int
        C. 0: unconditional. C > 0: a conditional VAE (lecture: "Beyond the
        notes"): the encoder q(z|x, y) reads ``[x, onehot(y)]`` and the decoder
        P(x|z, y) reads ``[z, onehot(y)]``; every method then takes the labels,
        an int array ``y`` (B,) in [0, C). No gradient flows to y.

    Attributes
    ----------
    config : ModelConfig
        The settings above, validated.
    params : dict of str -> ndarray
        The only parameter storage, ``encoder.W0``, ``encoder.b0``, ...,
        ``decoder.W0``, ...; optimizers update its arrays in place.
    head : object
        The likelihood's head (``distributions.BernoulliHead``, ...), chosen here.
    """

    def __init__(self, data_dim, hidden_dims=(400,), latent_dim=20, likelihood="bernoulli",
                 activation="relu", dtype=np.float64, rng=None, min_variance=1e-4,
                 fixed_variance=1.0, init="he-glorot", decoder_mean="identity", num_labels=0):
        self.config = c = ModelConfig(data_dim, hidden_dims, latent_dim, likelihood, activation,
                                      dtype, min_variance, fixed_variance, init, decoder_mean,
                                      num_labels)
        rng = check_rng("rng", np.random.default_rng() if rng is None else rng)
        self.data_dim, self.latent_dim, self.num_labels = c.data_dim, c.latent_dim, c.num_labels
        self.dtype = np.dtype(c.dtype)
        self.head = c.head()
        D, Z, H, C = c.data_dim, c.latent_dim, c.hidden_dims, c.num_labels
        self.params = {}
        # The encoder's last layer outputs mu and logvar side by side: one matrix product.
        self.encoder = MLP((D + C, *H, 2 * Z), c.activation, self.params, "encoder.")
        self.decoder = MLP((Z + C, *reversed(H), self.head.outputs_per_pixel * D), c.activation,
                           self.params, "decoder.")
        sizes = [s for net in (self.encoder, self.decoder) for s in zip(net.sizes, net.sizes[1:])]
        need = sum((i + 1) * o for i, o in sizes) * self.dtype.itemsize  # bytes of parameters
        try:
            for net in (self.encoder, self.decoder):
                self.params.update(net.init_params(rng, self.dtype, c.init))
        except MemoryError:
            raise InvalidValueError(
                f"this model needs {need / 2**30:.1f} GiB for its parameters (three times that "
                f"to train, with Adam's moments), more than could be allocated; choose smaller "
                f"hidden_dims or latent_dim") from None

    @classmethod
    def from_config(cls, config, rng=None):
        """A new model with the settings of a ``ModelConfig`` (or a dict of its fields)."""
        fields = config.to_dict() if isinstance(config, ModelConfig) else dict(config)
        return cls(**fields, rng=rng)

    @property
    def num_params(self):
        return sum(p.size for p in self.params.values())

    # -- checks at the boundary ------------------------------------------------

    def _check_x(self, x):
        check_array("x", x, shape=(None, self.data_dim), dtype=self.dtype)
        if self.head.needs_unit_interval:
            check_unit_interval("x", x)

    def _noise(self, eps, rng, lead, name="eps"):
        """``eps`` if given (checked), else a fresh N(0, I) draw, shape (*lead, Z), from ``rng``."""
        shape = (*lead, self.latent_dim)
        if eps is not None:
            return check_array(name, eps, shape=shape, dtype=self.dtype)
        if rng is None:
            raise InvalidValueError(f"give either {name} (an array of shape {shape}) or rng")
        return check_rng("rng", rng).standard_normal(shape, dtype=self.dtype)

    def _check_y(self, y, n):
        """The labels: None for an unconditional model, else an int array (n,) in [0, C)."""
        C = self.num_labels
        if (y is None) != (C == 0):
            raise InvalidValueError(
                "y must be None: this model is unconditional (num_labels=0)" if C == 0 else
                f"y is required: this model is conditional (num_labels={C}); give an int "
                f"array of shape ({n},)")
        if y is None:
            return None
        if type(y) is not np.ndarray or not np.issubdtype(y.dtype, np.integer):
            raise InvalidTypeError(f"y must be a NumPy array of integer labels, got "
                                   f"{getattr(y, 'dtype', type(y).__name__)}")
        if y.shape != (n,):
            raise InvalidValueError(f"y must have shape ({n},), got {y.shape}")
        if y.min() < 0 or y.max() >= C:
            raise InvalidValueError(f"y must hold labels in [0, {C}), got values in "
                                    f"[{y.min()}, {y.max()}]")
        return y

    def _with_labels(self, a, y):
        """A network's input: ``[a, onehot(y)]`` if conditional, ``a`` itself if y is None."""
        if y is None:
            return a
        return np.concatenate([a, np.eye(self.num_labels, dtype=a.dtype)[y]], axis=1)  # (B, . + C)

    # -- the two networks ----------------------------------------------------

    def encode(self, x, y=None):
        """q(z|x) (or q(z|x, y)): the posterior's mean and log-variance.

        Shapes: x (B, D), y (B,) -> (B, Z), (B, Z).
        """
        self._check_x(x)
        y = self._check_y(y, x.shape[0])
        h = self.encoder.forward(self._with_labels(x, y))  # (B, 2Z)
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def decode(self, z, y=None):
        """The parameters of P(x|z) (or P(x|z, y)): logits (B, D) for "bernoulli",
        ``(mean, logvar)`` each (B, D) for "gaussian" (logvar already bounded), the mean
        (B, D) for "gaussian-fixed".

        Shapes: z (B, Z), y (B,).
        """
        check_array("z", z, shape=(None, self.latent_dim), dtype=self.dtype)
        y = self._check_y(y, z.shape[0])
        return self.head.params(self.decoder.forward(self._with_labels(z, y)))

    # -- the lower bound -------------------------------------------------------

    def elbo_terms(self, x, eps=None, rng=None, y=None):
        """The two terms of the bound per example: ``(log P(x|z), KL(q(z|x) || P(z)))``.

        One reparameterized sample z per example. Shapes: x (B, D), eps (B, Z) -> (B,), (B,).
        """
        mu, logvar = self.encode(x, y)  # (B, Z) each
        eps = self._noise(eps, rng, (x.shape[0],))
        z, _ = dist.reparameterize(mu, logvar, eps)  # (B, Z)
        log_px, _ = self.head.log_px(x, self.decoder.forward(self._with_labels(z, y)))  # (B,)
        kl, _ = dist.kl_standard_normal(mu, logvar)  # (B,)
        return log_px, kl

    def elbo(self, x, eps=None, rng=None, y=None):
        """One-sample estimate of the lower bound per example: ``log P(x|z) - KL``.

        Shapes: x (B, D), eps (B, Z) -> (B,).
        """
        log_px, kl = self.elbo_terms(x, eps, rng, y)
        return log_px - kl

    def loss_and_grads(self, x, eps=None, beta=1.0, rng=None, y=None):
        """The training loss, its gradient for every parameter, and the two terms.

        ``loss = mean_B -(log P(x|z) - beta * KL(q(z|x) || P(z)))`` with
        ``z = mu + exp(logvar / 2) * eps``; ``beta = 1`` gives minus the ELBO.
        ``terms`` holds both terms per example: ``{"reconstruction": log P(x|z),
        "kl": KL}``, each (B,).

        Shapes: x (B, D), eps (B, Z) -> loss float, grads {name: shape of params[name]}, terms.
        """
        self._check_x(x)
        y = self._check_y(y, x.shape[0])
        eps = self._noise(eps, rng, (x.shape[0],))
        beta = check_positive_float("beta", beta, allow_zero=True)
        B, Z = x.shape[0], self.latent_dim

        # Forward: x -> mu, logvar -> z -> decoder output -> log P(x|z); KL from mu, logvar.
        h = self.encoder.forward(self._with_labels(x, y))  # (B, 2Z)
        mu, logvar = h[:, :Z], h[:, Z:]  # (B, Z) each
        z, rep_cache = dist.reparameterize(mu, logvar, eps)  # (B, Z)
        out = self.decoder.forward(self._with_labels(z, y))  # (B, D), or (B, 2D) for "gaussian"
        log_px, head_cache = self.head.log_px(x, out)  # (B,)
        kl, kl_cache = dist.kl_standard_normal(mu, logvar)  # (B,)
        loss = float(np.mean(beta * kl - log_px))

        # Backward, in reverse: d loss / d log_px_i = -1/B and d loss / d kl_i = beta/B.
        dlog_px = np.full(B, -1.0 / B, dtype=self.dtype)  # (B,)
        dkl = np.full(B, beta / B, dtype=self.dtype)  # (B,)
        dout = self.head.log_px_backward(dlog_px, head_cache)  # shape of out
        dz = self.decoder.backward(dout)[:, :Z]  # (B, Z); the label columns need none
        dmu, dlogvar = dist.reparameterize_backward(dz, rep_cache)  # (B, Z) each
        dmu_kl, dlogvar_kl = dist.kl_standard_normal_backward(dkl, kl_cache)  # (B, Z) each
        dh = np.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1)  # (B, 2Z)
        self.encoder.backward(dh, need_dx=False)  # x is data: no gradient needed for it

        grads = {**self.encoder.grads, **self.decoder.grads}
        return loss, grads, {"reconstruction": log_px, "kl": kl}

    def iwae_loss_and_grads(self, x, k, eps=None, rng=None, y=None):
        """The importance-weighted bound L_k as a training loss, its gradient, two diagnostics.

        ``L_k(x) = log (1/k) sum_i w_i`` with ``log w_i = log P(x|z_i) + log P(z_i) -
        log q(z_i|x)`` and ``z_i = mu + exp(logvar / 2) * eps_i`` (Burda et al. 2015;
        lecture: "Beyond the notes"); ``loss = -mean_B L_k``. The encoder runs once, the
        B k samples go through the decoder as one batch. The gradient is
        ``sum_i w~_i grad log w_i``, ``w~ = softmax_i(log w)`` held constant (it is the
        log-mean-exp's own derivative). ``terms``: ``{"bound": L_k, "ess": 1 / sum_i
        w~_i^2}``, each (B,).

        For k = 1 this is the ELBO with a Monte-Carlo KL, ``log q(z|x) - log P(z)`` at the
        sample, not the closed-form KL of ``loss_and_grads`` (still the default): the same
        expectation and expected gradient, a different (usually larger) variance.

        Shapes: x (B, D), eps (B, k, Z) -> loss float, grads {name: shape of params[name]}, terms.
        """
        self._check_x(x)
        k = check_positive_int("k", k)
        B, Z = x.shape[0], self.latent_dim
        y = self._check_y(y, B)
        eps = self._noise(eps, rng, (B, k))  # (B, k, Z)
        x_r = np.repeat(x, k, axis=0)  # (B k, D): row b k + i holds sample i of example b
        y_r = None if y is None else np.repeat(y, k)  # (B k,)

        # Forward: x -> mu, logvar (once) -> k samples z_i each -> log w_i -> L_k.
        h = self.encoder.forward(self._with_labels(x, y))  # (B, 2Z)
        mu, logvar = np.repeat(h[:, :Z], k, axis=0), np.repeat(h[:, Z:], k, axis=0)  # (B k, Z)
        z, rep_cache = dist.reparameterize(mu, logvar, eps.reshape(B * k, Z))  # (B k, Z)
        out = self.decoder.forward(self._with_labels(z, y_r))  # (B k, D), or (B k, 2D)
        log_px, head_cache = self.head.log_px(x_r, out)  # (B k,)
        log_pz = dist.standard_normal_log_density(z)  # (B k,)
        log_qz, q_cache = dist.gaussian_log_likelihood(z, mu, logvar)  # (B k,)
        log_w = (log_px + log_pz - log_qz).reshape(B, k)  # (B, k)
        bound, w_tilde = dist.log_mean_exp(log_w)  # (B,), (B, k)
        loss = float(-np.mean(bound))

        # Backward, in reverse: d loss / d bound_b = -1/B, d bound_b / d log w_bi = w~_bi.
        dbound = np.full(B, -1.0 / B, dtype=self.dtype)  # (B,)
        dlog_w = dist.log_mean_exp_backward(dbound, w_tilde).reshape(B * k)  # (B k,)
        dout = self.head.log_px_backward(dlog_w, head_cache)  # shape of out
        dz = (self.decoder.backward(dout)[:, :Z]  # (B k, Z), through log P(x|z)
              + dist.standard_normal_log_density_backward(dlog_w, z)  # through log P(z)
              + dist.gaussian_log_likelihood_x_backward(-dlog_w, q_cache))  # through log q's z
        dmu_q, dlogvar_q = dist.gaussian_log_likelihood_backward(-dlog_w, q_cache)  # directly
        dmu, dlogvar = dist.reparameterize_backward(dz, rep_cache)  # (B k, Z) each
        dh = np.concatenate([dmu + dmu_q, dlogvar + dlogvar_q], axis=1)  # (B k, 2Z)
        # The backward of np.repeat sums the k rows of each example.
        self.encoder.backward(dh.reshape(B, k, 2 * Z).sum(axis=1), need_dx=False)  # (B, 2Z)

        grads = {**self.encoder.grads, **self.decoder.grads}
        return loss, grads, {"bound": bound, "ess": dist.effective_sample_size(w_tilde)}

    # -- generation and evaluation ---------------------------------------------

    def sample(self, n, rng, z=None, y=None):
        """Decode ``n`` draws ``z ~ P(z) = N(0, I)`` (or the given ``z``) to the decoder mean.

        The mean is the pixel probabilities for "bernoulli" and the Gaussian
        mean otherwise. A conditional model needs the labels ``y`` to draw:
        ``z`` from ``encode(x, y_x)`` and another ``y`` give that class in the
        style of ``x``. Shapes: z (n, Z), y (n,) -> (n, D).
        """
        n = check_positive_int("n", n)
        z = self._noise(z, rng, (n,), name="z")
        y = self._check_y(y, n)
        return self.head.mean(self.decoder.forward(self._with_labels(z, y)))

    def log_likelihood(self, x, num_samples=5000, rng=None, max_rows=8192, y=None, eps=None):
        """Importance-weighted estimate of log P(x) per example (Burda et al., 2015).

        ``log (1/k) sum_{i=1..k} P(x, z_i) / q(z_i|x)`` with ``z_i ~ q(z|x)``: a
        lower bound on log P(x) that is the ELBO for k = 1 and tightens as k
        grows (lecture: the gap between L_b and log P(x)). At most ``max_rows``
        (example, sample) pairs go through the decoder at once, so memory stays
        bounded for any k. The noise is drawn from ``rng``, or given as ``eps``:
        the same ``eps`` give ``iwae_loss_and_grads``'s ``terms["bound"]``.

        Shapes: x (B, D), y (B,), eps (B, k, Z) -> (B,).
        """
        k = check_positive_int("num_samples", num_samples)
        max_rows = check_positive_int("max_rows", max_rows)
        mu, logvar = self.encode(x, y)  # (B, Z)
        B, Z = mu.shape
        if eps is None:
            rng = check_rng("rng", rng)
        else:
            check_array("eps", eps, shape=(B, k, Z), dtype=self.dtype)
        out = np.empty(B, dtype=np.float64)
        block = max(1, max_rows // k)  # examples per block (1 when k >= max_rows)
        for i in range(0, B, block):
            b = min(block, B - i)
            # log-mean-exp accumulated over chunks of samples, so memory does not grow with k:
            # top = the largest log w so far, total = sum of exp(log w - top) so far
            top, total = np.full(b, -np.inf), np.zeros(b)  # (b,) each
            chunk = max(1, max_rows // b)  # samples per example per decoder call
            for s in range(0, k, chunk):
                n = min(chunk, k - s)
                rows = np.repeat(np.arange(i, i + b), n)  # example of each row, (b n,)
                mu_r, logvar_r = mu[rows], logvar[rows]  # (b n, Z)
                eps_r = (rng.standard_normal((b * n, Z), dtype=self.dtype) if eps is None
                         else eps[i:i + b, s:s + n].reshape(b * n, Z))  # (b n, Z)
                z, _ = dist.reparameterize(mu_r, logvar_r, eps_r)  # (b n, Z)
                out_r = self.decoder.forward(self._with_labels(z, None if y is None else y[rows]))
                log_px, _ = self.head.log_px(x[rows], out_r)  # (b n,)
                log_qz, _ = dist.gaussian_log_likelihood(z, mu_r, logvar_r)  # (b n,)
                log_pz = dist.standard_normal_log_density(z)  # (b n,)
                log_w = (log_px + log_pz - log_qz).astype(np.float64).reshape(b, n)
                new_top = np.maximum(top, log_w.max(axis=1))  # (b,)
                total = (total * np.exp(top - new_top)
                         + np.exp(log_w - new_top[:, None]).sum(axis=1))
                top = new_top
            out[i:i + b] = top + np.log(total / k)
        return out

    def active_units(self, x, threshold=0.01, y=None):
        """How many latent dimensions the model uses, and the variance that decides it.

        Latent u is active when ``Cov_x(E_q[z_u]) = Var_x(mu_u(x)) > threshold``, the
        variance over the examples x (divisor B) of the posterior mean (Burda et al.
        2015, section 5.2; lecture: "Beyond the notes"): a number for posterior collapse.

        Shapes: x (B, D), y (B,) -> count int, variances (Z,).
        """
        threshold = check_positive_float("threshold", threshold, allow_zero=True)
        mu, _ = self.encode(x, y)  # (B, Z)
        variances = mu.astype(np.float64).var(axis=0)  # (Z,)
        return int(np.sum(variances > threshold)), variances
