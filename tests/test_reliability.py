"""Reliability: killed runs, malformed input anywhere public, extreme but valid settings."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from numpy_vae import VAE, Adam
from numpy_vae.checkpoint import load_checkpoint
from numpy_vae.train import TrainConfig, TrainingDiverged, fit

# ---------------------------------------------------------------------------- killed runs

KILL_ARGS = ["--hidden", "32", "--latent", "2", "--epochs", "6", "--max-train", "640",
             "--batch-size", "32", "--quiet", "--no-pictures", "--dtype", "float64"]


def start(out, resume):
    cmd = [sys.executable, "-m", "numpy_vae", "train", *KILL_ARGS, "--out", str(out)]
    return subprocess.Popen(cmd + (["--resume"] if resume else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc, timeout=300):
    """Wait for ``proc``; its exit code and standard error (the pipe is closed)."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode()


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(tmp_path):
    """Kill training (SIGKILL) many times, also while it writes checkpoints; resume each time."""
    reference = tmp_path / "reference"
    assert finish(start(reference, False))[0] == 0
    out = tmp_path / "killed"
    ckpt = out / "checkpoint.npz"
    rng = np.random.default_rng(0)
    writes_hit = 0
    for i in range(9):
        proc = start(out, ckpt.exists())
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        deadline = time.monotonic() + 120
        # Three kinds of moment, in turn: while a checkpoint is being written (its
        # temporary file exists), at a random delay after a checkpoint, at random.
        delay = rng.uniform(0.0, 1.0) if i % 3 == 1 else rng.uniform(0.2, 3.0)
        while proc.poll() is None and time.monotonic() < deadline:
            if i % 3 == 0 and list(out.glob(".checkpoint.npz.*.tmp")):
                writes_hit += 1
                break
            if i % 3 == 1 and ckpt.exists() and ckpt.stat().st_mtime_ns != before:
                time.sleep(delay)
                break
            if i % 3 == 2 and time.monotonic() > deadline - 120 + delay:
                break
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        finish(proc)
        if ckpt.exists():
            load_checkpoint(ckpt)  # always loadable
    assert writes_hit >= 1, "never caught a checkpoint write"
    code, err = finish(start(out, ckpt.exists()))
    assert code == 0, err
    a = load_checkpoint(reference / "checkpoint.npz")[0]
    b, _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["epoch"] == 6  # epochs finished, as the history counts them
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not list(out.glob("*.tmp")), "temporary files left behind"


# ---------------------------------------------------------------------------- malformed input


def model_for(likelihood):
    return VAE(5, (4,), 2, likelihood=likelihood, dtype=np.float64,
               rng=np.random.default_rng(0))


bad_arrays = st.one_of(
    hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
               elements=None),
    hnp.arrays(np.float64, st.tuples(st.integers(0, 4), st.integers(0, 7)),
               elements=st.floats(allow_nan=True, allow_infinity=True)),
    st.just(np.array([[object()] * 5], dtype=object)),
    st.lists(st.floats(), max_size=5),
    st.none(),
)


def only_clear_errors(call, name):
    """Call; it may succeed, else it must raise ValueError/TypeError naming ``name``."""
    try:
        call()
    except (ValueError, TypeError) as e:
        assert name in str(e), f"message does not name {name!r}: {e}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_arrays, st.sampled_from(["bernoulli", "gaussian", "gaussian-fixed"]))
