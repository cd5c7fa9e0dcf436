"""One owner per run folder, every failure one line with nothing lost, signals, hostile files.

Run as a user on a shared machine would: several processes at once, disk full,
signals, hand edits and crafted checkpoints.
"""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from test_cli import cli, tiny

from numpy_vae import cli as cli_module
from numpy_vae import train as train_module
from numpy_vae.checkpoint import CheckpointError, load_checkpoint
from numpy_vae.train import RunFolderError, TrainConfig, fit

# Long enough for a second process to meet the first at work (about 0.1 s per epoch).
SLOW = ["--hidden", "64", "--latent", "2", "--epochs", "40", "--max-train", "2048",
        "--batch-size", "32", "--quiet", "--no-pictures"]


def start(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "numpy_vae", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MPLBACKEND": "Agg"})


def wait_for(path, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# ---------------------------------------------------------------------------- one owner


def test_two_trainings_into_one_folder_one_is_refused_and_nothing_is_lost(tmp_path):
    out = tmp_path / "run"
    first = start("train", *SLOW, "--out", out)
    wait_for(out / "checkpoint.npz")
    second = start("train", *SLOW, "--out", out)
    resumer = start("train", "--resume", "--out", out, "--quiet", "--no-pictures")
    for proc in (second, resumer):
        code, _, err = finish(proc)
        assert code == 2, err
        assert "in use by another training process (pid" in err and str(out) in err
        assert len(err.strip().splitlines()) == 1, err
    code, _, err = finish(first)  # the running one was left alone: no temporary file lost
    assert code == 0, err
    _, _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["epoch"] == 40 and len(meta["history"]) == 40


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    proc = start("train", *SLOW, "--out", out)
    wait_for(out / "checkpoint.npz")
    proc.kill()
    finish(proc)
    assert (out / ".lock").exists()
    r = cli("train", "--resume", "--out", out, "--quiet", "--no-pictures", "--epochs", "41")
    assert r.returncode == 0, r.stderr


def test_default_run_names_never_collide(tmp_path):
    procs = [start("train", *tiny(1), "--no-pictures", "--seed", s, cwd=tmp_path)
             for s in (0, 1, 2, 2)]
    for proc in procs:
        code, _, err = finish(proc)
        assert code == 0, err
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 4
    seeds = sorted(load_checkpoint(r / "checkpoint.npz")[2]["train_config"]["seed"]
                   for r in runs)
    assert seeds == [0, 1, 2, 2]
    assert all(f"seed{s}" in r.name for r in runs
               for s in [load_checkpoint(r / "checkpoint.npz")[2]["train_config"]["seed"]])


def test_a_folder_that_is_not_a_run_is_refused_and_its_files_kept(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / ".draft.tmp").write_text("mine too")
    r = cli("train", *tiny(1), "--out", mine)
    assert r.returncode == 2 and "is not empty and holds no run (notes.txt" in r.stderr
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (mine / ".draft.tmp").read_text() == "mine too"
    for here in ("", "."):
        r = cli("train", *tiny(1), "--out", here, cwd=mine)
        assert r.returncode == 2 and "current directory cannot be a run folder" in r.stderr
    assert sorted(p.name for p in mine.iterdir()) == [".draft.tmp", "notes.txt"]


def test_a_run_deletes_only_its_own_temporary_files(tmp_path):
    config = TrainConfig(hidden_dims=(8,), latent_dim=2, epochs=1, max_train=128,
                         batch_size=64, n_validation=50)
    out = tmp_path / "run"
    fit(config, out, progress=False, log=lambda s: None)
    own = out / ".checkpoint.npz.abc123.tmp"  # as a run killed mid-write leaves it
    other = out / ".notes.txt.xyz.tmp"
    own.write_bytes(b"torn")
    other.write_bytes(b"someone else's")
    fit(TrainConfig(**{**config.to_dict(), "epochs": 2}), out, resume=True, progress=False,
        log=lambda s: None)
    assert not own.exists() and other.read_bytes() == b"someone else's"


# ---------------------------------------------------------------------------- failures


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                     capsys):
    config = TrainConfig(hidden_dims=(8,), latent_dim=2, epochs=3, max_train=128,
                         batch_size=64, n_validation=50)
    real_save = train_module.save_checkpoint
    saves = {"n": 0}

    def save_until_full(path, *args):
        saves["n"] += 1
        if saves["n"] == 2:
            def full(f):
                f.write(b"x" * 100)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            train_module.atomic_write(path, full)
        real_save(path, *args)

    monkeypatch.setattr(train_module, "save_checkpoint", save_until_full)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        fit(config, out, progress=False, log=lambda s: None)
    _, _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["epoch"] == 1  # the checkpoint of epoch 1, intact
    assert not list(out.glob(".*.tmp"))

    # On the command line: one line naming the cause and the path, exit status 3.
    saves["n"] = 0
    code = cli_module.main(["train", *tiny(3), "--no-pictures", "--out",
                            str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 3 and err.strip().splitlines() == [
        f"numpy-vae train: error: No space left on device: {tmp_path / 'cli' / 'checkpoint.npz'}"]


def test_unwritable_places_fail_before_the_first_epoch_with_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    cases = {
        tmp_path / "file" / "run": "Not a directory",
        tmp_path / ("x" * 300): "File name too long",
    }
    for out, cause in cases.items():
        r = cli("train", *tiny(1), "--out", out)
        assert r.returncode == 3, r.stderr
        assert r.stderr.strip().splitlines() == [f"numpy-vae train: error: {cause}: "
                                                 + r.stderr.split(": ", 3)[-1].strip()]
        assert "epoch" not in r.stdout


def test_broken_pipe_on_stdout_stops_quietly(tmp_path):
    out = tmp_path / "run"
    assert cli("train", *tiny(1), "--no-pictures", "--out", out).returncode == 0
    proc = start("evaluate", out, "-k", "5", "--max-examples", "20", "--quiet")
    proc.stdout.close()  # the reader went away, as `| head -0` does
    err = proc.stderr.read()
    proc.wait(timeout=120)
    proc.stderr.close()
    assert proc.returncode == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "BrokenPipeError" not in err


# ---------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_training_at_a_safe_point_and_says_what_was_saved(tmp_path, sig):
    out = tmp_path / "run"
    proc = start("train", *SLOW, "--out", out)
    wait_for(out / "checkpoint.npz")
    proc.send_signal(sig)
    code, _, err = finish(proc)
    assert code == 128 + sig, err
    _, _, meta = load_checkpoint(out / "checkpoint.npz")
    assert f"stopped by {signal.Signals(sig).name}" in err
    assert f"{out / 'checkpoint.npz'} holds epoch {meta['epoch']}" in err
    assert f"--resume --out {out}" in err and "Traceback" not in err
    assert not list(out.glob(".*.tmp"))
    r = cli("train", "--resume", "--out", out, "--quiet", "--no-pictures", "--epochs",
            str(meta["epoch"] + 1))
    assert r.returncode == 0, r.stderr


def test_a_signal_before_the_first_checkpoint_says_none_was_written(tmp_path):
    out = tmp_path / "run"
    proc = start("train", "--hidden", "400", "--latent", "2", "--epochs", "1", "--batch-size",
                 "8", "--quiet", "--no-pictures", "--out", out)  # one long epoch
    wait_for(out / ".lock")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err
    assert not (out / "checkpoint.npz").exists()
    assert "no checkpoint was written yet" in err


# ---------------------------------------------------------------------------- hostile files


@pytest.fixture
def run_folder(tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(hidden_dims=(8,), latent_dim=2, epochs=1, max_train=128,
                         batch_size=64, n_validation=50)
    fit(config, out, progress=False, log=lambda s: None)
    return out


def write_npz(path, members):
    """A zip of .npy members: ``{name: (header_dict, data_bytes)}``, deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (header, data) in members.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, header)
                f.write(data)


BOMB_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB of address space
from numpy_vae.checkpoint import CheckpointError, load_checkpoint
try:
    load_checkpoint(sys.argv[1])
except CheckpointError as e:
    print("refused:", e)
"""


def test_a_checkpoint_bomb_is_refused_in_bounded_memory(run_folder, tmp_path):
    with np.load(run_folder / "checkpoint.npz") as f:
        meta = str(f["meta"])
    meta_member = (np.lib.format.header_data_from_array_1_0(np.array(meta)),
                   np.array(meta).tobytes())
    cases = {
        # 3 GB of zeros deflate to a few MB: refused from the header's shape alone
        "inflating": {"meta": meta_member, "param/encoder.W0": (
            {"descr": "<f4", "fortran_order": False, "shape": (784, 1_000_000)},
            bytes(8 << 20))},
        # a small file whose header asks for 745 GiB
        "promising": {"meta": meta_member, "param/encoder.W0": (
            {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**4)}, bytes(64))},
    }
    for name, members in cases.items():
        path = tmp_path / f"{name}.npz"
        write_npz(path, members)
        r = subprocess.run([sys.executable, "-c", BOMB_CHILD, str(path)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("refused:"), (name, r.stdout, r.stderr)
        assert "MemoryError" not in r.stdout + r.stderr


def test_a_hand_edited_checkpoint_json_is_detected(run_folder):
    readable = run_folder / "checkpoint.json"
    meta = json.loads(readable.read_text())
    meta["train_config"]["lr"] = 0.5
    readable.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="differs from .*edited by hand"):
        load_checkpoint(run_folder / "checkpoint.npz")
    r = cli("train", "--resume", "--out", run_folder, "--epochs", "2", "--quiet")
    assert r.returncode == 2 and "edited by hand" in r.stderr


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert cli("train", *tiny(1), "--out", out).returncode == 0
        assert cli("evaluate", out, "-k", "2", "--max-examples", "10", "--quiet").returncode == 0
    finally:
        os.umask(old)
    for path in out.iterdir():
        if path.name != ".lock":
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# ---------------------------------------------------------------------------- what it says


def test_resume_may_lower_the_learning_rate_and_says_when_nothing_is_left(run_folder):
    r = cli("train", "--resume", "--out", run_folder, "--epochs", "2", "--lr", "1e-4",
            "--quiet", "--no-pictures")
    assert r.returncode == 0, r.stderr
    _, opt, meta = load_checkpoint(run_folder / "checkpoint.npz")
    assert meta["train_config"]["lr"] == 1e-4 and opt.lr == pytest.approx(1e-4)
    r = cli("train", "--resume", "--out", run_folder, "--epochs", "1", "--quiet",
            "--no-pictures")
    assert r.returncode == 0 and f"nothing to train: {run_folder} has finished 2 epochs" in r.stdout
    r = cli("train", "--resume", "--out", run_folder, "--latent", "3", "--quiet")
    assert r.returncode == 2 and "only epochs, lr, lr_decay may change" in r.stderr


def test_sample_writes_where_it_says(run_folder, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for given, written in [(folder, folder / "samples-seed0.png"),
                           (tmp_path / "grid", tmp_path / "grid.png")]:
        r = cli("sample", run_folder, "-n", "4", "--out", given)
        assert r.returncode == 0, r.stderr
        assert f"written: {written}" in r.stdout and written.stat().st_size > 100
    r = cli("sample", run_folder, "-n", "5000")
    assert r.returncode == 2 and "-n must be at most 4096" in r.stderr


def test_evaluations_with_other_settings_do_not_overwrite_each_other(run_folder):
    for k in ("2", "3"):
        assert cli("evaluate", run_folder, "-k", k, "--max-examples", "10",
                   "--quiet").returncode == 0
    names = sorted(p.name for p in run_folder.glob("evaluation-*.json"))
    assert names == ["evaluation-k2-seed0-n10.json", "evaluation-k3-seed0-n10.json"]


def test_run_folder_error_is_the_projects_own(tmp_path):
    assert issubclass(RunFolderError, FileExistsError)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(RunFolderError, match="already holds a run"):
        fit(TrainConfig(epochs=1), tmp_path / "run", progress=False, log=lambda s: None)


# ---------------------------------------------------------------------------- bounded memory

BOUNDED_CHILD = """
import resource, sys
import numpy as np
from numpy_vae import VAE
from numpy_vae.errors import InvalidValueError
model = VAE(4, (3,), 2, rng=np.random.default_rng(0))
x = np.array([[0.0, 1.0, 1.0, 0.0]])
resource.setrlimit(resource.RLIMIT_AS, (800 << 20, 800 << 20))  # 800 MiB from here on
# k = 1.5e8 samples: their log-weights alone would take 1.2 GB
print(float(model.log_likelihood(x, num_samples=150_000_000, rng=np.random.default_rng(1),
                                 max_rows=1 << 20)[0]))
try:
    VAE(10**6, (10**6,), 2)  # 8 TB of parameters
except InvalidValueError as e:
    print("refused:", e)
"""


@pytest.mark.slow
def test_log_likelihood_of_any_k_and_a_huge_model_stay_within_memory():
    r = subprocess.run([sys.executable, "-c", BOUNDED_CHILD], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    value, refusal = r.stdout.strip().splitlines()
    assert np.isfinite(float(value)) and float(value) < 0
    assert refusal.startswith("refused: this model needs") and "GiB" in refusal
