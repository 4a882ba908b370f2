"""Tests of kdkeras.data: archive/TFDS/synthetic loading, errors, pipelines.

Everything runs offline: archives in the original CIFAR format are written
into ``tmp_path`` and TFDS is exercised through ``tfds.testing.mock_data``.
"""

from __future__ import annotations

import builtins
import bz2
import os
import pickle
import socket
import tarfile
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from cifar_archives import (
    CIFAR10,
    CIFAR100,
    write_cifar,
)

from kdkeras import data
from kdkeras.data import DataError
from tests.helpers import record_calls, relative_error


@pytest.fixture(scope="module")
def c100(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("c100"))
    return write_cifar(root, CIFAR100, n_train=200, n_test=50)


@pytest.fixture(scope="module")
def c10(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("c10"))
    return write_cifar(root, CIFAR10, n_train=50, n_test=10)


def _reflect_pad(image):
    return np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")


def _windows(image):
    """All 9x9 offsets x 2 flips of the 4-pixel reflect-padded image."""
    padded = _reflect_pad(image)
    out = {}
    for oy in range(9):
        for ox in range(9):
            win = padded[oy : oy + 32, ox : ox + 32]
            out[(oy, ox, False)] = win
            out[(oy, ox, True)] = win[:, ::-1]
    return out


def _matching_windows(aug, image):
    return [k for k, w in _windows(image).items() if np.array_equal(w, aug)]


# --------------------------------------------------------------------------
# Archive loading
# --------------------------------------------------------------------------


def test_channel_major_conversion_by_hand(tmp_path):
    # R plane = 8 * row, G plane = 8 * column, B plane = 7 everywhere,
    # written directly in the file layout (1024 R, 1024 G, 1024 B).
    r = np.repeat(np.arange(32) * 8, 32)  # row-major: row index of each pixel
    g = np.tile(np.arange(32) * 8, 32)  # column index of each pixel
    b = np.full(1024, 7)
    row = np.concatenate([r, g, b]).astype(np.uint8)[None]
    path, _, _ = write_cifar(str(tmp_path), CIFAR100, n_train=1, n_test=1,
                             train_override={b"data": row, b"fine_labels": [42]})
    x, y = data.load_arrays("cifar100", "train", archive=path)
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.uint8
    assert y.tolist() == [42] and y.dtype == np.int64
    for i in (0, 5, 31):
        for j in (0, 17, 31):
            assert x[0, i, j].tolist() == [8 * i, 8 * j, 7]


@pytest.mark.parametrize("form", ["tar", "folder", "parent", "parent_of_tar"])
def test_archive_cifar100_forms(c100, form):
    path, (x_tr, y_tr), (x_te, y_te) = c100
    root = os.path.dirname(path)
    arg = {
        "tar": path,
        "folder": os.path.join(root, CIFAR100.folder),
        "parent": root,
        "parent_of_tar": None,
    }[form]
    if arg is None:  # a folder holding only the .tar.gz
        arg = os.path.join(root, "only_tar")
        os.makedirs(arg, exist_ok=True)
        target = os.path.join(arg, CIFAR100.archive_file)
        if not os.path.exists(target):
            os.symlink(path, target)
    x, y = data.load_arrays("cifar100", "train", archive=arg)
    np.testing.assert_array_equal(x, x_tr)
    np.testing.assert_array_equal(y, y_tr)
    assert x.dtype == np.uint8 and y.dtype == np.int64 and x.flags.c_contiguous
    x, y = data.load_arrays("cifar100", "test", archive=arg)
    np.testing.assert_array_equal(x, x_te)
    np.testing.assert_array_equal(y, y_te)


@pytest.mark.parametrize("tar", [True, False])
def test_archive_cifar10_batches_concatenated_in_order(tmp_path, tar):
    path, (x_tr, y_tr), (x_te, y_te) = write_cifar(str(tmp_path), CIFAR10, n_train=23,
                                                   n_test=7, tar=tar)
    x, y = data.load_arrays("cifar10", "train", archive=path)
    np.testing.assert_array_equal(x, x_tr)
    np.testing.assert_array_equal(y, y_tr)
    x, y = data.load_arrays("cifar10", "test", archive=path)
    np.testing.assert_array_equal(x, x_te)
    np.testing.assert_array_equal(y, y_te)


