"""The steps a check runs on a student's functions, after the reference is chosen.

``_check_pair`` grades a forward/backward pair (``out, cache = fwd(*args)``,
``grads = bwd(dout, cache)``) in steps 1-3: shapes and dtypes, central
differences of the student's own forward, the reference. ``_check_outputs``
grades a function without a backward in steps 1 and 3. Step 4, behaviour,
is each check's own.
"""

import numpy as np

from ..gradcheck import numerical_gradient_array
from ._core import (
    GRAD_TOL,
    UPSTREAM_IGNORED,
    _call,
    _compare,
    _copies,
    _describe,
    _Fail,
    _match,
    _output,
    _plant,
)

# ---------------------------------------------------------------------------
# Forward/backward pairs: out, cache = fwd(*args); grads = bwd(dout, cache)


def _library_pair(fwd, bwd, names):
    """The answer key: a library pair's outputs by name; ``dout=None`` runs the forward only."""
    def run(*args_and_dout):
        *args, dout = args_and_dout
        out, cache = fwd(*args)
        if dout is None:
            return {names[0]: out}
        grads = bwd(dout, cache)
        grads = grads if isinstance(grads, tuple) else (grads,)
        return dict(zip(names, (out, *grads)))
    return run


def _ignoring_upstream(reference):
    """The planted mistake common to every backward: the upstream gradient taken as ones."""
    def run(*args_and_dout):
        *args, dout = args_and_dout
        return dict(list(reference(*args, np.ones_like(dout)).items())[1:])
    return run


def _scaled(outputs, c):
    return {q: c * a for q, a in outputs.items()}


def _student_pair(fwd, bwd, labels, arg_names, args, dout, shapes, hints):
    """Run a student's pair on copies of ``args`` and check what comes back (``bwd=None``: forward).

    Also fails if either function changed one of its inputs: a backward only
    computes gradients, it never updates a parameter.
    """
    names = list(shapes)
    copies = _copies(args)
    res = _call(labels[0], fwd, *copies)
    if not (isinstance(res, tuple) and len(res) == 2):
        raise _Fail(f"your {labels[0]} must return a pair ({names[0]}, cache), like the "
                    f"library's forward functions; it returned {_describe(res)}")
    out = {names[0]: _output(f"{labels[0]}'s {names[0]}", res[0], shapes[names[0]],
                             hints.get(names[0]))}
    if bwd is not None:
        grads = _call(labels[1], bwd, dout.copy(), res[1])
        if len(names) == 2 and isinstance(grads, np.ndarray):
            grads = (grads,)
        if not (isinstance(grads, (tuple, list)) and len(grads) == len(names) - 1):
            raise _Fail(f"your {labels[1]} must return {', '.join(names[1:])}; "
                        f"it returned {_describe(grads)}")
        for q, g in zip(names[1:], grads):
            out[q] = _output(f"{labels[1]}'s {q}", g, shapes[q], hints.get(q))
    for name, a, c in zip(arg_names, args, copies):
        if isinstance(a, np.ndarray) and not np.array_equal(a, c, equal_nan=True):
            raise _Fail(f"your functions changed their input {name}: a forward or backward "
                        f"only computes, it never updates its arguments in place")
    return out


def _check_pair(log, fwd, bwd, labels, arg_names, reference, grads, mistakes, arg_sets, hints,
                formula, rng):
    """Steps 1-3 for a forward/backward pair.

    ``grads`` maps each gradient's name to the index of its input; ``arg_sets`` is
    (small, moderate, edge), three argument tuples; ``reference(*args, dout)`` and
    every planted mistake return their outputs as dicts by name.
    """
    mistakes = [*mistakes, (UPSTREAM_IGNORED, _ignoring_upstream(reference))]

    def setup(args):
        ((out_name, out),) = reference(*args, None).items()
        dout = rng.normal(size=out.shape)
        ref = reference(*args, dout)
        return out_name, dout, ref, {q: a.shape for q, a in ref.items()}

    def student(args, dout, shapes, backward=True):
        return _student_pair(fwd, bwd if backward else None, labels, arg_names, args, dout,
                             shapes, hints)

    log.step = "shapes and dtypes"
    _, dout, _, shapes = setup(arg_sets[0])
    student(arg_sets[0], dout, shapes)

    log.step = "central differences (float64)"
    args = arg_sets[1]
    out_name, dout, ref, shapes = setup(args)
    mine = student(args, dout, shapes)
    numeric = {}
    for q, i in grads.items():
        def f(a, i=i):
            return student((*args[:i], a, *args[i + 1:]), None, shapes, False)[out_name]
        numeric[q] = numerical_gradient_array(f, args[i].copy(), dout)
    _compare(log, mine, numeric, f"central differences of your {labels[0]}",
             lambda: _match(mine, ref, _plant(mistakes, *args, dout), formula), GRAD_TOL, True)

    log.step = "the reference (random inputs and edge values)"
    args = arg_sets[2]
    _, dout, ref, shapes = setup(args)
    mine = student(args, dout, shapes)
    _compare(log, mine, ref, "the reference",
             lambda: _match(mine, ref, _plant(mistakes, *args, dout), formula))


def _forward_only(fwd, label, args, name, shape):
    """A student's forward output alone (for the behaviour tests)."""
    return _student_pair(fwd, None, (label, ""), (), args, None, {name: shape}, {})[name]

# ---------------------------------------------------------------------------
# Functions without a backward: the student's outputs against the reference


def _student_outputs(fn, label, args, shapes, hints=None):
    """A student's function's outputs by name (one array, or a tuple of them), checked."""
    names = list(shapes)
    res = _call(label, fn, *_copies(args))
    if len(names) == 1 and not isinstance(res, (tuple, list)):
        res = (res,)
    if not (isinstance(res, (tuple, list)) and len(res) == len(names)):
        raise _Fail(f"your {label} must return {', '.join(names)}; it returned {_describe(res)}")
    return {q: _output(f"{label}'s {q}", a, shapes[q], (hints or {}).get(q))
            for q, a in zip(names, res)}


def _check_outputs(log, fn, label, reference, mistakes, arg_sets, hints, formula):
    """Steps 1 and 3 for a function without a backward: shapes, then the reference on each set."""
    log.step = "shapes and dtypes"
    ref = reference(*arg_sets[0])
    _student_outputs(fn, label, arg_sets[0], {q: a.shape for q, a in ref.items()}, hints)
    log.step = "the reference (random inputs and edge values)"
    for args in arg_sets[1:]:
        ref = reference(*args)
        mine = _student_outputs(fn, label, args, {q: a.shape for q, a in ref.items()}, hints)
        _compare(log, mine, ref, "the reference",
                 lambda mine=mine, ref=ref, args=args:
                 _match(mine, ref, _plant(mistakes, *args), formula))


