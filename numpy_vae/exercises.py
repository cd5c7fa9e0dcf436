"""Checks that grade a student's own VAE functions and name the likely mistake.

Each ``check_*`` takes the student's function(s), runs them on small float64
inputs and returns a ``Result``; it never raises on a wrong answer (a function
that raises, returns None or the wrong shape gives a failed result that says
so). The steps, in order; the first that fails ends the check:

1. shapes and dtypes: float64 arrays of the shapes in the check's docstring;
2. central differences: the student's backward against central differences
   of the student's *own* forward, in float64 (where a backward is asked);
3. the reference: the student's outputs against the library's own functions,
   the answer key, on random inputs and edge values (|logits| = 800,
   logvar = +-20, zeros);
4. behaviour, where a gradient check is blind: Monte-Carlo estimates against
   closed forms, a density's normalisation, EM's monotone likelihood, Adam's
   first step. A sampler that uses exp(logvar) as a standard deviation, with
   a backward to match, passes step 2; step 3 catches it against the answer
   key, and step 4 would without one (the samples' variance is exp(2 logvar)).

When a step fails, the student's outputs are compared with planted variants of
the reference, a catalogue of the usual mistakes (the missing 1/2, a sign, a
standard deviation used as a variance, ...): those that match are the
diagnosis. The check prints the numbers it compared (yours vs the reference,
the worst entry); a correct answer prints one line,
``passed: kl (worst relative error 3.1e-10)``.

Errors: step 2 uses ``gradcheck.rel_error`` per array (max |a - b| over the
larger max |.|). Steps 3 and 4 compare entry by entry,
``|yours - ref| / max(|yours|, |ref|, 1)``: relative for entries above 1 and
absolute below, so that an entry that should be 0 does not divide by 0.

For the EM step and the log-mean-exp the library has no function of its own;
their reference is written here (``_em_reference``, ``_log_mean_exp``), from
Bishop (2006), section 9.2.2, and Burda et al. (2015), the bound L_k.
"""

import dataclasses
import numbers

import numpy as np

from . import distributions as dist
from . import layers
from ._checks import check_choice
from .gradcheck import numerical_gradient, numerical_gradient_array, rel_error
from .optim import Adam
from .vae import VAE

GRAD_TOL = 1e-6  # step 2: the student's backward against central differences
REF_TOL = 1e-7  # step 3: the student's outputs against the reference
MATCH_TOL = 1e-6  # a planted mistake matches when its outputs agree with the student's this well
N_SIGMA = 5.0  # Monte-Carlo comparisons: within this many standard errors
INF = float("inf")
UPSTREAM_IGNORED = "the upstream gradient ignored (taken as all ones): multiply by it"


@dataclasses.dataclass(frozen=True)
class Result:
    """What a check found; ``bool(result)`` is ``result.passed``, so ``assert check_kl(...)`` works.

    ``diagnosis`` names the likely mistake (None when passed); ``worst_error`` is
    the largest error of the comparisons made, or inf when the failing step was
    no comparison with numbers (a wrong shape, an exception, a behaviour test);
    ``report`` holds the lines the check printed.
    """

    exercise: str
    passed: bool
    diagnosis: str | None
    worst_error: float
    report: str

    def __bool__(self):
        return self.passed


# ---------------------------------------------------------------------------
# The machinery shared by every check


class _Fail(Exception):
    """A failed step: the diagnosis and the error that failed it."""

    def __init__(self, diagnosis, error=INF):
        super().__init__(diagnosis)
        self.diagnosis, self.error = diagnosis, error


class _Log:
    """One check's report: the step it is at, the lines to print, the worst error so far."""

    def __init__(self):
        self.step, self.lines, self.worst = "", [], 0.0


def _run(exercise, body, verbose):
    """Run ``body(log)``; turn a failure (or anything the student's code broke) into a Result."""
    log = _Log()
    try:
        with np.errstate(all="ignore"):  # a student's overflow is a finding, not a warning
            body(log)
    except _Fail as fail:
        diagnosis, error = fail.diagnosis, fail.error
    except Exception as e:  # what a student's function returned broke the check's arithmetic
        diagnosis = (f"the check could not use what your function returned "
                     f"({type(e).__name__}: {e})")
        error = INF
    else:
        line = f"passed: {exercise} (worst relative error {log.worst:.1e})"
        result = Result(exercise, True, None, log.worst, line)
        if verbose:
            print(line)
        return result
    lines = [f"FAILED: {exercise}, at step '{log.step}'", *log.lines,
             f"  likely mistake: {diagnosis}"]
    result = Result(exercise, False, diagnosis, error, "\n".join(lines))
    if verbose:
        print(result.report)
    return result


def _hint(e):
    """A likely cause for an exception that a student's code raised."""
    text = str(e)
    if isinstance(e, ValueError) and "broadcast" in text:
        return (" (a wrong broadcast: an array of shape (B,) met one of (B, Z), or a per-row "
                "array lacks its sample axis; add the missing axis with [:, None])")
    if isinstance(e, ValueError) and ("matmul" in text or "aligned" in text):
        return " (a matrix product of mismatched shapes: check which factor needs a transpose)"
    return ""


def _call(what, fn, *args):
    """``fn(*args)``, a student's function; if it raises, the check fails naming the exception."""
    try:
        return fn(*args)
    except _Fail:  # a check of the student's output, made inside fn
        raise
    except Exception as e:
        raise _Fail(f"your {what} raised {type(e).__name__}: {e}{_hint(e)}") from None


def _copies(args):
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)


def _describe(a):
    if isinstance(a, np.ndarray):
        return f"an array of shape {a.shape} and dtype {a.dtype}"
    if isinstance(a, (tuple, list)):
        return f"a {type(a).__name__} of {len(a)}"
    name = type(a).__name__
    return "None" if a is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _output(label, a, shape, hints=None):
    """``a`` if it is a float64 array of ``shape`` (a number for shape ()), else a failure."""
    if shape == () and isinstance(a, numbers.Real) and not isinstance(a, bool):
        a = np.asarray(a)
    if not isinstance(a, np.ndarray):
        more = " (a missing return statement?)" if a is None else ""
        raise _Fail(f"{label} must be a NumPy array of shape {shape}, got {_describe(a)}{more}")
    if a.dtype != np.float64:
        raise _Fail(f"{label} has dtype {a.dtype}: for float64 inputs it must be float64 "
                    f"(keep the input's dtype)")
    if a.shape != shape:
        hint = (hints or {}).get(a.shape)
        raise _Fail(f"{label} has shape {a.shape}, expected {shape}"
                    + (f": {hint}" if hint else ""))
    return a


