"""What every check shares: the Result, the record a grader reads, and the diagnosis.

A check's ``body(log)`` runs the steps (``_steps``); a step that fails raises
``_Fail`` with the diagnosis, which ``_run`` turns into a ``Result``. The
diagnosis compares the student's wrong outputs with planted variants of the
reference (``_match``); the report prints the numbers compared (``_show``).
"""

import dataclasses
import json
import numbers
import os

import numpy as np

from .. import distributions as dist
from ..gradcheck import rel_error

GRAD_TOL = 1e-6  # step 2: the student's backward against central differences
REF_TOL = 1e-7  # step 3: the student's outputs against the reference
MATCH_TOL = 1e-6  # a planted mistake matches when its outputs agree with the student's this well
N_SIGMA = 5.0  # Monte-Carlo comparisons: within this many standard errors
INF = float("inf")
UPSTREAM_IGNORED = "the upstream gradient ignored (taken as all ones): multiply by it"

RECORD_ENV = "NUMPY_VAE_EXERCISE_RECORD"  # a file: each check run appends one JSON line to it
PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"



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


def _record(exercise, status, diagnosis):
    """Append what a check found to the file named by ``$NUMPY_VAE_EXERCISE_RECORD``, if set.

    The grader (``numpy_vae.grading``) sets it for the kernel of each notebook it
    runs; a line written as soon as the check ends survives a later cell that
    loops or kills the kernel.
    """
    path = os.environ.get(RECORD_ENV)
    if path:
        line = json.dumps({"exercise": exercise, "status": status, "diagnosis": diagnosis})
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------------------
# Running a check: each step raises _Fail, _run turns it into a Result


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
    """Run ``body(log)``; turn a failure (or anything the student's code broke) into a Result.

    A student's function that raises NotImplementedError is a blank not filled
    in yet: nothing is graded, the check records "not attempted" and lets the
    exception through, so the notebook stops at the blank with its hint.
    """
    log = _Log()
    try:
        with np.errstate(all="ignore"):  # a student's overflow is a finding, not a warning
            body(log)
    except NotImplementedError:
        _record(exercise, NOT_ATTEMPTED, None)
        raise
    except _Fail as fail:
        diagnosis, error = fail.diagnosis, fail.error
    except Exception as e:  # what a student's function returned broke the check's arithmetic
        diagnosis = (f"the check could not use what your function returned "
                     f"({type(e).__name__}: {e})")
        error = INF
    else:
        line = f"passed: {exercise} (worst relative error {log.worst:.1e})"
        _record(exercise, PASSED, None)
        if verbose:
            print(line)
        return Result(exercise, True, None, log.worst, line)
    lines = [f"FAILED: {exercise}, at step '{log.step}'", *log.lines,
             f"  likely mistake: {diagnosis}"]
    result = Result(exercise, False, diagnosis, error, "\n".join(lines))
    _record(exercise, FAILED, diagnosis)
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
    except (_Fail, NotImplementedError):  # a check made inside fn; a blank not filled in
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



def _log_sum_exp(a):
    """``log sum_i exp(a_i)`` over the last axis, from the library's log-mean-exp.

    Shapes: a (B, k) -> (B,).
    """
    L, _ = dist.log_mean_exp(a)
    return L + np.log(a.shape[1])
