"""The fit loop: history, checkpoints, exact resume, divergence, config checks."""

import itertools
import platform
import subprocess
import sys

import numpy as np
import pytest

from numpy_vae import VAE
from numpy_vae import train as train_module
from numpy_vae.checkpoint import CheckpointError, load_checkpoint
from numpy_vae.errors import NumpyVAEError
from numpy_vae.train import TrainConfig, TrainingDiverged, fit, read_history

TINY = dict(hidden_dims=(16,), latent_dim=2, epochs=3, batch_size=64, max_train=256,
            n_validation=100)


def run(tmp_path, name, **kw):
    config = TrainConfig(**{**TINY, **kw})
    return fit(config, tmp_path / name, progress=False, log=lambda s: None)


def test_fit_uses_data_it_is_given_and_trains_the_same(tmp_path, monkeypatch):
    config = TrainConfig(**{**TINY, "epochs": 2})
    data = train_module.load_run_data(config)
    loaded, _ = fit(config, tmp_path / "loaded", progress=False, log=lambda s: None)

    def no_loading(*args, **kwargs):
        raise AssertionError("fit loaded the data although it was given")

    monkeypatch.setattr(train_module, "load_run_data", no_loading)
    given, _ = fit(config, tmp_path / "given", progress=False, log=lambda s: None, data=data)
    assert all(np.array_equal(loaded.params[k], given.params[k]) for k in loaded.params)


def test_fit_writes_history_and_checkpoint_and_learns(tmp_path):
    model, history = run(tmp_path, "a", epochs=4)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_elbo"] > history[0]["val_elbo"]
    rows = read_history(tmp_path / "a" / "history.csv")
    assert rows[-1]["val_elbo"] == pytest.approx(history[-1]["val_elbo"])
    _, opt, meta = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    assert meta["epoch"] == 4 and opt.t == 4 * 4  # 256 images / 64 per batch, 4 epochs


@pytest.mark.parametrize("dtype, stop", [("float64", 1), ("float64", 2), ("float32", 1)])
def test_resume_ends_bitwise_where_the_uninterrupted_run_ends(tmp_path, dtype, stop):
    full, full_hist = run(tmp_path, "full", dtype=dtype, preprocess="dynamic")
    run(tmp_path, "part", dtype=dtype, preprocess="dynamic", epochs=stop)
    resumed, hist = fit(TrainConfig(**{**TINY, "dtype": dtype, "preprocess": "dynamic"}),
                        tmp_path / "part", resume=True, progress=False, log=lambda s: None)
    assert all(np.array_equal(full.params[k], resumed.params[k]) for k in full.params)
    for a, b in zip(hist, full_hist, strict=True):
        assert {**a, "seconds": 0} == {**b, "seconds": 0}


def test_same_seed_same_run_and_other_seed_other_run(tmp_path):
    a, ha = run(tmp_path, "a", epochs=1)
    b, hb = run(tmp_path, "b", epochs=1)
    c, _ = run(tmp_path, "c", epochs=1, seed=1)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["encoder.W0"], c.params["encoder.W0"])


def test_resume_refuses_another_config_and_fresh_runs_refuse_a_used_folder(tmp_path):
    run(tmp_path, "a", epochs=1)
    with pytest.raises(CheckpointError, match=r"latent_dim \(run: 2, asked: 3\)"):
        fit(TrainConfig(**{**TINY, "latent_dim": 3}), tmp_path / "a", resume=True,
            progress=False, log=lambda s: None)
    with pytest.raises(FileExistsError, match="already holds a run"):
        run(tmp_path, "a")


def test_non_finite_loss_stops_before_the_update_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch):
    original = VAE.loss_and_grads
    calls = {"n": 0}

    def poisoned(self, x, **kw):
        calls["n"] += 1
        loss, grads, terms = original(self, x, **kw)
        if calls["n"] == 6:  # second step of the second epoch
            grads["decoder.W0"][0, 0] = np.nan
            self.poisoned_params = {k: p.copy() for k, p in self.params.items()}
        return loss, grads, terms

    monkeypatch.setattr(VAE, "loss_and_grads", poisoned)
    model = None
    with pytest.raises(TrainingDiverged, match="at step 6 .epoch 2."):
        run(tmp_path, "a")
    model, _, meta = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    assert meta["epoch"] == 1  # the last good checkpoint, after epoch 1
    assert all(np.all(np.isfinite(p)) for p in model.params.values())