def _entry_errors(mine, ref, nan_equal=False):
    """``|mine - ref| / max(|mine|, |ref|, 1)`` entry by entry; inf where only one is finite."""
    mine, ref = np.asarray(mine, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    equal = mine == ref  # also equal infinities
    if nan_equal:
        equal |= np.isnan(mine) & np.isnan(ref)
    finite = np.isfinite(mine) & np.isfinite(ref)
    scale = np.maximum(np.maximum(np.abs(mine), np.abs(ref)), 1.0)
    err = np.where(finite, np.abs(mine - ref) / np.where(finite, scale, 1.0), INF)
    return np.where(equal, 0.0, err)


def _error(mine, ref):
    err = _entry_errors(mine, ref)
    return float(err.max()) if err.size else 0.0


def _same(mine, ref):
    """Whether two outputs agree (NaN where the other has NaN counts as agreeing)."""
    mine, ref = np.asarray(mine), np.asarray(ref)
    if mine.shape != ref.shape:
        return False
    err = _entry_errors(mine, ref, nan_equal=True)
    return not err.size or float(err.max()) <= MATCH_TOL


def _first(a, n=4):
    flat = np.ravel(np.asarray(a, dtype=np.float64))
    return np.array2string(flat[:n], precision=5) + (" ..." if flat.size > n else "")


def _show(q, mine, ref, against):
    """Two report lines: the first entries of both, then the worst entry."""
    err = _entry_errors(mine, ref)
    i = np.unravel_index(int(np.argmax(err)), err.shape)
    at = f"{q}[{', '.join(map(str, i))}]" if i else q
    return [f"  {q}: yours {_first(mine)} vs {against} {_first(ref)}",
            f"  worst entry {at}: yours {float(np.asarray(mine)[i]):.6g} vs "
            f"{float(np.asarray(ref)[i]):.6g} (error {float(err[i]):.1e})"]


def _plant(mistakes, *args):
    """Each planted mistake's outputs on ``args``; a mistake that cannot run on them is skipped."""
    planted = []
    for text, fn in mistakes:
        try:
            planted.append((text, fn(*args)))
        except Exception:
            continue
    return planted


def _match(mine, ref, planted, formula):
    """The diagnosis: the planted mistakes that reproduce the student's wrong outputs.

    A mistake that explains only part of what another explains is left out, and
    so is one that would also have changed an output the student got right,
    when mistakes that change nothing right explain as much.
    """
    wrong = [q for q in ref if q in mine and _error(mine[q], ref[q]) > REF_TOL]
    found = {}  # text -> (the wrong outputs it explains, whether it changes a right one)
    for text, out in planted:
        qs = {q for q in wrong if q in out and _same(mine[q], out[q]) and not _same(ref[q], out[q])}
        if qs:
            clash = any(q in out and q in mine and q not in wrong and not _same(ref[q], out[q])
                        for q in ref)
            old_qs, old_clash = found.get(text, (set(), True))
            found[text] = (qs | old_qs, clash and old_clash)
    explained = set().union(*(qs for qs, _ in found.values()))
    clean = {t: qs for t, (qs, clash) in found.items() if not clash}
    keep = clean if clean and set().union(*clean.values()) == explained else {
        t: qs for t, (qs, _) in found.items()}
    parts = [f"{t} (in {', '.join(q for q in wrong if q in qs)})" for t, qs in keep.items()
             if not any(qs < other for other in keep.values())]
    unmatched = [q for q in wrong if q not in explained]
    if unmatched:
        parts.append(f"{', '.join(unmatched)} differ(s) from the reference and match(es) no "
                     f"mistake in the catalogue: compare with {formula}")
    return "; ".join(parts) if parts else f"no known mistake matches: compare with {formula}"


def _compare(log, mine, target, against, diagnose, tol=REF_TOL, grad=False):
    """Compare dicts of arrays; record the worst error; on failure print the numbers and raise."""
    errors = {}
    for q in target:
        if grad:  # gradcheck's measure, scaled by the largest entry
            ok = np.all(np.isfinite(mine[q]))
            errors[q] = rel_error(mine[q], target[q]) if ok else INF
        else:
            errors[q] = _error(mine[q], target[q])
    worst = max(errors.values(), default=0.0)
    bad = [q for q in target if not errors[q] <= tol]
    if not bad:
        log.worst = max(log.worst, worst)
        return
    for q in bad:
        log.lines += _show(q, mine[q], target[q], against)
    raise _Fail(diagnose(), worst)


def _behaviour(log, ok, lines, diagnosis):
    """Step 4: fail with the numbers in ``lines`` unless ``ok``."""
    if not ok:
        log.lines += [f"  {line}" for line in lines]
        raise _Fail(diagnosis)


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


def _trapezoid(f, x):
    """The trapezoid rule along the last axis (``np.trapezoid`` is NumPy >= 2 only)."""
    return np.sum((f[..., 1:] + f[..., :-1]) * np.diff(x, axis=-1), axis=-1) / 2


# ---------------------------------------------------------------------------
# 1. KL(q(z|x) || P(z)) for a diagonal Gaussian q


_kl_reference = _library_pair(dist.kl_standard_normal, dist.kl_standard_normal_backward,
                              ("kl", "dmu", "dlogvar"))

_KL_MISTAKES = [
    ("the missing 1/2: sum_j (exp(v) - (1 + v) + mu^2) is twice the KL (a beta = 2 VAE)",
     lambda mu, v, d: _scaled(_kl_reference(mu, v, d), 2.0)),
    ("a sign: -KL (the ELBO's term) returned as the KL, which is >= 0",
     lambda mu, v, d: _scaled(_kl_reference(mu, v, d), -1.0)),
    ("a sign: +(1 + v) for -(1 + v)",
     lambda mu, v, d: {"kl": 0.5 * (np.exp(v) + 1 + v + mu * mu).sum(axis=1),
                       "dlogvar": 0.5 * d[:, None] * (np.exp(v) + 1)}),
    ("a standard deviation used as a variance: exp(v/2) for exp(v)",
     lambda mu, v, d: {"kl": 0.5 * (np.exp(v / 2) - 1 - v + mu * mu).sum(axis=1),
                       "dlogvar": 0.5 * d[:, None] * (0.5 * np.exp(v / 2) - 1)}),
    ("exp(v) for exp(v) - 1 in dKL/dlogvar",
     lambda mu, v, d: {"dlogvar": 0.5 * d[:, None] * np.exp(v)}),
    ("the mean over the latents for the sum",
     lambda mu, v, d: _scaled(_kl_reference(mu, v, d), 1.0 / mu.shape[1])),
    ("the 1/2 left out of dKL/dmu: 2 mu for mu",
     lambda mu, v, d: {"dmu": 2 * d[:, None] * mu}),
]


def _mc_kl(z, mu, logvar):
    """Mean and standard error over draws of ``log q(z) - log P(z)``.

    Shapes: z (n, B, Z), mu, logvar (B, Z) -> (B,), (B,).
    """
    n, B, Z = z.shape
    flat = z.reshape(n * B, Z)  # row i B + b is draw i for example b
    log_q, _ = dist.gaussian_log_likelihood(flat, np.tile(mu, (n, 1)), np.tile(logvar, (n, 1)))
    log_ratio = (log_q - dist.standard_normal_log_density(flat)).reshape(n, B)  # (n, B)
    return log_ratio.mean(axis=0), log_ratio.std(axis=0) / np.sqrt(n)


def check_kl(kl_fn, kl_backward_fn, verbose=True):
    """Grade ``KL(N(mu, diag(exp(logvar))) || N(0, I))`` and its gradient.

    Lecture: "ELBO / Minimize the first term KL[q(z|x) || P(z)]". With v = logvar,

        kl_fn(mu, logvar) -> (kl, cache),    kl = 1/2 sum_j (exp(v_j) - (1 + v_j) + mu_j^2)
        kl_backward_fn(dkl, cache) -> (dmu, dlogvar),
                                              dmu = dkl mu,  dlogvar = dkl (exp(v) - 1) / 2

    (dkl broadcast over the latents). Answer key: ``distributions.kl_standard_normal``
    and its backward. Behaviour: the Monte-Carlo KL, the mean of
    ``log q(z) - log P(z)`` over 20000 draws ``z ~ q``, against the student's KL.

    Mistakes it names: the missing 1/2; a sign (of the whole KL, or of 1 + v);
    a standard deviation used as a variance (exp(v/2) for exp(v)); exp(v) for
    exp(v) - 1; the mean over the latents for the sum; 2 mu for mu; a wrong
    axis (summed over the batch); the upstream gradient ignored.

    Shapes: mu, logvar (B, Z) -> kl (B,); dkl (B,) -> dmu, dlogvar (B, Z).
    """
    def body(log):
        rng = np.random.default_rng(0)
        B, Z = 4, 3
        small = (rng.normal(size=(B, Z)), rng.normal(size=(B, Z)))
        moderate = (rng.normal(size=(5, Z)), 0.7 * rng.normal(size=(5, Z)))
        zero, r = np.zeros((1, Z)), rng.normal(size=(4, Z))
        edge = (np.vstack([r[:2], zero, r[2:], [[3.0, -1.0, 0.5]], [[30.0, -30.0, 0.0]]]),
                np.vstack([r[1:3], zero, np.full((1, Z), 20.0), np.full((1, Z), -20.0),
                           [[20.0, -20.0, 0.0]], zero]))
        hints = {"kl": {(B, Z): "not summed over the latents: the KL is one number per example",
                        (): "summed over the batch too: the KL is one number per example",
                        (1,): "summed over the batch too: the KL is one number per example",
                        (B, 1): "keepdims left on: the KL has shape (B,)",
                        (Z,): "a wrong axis: summed over the batch (axis 0), not the latents"}}
        _check_pair(log, kl_fn, kl_backward_fn, ("kl_fn", "kl_backward_fn"), ("mu", "logvar"),
                    _kl_reference, {"dmu": 0, "dlogvar": 1}, _KL_MISTAKES,
                    (small, moderate, edge), hints,
                    "1/2 sum_j (exp(v_j) - (1 + v_j) + mu_j^2), dmu = mu, "
                    "dlogvar = (exp(v) - 1) / 2", rng)

        log.step = "behaviour (Monte-Carlo KL of draws from q)"
        mu = np.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]])
        logvar = np.array([[0.3, -1.2, 1.0], [-0.5, 0.8, 0.0]])
        kl = _forward_only(kl_fn, "kl_fn", (mu, logvar), "kl", (2,))
        z = mu + dist.std_from_logvar(logvar) * rng.standard_normal((20000, *mu.shape))
        mc, se = _mc_kl(z, mu, logvar)
        _behaviour(log, np.all(np.abs(kl - mc) <= N_SIGMA * se),
                   [f"Monte-Carlo E_q[log q(z) - log P(z)]: {_first(mc)} +- {_first(se)}",
                    f"your KL: {_first(kl)}"],
                   "your KL is not E_q[log q(z) - log P(z)]: recheck the closed form")
    return _run("kl", body, verbose)


