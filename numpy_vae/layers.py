"""Dense layers and activations as forward/backward pairs, and an MLP built from them.

Lecture: "How to generate P_theta(x|z)": the encoder and decoder are neural
networks. Each piece here is a pair of pure functions::

    out, cache = foo_forward(x, ...)
    dx[, dparams...] = foo_backward(dout, cache)

``dfoo`` is always dLoss/dfoo and has ``foo``'s shape. The cache is the only
thing handed from forward to backward, and backward never changes a parameter.
"""

import numpy as np

from ._checks import check_choice, check_positive_int, check_rng, check_width
from .errors import InvalidValueError

# ---------------------------------------------------------------------------
# Dense (affine) layer


def affine_forward(x, W, b):
    """Affine map ``out = x @ W + b``.

    Shapes: x (B, I), W (I, O), b (O,) -> out (B, O).
    """
    out = x @ W + b  # (B, O)
    return out, (x, W)


def affine_backward(dout, cache, need_dx=True):
    """Gradients of the affine map: ``dx = dout W^T``, ``dW = x^T dout``, ``db = sum_B dout``.

    ``need_dx=False`` skips ``dx`` (returned as None). The first layer of the
    encoder reads the data, which has no upstream layer to pass ``dx`` to:
    computing it would be the step's largest matrix product, thrown away.

    Shapes: dout (B, O) -> dx (B, I), dW (I, O), db (O,).
    """
    x, W = cache
    dx = dout @ W.T if need_dx else None  # (B, I)
    dW = x.T @ dout  # (I, O)
    db = dout.sum(axis=0)  # (O,)
    return dx, dW, db


# ---------------------------------------------------------------------------
# Activations: elementwise, so every backward is dout times the local slope.

LEAKY_SLOPE = 0.01


def relu_forward(x):
    """ReLU, ``max(x, 0)``. Shapes: any -> same."""
    out = np.maximum(x, 0)
    return out, out


def relu_backward(dout, cache):
    """``dout * [x > 0]`` (the slope at 0 is taken as 0)."""
    return dout * (cache > 0)


def leaky_relu_forward(x):
    """Leaky ReLU, ``x`` for x > 0 and ``0.01 x`` otherwise. Shapes: any -> same."""
    return np.where(x > 0, x, LEAKY_SLOPE * x), x


def leaky_relu_backward(dout, cache):
    """``dout`` times 1 for x > 0 and 0.01 otherwise."""
    return np.where(cache > 0, dout, LEAKY_SLOPE * dout)


def tanh_forward(x):
    """Hyperbolic tangent. Shapes: any -> same."""
    out = np.tanh(x)
    return out, out


def tanh_backward(dout, cache):
    """``dout * (1 - tanh(x)^2)``, from the cached output."""
    return dout * (1 - cache * cache)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, without overflow for any finite x.

    Uses ``e = exp(-|x|)`` (never above 1): sigmoid is ``1/(1+e)`` for x >= 0
    and ``e/(1+e)`` for x < 0.
    """
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


def softplus(x):
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def sigmoid_forward(x):
    """Logistic sigmoid. Shapes: any -> same."""
    out = sigmoid(x)
    return out, out


def sigmoid_backward(dout, cache):
    """``dout * s * (1 - s)``, from the cached output ``s``."""
    return dout * cache * (1 - cache)


def softplus_forward(x):
    """Softplus ``log(1 + exp(x))``. Shapes: any -> same."""
    return softplus(x), x


def softplus_backward(dout, cache):
    """``dout * sigmoid(x)``: the slope of softplus is the sigmoid."""
    return dout * sigmoid(cache)


def identity_forward(x):
    """The identity, used for the output (head) layer of an MLP."""
    return x, None


def identity_backward(dout, cache):
    """The identity's gradient passes ``dout`` through."""
    return dout


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "softplus": (softplus_forward, softplus_backward),
    "identity": (identity_forward, identity_backward),
}


# ---------------------------------------------------------------------------
# Initialisation


INITS = ("he-glorot", "uniform")


