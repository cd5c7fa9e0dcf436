"""The command line, run as a user would: in a subprocess, checking what it writes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from numpy_vae.checkpoint import load_checkpoint


def tiny(epochs=2):
    return ["--hidden", "16", "--latent", "2", "--epochs", str(epochs), "--max-train", "256",
            "--batch-size", "64", "--quiet"]


TINY = tiny()


def cli(*args, cwd=None):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "numpy_vae", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def test_train_evaluate_sample_on_the_built_in_data(tmp_path):
    out = tmp_path / "run"
    r = cli("train", *TINY, "--out", out)
    assert r.returncode == 0, r.stderr
    for name in ("reconstructions", "samples", "learning_curves", "latent_label", "manifold"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert str(out / f"{name}.png") in r.stdout  # the command says where the pictures are
    assert (out / "history.csv").read_text().count("\n") == 3

    r = cli("evaluate", out, "-k", "20", "--max-examples", "50", "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "evaluation-k20-seed0-n50.json").read_text())
    assert result["examples"] == 50
    assert result["test_log_likelihood"] > result["test_elbo"]  # k = 20 bound above k = 1
    assert result["bits_per_dim"] == pytest.approx(-result["test_log_likelihood"]
                                                   / (784 * np.log(2)))

    r = cli("sample", out, "-n", "16", "--out", tmp_path / "s.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_a_run_on_the_k_sample_bound_draws_its_pictures(tmp_path):
    r = cli("train", *TINY, "--objective", "iwae", "-k", "3", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "learning_curves.png").stat().st_size > 1000


def test_resume_on_the_command_line_matches_one_uninterrupted_run(tmp_path):
    assert cli("train", *TINY, "--no-pictures", "--out", tmp_path / "full").returncode == 0
    r = cli("train", *tiny(epochs=1), "--no-pictures", "--out", tmp_path / "part")
    assert r.returncode == 0, r.stderr
    r = cli("train", "--resume", "--epochs", "2", "--quiet", "--no-pictures",
            "--out", tmp_path / "part")
    assert r.returncode == 0, r.stderr
    a = load_checkpoint(tmp_path / "full" / "checkpoint.npz")[0]
    b = load_checkpoint(tmp_path / "part" / "checkpoint.npz")[0]
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
    (["train", "--hidden", ""], "argument --hidden: expected at least one width"),
    (["train", "--max-train", "-3"], "argument --max-train: expected an integer >= 0, got -3"),
    (["train", "--resume", "--out", "r", "--preset", "iwae-mnist"], "--preset cannot be"),
    (["evaluate", "r", "-k", "0"], "argument -k/--num-samples: expected a positive integer"),
    (["evaluate", "r", "-k", "-5"], "argument -k/--num-samples: expected a positive integer"),
    (["evaluate", "r", "--max-examples", "-1"], "argument --max-examples: expected an integer"),
    (["sample", "r", "-n", "0"], "argument -n: expected a positive integer, got 0"),
    (["train", "--hidden", "a,b"], "expected comma-separated integers"),
    (["train", "--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
    (["train", "--resume"], "--resume needs --out"),
    (["train", "--decoder-mean", "sigmoid"], "decoder_mean must be 'identity' for the bernoulli"),
    (["evaluate", "nowhere"], "no checkpoint at nowhere/checkpoint.npz"),
    (["sample", "nowhere"], "no checkpoint"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, args, message):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_damaged_checkpoint_and_foreign_resume_exit_2(tmp_path):
    out = tmp_path / "run"
    assert cli("train", *TINY, "--no-pictures", "--out", out).returncode == 0
    r = cli("train", *TINY, "--latent", "3", "--resume", "--out", out)
    assert r.returncode == 2 and "config differs in latent_dim" in r.stderr
    r = cli("train", *TINY, "--out", out)
    assert r.returncode == 2 and "already holds a run" in r.stderr
    ckpt = out / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    r = cli("evaluate", out)
    assert r.returncode == 2 and "damaged" in r.stderr and "Traceback" not in r.stderr


def test_mnist_run_end_to_end(tmp_path, require_data):
    require_data("mnist", "test")
    out = tmp_path / "mnist"
    r = cli("train", "--dataset", "mnist", "--preprocess", "dynamic", *TINY, "--out", out,
            "--no-download")
    assert r.returncode == 0, r.stderr
    r = cli("evaluate", out, "-k", "10", "--max-examples", "100", "--quiet", "--no-download")
    assert r.returncode == 0, r.stderr
    assert "bits/dim" in r.stdout