# ---------------------------------------------------------------------------
# 2. The reparameterization trick


_reparam_reference = _library_pair(dist.reparameterize, dist.reparameterize_backward,
                                   ("z", "dmu", "dlogvar"))

STD_AS_VARIANCE = ("a standard deviation used as a variance: exp(v) for exp(v/2), so z has "
                   "variance exp(2 v); forward and backward agree (the bug of numpy-ml's VAE), "
                   "only the samples' variance shows it")

_REPARAM_MISTAKES = [
    (STD_AS_VARIANCE,
     lambda mu, v, e, d: {"z": mu + np.exp(v) * e, "dlogvar": d * np.exp(v) * e}),
    ("the 1/2 of the chain rule left out: dz/dlogvar = exp(v/2) eps / 2, not exp(v/2) eps",
     lambda mu, v, e, d: {"dlogvar": d * np.exp(v / 2) * e}),
    ("eps left out of dz/dlogvar: exp(v/2) / 2 for exp(v/2) eps / 2",
     lambda mu, v, e, d: {"dlogvar": 0.5 * d * np.exp(v / 2)}),
    ("a sign: z = mu - exp(v/2) eps (a valid sample too, but not the one this eps gives)",
     lambda mu, v, e, d: {"z": mu - np.exp(v / 2) * e, "dlogvar": -0.5 * d * np.exp(v / 2) * e}),
    ("logvar used as the standard deviation: z = mu + v eps",
     lambda mu, v, e, d: {"z": mu + v * e, "dlogvar": d * e}),
]


def check_reparameterize(reparameterize_fn, reparameterize_backward_fn, verbose=True):
    """Grade the reparameterization trick and its gradient.

    Lecture: "Maximize the second term": draw z ~ q(z|x) = N(mu, diag(exp(v))) as

        reparameterize_fn(mu, logvar, eps) -> (z, cache),   z = mu + exp(v / 2) * eps
        reparameterize_backward_fn(dz, cache) -> (dmu, dlogvar),
                                        dmu = dz,  dlogvar = dz * exp(v / 2) * eps / 2

    Answer key: ``distributions.reparameterize`` and its backward. Behaviour
    (blind to gradient checks): with 20000 draws of eps, the samples' mean and
    variance against mu and exp(logvar), and their Monte-Carlo KL
    ``E[log q(z) - log P(z)]`` against the closed form.

    Mistakes it names: a standard deviation used as a variance (exp(v) for
    exp(v/2)); the chain rule's 1/2 left out; eps left out of dz/dlogvar; a
    sign (mu - std eps); logvar used as the standard deviation; the upstream
    gradient ignored.

    Shapes: mu, logvar, eps (B, Z) -> z (B, Z); dz (B, Z) -> dmu, dlogvar (B, Z).
    """
    def body(log):
        rng = np.random.default_rng(1)
        B, Z = 4, 3
        small = tuple(rng.normal(size=(B, Z)) for _ in range(3))
        moderate = (rng.normal(size=(2, Z)), 0.7 * rng.normal(size=(2, Z)),
                    rng.normal(size=(2, Z)))
        zero, r = np.zeros((1, Z)), rng.normal(size=(3, Z))
        edge = (np.vstack([r[:1], zero, r[1:], [[30.0, -30.0, 0.0]], zero]),
                np.vstack([r[1:], zero, np.full((1, Z), 20.0), np.full((1, Z), -20.0),
                           [[20.0, -20.0, 0.0]]]),
                np.vstack([rng.normal(size=(4, Z)), zero, rng.normal(size=(1, Z))]))
        _check_pair(log, reparameterize_fn, reparameterize_backward_fn,
                    ("reparameterize_fn", "reparameterize_backward_fn"), ("mu", "logvar", "eps"),
                    _reparam_reference, {"dmu": 0, "dlogvar": 1}, _REPARAM_MISTAKES,
                    (small, moderate, edge), {},
                    "z = mu + exp(v/2) eps, dmu = dz, dlogvar = dz exp(v/2) eps / 2", rng)

        log.step = "behaviour (sample mean, variance and Monte-Carlo KL)"
        mu = np.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]])
        logvar = np.array([[0.3, -1.2, 1.0], [-0.5, 0.8, 1.5]])
        n, var = 20000, np.exp(logvar)
        eps = rng.standard_normal((n, *mu.shape))
        z = _forward_only(reparameterize_fn, "reparameterize_fn",
                          (np.tile(mu, (n, 1)), np.tile(logvar, (n, 1)), eps.reshape(-1, Z)),
                          "z", (2 * n, Z)).reshape(n, *mu.shape)
        mean, sample_var = z.mean(axis=0), z.var(axis=0, ddof=1)
        mc, se = _mc_kl(z, mu, logvar)
        kl, _ = dist.kl_standard_normal(mu, logvar)
        ok = (np.all(np.abs(mean - mu) <= N_SIGMA * np.sqrt(var / n))
              and np.all(np.abs(sample_var - var) <= N_SIGMA * var * np.sqrt(2 / (n - 1)))
              and np.all(np.abs(mc - kl) <= N_SIGMA * se))
        ratio = sample_var / var
        _behaviour(log, ok,
                   [f"sample mean {_first(mean)} vs mu {_first(mu)}",
                    f"sample variance {_first(sample_var)} vs exp(logvar) {_first(var)}",
                    f"Monte-Carlo KL of your samples {_first(mc)} vs the closed form {_first(kl)}"],
                   STD_AS_VARIANCE if np.allclose(ratio, var, rtol=0.1) else
                   "your samples are not draws from N(mu, exp(logvar))")
    return _run("reparameterize", body, verbose)


# ---------------------------------------------------------------------------
# 3. log P(x|z): Bernoulli from logits


_bernoulli_reference = _library_pair(dist.bernoulli_log_likelihood,
                                     dist.bernoulli_log_likelihood_backward, ("logp", "dlogits"))
_sp, _sg = layers.softplus, layers.sigmoid

_BERNOULLI_MISTAKES = [
    ("softplus of the wrong argument: softplus(-l) for softplus(l)",
     lambda x, l, d: {"logp": (x * l - _sp(-l)).sum(axis=1),
                      "dlogits": d[:, None] * (x + _sg(-l))}),
    ("sigmoid of the wrong argument: x - sigmoid(-l) for x - sigmoid(l)",
     lambda x, l, d: {"dlogits": d[:, None] * (x - _sg(-l))}),
    ("a sign: the cross-entropy (minus the log-likelihood)",
     lambda x, l, d: _scaled(_bernoulli_reference(x, l, d), -1.0)),
    ("a sign in the gradient: sigmoid(l) - x for x - sigmoid(l)",
     lambda x, l, d: {"dlogits": d[:, None] * (_sg(l) - x)}),
    ("log(1 + exp(l)) computed as written: it overflows for large logits; use "
     "max(l, 0) + log1p(exp(-|l|)) (and a sigmoid that never forms exp of a large number)",
     lambda x, l, d: {"logp": (x * l - np.log(1 + np.exp(l))).sum(axis=1),
                      "dlogits": d[:, None] * (x - np.exp(l) / (1 + np.exp(l)))}),
    ("probabilities first, then their logs: log sigmoid(l) and log(1 - sigmoid(l)) give -inf "
     "(or lose digits) for large |l|; use x l - softplus(l)",
     lambda x, l, d: {"logp": (x * np.log(_sg(l)) + (1 - x) * np.log(1 - _sg(l))).sum(axis=1)}),
    ("the mean over the pixels for the sum",
     lambda x, l, d: _scaled(_bernoulli_reference(x, l, d), 1.0 / x.shape[1])),
]


def _per_example_hints(out, B, D, what):
    return {out: {(B, D): f"not summed over the {what}: one number per example",
                  (): "summed over the batch too: one number per example",
                  (B, 1): "keepdims left on: the shape is (B,)",
                  (D,): f"a wrong axis: summed over the batch (axis 0), not the {what}"}}


