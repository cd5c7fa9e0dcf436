"""Optimizers: the only code that changes parameters.

``step(params, grads)`` updates every array of ``params`` **in place** from the
gradient with the same key; ``grads`` comes from ``VAE.loss_and_grads`` (the
gradient of the loss, which is minimised). State is per key and can be read
with ``state_dict()`` and restored with ``load_state_dict()`` (checkpoints).
A step with a NaN or Inf gradient is refused before anything changes.
"""

import numpy as np

from ._checks import check_positive_float
from .errors import InvalidTypeError, InvalidValueError


class NonFiniteGradientError(InvalidValueError):
    """A gradient holds NaN or Inf; the optimizer refused the step and changed nothing."""


def _check_step_args(params, grads):
    """Same keys and shapes, finite gradients: checked before any parameter moves."""
    if not isinstance(params, dict) or not isinstance(grads, dict):
        raise InvalidTypeError(
            f"params and grads must be dicts of arrays, got {type(params).__name__} "
            f"and {type(grads).__name__}")
    if params.keys() != grads.keys():
        raise InvalidValueError(
            f"grads must have exactly the keys of params: missing {sorted(params.keys() - grads)}, "
            f"unexpected {sorted(grads.keys() - params)}")
    for k, p in params.items():
        if grads[k].shape != p.shape:
            raise InvalidValueError(f"grads[{k!r}] must have shape {p.shape}, got {grads[k].shape}")
        if not np.isfinite(grads[k]).all():
            raise NonFiniteGradientError(f"grads[{k!r}] holds NaN or Inf; the step was refused "
                                         f"and the parameters and optimizer state are unchanged")


def _check_beta(name, b):
    if not 0 <= b < 1:
        raise InvalidValueError(f"{name} must lie in [0, 1), got {b}")
    return float(b)


class Adam:
    """Adam (Kingma & Ba, 2015, Algorithm 1) with bias correction.

    With step counter ``t`` (1 on the first step) and gradient ``g``, per parameter::

        m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
        m_hat = m / (1 - b1^t)            v_hat = v / (1 - b2^t)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)

    On the first step ``m_hat = g`` and ``v_hat = g^2``, so every parameter
    moves by about ``lr * sign(g)``: without the bias correction it would move
    by ``lr * (1 - b1) / sqrt(1 - b2)``, about 3 lr.
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.lr = check_positive_float("lr", lr)
        self.betas = (_check_beta("betas[0]", betas[0]), _check_beta("betas[1]", betas[1]))
        self.eps = check_positive_float("eps", eps)
        self.t = 0
        self.m = {}
        self.v = {}

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        _check_step_args(params, grads)
        b1, b2 = self.betas
        self.t += 1
        for k, p in params.items():
            if k not in self.m:  # moments start at zero
                self.m[k], self.v[k] = np.zeros_like(p), np.zeros_like(p)
            g, m, v = grads[k], self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

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
            raise InvalidValueError(
                "Adam state is inconsistent: negative t or m/v with different keys")
        self.m = {k: np.array(a) for k, a in state["m"].items()}
        self.v = {k: np.array(a) for k, a in state["v"].items()}


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum.

    ``velocity <- momentum * velocity + g``;  ``p <- p - lr * velocity``.
    With ``momentum=0`` this is plain gradient descent.
    """

    def __init__(self, lr=1e-2, momentum=0.9):
        self.lr = check_positive_float("lr", lr)
        self.momentum = _check_beta("momentum", momentum)
        self.t = 0
        self.velocity = {}

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        _check_step_args(params, grads)
        self.t += 1
        for k, p in params.items():
            if k not in self.velocity:
                self.velocity[k] = np.zeros_like(p)
            vel = self.velocity[k]
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
