"""The checks for notebook 03: the dense layer, the activations and an MLP's backward pass.

Lecture: "How to generate P_theta(x|z)", the networks of the encoder and decoder.
"""

import numpy as np

from .. import layers
from .._checks import check_choice
from ..gradcheck import numerical_gradient
from ._core import (
    GRAD_TOL,
    _call,
    _compare,
    _describe,
    _error,
    _Fail,
    _match,
    _output,
    _plant,
    _run,
)
from ._steps import _check_pair, _library_pair

_sg = layers.sigmoid



_affine_reference = _library_pair(layers.affine_forward, layers.affine_backward,
                                  ("out", "dx", "dW", "db"))

_AFFINE_MISTAKES = [
    ("the mean over the batch for the sum: dW and db divided by B",
     lambda x, W, b, d: {"dW": x.T @ d / len(x), "db": d.mean(axis=0)}),
    ("a sign: -dout in the gradients",
     lambda x, W, b, d: {q: -a for q, a in list(_affine_reference(x, W, b, d).items())[1:]}),
    ("the bias left out of the forward: out = x W",
     lambda x, W, b, d: {"out": x @ W}),
    ("dx from W's columns summed: dout summed over the outputs",
     lambda x, W, b, d: {"dx": d.sum(axis=1, keepdims=True) * W.sum(axis=1)}),
]


def check_affine(forward_fn, backward_fn, verbose=True):
    """Grade the dense layer ``out = x W + b`` and its gradients.

    Lecture: "How to generate P_theta(x|z)" (the networks' layers):

        forward_fn(x, W, b) -> (out, cache),        out = x W + b
        backward_fn(dout, cache) -> (dx, dW, db),   dx = dout W^T, dW = x^T dout,
                                                    db = sum over the batch of dout

    Answer key: ``layers.affine_forward`` and ``layers.affine_backward``. The
    check also fails if either function changes its inputs (a backward that
    applies an update to W).

    Mistakes it names: the mean over the batch for the sum; a sign; the bias
    left out; dW transposed; db not summed over the batch (or over the wrong
    axis); the upstream gradient ignored.

    Shapes: x (B, I), W (I, O), b (O,) -> out (B, O); dout (B, O) -> dx (B, I),
    dW (I, O), db (O,).
    """
    def body(log):
        rng = np.random.default_rng(5)
        B, I, O = 4, 3, 5

        def args(n):
            return rng.normal(size=(n, I)), rng.normal(size=(I, O)), rng.normal(size=O)
        x, W, b = args(6)
        x[0] = 0.0
        x[1] *= 1e3
        hints = {"dW": {(O, I): "dW transposed: dW = x^T dout has the shape of W, (I, O)"},
                 "db": {(B, O): "db not summed over the batch: db = sum over B of dout",
                        (B,): "a wrong axis: db summed over the outputs, not the batch",
                        (): "db summed over every axis: sum over the batch (axis 0) only"},
                 "dx": {(B, O): "dx must have the shape of x: dx = dout W^T"}}
        _check_pair(log, forward_fn, backward_fn, ("forward_fn", "backward_fn"), ("x", "W", "b"),
                    _affine_reference, {"dx": 0, "dW": 1, "db": 2}, _AFFINE_MISTAKES,
                    (args(B), args(3), (x, W, b)), hints,
                    "out = x W + b, dx = dout W^T, dW = x^T dout, db = sum_B dout", rng)
    return _run("affine", body, verbose)


_ACTIVATION_MISTAKES = {
    "relu": [
        ("the output used as the slope: dout * relu(x), not dout * [x > 0]",
         lambda x, d: {"dx": d * np.maximum(x, 0)}),
        ("the mask taken from dout, not from x: dout * [dout > 0]",
         lambda x, d: {"dx": d * (d > 0)}),
        ("a leaky ReLU (slope 0.01 below 0)",
         lambda x, d: {"out": np.where(x > 0, x, 0.01 * x), "dx": np.where(x > 0, d, 0.01 * d)}),
        ("a sign: -dout * [x > 0]", lambda x, d: {"dx": -d * (x > 0)}),
    ],
    "tanh": [
        ("the square left out: 1 - tanh(x), not 1 - tanh(x)^2",
         lambda x, d: {"dx": d * (1 - np.tanh(x))}),
        ("the slope from the input: 1 - x^2, not 1 - tanh(x)^2",
         lambda x, d: {"dx": d * (1 - x * x)}),
        ("the sigmoid's slope s (1 - s) used for tanh",
         lambda x, d: {"dx": d * np.tanh(x) * (1 - np.tanh(x))}),
        ("a sign: tanh(x)^2 - 1", lambda x, d: {"dx": d * (np.tanh(x) ** 2 - 1)}),
    ],
    "sigmoid": [
        ("sigmoid of the wrong argument: sigmoid(-x) = 1 / (1 + exp(x))",
         lambda x, d: {"out": _sg(-x), "dx": -d * _sg(x) * (1 - _sg(x))}),
        ("the slope from the input: x (1 - x), not s (1 - s)",
         lambda x, d: {"dx": d * x * (1 - x)}),
        ("exp(x) / (1 + exp(x)) computed as written: inf / inf = NaN for large x",
         lambda x, d: {"out": np.exp(x) / (1 + np.exp(x)),
                       "dx": d * np.exp(x) / (1 + np.exp(x)) ** 2}),
        ("a sign: -s (1 - s)", lambda x, d: {"dx": -d * _sg(x) * (1 - _sg(x))}),
    ],
}