def check_bernoulli(log_likelihood_fn, backward_fn, verbose=True):
    """Grade the Bernoulli log-likelihood from logits and its gradient.

    Lecture: "Maximize the second term", binary pixels. With l = logits,

        log_likelihood_fn(x, logits) -> (logp, cache),
                        logp = sum_d [x_d l_d - softplus(l_d)] = log Bern(x; sigmoid(l))
        backward_fn(dlogp, cache) -> dlogits,   dlogits = dlogp (x - sigmoid(l))

    stable for any logits (the check uses |l| = 800). Answer key:
    ``distributions.bernoulli_log_likelihood`` and its backward. Behaviour:
    ``P(x=0) + P(x=1) = 1`` for every logit.

    Mistakes it names: softplus or sigmoid of the wrong argument (of -l); a
    sign (the cross-entropy, or sigmoid(l) - x); log(1 + exp(l)) as written
    (overflow); probabilities first, then logs; the mean over pixels for the
    sum; a wrong axis; the upstream gradient ignored.

    Shapes: x, logits (B, D) -> logp (B,); dlogp (B,) -> dlogits (B, D).
    """
    def body(log):
        rng = np.random.default_rng(2)
        B, D = 4, 5
        small = (rng.integers(0, 2, (B, D)).astype(np.float64), rng.normal(size=(B, D)))
        moderate = (rng.uniform(size=(3, D)), 2 * rng.normal(size=(3, D)))
        edge = (np.vstack([[1, 1, 0, 0, 0.5], [1, 0, 0, 1, 1], [0, 1, 1, 0, 0.5],
                           rng.integers(0, 2, (2, D))]).astype(np.float64),
                np.vstack([[800, -800, 800, -800, 0], [30, -30, 30, -30, 0],
                           [-800, 800, 0, 0, 800], 5 * rng.normal(size=(2, D))]).astype(float))
        _check_pair(log, log_likelihood_fn, backward_fn, ("log_likelihood_fn", "backward_fn"),
                    ("x", "logits"), _bernoulli_reference, {"dlogits": 1}, _BERNOULLI_MISTAKES,
                    (small, moderate, edge), _per_example_hints("logp", B, D, "pixels"),
                    "sum_d [x_d l_d - softplus(l_d)] and dlogits = x - sigmoid(l)", rng)

        log.step = "behaviour (P(x=0) + P(x=1) = 1)"
        logits = np.array([[-800.0], [-30.0], [-2.0], [0.0], [0.4], [3.0], [30.0], [800.0]])
        one = _forward_only(log_likelihood_fn, "log_likelihood_fn",
                            (np.ones_like(logits), logits), "logp", (8,))
        zero = _forward_only(log_likelihood_fn, "log_likelihood_fn",
                             (np.zeros_like(logits), logits), "logp", (8,))
        total = np.exp(one) + np.exp(zero)
        _behaviour(log, np.all(np.abs(total - 1) <= 1e-9),
                   [f"logits {_first(logits, 8)}", f"P(x=0) + P(x=1): {_first(total, 8)}"],
                   "your likelihood is not a distribution over x in {0, 1}: recheck softplus")
    return _run("bernoulli", body, verbose)


# ---------------------------------------------------------------------------
# 4. log P(x|z): Gaussian with a learned mean and log-variance


_gaussian_reference = _library_pair(dist.gaussian_log_likelihood,
                                    dist.gaussian_log_likelihood_backward,
                                    ("logp", "dmean", "dlogvar"))


def _gauss(x, m, s, d, c):
    """A planted Gaussian whose variance is ``exp(c s)`` (c = 1 when right), with its gradients."""
    diff, v = x - m, np.exp(c * s)
    return {"logp": -0.5 * (dist.LOG_2PI + s + diff * diff / v).sum(axis=1),
            "dmean": d[:, None] * diff / v,
            "dlogvar": 0.5 * d[:, None] * (c * diff * diff / v - 1)}


_GAUSSIAN_MISTAKES = [
    ("the missing 1/2: -sum [log 2 pi + s + (x - m)^2 exp(-s)] is twice the log-density",
     lambda x, m, s, d: _scaled(_gaussian_reference(x, m, s, d), 2.0)),
    ("a standard deviation used as a variance: (x - m)^2 / exp(s/2) for (x - m)^2 / exp(s)",
     lambda x, m, s, d: _gauss(x, m, s, d, 0.5)),
    ("the variance multiplied, not divided: (x - m)^2 exp(s)",
     lambda x, m, s, d: _gauss(x, m, s, d, -1.0)),
    ("log(2 pi) left out: not a density any more (it does not integrate to 1)",
     lambda x, m, s, d: {"logp": _gaussian_reference(x, m, s, d)["logp"]
                         + 0.5 * x.shape[1] * dist.LOG_2PI}),
    ("a sign in d/dmean: (m - x) exp(-s) for (x - m) exp(-s)",
     lambda x, m, s, d: {"dmean": -_gaussian_reference(x, m, s, d)["dmean"]}),
    ("the -1 left out of d/dlogvar: (x - m)^2 exp(-s) / 2",
     lambda x, m, s, d: {"dlogvar": 0.5 * d[:, None] * (x - m) ** 2 * np.exp(-s)}),
    ("the log-variance term -s/2 left out of log N",
     lambda x, m, s, d: {"logp": -0.5 * (dist.LOG_2PI + (x - m) ** 2 * np.exp(-s)).sum(axis=1)}),
    ("the mean over the pixels for the sum",
     lambda x, m, s, d: _scaled(_gaussian_reference(x, m, s, d), 1.0 / x.shape[1])),
]


def check_gaussian(log_likelihood_fn, backward_fn, verbose=True):
    """Grade the diagonal Gaussian log-likelihood and its gradient.

    Lecture: "Maximize the second term", P(x|z) = N(x; mu(z), sigma(z)). With
    mean m and log-variance s,

        log_likelihood_fn(x, mean, logvar) -> (logp, cache),
            logp = -1/2 sum_d [log(2 pi) + s_d + (x_d - m_d)^2 exp(-s_d)]
        backward_fn(dlogp, cache) -> (dmean, dlogvar),
            dmean = dlogp (x - m) exp(-s),  dlogvar = dlogp ((x - m)^2 exp(-s) - 1) / 2

    Answer key: ``distributions.gaussian_log_likelihood`` and its backward.
    Behaviour: for one pixel, the density integrates to 1 over x and the
    score has mean zero, ``int P(x) d log P(x) / d(m, s) dx = 0``.

    Mistakes it names: the missing 1/2; a standard deviation used as a
    variance; the variance multiplied instead of divided; log(2 pi) left out;
    a sign in d/dmean; the -1 left out of d/dlogvar; the -s/2 left out; the
    mean over pixels for the sum; a wrong axis; the upstream gradient ignored.

    Shapes: x, mean, logvar (B, D) -> logp (B,); dlogp (B,) -> dmean, dlogvar (B, D).
    """
    def body(log):
        rng = np.random.default_rng(3)
        B, D = 4, 5
        small = tuple(rng.normal(size=(B, D)) for _ in range(3))
        moderate = tuple(rng.normal(size=(3, D)) for _ in range(3))
        m = rng.normal(size=(6, D))
        x = m + rng.normal(size=(6, D))
        x[2] = m[2]  # x exactly at the mean
        x[5] = m[5] + 50.0
        s = np.vstack([np.full((1, D), 20.0), np.full((1, D), -20.0), np.zeros((1, D)),
                       [[20, -20, 0, 5, -5]], rng.normal(size=(2, D))]).astype(float)
        _check_pair(log, log_likelihood_fn, backward_fn, ("log_likelihood_fn", "backward_fn"),
                    ("x", "mean", "logvar"), _gaussian_reference, {"dmean": 1, "dlogvar": 2},
                    _GAUSSIAN_MISTAKES, (small, moderate, (x, m, s)),
                    _per_example_hints("logp", B, D, "pixels"),
                    "-1/2 sum_d [log 2pi + s_d + (x_d - m_d)^2 exp(-s_d)] and its gradient", rng)

        log.step = "behaviour (the density integrates to 1, the score has mean 0)"
        mean, logvar = np.array([0.3, -1.0, 2.0]), np.array([-2.0, 0.0, 1.5])
        t = np.linspace(-12, 12, 4801)
        grid = mean[:, None] + np.exp(logvar / 2)[:, None] * t  # (3, G)
        G = t.size
        args = (grid.reshape(-1, 1), np.repeat(mean, G)[:, None], np.repeat(logvar, G)[:, None])
        shapes = {"logp": (3 * G,), "dmean": (3 * G, 1), "dlogvar": (3 * G, 1)}
        out = _student_pair(log_likelihood_fn, backward_fn, ("log_likelihood_fn", "backward_fn"),
                            (), args, np.ones(3 * G), shapes, {})
        p = np.exp(out["logp"]).reshape(3, G)
        mass = _trapezoid(p, grid)
        score_m = _trapezoid(p * out["dmean"].reshape(3, G), grid)
        score_s = _trapezoid(p * out["dlogvar"].reshape(3, G), grid)
        ok = (np.all(np.abs(mass - 1) <= 1e-6) and np.all(np.abs(score_m) <= 1e-6)
              and np.all(np.abs(score_s) <= 1e-6))
        _behaviour(log, ok,
                   [f"int P(x) dx: {_first(mass)} (should be 1)",
                    f"int P(x) dlogp/dmean dx: {_first(score_m)}, "
                    f"int P(x) dlogp/dlogvar dx: {_first(score_s)} (should be 0)"],
                   "your log-likelihood is not the log of a normalised density, or its "
                   "gradient is not its derivative")
    return _run("gaussian", body, verbose)


