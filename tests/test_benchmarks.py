"""The scripts in benchmarks/ run and print what the README quotes from them.

Tiny settings, no timing asserted (timings come from the scripts, run on an
idle machine, never from tests). PyTorch is used where it is installed, and
one run leaves it out (``--no-torch``). The environment is passed on as it is:
with OPENBLAS_CORETYPE set, the speed part's rerun without it is checked too.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
HAS_TORCH = importlib.util.find_spec("torch") is not None
TINY = ("--steps", "2", "--repeats", "1", "--scaling-steps", "1", "--scaling-repeats", "1",
        "--malloc-steps", "2", "--malloc-repeats", "1")


def script(name, *args):
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MPLBACKEND": "Agg"})


def section(text, heading):
    """``text`` from the line starting with ``heading`` to the next '## ' heading."""
    start = ("\n" + text).index("\n" + heading)
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def table_rows(text, heading):
    """The rows of the first Markdown table after ``heading``, as lists of cells."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:  # after the header and its rule
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def number(cell):
    return float(cell.strip("*%"))


def assert_machine_printed(out, with_torch):
    machine = section(out, "## Machine")
    for field in ("cpu", "cores", "load average", "python", "numpy", "numpy_vae", "BLAS kernel"):
        assert f"\n- {field}" in machine, field
    assert ("\n- torch: " in machine) == with_torch


def test_train_step_benchmark_prints_every_part(tmp_path):
    """Every part, against the current tree itself as the baseline."""
    no_torch = [] if HAS_TORCH else ["--no-torch"]
    r = script("bench_train_step.py", "--parts", "speed,scaling,memory,malloc", *TINY,
               "--threads", "1", "--baseline", ROOT, "--out-dir", tmp_path, *no_torch)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert_machine_printed(out, HAS_TORCH)

    speed = section(out, "## Speed:")
    assert "BLAS kernel: " in speed
    (row,) = table_rows(speed, "## Speed")
    assert row[0] == "1" and number(row[1]) > 0 and number(row[-1]) > 0  # s/epoch, matmul share
    assert (row[3] != "-") == HAS_TORCH  # numpy_vae / PyTorch
    against = section(out, "## Current against baseline")
    baseline_line = next(line for line in against.splitlines() if line.startswith("- baseline:"))
    assert f", {ROOT}" in baseline_line
    (row,) = table_rows(against, "## Current against baseline")
    assert row[0] == "1" and number(row[3]) > 0  # current / baseline

    if "OPENBLAS_CORETYPE" in os.environ:
        rerun = section(out, "## Speed again")
        assert "BLAS kernel: " in rerun and "OPENBLAS_CORETYPE not set" in rerun
        assert len(table_rows(rerun, "## Speed again")) == 1
        assert len(table_rows(out, "## BLAS kernels compared")) == 2

    assert len(table_rows(out, "## Scaling")) == 11
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    assert "- peak RSS: **" in section(out, "## Memory")

    malloc = section(out, "## glibc malloc")
    (row,) = table_rows(malloc, "## glibc malloc")
    assert row[0] == "1" and number(row[3]) > 0
    assert "malloc ratio (with / without, medians): 1 thread(s) " in malloc
    assert "buys at least 5% of an epoch: **" in malloc


def test_train_step_benchmark_without_torch():
    r = script("bench_train_step.py", "--parts", "speed", *TINY, "--threads", "1", "2",
               "--no-torch")
    assert r.returncode == 0, r.stderr
    assert_machine_printed(r.stdout, with_torch=False)
    rows = table_rows(r.stdout, "## Speed:")
    assert [row[0] for row in rows] == ["1", "2"]
    assert all(row[2] == row[3] == "-" for row in rows)  # no PyTorch columns


