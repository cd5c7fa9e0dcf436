"""Every preset trains for a few steps, so that none can rot."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import cli

from numpy_vae.checkpoint import load_checkpoint
from numpy_vae.presets import PRESETS
from numpy_vae.train import TrainConfig, fit


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_a_valid_config_and_trains_a_few_steps(name, tmp_path, require_data):
    config = TrainConfig(**PRESETS[name])
    require_data(config.dataset, "test")
    r = cli("train", "--preset", name, "--epochs", "1", "--max-train", "200", "--quiet",
            "--no-pictures", "--no-download", "--log-px-examples", "20", "--out", tmp_path / name)
    assert r.returncode == 0, r.stderr
    assert "final validation ELBO" in r.stdout
    assert ("log p(x)" in r.stdout) == bool(config.log_px_every)  # after the last epoch
    model = load_checkpoint(tmp_path / name / "checkpoint.npz")[0]
    assert model.config.decoder_mean == config.decoder_mean  # e.g. frey-face's sigmoid


def test_options_given_explicitly_override_the_preset(tmp_path):
    r = cli("train", "--preset", "iwae-mnist", "--dataset", "shapes", "--hidden", "8",
            "--latent", "2", "--epochs", "1", "--max-train", "64", "--quiet", "--no-pictures",
            "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    config = TrainConfig(**{**PRESETS["iwae-mnist"], "dataset": "shapes", "hidden_dims": (8,),
                            "latent_dim": 2, "epochs": 1, "max_train": 64})
    model, history = fit(config, tmp_path / "direct", progress=False, log=lambda s: None)
    cli_model, _, meta = load_checkpoint(tmp_path / "o" / "checkpoint.npz")
    assert meta["train_config"]["activation"] == "tanh"  # from the preset
    assert all(np.array_equal(model.params[k], cli_model.params[k]) for k in model.params)


@pytest.mark.parametrize("preset, run", [("iwae-paper-vae", "vae-k1-lr2.2e-3"),
                                         ("iwae-paper-k5", "iwae-k5-lr2.2e-3")])
def test_the_table1_runs_kept_in_the_repository_are_their_presets(preset, run):
    """The README's command for a Table 1 row trains the run whose figures it shows."""
    folder = Path(__file__).parents[1] / "benchmarks" / "table1" / run
    saved = json.loads((folder / "checkpoint.json").read_text())["train_config"]
    preset_config = json.loads(json.dumps(dataclasses.asdict(TrainConfig(**PRESETS[preset]))))
    assert saved == preset_config