# ---------------------------------------------------------------------------
# 5. The decoder's variance floor


_floor_reference = _library_pair(dist.bounded_logvar, dist.bounded_logvar_backward,
                                 ("logvar", "draw"))

FLOOR_OVERFLOW = "log(1 + exp(raw)) computed as written: it overflows for large raw"

_FLOOR_MISTAKES = [
    ("the floor added after the log: log(softplus(raw)) + min_variance",
     lambda r, mv, d: {"logvar": np.log(_sp(r)) + mv, "draw": d * _sg(r) / _sp(r)}),
    ("the floor left out: log(softplus(raw)), whose variance can still reach 0",
     lambda r, mv, d: {"logvar": np.log(_sp(r)), "draw": d * _sg(r) / _sp(r)}),
    ("softplus of the wrong argument: softplus(-raw) for softplus(raw)",
     lambda r, mv, d: {"logvar": np.log(mv + _sp(-r)), "draw": -d * _sg(-r) / (mv + _sp(-r))}),
    ("the chain rule through the log left out: sigmoid(raw), not "
     "sigmoid(raw) / (min_variance + softplus(raw))",
     lambda r, mv, d: {"draw": d * _sg(r)}),
    ("sigmoid of the wrong argument: sigmoid(-raw) for sigmoid(raw)",
     lambda r, mv, d: {"draw": d * _sg(-r) / (mv + _sp(r))}),
    (FLOOR_OVERFLOW,  # with either of the two sigmoids a student might write
     lambda r, mv, d: {"logvar": np.log(mv + np.log(1 + np.exp(r))),
                       "draw": d * np.exp(r) / (1 + np.exp(r)) / (mv + np.log(1 + np.exp(r)))}),
    (FLOOR_OVERFLOW,
     lambda r, mv, d: {"draw": d / (1 + np.exp(-r)) / (mv + np.log(1 + np.exp(r)))}),
    ("exp for softplus: log(min_variance + exp(raw))",
     lambda r, mv, d: {"logvar": np.log(mv + np.exp(r)), "draw": d * np.exp(r) / (mv + np.exp(r))}),
]


def check_variance_floor(floor_fn, floor_backward_fn, verbose=True):
    """Grade the decoder's bounded log-variance and its gradient.

    Lecture: "Maximize the second term" (the project's variance floor) and
    "Problem in VAE" (a learned variance collapsing on constant pixels):

        floor_fn(raw, min_variance) -> (logvar, cache),
                                  logvar = log(min_variance + softplus(raw))
        floor_backward_fn(dlogvar, cache) -> draw,
                                  draw = dlogvar sigmoid(raw) / (min_variance + softplus(raw))

    stable for any raw (the check uses |raw| = 800). Answer key:
    ``distributions.bounded_logvar`` and its backward. Behaviour: the variance
    tends to min_variance as raw -> -inf, to raw as raw -> +inf, and rises
    with raw.

    Mistakes it names: the floor added after the log; the floor left out;
    softplus or sigmoid of the wrong argument (of -raw); the chain rule through
    the log left out; log(1 + exp(raw)) as written (overflow); exp for
    softplus; the upstream gradient ignored.

    Shapes: raw (B, D), min_variance a float > 0 -> logvar (B, D); dlogvar (B, D) -> draw (B, D).
    """
    def body(log):
        rng = np.random.default_rng(4)
        small = (rng.normal(size=(4, 5)), 0.01)
        moderate = (2 * rng.normal(size=(3, 4)), 0.05)
        raw = np.vstack([[800, -800, 30, -30, 0], [-50, 50, 5, -5, 0.1],
                         4 * rng.normal(size=(3, 5))]).astype(float)
        _check_pair(log, floor_fn, floor_backward_fn, ("floor_fn", "floor_backward_fn"),
                    ("raw", "min_variance"), _floor_reference, {"draw": 0}, _FLOOR_MISTAKES,
                    (small, moderate, (raw, 1e-4)), {},
                    "log(min_variance + softplus(raw)) and sigmoid(raw) / (min_variance + "
                    "softplus(raw))", rng)

        log.step = "behaviour (the variance's limits)"
        mv, raw = 1e-3, np.array([[-700.0, -50.0, -5.0, 0.0, 5.0, 50.0, 700.0]])
        var = np.exp(_forward_only(floor_fn, "floor_fn", (raw, mv), "logvar", raw.shape))[0]
        ok = (abs(var[0] - mv) <= 1e-9 * mv and abs(var[-1] - (700 + mv)) <= 1e-9 * 700
              and np.all(np.diff(var) >= 0) and np.all(var >= mv * (1 - 1e-12)))
        _behaviour(log, ok,
                   [f"raw {_first(raw, 7)}",
                    f"your variance {_first(var, 7)} (min_variance = {mv})"],
                   "your variance does not run from min_variance (raw -> -inf) up to about "
                   "raw (raw -> +inf)")
    return _run("variance_floor", body, verbose)


# ---------------------------------------------------------------------------
# 6. The dense (affine) layer and the activations


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


# ---------------------------------------------------------------------------
# 8. One Adam step


def _adam_outputs(p, p_new, m, v, lr):
    """What is compared: the step in units of lr (so a tiny step is not lost next to p), m, v."""
    return {"step / lr": (p_new - p) / lr, "m": m, "v": v}


def _adam_reference(p, g, m, v, t, lr, b1, b2, eps):
    """Step t of ``optim.Adam``, started from the moments after step t - 1."""
    opt = Adam(lr, (b1, b2), eps)
    opt.load_state_dict({"lr": lr, "betas": (b1, b2), "eps": eps, "t": t - 1,
                         "m": {"p": m}, "v": {"p": v}})
    params = {"p": p.copy()}
    opt.step(params, {"p": g})
    return _adam_outputs(p, params["p"], opt.m["p"], opt.v["p"], lr)


def _adam_planted(p, g, m, v, t, lr, b1, b2, eps, *, t_hat=None, correct=True, sign=-1.0,
                  eps_inside=False, g2=None, swapped=False):
    """Adam by hand with one step changed (planted mistakes)."""
    g2 = g * g if g2 is None else g2
    if swapped:  # the weights b and 1 - b exchanged
        m, v = (1 - b1) * m + b1 * g, (1 - b2) * v + b2 * g2
    else:
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g2
    th = t if t_hat is None else t_hat
    m_hat, v_hat = (m / (1 - b1**th), v / (1 - b2**th)) if correct else (m, v)
    denom = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps
    return _adam_outputs(p, p + sign * lr * m_hat / denom, m, v, lr)


_ADAM_MISTAKES = [
    ("Adam without bias correction: the first step moves by about lr (1 - b1) / sqrt(1 - b2), "
     "3 lr, instead of lr", lambda *a: _adam_planted(*a, correct=False)),
    ("the step counter off by one in the bias correction (t + 1 or t - 1 for t)",
     lambda *a: _adam_planted(*a, t_hat=a[4] + 1)),
    ("the step counter off by one in the bias correction (t + 1 or t - 1 for t)",
     lambda *a: _adam_planted(*a, t_hat=a[4] - 1)),
    ("eps inside the square root: sqrt(v_hat + eps) for sqrt(v_hat) + eps",
     lambda *a: _adam_planted(*a, eps_inside=True)),
    ("a sign: p + lr m_hat / (sqrt(v_hat) + eps) climbs the loss",
     lambda *a: _adam_planted(*a, sign=1.0)),
    ("b1 and b2 swapped",
     lambda p, g, m, v, t, lr, b1, b2, eps: _adam_planted(p, g, m, v, t, lr, b2, b1, eps)),
    ("v from g, not from g^2", lambda *a: _adam_planted(*a, g2=a[1])),
    ("the moment weights swapped: m = (1 - b1) m + b1 g for b1 m + (1 - b1) g",
     lambda *a: _adam_planted(*a, swapped=True)),
]


