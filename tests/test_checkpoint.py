"""Checkpoints: exact round trip, atomic writes, and refusal of anything damaged."""

import json
import zipfile

import numpy as np
import pytest

from numpy_vae import VAE, Adam
from numpy_vae.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    model = VAE(6, (5,), 2, likelihood="gaussian", dtype=np.float32, rng=rng,
                decoder_mean="sigmoid")
    opt = Adam(lr=3e-3)
    for _ in range(3):
        x = rng.uniform(size=(4, 6)).astype(np.float32)
        opt.step(model.params, model.loss_and_grads(x, rng=rng)[1])
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, opt, {"epoch": 4, "rng_state": rng.bit_generator.state})
    return path, model, opt


def test_round_trip_is_exact(saved):
    path, model, opt = saved
    model2, opt2, meta = load_checkpoint(path)
    assert model2.config == model.config
    assert all(np.array_equal(model.params[k], model2.params[k]) for k in model.params)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert (s1["t"], s1["lr"], s1["betas"]) == (s2["t"], s2["lr"], tuple(s2["betas"]))
    assert all(np.array_equal(s1["m"][k], s2["m"][k]) and np.array_equal(s1["v"][k], s2["v"][k])
               for k in s1["m"])
    assert meta["epoch"] == 4
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng_state"]  # the RNG state survives JSON
    assert json.loads(path.with_suffix(".json").read_text())["epoch"] == 4


def rewrite(path, change):
    """Rewrite the npz at ``path`` after ``change(arrays)``."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(path, **arrays)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({"param/encoder.W0": np.zeros((3, 3), np.float32)}), r"should be"),
    (lambda a: a.update({"param/encoder.W0": a["param/encoder.W0"].astype(np.float64)}),
     "should be float32"),
    (lambda a: a.pop("adam_v/decoder.b1"), "lacks the array adam_v/decoder.b1"),
    (lambda a: a.update({"extra": np.zeros(2)}), "unexpected arrays"),
    (lambda a: a.update({"param/decoder.b0": np.full_like(a["param/decoder.b0"], np.nan)}),
     "NaN"),
    (lambda a: a.update({"meta": np.array(str(a["meta"]).replace('"version": "',
                                                               '"version": "9'))}),
     "written by numpy_vae 9"),
    (lambda a: a.update({"meta": np.array("{not json")}), "damaged"),
    (lambda a: a.update({"meta": np.array(str(a["meta"]).replace('"latent_dim": 2',
                                                               '"latent_dim": 3'))}),
     "should be"),
])
def test_altered_checkpoints_are_refused(saved, change, message):
    path = saved[0]
    rewrite(path, change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_or_foreign_files_are_refused(saved, tmp_path):
    path = saved[0]
    data = path.read_bytes()
    for n in (0, 10, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="damaged"):
            load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")


def test_pickled_content_is_never_loaded(saved):
    path = saved[0]
    rewrite(path, lambda a: a.update({"evil": np.array([{"a": 1}], dtype=object)}))
    with zipfile.ZipFile(path) as z:
        assert "evil.npy" in z.namelist()
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def failing(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temporary left


def test_a_checkpoint_replaced_while_being_read_is_read_whole(saved, monkeypatch):
    """Headers, meta and arrays all come from the file that was opened, even if a
    training process renames a newer checkpoint over it halfway through the read."""
    import numpy_vae.checkpoint as checkpoint

    path, model, opt = saved
    newer = path.with_name("newer.npz")
    saved_b0 = model.params["decoder.b0"].copy()
    model.params["decoder.b0"] += 1
    save_checkpoint(newer, model, opt, {"epoch": 5})
    read_headers = checkpoint._array_headers

    def headers_then_replace(file, p):
        headers = read_headers(file, p)
        newer.replace(path)  # what os.replace in atomic_write does to a reader
        return headers

    monkeypatch.setattr(checkpoint, "_array_headers", headers_then_replace)
    old, _, meta = load_checkpoint(path)
    assert meta["epoch"] == 4  # the epoch of the parameters read, not the newer file's
    np.testing.assert_array_equal(old.params["decoder.b0"], saved_b0)


def test_a_json_copy_lagging_behind_its_checkpoint_is_waited_for(saved):
    """A training process renames the .npz, then its .json copy: a reader in between
    waits for the copy instead of calling it edited by hand."""
    import threading

    path, model, opt = saved
    readable = path.with_suffix(".json")
    lagging = readable.read_text()
    save_checkpoint(path, model, opt, {"epoch": 5})
    fresh = readable.read_text()
    readable.write_text(lagging)
    timer = threading.Timer(0.3, readable.write_text, args=(fresh,))
    timer.start()
    try:
        assert load_checkpoint(path, wait=10)[2]["epoch"] == 5
    finally:
        timer.join()
    readable.write_text(lagging)  # a copy that stays different is reported, after the wait
    with pytest.raises(CheckpointError, match="edited by hand"):
        load_checkpoint(path, wait=0.2)