def test_train_step_benchmark_iwae_part():
    """--parts iwae: a row per model and thread count, the ELBO and IWAE columns filled."""
    r = script("bench_train_step.py", "--parts", "iwae", *TINY, "--threads", "1", "2",
               "--no-torch")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert_machine_printed(out, with_torch=False)
    iwae = section(out, "## IWAE k=5 against ELBO")
    assert "BLAS kernel: " in iwae
    assert "| model | threads | ELBO step ms | IWAE k=5 step ms | ratio |" in iwae
    rows = table_rows(iwae, "## IWAE k=5 against ELBO")
    assert [(row[0].split()[0], row[1]) for row in rows] == [
        ("784-200-200-50", "1"), ("784-200-200-50", "2"), ("784-400-20", "1"), ("784-400-20", "2")]
    assert all(number(cell) > 0 for row in rows for cell in row[2:])
    assert "the encoder once" in iwae and "B*k = 5B rows" in iwae


def test_profile_step_prints_the_top_functions():
    r = script("profile_step.py", "--steps", "3", "--top", "8")
    assert r.returncode == 0, r.stderr
    assert_machine_printed(r.stdout, with_torch=False)
    for heading in ("## Top 8 functions by cumulative time", "## Top 8 functions by total time"):
        listing = section(r.stdout, heading)
        assert "ncalls  tottime  percall  cumtime" in listing
        assert len(listing.strip().splitlines()) >= 8
    assert "(loss_and_grads)" in section(r.stdout, "## Top 8 functions by cumulative time")


def test_results_table_summarises_and_plots_a_run(tmp_path):
    from numpy_vae.train import TrainConfig, fit

    config = TrainConfig(hidden_dims=(16,), latent_dim=2, epochs=2, max_train=256,
                         batch_size=64, log_px_every=1, log_px_samples=5, log_px_examples=20)
    fit(config, tmp_path / "run", progress=False, log=lambda s: None)
    r = script("results_table.py", tmp_path / "run", "--mean", "--plot", tmp_path / "p.png",
               "--reference", "-100")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    assert row["run"] == "run" and row["epochs"] == 2 and row["last_heldout_elbo"] < 0
    assert "mean last held-out ELBO over 1 runs" in r.stdout
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_results_table_reports_the_evaluation_and_plots_log_px_alone(tmp_path):
    from numpy_vae.cli import main as cli
    from numpy_vae.train import TrainConfig, fit, read_history

    config = TrainConfig(hidden_dims=(16,), latent_dim=3, epochs=2, max_train=256,
                         batch_size=64, log_px_every=1, log_px_samples=5, log_px_examples=20)
    fit(config, tmp_path / "run", progress=False, log=lambda s: None)
    assert cli(["evaluate", str(tmp_path / "run"), "-k", "7", "--max-examples", "30",
                "--quiet"]) == 0
    evaluation = json.loads(next((tmp_path / "run").glob("evaluation-k7-*.json")).read_text())
    r = script("results_table.py", tmp_path / "run", "--plot", tmp_path / "p.png",
               "--log-px-only", "--reference", "-100", "-90", "--reference-labels", "paper")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    assert row["examples_k7"] == 30 and 0 <= row["active_units"] <= 3
    assert row["active_units"] == evaluation["active_units"]
    assert row["log_px_k7"] == round(evaluation["test_log_likelihood"], 3)
    history = read_history(tmp_path / "run" / "history.csv")
    after_one = history[0]["seconds"] / 60 * 1.0001
    r = script("results_table.py", tmp_path / "run", "--at-minutes", after_one)
    assert f"run: log p(x) {history[0]['val_log_px']:.3f} at epoch 1," in r.stdout
    r = script("results_table.py", tmp_path / "run", "--at-minutes", after_one / 2)
    assert "run: no log p(x) estimate within" in r.stdout
    assert (tmp_path / "p.png").stat().st_size > 1000
    r = script("results_table.py", tmp_path / "run", "--plot", tmp_path / "q.png",
               "--reference", "-100", "--reference-labels", "a", "b")
    assert r.returncode == 2 and "--reference-labels: expected at most 1" in r.stderr