def check_activation(name, forward_fn, backward_fn, verbose=True):
    """Grade an activation, ``name`` one of "relu", "tanh", "sigmoid", and its gradient.

    Lecture: "How to generate P_theta(x|z)":

        forward_fn(x) -> (out, cache);   backward_fn(dout, cache) -> dx = dout * f'(x)

    with f' = [x > 0], 1 - tanh(x)^2 or s (1 - s), s = sigmoid(x), computed
    without overflow for any x (the check uses |x| = 800; ReLU's slope at
    exactly 0 is not graded). Answer key: ``layers.ACTIVATIONS[name]``.

    Mistakes it names: ReLU: the output as the slope, the mask from dout, a
    leaky ReLU, a sign. tanh: the square left out, the slope from the input,
    the sigmoid's slope, a sign. sigmoid: sigmoid of -x, the slope from the
    input, exp(x)/(1 + exp(x)) as written (NaN), a sign. For each, the
    upstream gradient ignored.

    Shapes: x (B, H) -> out (B, H); dout (B, H) -> dx (B, H).
    """
    check_choice("name", name, _ACTIVATION_MISTAKES)

    def body(log):
        rng = np.random.default_rng(6)
        fwd, bwd = layers.ACTIVATIONS[name]
        moderate = rng.normal(size=(3, 4))
        moderate += 0.1 * np.sign(moderate)  # away from ReLU's kink
        edge = np.vstack([[800, -800, 30, -30, 0], [1e-300, -1e-300, 5, -5, 0.5],
                          3 * rng.normal(size=(2, 5))]).astype(float)
        if name == "relu":
            edge[edge == 0] = 0.25  # any slope in [0, 1] is right at 0
        _check_pair(log, forward_fn, backward_fn, ("forward_fn", "backward_fn"), ("x",),
                    _library_pair(fwd, bwd, ("out", "dx")), {"dx": 0},
                    _ACTIVATION_MISTAKES[name], ((rng.normal(size=(4, 5)),), (moderate,), (edge,)),
                    {}, f"the {name} and its slope", rng)
    return _run(name, body, verbose)


# ---------------------------------------------------------------------------
# 7. An MLP's backward pass


MLP_SIZES = (4, 5, 3, 2)  # the network check_mlp_backward grades: three dense layers


def _mlp_reference(x, params, dout, activation):
    net = layers.MLP(MLP_SIZES, activation, params=params)
    out = net.forward(x)
    dx = net.backward(dout)
    return {"out": out, "dx": dx, **{"d" + k: g for k, g in net.grads.items()}}


def _mlp_by_hand(x, params, dout, activation, skip_slope=False, act_on_output=False,
                 mean_db=False):
    """The MLP from ``layers``' pairs with one step changed (planted mistakes)."""
    act_forward, act_backward = layers.ACTIVATIONS[activation]
    n = len(MLP_SIZES) - 1
    caches, h = [], x
    for i in range(n):
        h, affine_cache = layers.affine_forward(h, params[f"W{i}"], params[f"b{i}"])
        act_cache = None
        if i < n - 1 or act_on_output:
            h, act_cache = act_forward(h)
        caches.append((affine_cache, act_cache))
    out, dh = {"out": h}, dout
    for i in reversed(range(n)):
        affine_cache, act_cache = caches[i]
        if act_cache is not None and not skip_slope:
            dh = act_backward(dh, act_cache)
        dh, out[f"dW{i}"], db = layers.affine_backward(dh, affine_cache)
        out[f"db{i}"] = db / len(x) if mean_db else db
    out["dx"] = dh
    return out


_MLP_MISTAKES = [
    ("the activation's slope left out of the backward (dh passed straight through it)",
     lambda *a: _mlp_by_hand(*a, skip_slope=True)),
    ("the activation also applied after the last layer (the head is linear)",
     lambda *a: _mlp_by_hand(*a, act_on_output=True)),
    ("the mean over the batch for the sum in db",
     lambda *a: _mlp_by_hand(*a, mean_db=True)),
]


