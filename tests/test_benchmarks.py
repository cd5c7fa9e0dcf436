"""The scripts in benchmarks/ run and print what the README quotes from them.

Tiny settings, no timing asserted (timings come from the scripts, run on an
idle machine, never from tests); PyTorch is left out (``--no-torch``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from numpy_vae.train import TrainConfig, fit

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name, *args):
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MPLBACKEND": "Agg"})


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


def test_train_step_benchmark_prints_every_part(tmp_path):
    r = script("bench_train_step.py", "--parts", "speed,scaling,memory,breakdown,adam",
               "--steps", "3", "--repeats", "2", "--threads", "1", "2", "--no-torch",
               "--scaling-steps", "1", "--scaling-repeats", "1", "--out-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    speed = table_rows(r.stdout, "## Speed")
    assert [row[0] for row in speed] == ["1", "2"]
    assert all(0 < float(row[-1].rstrip("%")) < 100 for row in speed)  # matmul share
    assert len(table_rows(r.stdout, "## Scaling")) == 11
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    assert "peak RSS: **" in r.stdout
    # Every piece of the breakdown was found and timed inside the step (a renamed
    # library function would leave its row at zero), for both thread counts.
    pieces = table_rows(r.stdout, "## Where numpy_vae's step")
    assert len(pieces) == 12
    for name, ms_1, _, ms_2, _ in pieces:
        assert float(ms_1) > 0 and float(ms_2) > 0, name
    assert [row[0] for row in table_rows(r.stdout, "## Adam split")] == ["1", "2"]


def test_results_table_summarises_and_plots_a_run(tmp_path):
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
