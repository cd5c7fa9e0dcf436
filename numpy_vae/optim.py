"""Optimizers: the only code that changes parameters.

``step(params, grads)`` updates every array of ``params`` **in place** from the
gradient with the same key; ``grads`` comes from ``VAE.loss_and_grads`` (the
gradient of the loss, which is minimised). State is per key and can be read
with ``state_dict()`` and restored with ``load_state_dict()`` (checkpoints).
"""

import numpy as np

from ._checks import check_positive_float


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


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction.

    With step counter ``t`` (1 on the first step) and gradient ``g``::

        m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
        p <- p - lr * m_hat / (sqrt(v_hat) + eps),
        m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)

    On the first step ``m_hat = g`` and ``v_hat = g^2``, so every parameter
    moves by about ``lr * sign(g)``.
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

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        _check_step_args(params, grads)
        b1, b2 = self.betas
        self.t += 1
        # Fold both bias corrections into the step size and eps (the same update).
        lr_t = float(self.lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t))
        eps_t = float(self.eps * np.sqrt(1 - b2**self.t))
        for k, p in params.items():
            g = grads[k]
            if k not in self.m:
                self.m[k] = np.zeros_like(p)
                self.v[k] = np.zeros_like(p)
            m, v = self.m[k], self.v[k]
            m += (1 - b1) * (g - m)  # = b1 m + (1 - b1) g
            v += (1 - b2) * (g * g - v)  # = b2 v + (1 - b2) g^2
            p -= lr_t * m / (np.sqrt(v) + eps_t)

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