def init_dense(fan_in, fan_out, activation, rng, dtype=np.float64, scheme="he-glorot"):
    """Weights and biases for a dense layer followed by ``activation``.

    "he-glorot" (the default): He normal (std ``sqrt(2 / fan_in)``) for the
    ReLU family, which zeroes half its inputs; Glorot uniform (limit
    ``sqrt(6 / (fan_in + fan_out))``) for the others, which are near-linear
    around 0; biases zero. "uniform": weights and biases from
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, the default of PyTorch's
    ``nn.Linear`` (used to reproduce its results).

    Shapes: -> W (fan_in, fan_out), b (fan_out,).
    """
    check_choice("scheme", scheme, INITS)
    if scheme == "uniform":
        bound = 1.0 / np.sqrt(fan_in)
        W = rng.uniform(-bound, bound, size=(fan_in, fan_out))
        b = rng.uniform(-bound, bound, size=fan_out)
        return W.astype(dtype), b.astype(dtype)
    if activation in ("relu", "leaky_relu"):
        W = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))
    else:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        W = rng.uniform(-limit, limit, size=(fan_in, fan_out))
    return W.astype(dtype), np.zeros(fan_out, dtype=dtype)


# ---------------------------------------------------------------------------
# MLP


class MLP:
    """A stack of dense layers: ``activation`` after each but the last (the head).

    ``sizes = (I, H1, ..., O)`` gives ``len(sizes) - 1`` dense layers whose
    parameters are ``params[prefix + "W0"]``, ``params[prefix + "b0"]``, ... .
    The MLP reads them from ``params`` at every call and never writes them, so
    ``params`` may be a dict shared with a model (its only parameter storage).

    Shapes: forward x (B, I) -> (B, O); backward dout (B, O) -> dx (B, I).
    """

    def __init__(self, sizes, activation="relu", params=None, prefix="", rng=None,
                 dtype=np.float64):
        self.sizes = tuple(check_positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes))
        if len(self.sizes) < 2:
            raise InvalidValueError(
                f"sizes must hold at least an input and an output size, got {sizes}")
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.prefix = prefix
        self.params = {} if params is None else params
        self.grads = {}
        self._caches = None
        if params is None:
            rng = check_rng("rng", np.random.default_rng() if rng is None else rng)
            self.params.update(self.init_params(rng, dtype))

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    def names(self, i):
        """The parameter names of layer ``i``: ``(prefix + "W{i}", prefix + "b{i}")``."""
        return f"{self.prefix}W{i}", f"{self.prefix}b{i}"

    def init_params(self, rng, dtype=np.float64, scheme="he-glorot"):
        """Fresh parameters for every layer (see ``init_dense``), as a new dict."""
        params = {}
        for i in range(self.n_layers):
            act = self.activation if i < self.n_layers - 1 else "identity"
            W, b = init_dense(self.sizes[i], self.sizes[i + 1], act, rng, dtype, scheme)
            w_name, b_name = self.names(i)
            params[w_name], params[b_name] = W, b
        return params

    def forward(self, x):
        """Run the stack, keeping every cache for ``backward``. Shapes: (B, I) -> (B, O)."""
        check_width("x", x, self.sizes[0])
        act_forward = ACTIVATIONS[self.activation][0]
        caches = []
        h = x
        for i in range(self.n_layers):
            w_name, b_name = self.names(i)
            h, affine_cache = affine_forward(h, self.params[w_name], self.params[b_name])
            act_cache = None
            if i < self.n_layers - 1:
                h, act_cache = act_forward(h)  # (B, H_i)
            caches.append((affine_cache, act_cache))
        self._caches = caches
        return h

    def backward(self, dout, need_dx=True):
        """Backpropagate ``dout``; set ``self.grads`` (a new dict, same keys as params); return dx.

        ``need_dx=False`` skips the input gradient (returns None): see
        ``affine_backward``. Raises ``RuntimeError`` if no ``forward`` ran since
        the last ``backward``.
        """
        if self._caches is None:
            raise RuntimeError("MLP.backward called before forward: run forward(x) first")
        check_width("dout", dout, self.sizes[-1])
        act_backward = ACTIVATIONS[self.activation][1]
        grads, dh = {}, dout
        for i in reversed(range(self.n_layers)):
            affine_cache, act_cache = self._caches[i]
            if i < self.n_layers - 1:
                dh = act_backward(dh, act_cache)  # (B, H_i)
            w_name, b_name = self.names(i)
            dh, grads[w_name], grads[b_name] = affine_backward(
                dh, affine_cache, need_dx=need_dx or i > 0)
        self.grads = grads
        self._caches = None
        return dh
