"""Tests for numpy_vae.datafiles: readers, checked downloads (no network), unreadable paths.

Real-data tests read MNIST, Fashion-MNIST and Frey Face from data_dir() (set
NUMPY_VAE_DATA) with download=False; they skip when the files are absent, and fail
instead when NUMPY_VAE_REQUIRE_DATA=1.
"""

import gzip
import hashlib
import io
import os
import struct
import urllib.error

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_vae import data, datafiles
from numpy_vae.datafiles import (
    DataNotFoundError,
    fetch,
    read_frey_mat,
    read_idx,
    read_mat_uint8,
)
from numpy_vae.errors import InvalidValueError, NumpyVAEError

tmp_ok = settings(max_examples=25, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------- IDX


def write_idx(path, array, magic=None):
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@tmp_ok
@given(n=st.integers(0, 5), rows=st.integers(1, 6), cols=st.integers(1, 6), seed=st.integers(0, 9))
def test_idx_round_trip(tmp_path, n, rows, cols, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l.gz", labels)
    got_images, got_labels = read_idx(tmp_path / "i.gz"), read_idx(tmp_path / "l.gz")
    assert got_images.dtype == np.uint8 and got_images.shape == (n, rows, cols)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_idx_rejects_bad_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "bad.gz"
    write_idx(path, images, magic=0x0D03)  # float data
    with pytest.raises(InvalidValueError, match="bad.gz.*magic"):
        read_idx(path)
    header = struct.pack(">IIII", 0x0803, 2, 3, 4)
    with gzip.open(path, "wb") as f:
        f.write(header + images.tobytes()[:-1])  # one byte short
    with pytest.raises(ValueError, match="bad.gz.*truncated"):
        read_idx(path)
    with gzip.open(path, "wb") as f:
        f.write(header[:10])
    with pytest.raises(ValueError, match="header"):
        read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="bad.gz"):
        read_idx(path)


# ----------------------------------------------------------------------------- MAT-5


def _small_tag(order, mtype, nbytes):
    """The 4-byte small-element tag: nbytes in the upper 16 bits, type in the lower."""
    return struct.pack(order + "I", (nbytes << 16) | mtype)


def mat_variable(array, name, order="<", mclass=9, data_type=2):
    """One miMATRIX element holding a 2-D array (column-major), as MATLAB -v6 writes it."""
    def element(mtype, payload):
        if len(payload) <= 4:
            return _small_tag(order, mtype, len(payload)) + payload.ljust(4, b"\0")
        return (struct.pack(order + "II", mtype, len(payload)) + payload
                + b"\0" * (-len(payload) % 8))
    flags = element(6, struct.pack(order + "II", mclass, 0))
    dims = element(5, struct.pack(order + "2i", *array.shape))
    body = flags + dims + element(1, name.encode()) + element(
        data_type, array.T.astype(array.dtype.newbyteorder(order)).tobytes())
    return struct.pack(order + "II", 14, len(body)) + body


def write_mat(path, variables, order="<"):
    text = b"MATLAB 5.0 MAT-file, Platform: test, Created by numpy_vae tests".ljust(116)
    indicator = b"IM" if order == "<" else b"MI"
    header = text + b"\0" * 8 + struct.pack(order + "H", 0x0100) + indicator
    path.write_bytes(header + b"".join(variables))


@tmp_ok
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), seed=st.integers(0, 9),
       order=st.sampled_from("<>"), other=st.sampled_from(["x", "longname", None]))
def test_mat_round_trip(tmp_path, rows, cols, seed, order, other):
    ff = np.random.default_rng(seed).integers(0, 256, (rows, cols), dtype=np.uint8)
    variables = [mat_variable(ff, "ff", order)]
    if other:  # another variable first, with a short (small-format) or long name
        variables.insert(0, mat_variable(ff[::-1], other, order))
    write_mat(tmp_path / "t.mat", variables, order)
    got = read_mat_uint8(tmp_path / "t.mat", "ff")
    assert got.shape == (rows, cols) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, ff)


def test_frey_reader_one_face_per_column(tmp_path):
    ff = np.random.default_rng(0).integers(0, 256, (560, 3), dtype=np.uint8)
    write_mat(tmp_path / "f.mat", [mat_variable(ff, "ff")])
    faces = read_frey_mat(tmp_path / "f.mat")
    assert faces.shape == (3, 28, 20)
    for j in range(3):
        np.testing.assert_array_equal(faces[j], ff[:, j].reshape(28, 20))
    write_mat(tmp_path / "g.mat", [mat_variable(ff[:550], "ff")])
    with pytest.raises(ValueError, match="g.mat.*560"):
        read_frey_mat(tmp_path / "g.mat")