def test_warm_up_raises_beta_linearly_from_zero_step_by_step(tmp_path):
    config = TrainConfig(beta=2.0, warmup_epochs=4)
    assert [config.beta_at(s, 2) for s in range(10)] == [2 * s / 8 for s in range(8)] + [2, 2]
    assert TrainConfig(beta=0.5).beta_at(0, 10) == 0.5
    # history.csv: each epoch's mean weight (256 images / 64 = 4 steps per epoch)
    _, history = run(tmp_path, "w", beta=2.0, warmup_epochs=2, epochs=3)
    assert [r["beta"] for r in history] == pytest.approx(
        [2 * np.mean([0, 1, 2, 3]) / 8, 2 * np.mean([4, 5, 6, 7]) / 8, 2.0])


@pytest.mark.parametrize("kw, message", [
    ({"dataset": "cifar"}, "dataset must be one of"),
    ({"likelihood": "poisson"}, "likelihood must be one of"),
    ({"preprocess": "standardize"}, "needs a Gaussian likelihood"),
    ({"decoder_mean": "sigmoid"}, "decoder_mean must be 'identity' for the bernoulli"),
    ({"decoder_mean": "relu", "likelihood": "gaussian"}, "decoder_mean must be one of"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"hidden_dims": (8, 0)}, r"hidden_dims\[1\]"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"beta": float("nan")}, "beta must be a finite number"),
    ({"warmup_epochs": -1}, "warmup_epochs must be an integer >= 0"),
    ({"dtype": "float16"}, "dtype must be float32 or float64, got 'float16'"),
    ({"log_px_every": -5}, "log_px_every must be an integer >= 0"),
    ({"log_px_samples": 0}, "log_px_samples must be a positive integer"),
    ({"log_px_examples": 2.5}, "log_px_examples must be a positive integer"),
])
def test_config_rejects_bad_values(kw, message):
    with pytest.raises(NumpyVAEError, match=message):  # the project's own error types
        TrainConfig(**kw)


def test_gaussian_decoder_on_standardized_data_trains(tmp_path):
    _, history = run(tmp_path, "g", likelihood="gaussian", preprocess="standardize",
                     epochs=2)
    assert all(np.isfinite(r["val_elbo"]) for r in history)


def test_training_on_real_mnist(tmp_path, require_data):
    require_data("mnist", "test")
    _, history = run(tmp_path, "m", dataset="mnist", preprocess="dynamic", epochs=2,
                     max_train=2000, n_validation=500)
    assert history[-1]["val_elbo"] > history[0]["val_elbo"]
    assert -400 < history[-1]["val_elbo"] < -100  # 784 binary pixels; far from trained


