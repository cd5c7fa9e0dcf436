"""Optimizers: the only code that changes parameters.

``step(params, grads)`` updates every array of ``params`` **in place** from the
gradient with the same key; ``grads`` comes from ``VAE.loss_and_grads`` (the
gradient of the loss, which is minimised). State is per key and can be read
with ``state_dict()`` and restored with ``load_state_dict()`` (checkpoints).

Fast path: when ``params`` and ``grads`` are each views that tile one flat
buffer in the same order (``VAE.params`` and the gradients of
``VAE.loss_and_grads`` are), Adam applies its update rule once to the whole
buffers instead of once per key: the same elementwise arithmetic, so the same
numbers, with far fewer NumPy calls and temporaries.
"""

import numpy as np

from ._checks import check_positive_float


def flat_buffer(arrays):
    """The 1-D array that the arrays of the dict ``arrays`` tile in order, else None.

    That is: every array is a C-contiguous view of one 1-D buffer of the same
    dtype, and they sit back to back from the buffer's first element to its
    last, in the dict's order (as ``VAE.params`` sit in ``VAE.flat_params``).
    """
    arrays = list(arrays.values())
    base = arrays[0].base if arrays else None
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    address = base.__array_interface__["data"][0]
    end = address + base.nbytes
    for a in arrays:
        if (a.base is not base or a.dtype != base.dtype or not a.flags.c_contiguous
                or a.__array_interface__["data"][0] != address):
            return None
        address += a.nbytes
    return base if address == end else None


def tile_views(flat, like):
    """Views of the 1-D ``flat`` shaped like the arrays of the dict ``like``, back to back."""
    views, start = {}, 0
    for name, a in like.items():
        views[name] = flat[start:start + a.size].reshape(a.shape)
        start += a.size
    return views


def _check_step_args(params, grads):
    if not isinstance(params, dict) or not isinstance(grads, dict):
        raise TypeError(
            f"params and grads must be dicts of arrays, got {type(params).__name__} "
            f"and {type(grads).__name__}"
        )
    if params.keys() != grads.keys():
        raise ValueError(
            f"grads must have exactly the keys of params: missing {sorted(params.keys() - grads)}, "
            f"unexpected {sorted(grads.keys() - params)}"
        )
    for k, p in params.items():
        if grads[k].shape != p.shape:
            raise ValueError(f"grads[{k!r}] must have shape {p.shape}, got {grads[k].shape}")