def test_mat_rejects_bad_files(tmp_path):
    ff = np.arange(24, dtype=np.uint8).reshape(6, 4)
    good = tmp_path / "good.mat"
    write_mat(good, [mat_variable(ff, "ff")])
    raw = good.read_bytes()
    cases = {
        "garbage": np.random.default_rng(0).bytes(400),
        "truncated": raw[:-9],
        "endian": raw[:126] + b"XX" + raw[128:],
        "compressed": raw[:128] + struct.pack("<II", 15, 16) + b"\0" * 16,
    }
    for name, content in cases.items():
        (tmp_path / f"{name}.mat").write_bytes(content)
    write_mat(tmp_path / "double.mat", [mat_variable(ff.astype(np.float64), "ff", data_type=9)])
    write_mat(tmp_path / "cell.mat", [mat_variable(ff, "ff", mclass=1)])
    write_mat(tmp_path / "noname.mat", [mat_variable(ff, "gg")])
    expect = {"garbage": "header", "truncated": "past", "endian": "endian",
              "compressed": "compressed", "double": "data type 9", "cell": "class 1",
              "noname": "no variable named 'ff'"}
    for name, message in expect.items():
        with pytest.raises(ValueError, match=f"{name}.mat.*{message}"):
            read_mat_uint8(tmp_path / f"{name}.mat", "ff")


# ----# ----------------------------------------------------------------------------- fetch


class FakeResponse(io.BytesIO):
    def __init__(self, payload, length=None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload) if length is None else length)}


@pytest.fixture
def toy(monkeypatch):
    """A fake data set 'toy' with one file and two mirrors served from memory."""
    payload = b"toy data " * 5000
    monkeypatch.setitem(datafiles.SHA256, "toy", {"a.bin": hashlib.sha256(payload).hexdigest()})
    monkeypatch.setitem(datafiles.MIRRORS, "toy", ("http://one.invalid/", "http://two.invalid/"))
    served, calls = {}, []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        result = served[url]
        if isinstance(result, BaseException):
            raise result
        return result() if callable(result) else FakeResponse(result)
    monkeypatch.setattr(datafiles, "_urlopen", fake_urlopen)
    return payload, served, calls


def test_fetch_downloads_and_checks(tmp_path, toy):
    payload, served, calls = toy
    served["http://one.invalid/a.bin"] = payload
    path = fetch("toy", "a.bin", tmp_path)
    assert path == tmp_path / "toy" / "a.bin" and path.read_bytes() == payload
    assert os.listdir(tmp_path / "toy") == ["a.bin"]  # no temporary file left
    assert fetch("toy", "a.bin", tmp_path) == path and len(calls) == 1  # no second download


def test_fetch_falls_back_to_next_mirror(tmp_path, toy):
    payload, served, calls = toy
    served["http://one.invalid/a.bin"] = urllib.error.URLError("no route")
    served["http://two.invalid/a.bin"] = payload
    assert fetch("toy", "a.bin", tmp_path).read_bytes() == payload
    assert calls == ["http://one.invalid/a.bin", "http://two.invalid/a.bin"]


def test_fetch_tampered_or_truncated_leaves_nothing(tmp_path, toy):
    payload, served, calls = toy
    served["http://one.invalid/a.bin"] = payload[:-1] + b"!"
    served["http://two.invalid/a.bin"] = lambda: FakeResponse(payload[:100], len(payload))
    with pytest.raises(DataNotFoundError) as info:
        fetch("toy", "a.bin", tmp_path)
    message = str(info.value)
    assert "http://one.invalid/a.bin" in message and "SHA-256 mismatch" in message
    assert "http://two.invalid/a.bin" in message and "truncated" in message
    assert str(tmp_path / "toy") in message and datafiles.DATA_ENV in message
    assert os.listdir(tmp_path / "toy") == []
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, NumpyVAEError)


def test_fetch_interrupted_removes_temporary(tmp_path, toy):
    _, served, _ = toy

    class Interrupted(FakeResponse):
        def read(self, n=-1):
            raise KeyboardInterrupt
    served["http://one.invalid/a.bin"] = lambda: Interrupted(b"x")
    with pytest.raises(KeyboardInterrupt):
        fetch("toy", "a.bin", tmp_path)
    assert os.listdir(tmp_path / "toy") == []


def test_fetch_refuses_existing_wrong_file(tmp_path, toy):
    payload, _, calls = toy
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "a.bin").write_bytes(b"something else")
    with pytest.raises(ValueError) as info:
        fetch("toy", "a.bin", tmp_path)
    message = str(info.value)
    assert "a.bin" in message and "Delete" in message
    assert datafiles.SHA256["toy"]["a.bin"] in message
    assert hashlib.sha256(b"something else").hexdigest() in message
    assert calls == []