FAULTS_SCRIPT = """
import resource

import numpy as np
from numpy_vae.runfolder import keep_freed_memory
took = keep_freed_memory()
def step():  # an 8 MB temporary, written, then freed, as a training step's are
    return float((np.ones((1024, 1024)) * 2)[0, 0])
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_keep_freed_memory_stops_page_faults_on_reused_temporaries():
    # Without the setting this loop faults in about 1,500 pages per step on glibc.
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) < 1024  # 20 steps of 2 x 8 MB: below a quarter of one array's pages


def test_log_px_estimates_leave_training_unchanged_and_bound_above_the_elbo(tmp_path):
    plain, plain_hist = run(tmp_path, "plain", preprocess="dynamic")
    model, hist = run(tmp_path, "est", preprocess="dynamic", log_px_every=2,
                      log_px_samples=100, log_px_examples=100)
    assert all(np.array_equal(plain.params[k], model.params[k]) for k in model.params)
    # after epoch 2 (every 2) and after the last, epoch 3; never in epoch 1
    assert ["val_log_px" in r for r in hist] == [False, True, True]
    for r in hist[1:]:  # the same 100 held-out images: k = 100 is far tighter than k = 1
        assert r["val_elbo"] + 1 < r["val_log_px"] < 0
    rows = read_history(tmp_path / "est" / "history.csv")
    assert np.isnan(rows[0]["val_log_px"])
    assert rows[2]["val_log_px"] == pytest.approx(hist[2]["val_log_px"])
    assert np.isnan(read_history(tmp_path / "plain" / "history.csv")[2]["val_log_px"])
    assert [{**r, "seconds": 0} for r in plain_hist] == [
        {k: v for k, v in r.items() if k != "val_log_px"} | {"seconds": 0} for r in hist]


# ---------------------------------------------------------------------------- beyond the ELBO


def test_the_iwae_schedule_is_3_to_the_i_epochs_at_lr_times_10_to_the_minus_i_over_7():
    config = TrainConfig(schedule="iwae", lr=1e-3, epochs=3280)
    rates = [config.lr_at(e) for e in range(3280)]
    stages = [len(list(g)) for _, g in itertools.groupby(rates)]
    assert stages == [3**i for i in range(8)] and sum(stages) == 3280
    np.testing.assert_allclose(sorted(set(rates), reverse=True),
                               [1e-3 * 10 ** (-i / 7) for i in range(8)], rtol=1e-12)
    assert TrainConfig(lr=0.1, lr_decay=0.5).lr_at(3) == pytest.approx(0.1 * 0.5**3)


def test_training_on_the_importance_weighted_bound(tmp_path):
    model, history = run(tmp_path, "iwae", objective="iwae", k=4, epochs=3, adam_eps=1e-4)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for row in history:
        assert 1 <= row["train_ess"] <= 4 and 0 <= row["val_active_units"] <= 2
        assert "train_kl" not in row
    _, opt, meta = load_checkpoint(tmp_path / "iwae" / "checkpoint.npz")
    assert meta["train_config"]["objective"] == "iwae" and meta["train_config"]["k"] == 4
    assert opt.eps == 1e-4
    rows = read_history(tmp_path / "iwae" / "history.csv")
    assert np.isnan(rows[0]["train_kl"]) and rows[0]["train_ess"] == pytest.approx(
        history[0]["train_ess"])


@pytest.mark.parametrize("kw, message", [
    ({"k": 5}, "with objective 'elbo' it must be 1"),
    ({"objective": "iwae", "k": 5, "beta": 0.5}, "has no KL weight"),
    ({"objective": "vr"}, "objective must be one of"),
    ({"schedule": "cosine"}, "schedule must be one of"),
    ({"adam_eps": 0.0}, "adam_eps must be a finite number > 0"),
    ({"conditional": True, "dataset": "frey-face", "likelihood": "gaussian"},
     "needs a labelled data set"),
])
def test_objective_settings_are_checked(kw, message):
    with pytest.raises(NumpyVAEError, match=message):
        TrainConfig(**kw)


def test_a_conditional_run_trains_draws_a_chosen_label_and_pictures_styles(tmp_path):
    model, history = run(tmp_path, "cond", conditional=True, epochs=2)
    assert model.num_labels == 5 and history[-1]["val_elbo"] > history[0]["val_elbo"]
    from test_cli import cli
    out = tmp_path / "cond"
    r = cli("sample", out, "-n", "6", "--label", "3", "--out", tmp_path / "three.png")
    assert r.returncode == 0 and (tmp_path / "three.png").stat().st_size > 100, r.stderr
    r = cli("sample", out, "-n", "6", "--label", "7")
    assert r.returncode == 2 and "--label must be below 5" in r.stderr
    r = cli("evaluate", out, "-k", "3", "--max-examples", "20", "--quiet")
    assert r.returncode == 0 and "log p(x|y)" in r.stdout and "active units" in r.stdout


@pytest.mark.slow
def test_a_conditional_mnist_model_draws_each_digit_at_z_zero(tmp_path, require_data):
    """The decoded mean at z = 0 for label c is nearest (Euclidean) to the mean training
    image of digit c, for at least 9 of the 10 digits."""
    require_data("mnist")
    config = TrainConfig(dataset="mnist", conditional=True, hidden_dims=(128,), latent_dim=8,
                         epochs=2, batch_size=100, n_validation=1000)
    model, _ = fit(config, tmp_path / "mnist", progress=False, log=lambda s: None)
    train, _, _, pre = train_module.load_run_data(config)
    x = pre(train.images)
    means = np.stack([x[train.labels == c].mean(axis=0) for c in range(10)])  # (10, D)
    drawn = model.sample(10, None, z=np.zeros((10, 8), np.float32), y=np.arange(10))
    nearest = ((drawn[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (nearest == np.arange(10)).sum() >= 9, nearest