def test_archive_class_names_and_info(c10):
    path, (x_tr, _), (x_te, _) = c10
    train, test, info = data.make_datasets("cifar10", archive=path, batch_size=16)
    assert info.name == "cifar10" and info.num_classes == 10
    assert info.class_names == tuple(f"cifar-10_name_{i}" for i in range(10))
    assert info.image_shape == (32, 32, 3)
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2470, 0.2435, 0.2616)
    assert (info.train_examples, info.test_examples) == (len(x_tr), len(x_te))


def test_legacy_python2_numpy_pickle_is_accepted(tmp_path):
    # The original files reference numpy.core.multiarray (NumPy 1 / Python 2).
    path, (x_tr, y_tr), _ = write_cifar(str(tmp_path), CIFAR100, n_train=5, n_test=2,
                                        tar=False, protocol=2)
    train_file = os.path.join(path, "train")
    with open(train_file, "rb") as f:
        blob = f.read()
    if b"numpy._core.multiarray" in blob:
        blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        with open(train_file, "wb") as f:
            f.write(blob)
    assert b"numpy.core.multiarray" in blob
    x, y = data.load_arrays("cifar100", "train", archive=path)
    np.testing.assert_array_equal(x, x_tr)
    np.testing.assert_array_equal(y, y_tr)


# --------------------------------------------------------------------------
# Archive errors
# --------------------------------------------------------------------------


def _assert_one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