def check_adam_step(adam_step_fn, verbose=True):
    """Grade one step of Adam (Kingma & Ba 2015, Algorithm 1) on one array.

        adam_step_fn(p, g, m, v, t, lr, b1, b2, eps) -> (p, m, v)

    t is the number of this step (1 on the first); m and v are the moments
    after step t - 1 (zeros before the first):

        m <- b1 m + (1 - b1) g,      v <- b2 v + (1 - b2) g^2
        p <- p - lr m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)

    The function may update its arrays in place or return new ones. Answer
    key: ``optim.Adam``. Compared: the step in units of lr, m and v.
    Behaviour: the first step, and every step of a constant gradient, moves
    each parameter by lr (to 1e-4), whatever the gradient's size.

    Mistakes it names: no bias correction; the step counter off by one; eps
    inside the square root; a sign; b1 and b2 swapped; v from g, not g^2; the
    moment weights swapped.

    Shapes: p, g, m, v one shape (the check uses (3, 4)); t an int >= 1; lr,
    b1, b2, eps floats -> p, m, v that shape.
    """
    def body(log):
        rng = np.random.default_rng(8)
        shape = (3, 4)

        def state(t, lr, b1, b2, eps, fresh):
            g = rng.normal(size=shape)
            m = np.zeros(shape) if fresh else 0.1 * rng.normal(size=shape)
            v = np.zeros(shape) if fresh else 0.1 * rng.uniform(0.1, 1, size=shape)
            return rng.normal(size=shape), g, m, v, t, lr, b1, b2, eps
        edge = state(1, 1e-3, 0.9, 0.999, 1e-8, True)
        edge[1][0] = [0.0, 1e8, -1e-12, 1e-6]  # no gradient, a huge one, tiny ones (eps decides)
        sets = (state(1, 1e-3, 0.9, 0.999, 1e-8, True), edge,
                state(7, 0.05, 0.8, 0.99, 1e-6, False), state(1000, 1e-3, 0.9, 0.999, 1e-8, False))

        def student_step(args):
            shapes = {"p": args[0].shape, "m": args[0].shape, "v": args[0].shape}
            out = _student_outputs(adam_step_fn, "adam_step_fn", args, shapes)
            return _adam_outputs(args[0], out["p"], out["m"], out["v"], args[5])

        def fn(*args):  # what _check_outputs calls: the student's step, as compared
            out = student_step(args)
            return out["step / lr"], out["m"], out["v"]
        _check_outputs(log, fn, "adam_step_fn", _adam_reference, _ADAM_MISTAKES, sets, {},
                       "Algorithm 1 of Kingma & Ba (2015)")

        log.step = "behaviour (each step moves by lr)"
        lr, g = 1e-3, np.array([[1e-3, -1e-2, 0.5, -3.0, 40.0, -1e3]])
        first = student_step((np.zeros_like(g), g, np.zeros_like(g), np.zeros_like(g), 1,
                              lr, 0.9, 0.999, 1e-8))["step / lr"]
        p, m, v, steps = np.zeros_like(g), np.zeros_like(g), np.zeros_like(g), []
        g_const = np.full((1, 6), 0.3)
        for t in range(1, 11):
            out = student_step((p, g_const, m, v, t, lr, 0.9, 0.999, 1e-8))
            steps.append(float(np.max(np.abs(out["step / lr"]))))
            p, m, v = p + lr * out["step / lr"], out["m"], out["v"]
        ok = (np.all(np.abs(first + np.sign(g)) <= 1e-4)
              and np.all(np.abs(np.array(steps) - 1) <= 1e-4))
        _behaviour(log, ok,
                   [f"gradient {_first(g, 6)}",
                    f"your first step / lr: {_first(first, 6)} (should be -sign(g))",
                    f"steps / lr with a constant gradient: {_first(steps, 10)} (should be 1)"],
                   "your steps are not lr in size: the bias correction m / (1 - b1^t), "
                   "v / (1 - b2^t) makes every step of a constant gradient exactly lr")
    return _run("adam_step", body, verbose)


# ---------------------------------------------------------------------------
# 9. One EM step for a Gaussian mixture (no library function: the reference is here)


def _log_sum_exp(a, axis):
    top = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def _log_mean_exp(a):
    """``log (1/k) sum_i exp(a_i)`` over the last axis, shifted by each row's max."""
    return _log_sum_exp(a, -1) - np.log(a.shape[-1])


def _gmm_log_joint(x, weights, means, covs):
    """``log pi_k + log N(x_n; mu_k, Sigma_k)``. Shapes: x (N, D) -> (N, K)."""
    diff = x[:, None, :] - means[None]  # (N, K, D)
    solved = np.linalg.solve(covs[None], diff[..., None])[..., 0]  # Sigma_k^-1 (x_n - mu_k)
    _, logdet = np.linalg.slogdet(covs)  # (K,)
    maha = np.sum(diff * solved, axis=2)  # (N, K)
    return np.log(weights) - 0.5 * (x.shape[1] * dist.LOG_2PI + logdet + maha)


def _gmm_mean_log_likelihood(x, weights, means, covs):
    return float(np.mean(_log_sum_exp(_gmm_log_joint(x, weights, means, covs), 1)))


def _responsibilities(log_joint, axis=1):
    """E-step: ``gamma_nk = exp(log_joint - log-sum-exp over the components)``."""
    return np.exp(log_joint - np.expand_dims(_log_sum_exp(log_joint, axis), axis))


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
     lambda x, w, m, c: _m_step(x, _responsibilities(_gmm_log_joint(x, w, m, c), axis=0))),
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


# ---------------------------------------------------------------------------
# 10. The log-mean-exp and the importance-weighted bound L_k


_LME_MISTAKES = [
    ("the log-sum-exp without the 1/k: log k too high",
     lambda a: {"lme": _log_sum_exp(a, 1)}),
    ("no max shift: log(mean(exp(a))) overflows to inf (or underflows to -inf) for large |a|",
     lambda a: {"lme": np.log(np.mean(np.exp(a), axis=1))}),
    ("the max subtracted but not added back", lambda a: {"lme": _log_mean_exp(a) - a.max(axis=1)}),
    ("a wrong axis: the max of the whole array, not of each row (rows far below it underflow)",
     lambda a: {"lme": a.max() + np.log(np.mean(np.exp(a - a.max()), axis=1))}),
    ("the mean of the logs, not the log of the mean (Jensen: only a lower bound)",
     lambda a: {"lme": a.mean(axis=1)}),
]


def check_log_mean_exp(log_mean_exp_fn, verbose=True):
    """Grade a log-mean-exp over the last axis, safe from overflow.

    Lecture: "Beyond the notes", the importance-weighted bound:

        log_mean_exp_fn(a) -> log (1/k) sum_i exp(a_i)  =  m + log (1/k) sum_i exp(a_i - m)

    with m the row's largest entry, so that no exp overflows (the check uses
    |a| = 1000). The reference is ``_log_mean_exp`` here. Behaviour: adding c
    to a row adds c to the result (c = +-700), and mean(a) <= result <= max(a).

    Mistakes it names: the log-sum-exp without the 1/k; no max shift
    (overflow); the max not added back; the max of the whole array (a wrong
    axis); the mean of the logs; a wrong axis in the result's shape.

    Shapes: a (B, k) -> (B,).
    """
    def body(log):
        rng = np.random.default_rng(10)
        B, k = 3, 5
        edge = np.vstack([[1000, 999, 998, 1000, 0], [-1000, -1001, -1002, -999, -1000],
                          np.zeros((1, k)), [800, -800, 0, 3, -3], 5 * rng.normal(size=(2, k))])
        hints = {"lme": {(k,): "a wrong axis: averaged over the batch (axis 0), not the samples",
                         (B, 1): "keepdims left on: the shape is (B,)",
                         (): "reduced over every axis: one number per row"}}
        _check_outputs(log, log_mean_exp_fn, "log_mean_exp_fn", lambda a: {"lme": _log_mean_exp(a)},
                       _LME_MISTAKES, ((rng.normal(size=(B, k)),), (3 * rng.normal(size=(4, 6)),),
                                       (edge,)), hints, "m + log mean exp(a - m), m the row's max")

        log.step = "behaviour (shift by c, bounds)"
        a = 3 * rng.normal(size=(4, 6))
        out = {c: _student_outputs(log_mean_exp_fn, "log_mean_exp_fn", (a + c,),
                                   {"lme": (4,)})["lme"] for c in (0.0, 700.0, -700.0)}
        ok = (all(np.all(np.abs(out[c] - out[0.0] - c) <= 1e-9 * (1 + abs(c))) for c in out)
              and np.all(a.mean(axis=1) <= out[0.0] + 1e-12)
              and np.all(out[0.0] <= a.max(axis=1) + 1e-12))
        _behaviour(log, ok,
                   [f"yours on a: {_first(out[0.0])}",
                    f"on a + 700, minus 700: {_first(out[700.0] - 700)}",
                    f"on a - 700, plus 700: {_first(out[-700.0] + 700)}"],
                   "your log-mean-exp is not shift-invariant or leaves [mean(a), max(a)]: "
                   "shift each row by its max")
    return _run("log_mean_exp", body, verbose)


