"""Checks that grade a student's own VAE functions and name the likely mistake.

Each ``check_*`` takes the student's function(s), runs them on small float64
inputs and returns a ``Result``; it never raises on a wrong answer (a function
that raises, returns None or the wrong shape gives a failed result that says
so). The one exception that passes through is NotImplementedError: a blank
not filled in yet is not graded (it is recorded as "not attempted"), and the
notebook stops at it with its hint. The steps, in order; the first that fails
ends the check:

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

For the EM step the library has no function of its own; its reference is
written in ``mixture`` from Bishop (2006), section 9.2.2.

The modules follow the notebooks that hold the exercises (``exercises/`` in
the repository, generated from ``notebooks/``):

    bounds          02  check_log_mean_exp, check_importance_weighted_log_px
    networks        03  check_affine, check_activation, check_mlp_backward
    kl              04  check_kl
    reconstruction  05  check_reparameterize, check_bernoulli, check_gaussian,
                        check_variance_floor
    training        05  check_adam_step, check_loss_and_grads
    mixture         07  check_em_step
    _core, _steps       the Result, the record for the grader, the diagnosis, the steps

With ``$NUMPY_VAE_EXERCISE_RECORD`` naming a file, every check run appends one
JSON line to it (exercise, status, diagnosis): how ``numpy-vae grade`` collects
the results of a notebook it runs.
"""

from ._core import RECORD_ENV, Result
from .bounds import check_importance_weighted_log_px, check_log_mean_exp
from .kl import check_kl
from .mixture import check_em_step
from .networks import MLP_SIZES, check_activation, check_affine, check_mlp_backward
from .reconstruction import (
    check_bernoulli,
    check_gaussian,
    check_reparameterize,
    check_variance_floor,
)
from .training import LOSS_MODEL, check_adam_step, check_loss_and_grads

__all__ = [
    "LOSS_MODEL", "MLP_SIZES", "RECORD_ENV", "Result",
    "check_activation", "check_adam_step", "check_affine", "check_bernoulli", "check_em_step",
    "check_gaussian", "check_importance_weighted_log_px", "check_kl", "check_log_mean_exp",
    "check_loss_and_grads", "check_mlp_backward", "check_reparameterize", "check_variance_floor",
]