class _CountingFile:
    """A file object that adds the size of every read to ``counts``."""

    def __init__(self, f, counts):
        self._f, self._counts = f, counts

    def read(self, *args):
        blob = self._f.read(*args)
        self._counts.append(len(blob))
        return blob

    def readinto(self, buffer):
        n = self._f.readinto(buffer)
        self._counts.append(n or 0)
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _count_reads(monkeypatch, path):
    """The sizes of all reads from ``path``, through every ``open`` that tarfile and its decompressors use."""
    counts, real_open, target = [], builtins.open, os.path.realpath(path)

    def counting_open(file, *args, **kwargs):
        f = real_open(file, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(file) == target:
            return _CountingFile(f, counts)
        return f

    # gzip and lzma call builtins.open; tarfile and bz2 keep their own reference to it.
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(tarfile, "bltn_open", counting_open)
    monkeypatch.setattr(bz2, "_builtin_open", counting_open)
    return counts


def test_missing_archive_path(tmp_path):
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", archive=str(tmp_path / "nope.tar.gz"))
    msg = _assert_one_line(exc)
    assert "does not exist" in msg and "--archive" in msg


def test_corrupt_archive_random_bytes(tmp_path, monkeypatch):
    path = tmp_path / "cifar-100-python.tar.gz"
    size = 4 << 20  # 4 MiB of noise: refused from its first bytes, not read through
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    reads = _count_reads(monkeypatch, path)
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", archive=str(path))
    monkeypatch.undo()
    # tarfile tries tar, gzip, bzip2 and xz; each gives up on its first block (at most 8 KiB each).
    assert reads and sum(reads) <= 64 << 10, f"read {sum(reads)} of {size} bytes"
    msg = _assert_one_line(exc)
    assert "not a readable tar archive" in msg and str(path) in msg


def test_truncated_archive(c100, tmp_path):
    path = c100[0]
    with open(path, "rb") as f:
        blob = f.read()
    cut = tmp_path / "cifar-100-python.tar.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "test", archive=str(cut))
    msg = _assert_one_line(exc)
    assert str(cut) in msg and ("truncated" in msg or "not a readable" in msg)


def test_truncated_pickle_in_folder(tmp_path):
    folder, _, _ = write_cifar(str(tmp_path), CIFAR100, n_train=10, n_test=2, tar=False)
    train_file = os.path.join(folder, "train")
    with open(train_file, "rb") as f:
        blob = f.read()
    with open(train_file, "wb") as f:
        f.write(blob[: len(blob) // 2])
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", archive=folder)
    msg = _assert_one_line(exc)
    assert "not a readable CIFAR pickle" in msg and "'train'" in msg


def test_pickle_with_foreign_global_is_refused(tmp_path):
    folder, _, _ = write_cifar(str(tmp_path), CIFAR100, n_train=3, n_test=2, tar=False)
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with open(os.path.join(folder, "train"), "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", archive=folder)
    assert "forbidden global" in _assert_one_line(exc)
    assert not marker.exists()


@pytest.mark.parametrize("form", ["tar", "folder", "parent"])
def test_cifar10_archive_given_as_cifar100(c10, form, monkeypatch):
    path = c10[0]
    root = os.path.dirname(path)
    arg = {"tar": path, "folder": os.path.join(root, CIFAR10.folder), "parent": root}[form]
    from kdkeras.data import archive

    extracted = record_calls(monkeypatch, tarfile.TarFile, "extractfile")
    folders_read = record_calls(monkeypatch, archive, "_read_folder")
    unpickled = record_calls(monkeypatch, archive, "_unpickle")
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", archive=arg)
    # Refused from the names alone: no member of the tar and no file of the folder is read or unpickled.
    assert (extracted, folders_read, unpickled) == ([], [], [])
    msg = _assert_one_line(exc)
    assert "contains CIFAR-10" in msg and "--dataset=cifar10" in msg


def test_cifar100_archive_given_as_cifar10(c100):
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar10", "test", archive=c100[0])
    msg = _assert_one_line(exc)
    assert "contains CIFAR-100" in msg and "--dataset=cifar100" in msg


def test_labels_out_of_range(tmp_path):
    path, _, _ = write_cifar(str(tmp_path), CIFAR100, n_train=3, n_test=2,
                             train_override={b"fine_labels": [0, 100, 5]})
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", archive=path)
    msg = _assert_one_line(exc)
    assert "labels" in msg and "100 classes" in msg and "[0, 100]" in msg


def test_wrong_data_shape(tmp_path):
    bad = np.zeros((3, 3000), np.uint8)
    path, _, _ = write_cifar(str(tmp_path), CIFAR100, n_train=3, n_test=2,
                             train_override={b"data": bad})
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", archive=path)
    msg = _assert_one_line(exc)
    assert "(3, 3000)" in msg and "3072" in msg


def test_label_count_mismatch(tmp_path):
    path, _, _ = write_cifar(str(tmp_path), CIFAR100, n_train=3, n_test=2,
                             train_override={b"fine_labels": [1, 2]})
    with pytest.raises(DataError, match="labels for 3 images"):
        data.load_arrays("cifar100", "train", archive=path)


def test_folder_without_dataset(tmp_path):
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar10", "train", archive=str(tmp_path))
    msg = _assert_one_line(exc)
    assert "cifar-10-batches-py" in msg and "--archive" in msg


def test_incomplete_folder(tmp_path):
    folder, _, _ = write_cifar(str(tmp_path), CIFAR10, n_train=10, n_test=2, tar=False)
    os.remove(os.path.join(folder, "data_batch_3"))
    with pytest.raises(DataError, match="lacks data_batch_3"):
        data.load_arrays("cifar10", "train", archive=folder)


# --------------------------------------------------------------------------
# Names, splits, sizes
# --------------------------------------------------------------------------


def test_unknown_dataset_name():
    for call in (lambda: data.load_arrays("imagenet", "train"),
                 lambda: data.make_datasets("mnist")):
        with pytest.raises(DataError) as exc:
            call()
        msg = _assert_one_line(exc)
        assert all(name in msg for name in data.DATASETS)


def test_unknown_split():
    with pytest.raises(DataError, match="train, test"):
        data.load_arrays("synthetic", "validation")


def test_subset_exact_size_balanced_and_deterministic(c100):
    path, (x_tr, y_tr), _ = c100  # 200 examples, 2 per class
    x1, y1 = data.load_arrays("cifar100", "train", archive=path, size=100, seed=3)
    x2, y2 = data.load_arrays("cifar100", "train", archive=path, size=100, seed=3)
    x3, _ = data.load_arrays("cifar100", "train", archive=path, size=100, seed=4)
    assert x1.shape == (100, 32, 32, 3) and y1.shape == (100,)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert np.bincount(y1, minlength=100).tolist() == [1] * 100  # class-balanced
    # The subset consists of original examples, kept in their original order.
    pos = [int(np.flatnonzero((x_tr == img).all(axis=(1, 2, 3)))[0]) for img in x1]
    assert pos == sorted(pos)
    np.testing.assert_array_equal(y_tr[pos], y1)


def test_subset_sizes_in_make_datasets(c100):
    train, test, info = data.make_datasets("cifar100", archive=c100[0], train_size=30,
                                           test_size=7, batch_size=8)
    assert (info.train_examples, info.test_examples) == (30, 7)
    assert sum(int(x.shape[0]) for x, _ in train) == 30
    assert sum(int(x.shape[0]) for x, _ in test) == 7


def test_subset_too_large(c100):
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", archive=c100[0], size=201)
    msg = _assert_one_line(exc)
    assert "201" in msg and "at most 200" in msg
    with pytest.raises(DataError, match="test split has 50"):
        data.make_datasets("cifar100", archive=c100[0], test_size=51)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_size_values(bad):
    with pytest.raises(DataError, match="positive integer"):
        data.load_arrays("synthetic", "train", size=bad)


def test_subset_indices_balanced_when_classes_unequal():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 5)
    idx = data.loading.subset_indices(labels, 12, seed=0)
    assert np.bincount(labels[idx], minlength=3).tolist() == [4, 4, 4]
    idx = data.loading.subset_indices(labels, 20, seed=0)
    assert np.bincount(labels[idx], minlength=3).tolist() == [10, 5, 5]


# --------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------


def test_synthetic_defaults_and_determinism():
    x, y = data.load_arrays("synthetic", "train")
    assert x.shape == (1024, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (1024,) and y.dtype == np.int64 and 0 <= y.min() and y.max() < 100
    x2, y2 = data.load_arrays("synthetic", "train")
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    xt, _ = data.load_arrays("synthetic", "test")
    assert xt.shape == (256, 32, 32, 3)
    assert data.load_arrays("synthetic", "test", size=10)[0].shape == (10, 32, 32, 3)
    info = data.make_datasets("synthetic", batch_size=64)[2]
    assert info.class_names[:2] == ("class_0", "class_1") and len(info.class_names) == 100
    # The documented constants match the generator's statistics.
    big, _ = data.load_arrays("synthetic", "train", size=4096)
    assert abs(big.mean() / 255 - info.mean[0]) < 0.01
    assert abs(big.std() / 255 - info.std[0]) < 0.01


# --------------------------------------------------------------------------
# TFDS (offline)
# --------------------------------------------------------------------------


def test_tfds_missing_data_fails_fast(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    loads = record_calls(monkeypatch, tfds, "load")
    connections = record_calls(monkeypatch, socket, "create_connection")
    lookups = record_calls(monkeypatch, socket, "getaddrinfo")
    requests = record_calls(monkeypatch, urllib.request, "urlopen")
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", data_dir=str(tmp_path))
    # Fast because nothing waits on the network: TFDS is asked not to download or try GCS, and with
    # $KDKERAS_NODOWNLOAD (tests/conftest.py) the archive is not fetched either.
    assert loads and all(kw.get("download") is False and kw.get("try_gcs") is False for _, kw in loads)
    assert (connections, lookups, requests) == ([], [], [])
    msg = _assert_one_line(exc)
    assert "--archive" in msg and "--data_dir" in msg and "synthetic" in msg
    assert str(tmp_path) in msg and "CIFAR-100 not found" in msg
    assert os.listdir(tmp_path) == []  # nothing downloaded or created
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        data.make_datasets("cifar10", data_dir=str(tmp_path))


def test_tfds_mock_load_arrays_and_make_datasets(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        x, y = data.load_arrays("cifar100", "train", data_dir=str(tmp_path))
        assert x.shape == (24, 32, 32, 3) and x.dtype == np.uint8
        assert y.shape == (24,) and y.dtype == np.int64
        assert 0 <= y.min() and y.max() < 100
        train, test, info = data.make_datasets("cifar100", data_dir=str(tmp_path),
                                               batch_size=10, train_size=20)
    assert info.num_classes == 100 and len(info.class_names) == 100
    # Names come from the TFDS info (the mock has no metadata: "0", "1", ...).
    assert all(isinstance(n, str) and n for n in info.class_names)
    assert (info.train_examples, info.test_examples) == (20, 24)
    images, labels = next(iter(train))
    assert images.shape == (10, 32, 32, 3) and images.dtype == tf.float32
    assert labels.shape == (10,) and labels.dtype.is_integer
    assert [int(b[0].shape[0]) for b in test] == [10, 10, 4]
    all_labels = np.concatenate([b[1].numpy() for b in test])
    assert 0 <= all_labels.min() and all_labels.max() < 100


def test_tfds_cifar100_reads_the_fine_label_not_the_coarse_one(tmp_path):
    """CIFAR-100 in TFDS has ``label`` (100 fine classes) and ``coarse_label`` (20): the fine one is read."""
    import tensorflow_datasets as tfds

    n = 24
    fine = np.array([(7 * i + 3) % 100 for i in range(n)])  # 20 of them are >= 20: no coarse label can match
    coarse = np.array([(5 * i + 1) % 20 for i in range(n)])
    assert not np.array_equal(fine, coarse)

    def as_dataset(self, *args, **kwargs):
        def examples():
            for i in range(n):
                yield {"id": str(i), "image": np.full((32, 32, 3), i, np.uint8), "label": fine[i],
                       "coarse_label": coarse[i]}
        return tf.data.Dataset.from_generator(examples, output_signature=self.info.features.get_tensor_spec())

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        x, y = data.load_arrays("cifar100", "train", data_dir=str(tmp_path))
    assert x.shape == (n, 32, 32, 3)
    order = x[:, 0, 0, 0].astype(int)  # each image carries its example index
    np.testing.assert_array_equal(y, fine[order])


# --------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------


def test_normalize_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    out = data.normalize(x, mean, std)
    assert out.dtype == tf.float32 and out.shape == x.shape
    expected = np.empty(x.shape, np.float64)
    for c in range(3):
        expected[..., c] = (x[..., c] / 255.0 - mean[c]) / std[c]
    # float32 element-wise ops against float64 on values of size <= ~2.1: ~1e-7 of that; 1e-6 of the scale
    # (absolute: values near 0 are a difference of two terms of size ~2).
    assert relative_error(out.numpy(), expected) < 1e-6


def test_augment_batch_windows_and_variety():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    out = data.augment_batch(images, seed=7).numpy()
    assert out.shape == images.shape and out.dtype == np.uint8
    for aug, img in zip(out, images):
        assert _matching_windows(aug, img), "not a (flipped) window of the padded image"
    np.testing.assert_array_equal(out, data.augment_batch(images, seed=7).numpy())
    single = data.augment_batch(images[0], seed=3)
    assert single.shape == (32, 32, 3)

    # Over many draws of one image: both flips and many offsets occur.
    seen = set()
    many = data.augment_batch(np.repeat(images[:1], 200, axis=0), seed=11).numpy()
    windows = _windows(images[0])
    for aug in many:
        seen.update(k for k, w in windows.items() if np.array_equal(w, aug))
    assert {k[2] for k in seen} == {False, True}
    assert len({k[:2] for k in seen}) > 30
    assert {k[0] for k in seen} >= {0, 8} and {k[1] for k in seen} >= {0, 8}


def test_reflect_indices_match_tf_pad():
    images = np.random.default_rng(2).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT").numpy()
    oy = tf.constant([0, 8, 3])
    ox = tf.constant([8, 0, 5])
    flip = tf.constant([False, True, False])
    out = data.crop_flip(tf.constant(images), oy, ox, flip).numpy()
    for k in range(3):
        win = padded[k, oy[k] : oy[k] + 32, ox[k] : ox[k] + 32]
        np.testing.assert_array_equal(out[k], win[:, ::-1] if flip[k] else win)


# --------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------


def _denormalize(batch, info):
    x = batch * np.array(info.std, np.float32) + np.array(info.mean, np.float32)
    return np.rint(x * 255).astype(np.uint8)


def test_train_pipeline_augments_shuffles_and_is_seeded():
    x, _ = data.load_arrays("synthetic", "train", size=16)
    train, _, info = data.make_datasets("synthetic", train_size=16, test_size=4,
                                        batch_size=8, seed=5)
    epoch1 = [(i.numpy(), l.numpy()) for i, l in train]
    epoch2 = [(i.numpy(), l.numpy()) for i, l in train]
    assert [b[0].shape for b in epoch1] == [(8, 32, 32, 3)] * 2
    assert epoch1[0][0].dtype == np.float32 and epoch1[0][1].dtype == np.int64
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])  # reshuffled / re-augmented
    # Every output image is a window of some original image.
    windows = [_windows(img) for img in x]
    flips, offsets = set(), set()
    for batch, _ in epoch1 + epoch2:
        for aug in _denormalize(batch, info):
            keys = [k for w in windows for k, v in w.items() if np.array_equal(v, aug)]
            assert keys, "augmented image is not a window of any original"
            flips.update(k[2] for k in keys)
            offsets.update(k[:2] for k in keys)
    assert flips == {False, True} and len(offsets) > 5
    # Same seed -> same sequence of epochs.
    again, _, _ = data.make_datasets("synthetic", train_size=16, test_size=4,
                                      batch_size=8, seed=5)
    for (a, la), (b, lb) in zip(epoch1, [(i.numpy(), l.numpy()) for i, l in again]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def test_unaugmented_pipelines_equal_normalize(c10):
    path, (x_tr, y_tr), (x_te, y_te) = c10
    train, test, info = data.make_datasets("cifar10", archive=path, batch_size=16,
                                           augment=False, seed=1)
    epoch = list(test)
    images = np.concatenate([b[0].numpy() for b in epoch])
    labels = np.concatenate([b[1].numpy() for b in epoch])
    np.testing.assert_array_equal(images, data.normalize(x_te, info.mean, info.std).numpy())
    np.testing.assert_array_equal(labels, y_te)
    # Train without augmentation: a permutation of the normalised set.
    expected = data.normalize(x_tr, info.mean, info.std).numpy()
    epoch = list(train)  # one iteration: every iteration reshuffles
    images = np.concatenate([b[0].numpy() for b in epoch])
    labels = np.concatenate([b[1].numpy() for b in epoch])
    order = [int(np.flatnonzero((expected == img).all(axis=(1, 2, 3)))[0]) for img in images]
    assert sorted(order) == list(range(len(x_tr))) and order != sorted(order)
    np.testing.assert_array_equal(labels, y_tr[order])


def test_drop_remainder_only_on_train():
    train, test, _ = data.make_datasets("synthetic", train_size=20, test_size=20,
                                        batch_size=8, drop_remainder=True)
    assert [int(b[0].shape[0]) for b in train] == [8, 8]
    assert [int(b[0].shape[0]) for b in test] == [8, 8, 4]
    assert train.element_spec[0].shape.as_list() == [8, 32, 32, 3]


def test_bad_batch_size():
    with pytest.raises(DataError, match="batch_size"):
        data.make_datasets("synthetic", batch_size=0)


def test_measure_throughput():
    train, _, _ = data.make_datasets("synthetic", train_size=256, batch_size=32)
    rate = data.measure_throughput(train, steps=10)
    assert rate > 0


def test_data_tuning_follows_the_host_unless_set(monkeypatch):
    """auto: autotune with a GPU or 8+ cores, fixed on a small CPU; fixed/autotune as asked."""
    import tensorflow as tf

    from kdkeras import config as config_lib
    from kdkeras import data
    from kdkeras.data import pipeline

    def host(cores, gpus):
        monkeypatch.setattr(pipeline.os, "cpu_count", lambda: cores)
        monkeypatch.setattr(pipeline.tf.config, "list_physical_devices",
                            lambda kind=None: ["GPU:0"] * gpus if kind == "GPU" else [])

    monkeypatch.setattr(pipeline, "_data_tuning", pipeline._data_tuning)  # put back after the test
    data.set_data_tuning("auto")
    host(2, 0)
    assert data.data_tuning() == "fixed" and not data.pipeline_options().autotune.enabled
    assert pipeline._parallel_calls() == pipeline._PARALLEL_CALLS and pipeline._prefetch() == 2
    host(2, 1)
    assert data.data_tuning() == "autotune" and data.pipeline_options().autotune.enabled
    assert pipeline._parallel_calls() == tf.data.AUTOTUNE and pipeline._prefetch() == tf.data.AUTOTUNE
    host(16, 0)
    assert data.data_tuning() == "autotune"
    data.set_data_tuning("fixed")
    assert data.data_tuning() == "fixed" and not data.pipeline_options().autotune.enabled
    host(2, 0)
    data.set_data_tuning("autotune")
    assert data.data_tuning() == "autotune" and data.pipeline_options().autotune.enabled
    with pytest.raises(ValueError, match="Valid choices: auto, fixed, autotune"):
        data.set_data_tuning("fast")
    with pytest.raises(ValueError, match="Unknown data_tuning 'fast'"):
        config_lib.resolve({"model": "wrn16x1_R_g2", "data_tuning": "fast"})
    plain = config_lib.resolve({"model": "wrn16x1_R_g2"})
    tuned = config_lib.resolve({"model": "wrn16x1_R_g2", "data_tuning": "autotune"})
    assert config_lib.run_name(plain) == config_lib.run_name(tuned)  # a process setting


def test_each_epochs_order_is_a_function_of_seed_and_epoch():
    # The training pipeline of a run: epoch e's batches depend on (seed, e) only, so a resumed run, and every
    # worker of a multi-worker run, sees the epochs an uninterrupted single process sees.
    def labels(splits, start, stop):
        return np.concatenate([lab.numpy() for _, lab in splits.train_epochs(start, stop)])

    splits = data.make_splits("synthetic", train_size=24, test_size=4, batch_size=8, seed=3, augment=False)
    both = labels(splits, 0, 2)
    first, second = both[:24], both[24:]
    assert sorted(first) == sorted(second)  # each epoch is a permutation of the same subset
    assert not np.array_equal(first, second)  # ... in another order
    np.testing.assert_array_equal(labels(splits, 1, 2), second)  # epoch 1 alone: as in the run
    other = data.make_splits("synthetic", train_size=24, test_size=4, batch_size=8, seed=4, augment=False)
    again = data.make_splits("synthetic", train_size=24, test_size=4, batch_size=8, seed=3, augment=False)
    np.testing.assert_array_equal(labels(again, 0, 2), both)
    assert not np.array_equal(labels(other, 0, 1), first)  # another seed, another order


def test_precise_bn_batches_are_one_fixed_draw_of_the_training_augmentation():
    """``train_augmented``: zero-padded crops and flips of the training images (checked against NumPy windows),
    the same batches whenever iterated or rebuilt, and neither training epoch 0's order nor its crops."""
    x, _ = data.load_arrays("synthetic", "train", size=16)

    def splits():
        return data.make_splits("synthetic", train_size=16, test_size=4, batch_size=8, seed=5, augment="zeros")

    first = splits()
    batches = [(i.numpy(), l.numpy()) for i, l in first.train_augmented]
    assert [b[0].shape for b in batches] == [(8, 32, 32, 3)] * 2
    for again in ([(i.numpy(), l.numpy()) for i, l in first.train_augmented],
                  [(i.numpy(), l.numpy()) for i, l in splits().train_augmented]):
        for (a, la), (b, lb) in zip(batches, again, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)
    padded = [np.pad(img, ((4, 4), (4, 4), (0, 0))) for img in x]  # zeros, as the crd recipe pads
    windows = [{(oy, ox, f): (w[:, ::-1] if f else w) for oy in range(9) for ox in range(9) for f in (False, True)
                for w in [p[oy:oy + 32, ox:ox + 32]]} for p in padded]
    sources, keys = [], set()
    for images, _ in batches:
        for aug in _denormalize(images, first.info):
            found = [(i, k) for i, w in enumerate(windows) for k, v in w.items() if np.array_equal(v, aug)]
            assert found, "a precise-BN image is not a zero-padded window of any training image"
            sources.append(found[0][0])
            keys.update(k for _, k in found)
    assert sorted(sources) == list(range(16))  # every training image once
    assert {k[2] for k in keys} == {False, True} and len({k[:2] for k in keys}) > 5
    epoch0 = [i.numpy() for i, _ in first.train_epochs(0, 1)]
    assert not any(np.array_equal(a, b) for a, b in zip(epoch0, (b[0] for b in batches)))
