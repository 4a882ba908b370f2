"""Tiny CIFAR archives in the original Python-version format, written by tests.

``write_cifar(root, spec)`` builds ``cifar-100-python/{train,test,meta}`` (or
the CIFAR-10 batches) as pickles of dicts, exactly as distributed, and tars
them as ``.tar.gz``.
"""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np

from kdkeras import data

CIFAR100 = data.specs.SPECS["cifar100"]
CIFAR10 = data.specs.SPECS["cifar10"]



def _channel_major(images: np.ndarray) -> np.ndarray:
    """NHWC uint8 -> rows of 1024 R, 1024 G, 1024 B (each plane row-major).

    Built plane by plane, independently of the reshape/transpose in the
    module under test.
    """
    n = images.shape[0]
    planes = [images[:, :, :, c].reshape(n, 32 * 32) for c in range(3)]
    return np.concatenate(planes, axis=1).astype(np.uint8)


def _pickle(obj, protocol=pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _batch_dict(images, labels, spec, *, data=None):
    d = {
        b"batch_label": b"test batch",
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
        b"data": _channel_major(images) if data is None else data,
        spec.label_key: [int(v) for v in labels],
    }
    if spec is CIFAR100:
        d[b"coarse_labels"] = [int(v) // 5 for v in labels]
    return d


def _meta_dict(spec):
    names = [f"{spec.title.lower()}_name_{i}".encode() for i in range(spec.num_classes)]
    d = {spec.names_key: names}
    if spec is CIFAR100:
        d[b"coarse_label_names"] = [f"coarse_{i}".encode() for i in range(20)]
    else:
        d[b"num_cases_per_batch"] = 10000
        d[b"num_vis"] = 3072
    return d


def _make_arrays(spec, n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % spec.num_classes).astype(np.int64)
    rng.shuffle(labels)
    return images, labels


def write_cifar(root, spec, *, n_train=40, n_test=20, seed=0, tar=True,
                train_override=None, protocol=pickle.DEFAULT_PROTOCOL):
    """Writes ``<root>/<folder>/...`` (and ``<root>/<archive>.tar.gz`` if ``tar``).

    Returns:
        ``(path, (x_train, y_train), (x_test, y_test))`` where ``path`` is
        the .tar.gz (``tar=True``) or the extracted folder.
    """
    train = _make_arrays(spec, n_train, seed)
    test = _make_arrays(spec, n_test, seed + 1)
    folder = os.path.join(root, spec.folder)
    os.makedirs(folder, exist_ok=True)
    files = {spec.meta_file: _pickle(_meta_dict(spec), protocol)}
    train_files, test_files = spec.split_files
    chunks = np.array_split(np.arange(n_train), len(train_files))
    for fname, idx in zip(train_files, chunks):
        d = _batch_dict(train[0][idx], train[1][idx], spec)
        if train_override:
            d.update(train_override)
        files[fname] = _pickle(d, protocol)
    files[test_files[0]] = _pickle(_batch_dict(*test, spec), protocol)
    for fname, blob in files.items():
        with open(os.path.join(folder, fname), "wb") as f:
            f.write(blob)
    if not tar:
        return folder, train, test
    path = os.path.join(root, spec.archive_file)
    with tarfile.open(path, "w:gz") as t:
        t.add(folder, arcname=spec.folder)
    return path, train, test