def _iw_log_w(log_px_z, z, mu, logvar, log_q_sign=-1.0, q_logvar_scale=1.0, prior=True):
    """``log w_i = log P(x|z_i) + log P(z_i) - log q(z_i|x)`` (planted mistakes change one term)."""
    B, k, Z = z.shape
    flat = z.reshape(B * k, Z)  # row b k + i is sample i of example b
    log_q, _ = dist.gaussian_log_likelihood(flat, np.repeat(mu, k, axis=0),
                                            q_logvar_scale * np.repeat(logvar, k, axis=0))
    log_pz = dist.standard_normal_log_density(flat) if prior else 0.0
    return log_px_z + (log_pz + log_q_sign * log_q).reshape(B, k)  # (B, k)


def _iw_reference(log_px_z, z, mu, logvar):
    return {"L_k": _log_mean_exp(_iw_log_w(log_px_z, z, mu, logvar))}


_IW_MISTAKES = [
    ("the mean of log w, the one-sample bound L_1 (the ELBO), not the log of the mean weight",
     lambda *a: {"L_k": _iw_log_w(*a).mean(axis=1)}),
    ("the log-sum-exp without the 1/k: log k too high",
     lambda *a: {"L_k": _log_sum_exp(_iw_log_w(*a), 1)}),
    ("no max shift: the weights exp(log w) underflow to 0 (log 0 = -inf) or overflow",
     lambda *a: {"L_k": np.log(np.mean(np.exp(_iw_log_w(*a)), axis=1))}),
    ("a sign: P(x, z) q(z|x) for P(x, z) / q(z|x) (+ log q for - log q)",
     lambda *a: {"L_k": _log_mean_exp(_iw_log_w(*a, log_q_sign=1.0))}),
    ("a standard deviation used as a variance in log q: N(z; mu, exp(v/2)) for N(z; mu, exp(v))",
     lambda *a: {"L_k": _log_mean_exp(_iw_log_w(*a, q_logvar_scale=0.5))}),
    ("log P(z) left out: w = P(x|z) / q(z|x) for P(x|z) P(z) / q(z|x)",
     lambda *a: {"L_k": _log_mean_exp(_iw_log_w(*a, prior=False))}),
]


def check_importance_weighted_log_px(iw_fn, verbose=True):
    """Grade the importance-weighted bound L_k (Burda et al. 2015) from k samples.

    Lecture: "Beyond the notes" and "Problem in VAE" (the gap of L_b):

        iw_fn(log_px_z, z, mu, logvar) -> L_k = log (1/k) sum_i w_i,
        log w_i = log P(x|z_i) + log N(z_i; 0, I) - log N(z_i; mu, diag(exp(logvar)))

    where ``log_px_z[b, i] = log P(x_b|z_bi)`` comes from the decoder and the
    z_bi were drawn from q(z|x_b) = N(mu_b, diag(exp(logvar_b))). Answer key:
    ``distributions.gaussian_log_likelihood`` and ``standard_normal_log_density``,
    with ``_log_mean_exp`` here. Behaviour: with q the exact posterior of a
    linear-Gaussian model every weight is P(x), so L_k = log P(x) for every
    k; with q the prior, the mean of L_k over 300 draws rises with k
    (L_1 <= L_5 <= L_50) and stays below log P(x).

    Mistakes it names: the mean of log w (L_1); the log-sum-exp without the
    1/k; no max shift (underflow); + log q for - log q; a standard deviation
    used as a variance in log q; log P(z) left out; a wrong broadcast or axis.

    Shapes: log_px_z (B, k), z (B, k, Z), mu, logvar (B, Z) -> (B,).
    """
    def body(log):
        rng = np.random.default_rng(11)
        B, k, Z = 3, 5, 2

        def state(B, logvar=None, log_px_z=None):
            mu = rng.normal(size=(B, Z))
            logvar = rng.normal(size=(B, Z)) if logvar is None else logvar
            z = mu[:, None] + np.exp(logvar / 2)[:, None] * rng.normal(size=(B, k, Z))
            log_px_z = -3 * rng.uniform(size=(B, k)) if log_px_z is None else log_px_z
            return log_px_z, z, mu, logvar
        edge = state(4, np.array([[20.0, -20.0], [0.0, 0.0], [-20.0, 20.0], [1.0, -1.0]]),
                     np.vstack([-3000 - rng.uniform(size=(1, k)), np.zeros((1, k)),
                                -rng.uniform(size=(2, k))]))
        hints = {"L_k": {(k,): "a wrong axis: averaged over the batch, not the k samples",
                         (B, k): "log w returned: the log-mean-exp over the samples is missing",
                         (): "reduced over every axis: L_k is one number per example"}}
        _check_outputs(log, iw_fn, "iw_fn", _iw_reference, _IW_MISTAKES,
                       (state(B), state(B), edge), hints,
                       "log mean_i exp(log P(x|z_i) + log P(z_i) - log q(z_i|x))")

        log.step = "behaviour (exact posterior, and L_k rising with k)"
        noise = 0.1  # P(x|z) = N(x; z, noise I), P(z) = N(0, I): P(z|x) = N(x / (1 + noise), ...)
        x = np.array([[1.5, -1.0], [0.0, 0.5], [-2.0, 2.0]])  # (3, Z)
        post_mu, post_logvar = x / (1 + noise), np.full(x.shape, np.log(noise / (1 + noise)))
        log_px, _ = dist.gaussian_log_likelihood(x, np.zeros_like(x),
                                                 np.full(x.shape, np.log(1 + noise)))

        def bound(x, mu, logvar, k):  # the student's L_k for every row of x
            n = len(x)
            z = mu[:, None] + np.exp(logvar / 2)[:, None] * rng.normal(size=(n, k, Z))
            log_px_z, _ = dist.gaussian_log_likelihood(
                np.repeat(x, k, axis=0), z.reshape(n * k, Z), np.full((n * k, Z), np.log(noise)))
            return _student_outputs(iw_fn, "iw_fn", (log_px_z.reshape(n, k), z, mu, logvar),
                                    {"L_k": (n,)})["L_k"]
        exact = bound(x, post_mu, post_logvar, 4)
        xs = np.repeat(x[:1], 300, axis=0)
        prior = [bound(xs, np.zeros_like(xs), np.zeros_like(xs), kk).mean() for kk in (1, 5, 50)]
        ok = (np.all(np.abs(exact - log_px) <= 1e-9 * np.abs(log_px))
              and prior[0] < prior[1] < prior[2] < log_px[0])
        _behaviour(log, ok,
                   [f"q the exact posterior: your L_4 {_first(exact)} vs log P(x) {_first(log_px)}",
                    f"q the prior: mean L_1, L_5, L_50 {_first(prior)} (should rise, below "
                    f"log P(x) = {log_px[0]:.4f})"],
                   "your bound is not log mean_i w_i: with the exact posterior every w_i = P(x)")
    return _run("importance_weighted_log_px", body, verbose)


# ---------------------------------------------------------------------------
# 11. The model's loss and every gradient, assembled from the library's pieces


LOSS_MODEL = {"data_dim": 4, "hidden_dims": (3,), "latent_dim": 2, "likelihood": "bernoulli",
              "activation": "tanh"}  # the VAE check_loss_and_grads grades


def _loss_model(params):
    model = VAE(**LOSS_MODEL, dtype=np.float64, rng=np.random.default_rng(0))
    for name, p in model.params.items():
        p[...] = params[name]
    return model


