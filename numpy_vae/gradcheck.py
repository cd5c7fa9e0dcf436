"""Gradient checks: analytic gradients against central finite differences.

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)

has error O(h^2) from truncation and O(u |f| / h) from rounding (u the unit
roundoff), so checks run in float64, where h = 1e-5 keeps both near 1e-10.
"""

import numpy as np

from .errors import InvalidTypeError, InvalidValueError


def rel_error(a, b):
    """Relative error of two arrays: ``max |a - b| / max(max |a|, max |b|)``.

    Scaled by the larger array's largest entry, so entries whose true gradient
    is ~0 (a dead ReLU) do not divide by zero. 0.0 when both are all zero.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InvalidValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0))
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b)) / scale)


def cmp(name, mine, ref, tol=1e-8, atol=None):
    """Compare ``mine`` with a reference and print one line: exact? approximate? how far?

    (The ``cmp`` of Karpathy's makemore backprop notebook.) ``approx`` means
    ``max |mine - ref| <= atol`` when ``atol`` is given (for Monte-Carlo checks),
    else ``rel_error(mine, ref) <= tol``. Returns ``approx``, so a notebook can
    ``assert cmp(...)``.
    """
    mine, ref = np.broadcast_arrays(np.asarray(mine, dtype=np.float64),
                                    np.asarray(ref, dtype=np.float64))
    exact = bool(np.array_equal(mine, ref))
    maxdiff = float(np.max(np.abs(mine - ref)))
    rel = rel_error(mine, ref)
    approx = maxdiff <= atol if atol is not None else rel <= tol
    print(f"{name:38s} | exact: {exact!s:5s} | approx: {approx!s:5s} "
          f"| maxdiff: {maxdiff:.1e} | relerr: {rel:.1e}")
    return approx


def numerical_gradient(f, x, h=1e-5, indices=None):
    """Central-difference gradient of the scalar ``f()`` with respect to the array ``x``.

    ``x`` is perturbed **in place** (and restored), so ``f`` may read it from
    wherever it lives, e.g. a model's ``params`` dict. If ``indices`` (flat
    indices) is given, only those entries are computed; the rest are NaN.

    Shapes: x any -> same as x.
    """
    if x.dtype != np.float64:
        raise InvalidTypeError(f"x must be float64 for a gradient check, got {x.dtype}")
    grad = np.full(x.shape, np.nan) if indices is not None else np.empty(x.shape)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat_x, x):
        raise InvalidValueError("x must be contiguous so that it can be perturbed in place")
    for i in range(x.size) if indices is None else indices:
        old = flat_x[i]
        flat_x[i] = old + h
        f_plus = f()
        flat_x[i] = old - h
        f_minus = f()
        flat_x[i] = old
        flat_g[i] = (f_plus - f_minus) / (2 * h)
    return grad


def numerical_gradient_array(f, x, dout, h=1e-5):
    """Central-difference vector-Jacobian product: the gradient of ``sum(f(x) * dout)``.

    For checking a backward function: its result for upstream ``dout`` should
    equal this. Shapes: x any, dout the shape of f(x) -> the shape of x.
    """
    return numerical_gradient(lambda: float(np.sum(f(x) * dout)), x, h)


def check_backward(f, inputs, grads, dout, rng, n_directions=3, h=1e-5):
    """Check a backward pass along random directions, one input at a time.

    ``f(**inputs)`` is the forward function (returning an array), ``grads[name]``
    is what the backward pass returned for the upstream gradient ``dout`` (the
    shape of ``f``'s output). For a random direction ``v`` of input ``name``,
    the directional derivative of ``sum(f * dout)`` along ``v`` is computed by
    central differences and compared with ``sum(grads[name] * v)``: a few
    forward calls instead of two per entry, so it scales to big arrays
    (autodidax's vector-Jacobian checks). Inputs must be float64.

    Returns a dict: input name -> the worst relative error over the directions,
    ``|analytic - numeric| / max(|analytic|, |numeric|)`` (0 when both are 0).
    """
    errors = {}
    for name, g in grads.items():
        x = inputs[name]
        if x.dtype != np.float64:
            raise InvalidTypeError(f"inputs[{name!r}] must be float64 for a gradient check, "
                                   f"got {x.dtype}")
        if g.shape != x.shape:
            raise InvalidValueError(f"grads[{name!r}] must have the shape of the input, "
                                    f"{x.shape}, got {g.shape}")
        worst = 0.0
        for _ in range(n_directions):
            v = rng.standard_normal(x.shape)

            def along(t, name=name, x=x, v=v):
                return float(np.sum(f(**{**inputs, name: x + t * v}) * dout))

            numeric = (along(h) - along(-h)) / (2 * h)
            analytic = float(np.sum(g * v))
            scale = max(abs(numeric), abs(analytic))
            worst = max(worst, 0.0 if scale == 0 else abs(analytic - numeric) / scale)
        errors[name] = worst
    return errors


def check_model_gradients(model, x=None, eps=None, beta=1.0, h=1e-5, max_entries=None, rng=None,
                          loss_and_grads=None):
    """Compare ``model.loss_and_grads`` with central differences, tensor by tensor.

    With ``max_entries``, each tensor is checked on at most that many randomly
    chosen entries (from ``rng``), for models too big to check entirely.
    ``loss_and_grads``, a function of no arguments returning ``(loss, grads, ...)``,
    checks another objective instead (e.g. ``lambda: model.iwae_loss_and_grads(x, k,
    eps=eps)``, or a conditional model's loss with its labels).

    Returns a dict: parameter name -> relative error (see ``rel_error``); for a
    correct backward every value is around 1e-9 in float64.
    """
    if model.dtype != np.float64:
        raise InvalidTypeError(f"the model must be float64 for a gradient check, got {model.dtype}")
    if loss_and_grads is None:
        def loss_and_grads():
            return model.loss_and_grads(x, eps=eps, beta=beta)
    grads = {k: g.copy() for k, g in loss_and_grads()[1].items()}
    if grads.keys() != model.params.keys():
        raise InvalidValueError(f"the gradients' keys {sorted(grads)} are not the parameters' "
                                f"{sorted(model.params)}")

    def loss():
        return loss_and_grads()[0]

    errors = {}
    for name, p in model.params.items():
        idx = None
        if max_entries is not None and p.size > max_entries:
            rng = np.random.default_rng(0) if rng is None else rng
            idx = rng.choice(p.size, size=max_entries, replace=False)
        num = numerical_gradient(loss, p, h, idx)
        mask = ~np.isnan(num)
        errors[name] = rel_error(grads[name][mask], num[mask])
    return errors