def _adam_update(p, g, m, v, b1, b2, lr_t, eps_t, work):
    """One Adam update of ``p``, ``m``, ``v`` in place; ``work`` is two scratch arrays.

    Computes, with the same roundings as the plain expressions::

        m += (1 - b1) * (g - m)             # = b1 m + (1 - b1) g
        v = b2 v + (1 - b2) g^2
        p -= lr_t * m / (sqrt(v) + eps_t)

    but writes every intermediate into ``work`` instead of new arrays.
    Shapes: all arrays alike.
    """
    w1, w2 = work
    np.subtract(g, m, out=w1)
    w1 *= 1 - b1
    m += w1
    np.multiply(g, g, out=w1)
    w1 *= 1 - b2
    v *= b2  # not v += (1 - b2)(g^2 - v): that turns an overflowed v = inf into NaN
    v += w1
    np.sqrt(v, out=w1)
    w1 += eps_t
    np.multiply(m, lr_t, out=w2)  # lr_t * m, as in the formula (same rounding)
    w2 /= w1
    p -= w2


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction.

    With step counter ``t`` (1 on the first step) and gradient ``g``::

        m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
        p <- p - lr * m_hat / (sqrt(v_hat) + eps),
        m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)

    On the first step ``m_hat = g`` and ``v_hat = g^2``, so every parameter
    moves by about ``lr * sign(g)``.

    The update runs on one thread: its dozen elementwise passes are limited
    by memory traffic, and splitting them over the cores did not make a
    training step faster (``benchmarks/RESULTS.md``).
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.lr = check_positive_float("lr", lr)
        b1, b2 = betas
        for name, b in (("betas[0]", b1), ("betas[1]", b2)):
            if not 0 <= b < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {b}")
        self.betas = (float(b1), float(b2))
        self.eps = check_positive_float("eps", eps)
        self.t = 0
        self.m = {}
        self.v = {}
        self._work = None  # two scratch arrays for the flat path, reused across steps

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        _check_step_args(params, grads)
        b1, b2 = self.betas
        self.t += 1
        # Fold both bias corrections into the step size and eps (the same update).
        lr_t = float(self.lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t))
        eps_t = float(self.eps * np.sqrt(1 - b2**self.t))
        flat_p, flat_g = flat_buffer(params), flat_buffer(grads)
        if (flat_p is not None and flat_g is not None and flat_g.dtype == flat_p.dtype
                and list(params) == list(grads)):
            m, v = self._flat_moments(params, flat_p)
            if self._work is None or self._work[0].shape != flat_p.shape \
                    or self._work[0].dtype != flat_p.dtype:
                self._work = (np.empty_like(flat_p), np.empty_like(flat_p))
            _adam_update(flat_p, flat_g, m, v, b1, b2, lr_t, eps_t, self._work)
            return
        for k, p in params.items():
            if k not in self.m:
                self.m[k] = np.zeros_like(p)
                self.v[k] = np.zeros_like(p)
            work = (np.empty_like(p), np.empty_like(p))
            _adam_update(p, grads[k], self.m[k], self.v[k], b1, b2, lr_t, eps_t, work)

    def _flat_moments(self, params, flat_p):
        """Flat ``m`` and ``v`` laid out like ``params``; ``self.m``/``self.v`` become views.

        Moments kept per key (from earlier per-key steps or ``load_state_dict``)
        are copied into new flat buffers once; missing keys start at zero.
        """
        moments = []
        for name in ("m", "v"):
            state = getattr(self, name)
            flat = next(iter(state.values())).base if state else None
            if not (list(state) == list(params) and isinstance(flat, np.ndarray)
                    and flat.shape == flat_p.shape and flat.dtype == flat_p.dtype
                    and all(a.base is flat for a in state.values())):
                flat = np.zeros_like(flat_p)
                views = tile_views(flat, params)
                for k, a in state.items():
                    if k in views:
                        views[k][...] = a
                setattr(self, name, views)
            moments.append(flat)
        return moments

    def state_dict(self):
        """Hyperparameters, step counter and moment estimates (copies)."""
        return {
            "lr": self.lr, "betas": self.betas, "eps": self.eps, "t": self.t,
            "m": {k: a.copy() for k, a in self.m.items()},
            "v": {k: a.copy() for k, a in self.v.items()},
        }

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned."""
        self.__init__(state["lr"], tuple(state["betas"]), state["eps"])
        self.t = int(state["t"])
        if self.t < 0 or state["m"].keys() != state["v"].keys():
            raise ValueError("Adam state is inconsistent: negative t or m/v with different keys")
        self.m = {k: np.array(a) for k, a in state["m"].items()}
        self.v = {k: np.array(a) for k, a in state["v"].items()}


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum.

    ``velocity <- momentum * velocity + g``;  ``p <- p - lr * velocity``.
    With ``momentum=0`` this is plain gradient descent.
    """

    def __init__(self, lr=1e-2, momentum=0.9):
        self.lr = check_positive_float("lr", lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.t = 0
        self.velocity = {}

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        _check_step_args(params, grads)
        self.t += 1
        for k, p in params.items():
            vel = self.velocity.setdefault(k, np.zeros_like(p))
            vel *= self.momentum
            vel += grads[k]
            p -= self.lr * vel

    def state_dict(self):
        """Hyperparameters, step counter and velocities (copies)."""
        return {"lr": self.lr, "momentum": self.momentum, "t": self.t,
                "velocity": {k: a.copy() for k, a in self.velocity.items()}}

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned."""
        self.__init__(state["lr"], state["momentum"])
        self.t = int(state["t"])
        self.velocity = {k: np.array(a) for k, a in state["velocity"].items()}