def test_fetch_without_download_explains(tmp_path, toy):
    _, _, calls = toy
    with pytest.raises(DataNotFoundError, match="download=False") as info:
        fetch("toy", "a.bin", tmp_path, download=False)
    assert "a.bin" in str(info.value) and datafiles.DATA_ENV in str(info.value) and calls == []
    with pytest.raises(ValueError, match="filename.*'b.bin'"):
        fetch("toy", "b.bin", tmp_path)
    with pytest.raises(ValueError, match="dataset.*mnist.*'nope'"):
        fetch("nope", "a.bin", tmp_path)


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(datafiles.DATA_ENV, str(tmp_path / "env"))
    assert datafiles.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert datafiles.data_dir() == tmp_path / "env"
    monkeypatch.delenv(datafiles.DATA_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datafiles.data_dir() == tmp_path / "xdg" / "numpy_vae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datafiles.data_dir() == tmp_path / "home" / ".cache" / "numpy_vae"


# ----------------------------------------------------------------------------- loaders


def test_loaders_on_fake_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    sums = {}
    for split, n in (("train", 7), ("test", 3)):
        image_file, label_file = datafiles.IDX_FILES[split]
        write_idx(tmp_path / image_file, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / label_file, rng.integers(0, 10, n, dtype=np.uint8))
    write_mat(tmp_path / datafiles.FREY_FILE,
              [mat_variable(rng.integers(0, 256, (560, 1965), dtype=np.uint8), "ff")])
    for name in ("mnist", "frey-face"):
        (tmp_path / name).mkdir()
        for f in datafiles.SHA256[name]:
            os.replace(tmp_path / f, tmp_path / name / f)
            sums[f] = hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest()
        monkeypatch.setitem(datafiles.SHA256, name, {f: sums[f] for f in datafiles.SHA256[name]})
    train = data.load_dataset("mnist", "train", tmp_path, download=False)
    assert isinstance(train, data.Dataset) and train.name == "mnist" and len(train) == 7
    assert train.labels.dtype == np.int64 and train.factors is None
    assert train.image_shape == data.IMAGE_SHAPES["mnist"] and train.data_dim == 784
    assert len(data.load_dataset("mnist", "test", tmp_path, download=False)) == 3
    parts = [data.load_dataset("frey-face", s, tmp_path, download=False).images
             for s in ("train", "test")]
    everything = data.load_frey_face("all", tmp_path, download=False).images
    assert [len(p) for p in parts] == [1765, 200] and everything.shape == (1965, 28, 20)
    train_idx, test_idx = datafiles.frey_split_indices()
    np.testing.assert_array_equal(parts[1], everything[test_idx])
    np.testing.assert_array_equal(parts[0], everything[train_idx])
    with pytest.raises(ValueError, match=r"split must be one of .*got 'valid'"):
        datafiles.read_frey_face("valid", tmp_path, download=False)
    with pytest.raises(ValueError, match=r"dataset must be one of .*got 'frey-face'"):
        datafiles.read_mnist("frey-face", "train", tmp_path, download=False)


def test_frey_split_is_fixed():
    train_idx, test_idx = datafiles.frey_split_indices()
    assert len(train_idx) == 1765 and len(test_idx) == 200
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(1965))
    assert test_idx[:8].tolist() == [20, 44, 50, 54, 85, 98, 120, 123]  # stable across versions


# ----------------------------------------------------------------------------- unreadable paths


def one_line_naming(error, path, cause):
    message = str(error)
    return "\n" not in message and str(path) in message and cause in message


def test_folder_in_place_of_a_data_file(tmp_path, toy):
    _, _, calls = toy
    folder = tmp_path / "toy" / "a.bin"
    folder.mkdir(parents=True)
    for download in (True, False):  # refused either way, and nothing is downloaded over it
        with pytest.raises(DataNotFoundError) as info:
            fetch("toy", "a.bin", tmp_path, download=download)
        assert one_line_naming(info.value, folder, "it is a folder")
    assert calls == [] and folder.is_dir()
    for read in (read_idx, read_mat_uint8, read_frey_mat):
        with pytest.raises(DataNotFoundError) as info:
            read(folder)
        assert one_line_naming(info.value, folder, "it is a folder")


def test_data_folder_that_is_a_file(tmp_path, toy):
    _, _, calls = toy
    (tmp_path / "toy").write_bytes(b"not a folder")
    with pytest.raises(DataNotFoundError) as info:
        fetch("toy", "a.bin", tmp_path)
    assert one_line_naming(info.value, tmp_path / "toy" / "a.bin", "is a file, not a folder")
    assert calls == []