def test_malformed_arrays_get_clear_errors_everywhere_public(a, likelihood):
    model = model_for(likelihood)
    rng = np.random.default_rng(0)
    before = {k: p.copy() for k, p in model.params.items()}
    only_clear_errors(lambda: model.encode(a), "x")
    only_clear_errors(lambda: model.elbo(a, rng=rng), "x")
    only_clear_errors(lambda: model.loss_and_grads(a, rng=rng), "x")
    only_clear_errors(lambda: model.log_likelihood(a, num_samples=3, rng=rng), "x")
    only_clear_errors(lambda: model.decode(a), "z")
    only_clear_errors(lambda: model.sample(2, rng, z=a), "z")
    x = np.full((2, 5), 0.5)
    only_clear_errors(lambda: model.loss_and_grads(x, eps=a), "eps")
    assert all(np.array_equal(before[k], p) for k, p in model.params.items())


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["data_dim", "latent_dim", "hidden_dims", "likelihood", "activation",
                        "dtype", "min_variance", "fixed_variance", "decoder_mean"]),
       st.one_of(st.integers(-3, 0), st.floats(allow_nan=True), st.text(max_size=3),
                 st.none(), st.just((0,)), st.just(np.int8)))
def test_malformed_constructor_arguments_get_clear_errors(name, value):
    args = dict(data_dim=5, hidden_dims=(4,), latent_dim=2, rng=np.random.default_rng(0))
    only_clear_errors(lambda: VAE(**{**args, name: value}), name)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["n", "num_samples", "max_rows", "beta"]),
       st.one_of(st.integers(-3, 0), st.floats(allow_nan=True), st.text(max_size=2)))
def test_malformed_scalars_get_clear_errors(name, value):
    model = model_for("bernoulli")
    rng = np.random.default_rng(0)
    x = np.full((2, 5), 0.5)
    call = {"n": lambda: model.sample(value, rng),
            "num_samples": lambda: model.log_likelihood(x, num_samples=value, rng=rng),
            "max_rows": lambda: model.log_likelihood(x, num_samples=2, rng=rng,
                                                     max_rows=value),
            "beta": lambda: model.loss_and_grads(x, rng=rng, beta=value)}[name]
    only_clear_errors(call, name)


# ---------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-fixed"])
@pytest.mark.parametrize("pixels", [0.0, 1.0])
def test_constant_images_and_a_huge_learning_rate_never_give_silent_nan(likelihood, pixels):
    rng = np.random.default_rng(0)
    model = VAE(16, (8,), 2, likelihood=likelihood, dtype=np.float32, rng=rng,
                min_variance=1e-3)
    opt = Adam(lr=1e-1)
    x = np.full((32, 16), pixels, dtype=np.float32)
    for _ in range(300):
        loss, grads, _ = model.loss_and_grads(x, rng=rng)
        assert np.isfinite(loss)
        assert all(np.all(np.isfinite(g)) for g in grads.values())
        opt.step(model.params, grads)
    if likelihood == "gaussian":  # the decoder variance sits on its floor, and stops there
        _, logvar = model.decode(np.zeros((1, 2), np.float32))
        assert logvar.min() >= np.log(np.float32(1e-3)) - 1e-6
        assert -loss <= 16 * -0.5 * np.log(2 * np.pi * 1e-3) + 1e-2


def test_extreme_posterior_log_variances_stay_finite():
    model = model_for("bernoulli")
    head = model.params["encoder.b1"]
    x = np.full((3, 5), 0.5)
    for logvar in (-30.0, 30.0):
        head[2:] = logvar  # push both latent log-variances to the bound of the property tests
        loss, grads, _ = model.loss_and_grads(x, rng=np.random.default_rng(0))
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())


def test_training_with_a_reckless_learning_rate_stops_loudly_or_stays_finite(tmp_path):
    config = TrainConfig(hidden_dims=(16,), latent_dim=2, epochs=3, max_train=512,
                         lr=1.0, n_validation=100)
    try:
        _, history = fit(config, tmp_path / "r", progress=False, log=lambda s: None)
    except TrainingDiverged as e:
        assert "step" in str(e) and "epoch" in str(e)
        if (tmp_path / "r" / "checkpoint.npz").exists():
            model, _, _ = load_checkpoint(tmp_path / "r" / "checkpoint.npz")
            assert all(np.all(np.isfinite(p)) for p in model.params.values())
    else:
        assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_elbo"]) for r in history)
