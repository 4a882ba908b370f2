"""Tests of the image-folder dataset (``--dataset=folder --data_dir=PATH``).

A tiny dataset (3 classes, 24x24 PNGs written with ``tf.io.encode_png``) is
generated in ``tmp_path``; user mistakes end in one line with exit code 2
through ``scripts/train.py``.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from helpers import error_lines, run_script

from kdkeras import config as config_lib
from kdkeras import data
from kdkeras.data import DataError
from kdkeras.data import folder as folder_lib
from kdkeras.training.run_folder import run_dir

CLASSES = ("cat", "dog", "frog")
SIZE = 24


def _write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(image))


def write_folder(root, sizes=(("train", 8), ("test", 4)), size=SIZE, classes=CLASSES):
    """Writes ``root/<split>/<class>/<i>.png``: class ``c``'s red channel is ``40 * c`` + noise in [0, 40)."""
    rng = np.random.default_rng(0)
    for split, n in sizes:
        for c, name in enumerate(classes):
            for i in range(n):
                image = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
                image[..., 0] += np.uint8(40 * c)
                _write_png(os.path.join(root, split, name, f"{i}.png"), image)
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images") / "mydata")


def _one_line(exc):
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_splits_sizes_classes_and_labels(folder):
    splits = data.make_splits("folder", data_dir=folder, batch_size=8, val_size=3, train_size=15, test_size=9)
    info = splits.info
    assert info.name == "folder" and info.class_names == CLASSES and info.num_classes == 3
    assert info.image_shape == (SIZE, SIZE, 3)
    assert (info.train_examples, info.val_examples, info.test_examples) == (15, 3, 9)
    assert splits.steps_per_epoch == 2
    images, labels = next(iter(splits.train_epochs(0, 1)))
    assert images.shape == (8, SIZE, SIZE, 3) and images.dtype == tf.float32
    # Labels follow the folder names: class c's red channel is 40 * c + noise.
    arrays, names = data.load_splits("folder", ("train", "test"), data_dir=folder)
    assert names == CLASSES
    for split, n in (("train", 8), ("test", 4)):
        x, y = arrays[split]
        assert x.shape == (3 * n, SIZE, SIZE, 3) and x.dtype == np.uint8
        assert y.tolist() == [c for c in range(3) for _ in range(n)]
        assert np.all(x[..., 0] // 40 == y[:, None, None])
    assert data.split_size("folder", "train", data_dir=folder) == 24


def test_statistics_are_measured_once_and_cached_in_the_folder(folder):
    info = data.dataset_info("folder", data_dir=folder)
    cache = os.path.join(folder, folder_lib.STATS_FILE)
    stored = json.load(open(cache))
    x, _ = data.load_arrays("folder", "train", data_dir=folder)
    mean = (x / 255.0).reshape(-1, 3).mean(axis=0)
    std = (x / 255.0).reshape(-1, 3).std(axis=0)
    np.testing.assert_allclose(info.mean, mean, atol=1e-5)
    np.testing.assert_allclose(info.std, std, atol=1e-5)
    assert stored["mean"] == list(info.mean) and stored["train_images"] == 24 and stored["image_shape"] == [24, 24, 3]


def test_val_folder_and_augmentation_follow_the_image_size(tmp_path):
    root = write_folder(tmp_path / "d", sizes=(("train", 2), ("val", 1)), size=40)
    splits = data.make_splits("folder", data_dir=root, batch_size=6, seed=1)
    assert splits.info.image_shape == (40, 40, 3) and splits.info.test_examples == 3
    assert data.pad_for(32) == data.PAD == 4 and data.pad_for(40) == 5 and data.pad_for(64) == 8
    out = data.augment_batch(np.arange(40 * 40 * 3, dtype=np.int32).reshape(1, 40, 40, 3), seed=3)
    assert out.shape == (1, 40, 40, 3)


def test_run_names_tell_folders_apart_by_their_files(tmp_path):
    def name(sub):
        config = config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "folder", "data_dir": str(tmp_path / sub)})
        return config_lib.run_name(config)

    for sub, size in (("a/data", 3), ("b/data", 4)):
        os.makedirs(tmp_path / sub / "train" / "cat")
        (tmp_path / sub / "train" / "cat" / "1.png").write_bytes(b"x" * size)
    assert name("a/data") != name("b/data") and name("a/data").startswith("wrn16x1_R_g2-s0-")
    shutil.copytree(tmp_path / "a", tmp_path / "moved")  # the same files elsewhere: the same run
    assert name("moved/data") == name("a/data")
    with pytest.raises(ValueError, match="needs data_dir"):
        config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "folder"})


def test_library_errors(tmp_path, folder):
    with pytest.raises(DataError, match="does not exist"):
        data.load_arrays("folder", "train", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="needs --data_dir"):
        data.load_arrays("folder", "train")
    root = write_folder(tmp_path / "wrong_size", sizes=(("train", 2), ("test", 1)))
    _write_png(os.path.join(root, "test", "dog", "big.png"), np.zeros((30, 30, 3), np.uint8))
    with pytest.raises(DataError) as exc:
        data.load_splits("folder", ("train", "test"), data_dir=root)
    assert "big.png' is 30x30 pixels" in _one_line(exc)
    shutil.rmtree(os.path.join(root, "test", "dog"))
    os.makedirs(os.path.join(root, "test", "dog"))
    with pytest.raises(DataError, match="class folder .*dog' holds no images"):
        data.load_splits("folder", ("train", "test"), data_dir=root)


def _empty(root):
    os.makedirs(root)


def _mismatched(root):
    write_folder(root, sizes=(("train", 1), ("test", 1)))
    os.rename(os.path.join(root, "test", "frog"), os.path.join(root, "test", "toad"))


def _corrupt(root):
    write_folder(root, sizes=(("train", 2), ("test", 1)))
    with open(os.path.join(root, "train", "dog", "1.png"), "wb") as f:
        f.write(b"not an image")


def _no_test(root):
    write_folder(root, sizes=(("train", 1),))


@pytest.mark.parametrize("make, fragments", [
    (_empty, ["is empty", "train/<class>"]),
    (_mismatched, ["only in train/: frog", "only in test/: toad"]),
    (_corrupt, ["cannot read image", os.path.join("train", "dog", "1.png")]),
    (_no_test, ["has no test/ or val/ split", "found train/"]),
], ids=["empty", "mismatched", "corrupt", "no_test"])
def test_script_errors_are_one_line_with_exit_code_2(tmp_path, make, fragments):
    root = str(tmp_path / "data")
    make(root)
    proc = run_script("train.py", "--model=wrn10x1_R_g2", "--dataset=folder", f"--data_dir={root}", "--epochs=1",
                      f"--logdir={tmp_path / 'logs'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def test_one_epoch_run(tmp_path, folder):
    from kdkeras import training

    config = config_lib.resolve({"model": "wrn10x1_R_g2", "dataset": "folder", "data_dir": folder, "epochs": 1,
                                 "batch_size": 8, "val_size": 3})
    results = training.train_and_evaluate(config, str(tmp_path), verbose=0)
    run = run_dir(config, str(tmp_path))
    assert os.path.basename(run).startswith("wrn10x1_R_g2-s0-")  # named by its files' fingerprint
    assert results["data"]["source"] == "folder" and results["data"]["where"] == os.path.realpath(folder)
    assert os.path.isfile(os.path.join(run, "model.keras"))
    assert results["train_examples"] == 21 and results["val_examples"] == 3 and results["test_examples"] == 12
    assert 0.0 <= results["test_accuracy"] <= 1.0