def _student_mlp(forward_fn, backward_fn, x, params, dout):
    """The student's MLP outputs by name, checked; their inputs must come back unchanged."""
    copies = {k: p.copy() for k, p in params.items()}
    x_copy = x.copy()
    res = _call("forward_fn", forward_fn, x_copy, copies)
    if not (isinstance(res, tuple) and len(res) == 2):
        raise _Fail(f"your forward_fn must return a pair (out, caches); it returned "
                    f"{_describe(res)}")
    out = {"out": _output("forward_fn's out", res[0], (len(x), MLP_SIZES[-1]))}
    if dout is None:
        return out
    res = _call("backward_fn", backward_fn, dout.copy(), res[1])
    if not (isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], dict)):
        raise _Fail(f"your backward_fn must return a pair (dx, grads) with grads a dict; it "
                    f"returned {_describe(res)}")
    dx, grads = res
    out["dx"] = _output("backward_fn's dx", dx, x.shape)
    if grads.keys() != params.keys():
        raise _Fail(f"grads must have exactly the keys of params, {sorted(params)}; got "
                    f"{sorted(map(str, grads))}")
    for k, p in params.items():
        hints = {p.shape[::-1]: "dW transposed: dW = h^T dout has the shape of W"}
        if k.startswith("b"):
            hints = {(len(x), p.size): "db not summed over the batch"}
        out["d" + k] = _output(f"grads[{k!r}]", grads[k], p.shape, hints)
    for k in params:
        if not np.array_equal(copies[k], params[k]):
            raise _Fail(f"your functions changed params[{k!r}]: a backward only computes "
                        f"gradients, the optimiser alone updates the parameters")
    if not np.array_equal(x_copy, x):
        raise _Fail("your functions changed their input x in place")
    return out


def check_mlp_backward(forward_fn, backward_fn, activation="tanh", verbose=True):
    """Grade a hand-written MLP forward and backward pass.

    Lecture: "How to generate P_theta(x|z)": three dense layers of sizes
    ``MLP_SIZES = (4, 5, 3, 2)``, ``activation`` after the first two, none
    after the last (the head):

        forward_fn(x, params) -> (out, caches)
        backward_fn(dout, caches) -> (dx, grads)     grads: a dict with params' keys

    params: "W0" (4, 5), "b0" (5,), "W1" (5, 3), "b1" (3,), "W2" (3, 2), "b2" (2,).
    The library's ``layers`` pairs may be used. Answer key: ``layers.MLP``.
    Checked at every call, since a gradient check is blind to it: the
    parameters come back unchanged, and a second forward and backward on the
    same input gives the same gradients (none accumulate across calls).

    Mistakes it names: the activation's slope left out; the activation after
    the last layer too; the mean over the batch for the sum in db; dW
    transposed; db not summed over the batch.

    Shapes: x (B, 4) -> out (B, 2); dout (B, 2) -> dx (B, 4), grads[k] the shape of params[k].
    """
    check_choice("activation", activation, tuple(k for k in layers.ACTIVATIONS if k != "identity"))

    def body(log):
        rng = np.random.default_rng(7)
        params = {}
        for i, (m, n) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:])):
            params[f"W{i}"], params[f"b{i}"] = rng.normal(size=(m, n)), 0.5 * rng.normal(size=n)

        log.step = "shapes and dtypes"
        x, dout = rng.normal(size=(3, 4)), rng.normal(size=(3, 2))
        first = _student_mlp(forward_fn, backward_fn, x, params, dout)
        again = _student_mlp(forward_fn, backward_fn, x, params, dout)
        if max(_error(again[q], first[q]) for q in first) > 0:
            raise _Fail("your functions gave different gradients the second time on the same "
                        "input: do they accumulate (+= into a dict kept between calls)? Each "
                        "backward must return fresh gradients")

        log.step = "central differences (float64)"
        mine = _student_mlp(forward_fn, backward_fn, x, params, dout)
        ref = _mlp_reference(x, params, dout, activation)
        inputs = {"dx": x.copy(), **{"d" + k: p.copy() for k, p in params.items()}}

        def f():
            p = {k: inputs["d" + k] for k in params}
            out = _student_mlp(forward_fn, None, inputs["dx"], p, None)["out"]
            return float(np.sum(out * dout))
        numeric = {q: numerical_gradient(f, a) for q, a in inputs.items()}
        _compare(log, {q: mine[q] for q in numeric}, numeric,
                 "central differences of your forward_fn",
                 lambda: _match(mine, ref, _plant(_MLP_MISTAKES, x, params, dout, activation),
                                "layers.MLP"), GRAD_TOL, True)

        log.step = "the reference (random inputs and edge values)"
        x = np.vstack([np.zeros((1, 4)), 3 * rng.normal(size=(4, 4))])
        dout = rng.normal(size=(5, 2))
        mine = _student_mlp(forward_fn, backward_fn, x, params, dout)
        ref = _mlp_reference(x, params, dout, activation)
        _compare(log, mine, ref, "the reference",
                 lambda: _match(mine, ref, _plant(_MLP_MISTAKES, x, params, dout, activation),
                                "layers.MLP"))

    return _run("mlp_backward", body, verbose)


