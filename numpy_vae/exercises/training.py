"""The checks for the end of notebook 05: one Adam step, and the model's loss and gradients.

Lecture: "ELBO" (both terms, and the data flow of one training step). One
training step is ``loss_and_grads`` then the optimiser; each has a check.
"""

import numpy as np

from .. import distributions as dist
from ..gradcheck import numerical_gradient
from ..optim import Adam
from ..vae import VAE
from ._core import (
    GRAD_TOL,
    REF_TOL,
    _behaviour,
    _call,
    _compare,
    _describe,
    _error,
    _Fail,
    _first,
    _match,
    _output,
    _plant,
    _run,
)
from ._steps import _check_outputs, _scaled, _student_outputs
from .reconstruction import STD_AS_VARIANCE


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