def _loss_outputs(loss, grads):
    return {"loss": np.asarray(loss, dtype=np.float64), **{"d" + k: g for k, g in grads.items()}}


def _loss_reference(params, x, eps, beta=1.0):
    loss, grads, _ = _loss_model(params).loss_and_grads(x, eps=eps, beta=beta)
    return _loss_outputs(loss, grads)


def _loss_planted(params, x, eps, std_power=0.5, kl_to_encoder=True, z_to_logvar=True):
    """``VAE.loss_and_grads`` re-assembled from its pieces with one piece changed."""
    model = _loss_model(params)
    B, Z = x.shape[0], model.latent_dim
    h = model.encoder.forward(x)  # (B, 2Z)
    mu, logvar = h[:, :Z], h[:, Z:]  # (B, Z) each
    std = np.exp(std_power * logvar)  # exp(logvar / 2) when right
    out = model.decoder.forward(mu + std * eps)  # (B, D)
    log_px, head_cache = model.head.log_px(x, out)  # (B,)
    kl, kl_cache = dist.kl_standard_normal(mu, logvar)  # (B,)
    dz = model.decoder.backward(model.head.log_px_backward(np.full(B, -1.0 / B), head_cache))
    dmu, dlogvar = dz, (dz * std_power * std * eps if z_to_logvar else 0 * dz)
    if kl_to_encoder:
        dmu_kl, dlogvar_kl = dist.kl_standard_normal_backward(np.full(B, 1.0 / B), kl_cache)
        dmu, dlogvar = dmu + dmu_kl, dlogvar + dlogvar_kl
    model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), need_dx=False)
    return _loss_outputs(np.mean(kl - log_px), {**model.encoder.grads, **model.decoder.grads})


_LOSS_MISTAKES = [
    ("the missing 1/2 in the KL: the loss of a beta = 2 VAE, not the ELBO",
     lambda p, x, e: _loss_reference(p, x, e, beta=2.0)),
    ("the KL left out (beta = 0): an autoencoder with noise, not the ELBO",
     lambda p, x, e: _loss_reference(p, x, e, beta=0.0)),
    ("the sum over the batch for the mean",
     lambda p, x, e: _scaled(_loss_reference(p, x, e), float(len(x)))),
    ("a sign: the ELBO itself, not minus the ELBO (the loss is minimised)",
     lambda p, x, e: _scaled(_loss_reference(p, x, e), -1.0)),
    (STD_AS_VARIANCE.replace("exp(v) for exp(v/2)", "z = mu + exp(logvar) eps"),
     lambda p, x, e: _loss_planted(p, x, e, std_power=1.0)),
    ("the KL's gradient not sent to the encoder (its dmu and dlogvar left out)",
     lambda p, x, e: _loss_planted(p, x, e, kl_to_encoder=False)),
    ("the sample's gradient into logvar left out: dz reaches mu only",
     lambda p, x, e: _loss_planted(p, x, e, z_to_logvar=False)),
]


def _student_loss(fn, params, x, eps):
    """The student's loss and gradients by name, checked; params must come back unchanged."""
    copies = {k: p.copy() for k, p in params.items()}
    res = _call("loss_and_grads_fn", fn, copies, x.copy(), eps.copy())
    if not (isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], dict)):
        raise _Fail(f"your loss_and_grads_fn must return (loss, grads) with grads a dict; it "
                    f"returned {_describe(res)}")
    loss, grads = res
    out = {"loss": _output("the loss", loss, (), {(1,): "the loss is a number, not an array",
                                                   (len(x),): "the loss per example: take the "
                                                   "mean over the batch"})}
    if grads.keys() != params.keys():
        raise _Fail(f"grads must have exactly the keys of params, {sorted(params)}; got "
                    f"{sorted(map(str, grads))}")
    for k, p in params.items():
        out["d" + k] = _output(f"grads[{k!r}]", grads[k], p.shape,
                               {p.shape[::-1]: "transposed: a gradient has its parameter's shape"})
        if not np.array_equal(copies[k], p):
            raise _Fail(f"your function changed params[{k!r}]: a loss function only computes "
                        f"gradients, the optimiser alone updates the parameters")
    return out


def check_loss_and_grads(loss_and_grads_fn, verbose=True):
    """Grade the VAE's loss and every gradient, assembled from the library's pieces.

    Lecture: "ELBO" (both terms, and the data flow of one training step):

        loss_and_grads_fn(params, x, eps) -> (loss, grads)

    for the VAE ``VAE(**LOSS_MODEL)``: the encoder MLP (4, 3, 4) with tanh
    gives ``h``, ``mu = h[:, :2]``, ``logvar = h[:, 2:]``; ``z = mu + exp(logvar / 2) eps``;
    the decoder MLP (2, 3, 4) with tanh gives the Bernoulli logits;
    ``loss = mean over the batch of KL(q(z|x) || P(z)) - log P(x|z)``. The pieces
    to use: ``layers.MLP`` (``MLP(sizes, "tanh", params=params, prefix="encoder.")``),
    ``distributions.reparameterize``, ``kl_standard_normal``,
    ``bernoulli_log_likelihood`` and their backwards. params keys:
    "encoder.W0" (4, 3), "encoder.b0" (3,), "encoder.W1" (3, 4), "encoder.b1" (4,),
    "decoder.W0" (2, 3), "decoder.b0" (3,), "decoder.W1" (3, 4), "decoder.b1" (4,).
    Answer key: ``VAE.loss_and_grads``. The function must leave params
    unchanged. Behaviour: the loss is a batch mean, so the batch [x; x] with
    noise [eps; eps] has the loss and gradients of x with eps.

    Mistakes it names: the missing 1/2 in the KL (beta = 2); the KL left out;
    the sum over the batch for the mean; a sign (the ELBO, not minus it);
    z = mu + exp(logvar) eps; the KL's gradient not sent to the encoder; the
    sample's gradient into logvar left out.

    Shapes: x (B, 4) with entries in {0, 1}, eps (B, 2) -> loss a float,
    grads[k] the shape of params[k].
    """
    def body(log):
        rng = np.random.default_rng(12)
        model = VAE(**LOSS_MODEL, dtype=np.float64, rng=rng)
        params = {k: p + 0.3 * rng.normal(size=p.shape) for k, p in model.params.items()}
        D, Z = LOSS_MODEL["data_dim"], LOSS_MODEL["latent_dim"]

        def data(B):
            return rng.integers(0, 2, (B, D)).astype(np.float64), rng.normal(size=(B, Z))

        log.step = "shapes and dtypes"
        x, eps = data(3)
        first = _student_loss(loss_and_grads_fn, params, x, eps)
        again = _student_loss(loss_and_grads_fn, params, x, eps)
        if max(_error(again[q], first[q]) for q in first) > 0:
            raise _Fail("your function gave a different answer the second time on the same "
                        "input: it keeps state between calls (gradients accumulating?)")

        log.step = "central differences (float64)"
        mine, ref = first, _loss_reference(params, x, eps)
        inputs = {k: p.copy() for k, p in params.items()}

        def f():
            return float(_student_loss(loss_and_grads_fn, inputs, x, eps)["loss"])
        numeric = {"d" + k: numerical_gradient(f, a) for k, a in inputs.items()}
        _compare(log, {q: mine[q] for q in numeric}, numeric,
                 "central differences of your loss",
                 lambda: _match(mine, ref, _plant(_LOSS_MISTAKES, params, x, eps),
                                "VAE.loss_and_grads"), GRAD_TOL, True)

        log.step = "the reference (random inputs and edge values)"
        x, eps = data(5)
        x[0], x[1], eps[0] = 0.0, 1.0, 0.0
        for p in (params, {k: 3 * a for k, a in params.items()}):
            mine, ref = _student_loss(loss_and_grads_fn, p, x, eps), _loss_reference(p, x, eps)
            _compare(log, mine, ref, "the reference",
                     lambda mine=mine, ref=ref, p=p:
                     _match(mine, ref, _plant(_LOSS_MISTAKES, p, x, eps), "VAE.loss_and_grads"))

        log.step = "behaviour (the loss is a batch mean)"
        twice = _student_loss(loss_and_grads_fn, params, np.vstack([x, x]), np.vstack([eps, eps]))
        once = _student_loss(loss_and_grads_fn, params, x, eps)
        worst = max(_error(twice[q], once[q]) for q in once)
        _behaviour(log, worst <= REF_TOL,
                   [f"loss of [x; x]: {float(twice['loss']):.6g}, of x: {float(once['loss']):.6g}"],
                   "your loss is not a mean over the batch")
    return _run("loss_and_grads", body, verbose)