def test_real_loader_names_a_misplaced_folder(tmp_path):
    (tmp_path / "mnist" / datafiles.IDX_FILES["test"][0]).mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as info:
        data.load_dataset("mnist", "test", tmp_path, download=False)
    assert one_line_naming(info.value, tmp_path / "mnist", "it is a folder")


@pytest.fixture
def no_access(tmp_path):
    """chmod(path, mode), undone afterwards; skips where chmod does not stop us (root)."""
    changed = []

    def chmod(path, mode, check=os.R_OK):
        os.chmod(path, mode)
        changed.append(path)
        if os.access(path, check):
            pytest.skip("permissions are not enforced for this user (root)")
    yield chmod
    for path in reversed(changed):
        os.chmod(path, 0o700)


def test_unreadable_folder_or_file(tmp_path, toy, no_access):
    payload, served, calls = toy
    served["http://one.invalid/a.bin"] = payload
    path = fetch("toy", "a.bin", tmp_path)
    no_access(path, 0o000)
    with pytest.raises(DataNotFoundError) as info:
        fetch("toy", "a.bin", tmp_path)
    assert one_line_naming(info.value, path, "permission denied")
    os.chmod(path, 0o600)
    no_access(path.parent, 0o000, os.X_OK)
    with pytest.raises(DataNotFoundError) as info:
        fetch("toy", "a.bin", tmp_path, download=False)
    assert one_line_naming(info.value, path, "permission denied") and len(calls) == 1


def test_unwritable_folder_stops_before_the_mirrors(tmp_path, toy, no_access):
    _, _, calls = toy
    (tmp_path / "toy").mkdir()
    no_access(tmp_path / "toy", 0o500, os.W_OK)
    with pytest.raises(DataNotFoundError) as info:
        fetch("toy", "a.bin", tmp_path)
    assert one_line_naming(info.value, tmp_path / "toy", "permission denied") and calls == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_downloaded_file_follows_the_umask(tmp_path, toy, umask):
    payload, served, _ = toy
    served["http://one.invalid/a.bin"] = payload
    old = os.umask(umask)
    try:
        path = fetch("toy", "a.bin", tmp_path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------- real data

IDX_DECODED_SHA256 = {  # SHA-256 of the gunzipped files (shared/data/README.md)
    ("mnist", "train"): ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                         "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    ("mnist", "test"): ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ("fashion-mnist", "train"): (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    ("fashion-mnist", "test"): (
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}


@pytest.mark.parametrize("name, split", list(IDX_DECODED_SHA256))
def test_real_idx_data(name, split, require_data):
    ds = require_data(name, split)
    n = 60000 if split == "train" else 10000
    assert ds.images.shape == (n, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert set(np.unique(ds.labels)) == set(range(10)) and ds.images.max() == 255
    assert ds.image_shape == data.IMAGE_SHAPES[name] and ds.data_dim == data.data_dim(name)
    # the decoded arrays are byte for byte the published uncompressed files
    images = struct.pack(">IIII", 0x0803, n, 28, 28) + ds.images.tobytes()
    labels = struct.pack(">II", 0x0801, n) + ds.labels.astype(np.uint8).tobytes()
    expected = IDX_DECODED_SHA256[name, split]
    assert (hashlib.sha256(images).hexdigest(), hashlib.sha256(labels).hexdigest()) == expected
    if (name, split) == ("mnist", "train"):
        assert ds.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_real_frey_face(require_data):
    train = require_data("frey-face", "train")
    path = fetch("frey-face", datafiles.FREY_FILE, download=False)  # checks the SHA-256
    faces = data.load_frey_face("all", download=False).images
    assert faces.shape == (1965, *data.IMAGE_SHAPES["frey-face"]) and faces.dtype == np.uint8
    assert (faces.min(), faces.max()) == (8, 238)
    # independent reading: the last 1,100,400 bytes are the column-major (560, 1965) data
    raw = np.frombuffer(path.read_bytes()[-560 * 1965:], np.uint8)
    np.testing.assert_array_equal(faces, raw.reshape(1965, 28, 20))
    assert len(train) == 1765 and len(require_data("frey-face", "test")) == 200


def test_no_home_folder_is_one_clear_error(monkeypatch):
    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv(datafiles.DATA_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(datafiles.pathlib.Path, "home", staticmethod(no_home))
    with pytest.raises(datafiles.DataNotFoundError, match="HOME is not set; set NUMPY_VAE_DATA"):
        datafiles.data_dir()
