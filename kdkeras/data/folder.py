"""Any image-folder dataset (``--dataset=folder --data_dir=PATH``): ``PATH/train/<class>/...`` and ``PATH/test/<class>/...``.

The evaluation split is ``PATH/test/`` or, when there is none, ``PATH/val/``.
Files and labels are listed by ``keras.utils.image_dataset_from_directory``
(one class per sub-folder of ``train/``, sorted by name; JPEG, PNG, BMP and
GIF files at any depth below it). Each file is then decoded once, to RGB
``uint8`` at its own size, with the op Keras uses (``tf.io.decode_image``);
Keras's loader is not used for decoding because it resizes every image to
one size without saying so, and reports a broken file without naming it.
Every image of a dataset must have the same size (the first training image's):
a file of another size, or one that cannot be decoded, is named in a
:class:`~kdkeras.data.DataError`.

The per-channel mean and standard deviation are measured once over a seeded
sample of at most :data:`STATS_SAMPLE` training images and cached in
``PATH/.kdkeras_stats.json`` (see :func:`folder_stats`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Sequence

import numpy as np

from kdkeras.data.specs import DataError, short_error

#: Training images sampled (seeded, without replacement) to measure the normalisation statistics.
STATS_SAMPLE = 10_000

#: Seed of that sample: fixed, so the statistics do not depend on a run's seed.
STATS_SEED = 0

#: Cache of the statistics inside the dataset folder.
STATS_FILE = ".kdkeras_stats.json"

#: Version of the cache's format; a cache of another version is measured again.
_STATS_FORMAT = 1

#: The split folders tried for the evaluation ("test") split, in order.
TEST_FOLDERS = ("test", "val")

_LAYOUT = "expected PATH/train/<class>/<images> and PATH/test/<class>/<images> (or PATH/val/)"

#: Statistics measured in this process: ``{(resolved folder, fingerprint): stats}``.
_MEMO: dict = {}


def _root(data_dir) -> str:
    """The resolved dataset folder; a one-line error when it is unset, missing, empty or not a folder."""
    if data_dir is None or not str(data_dir).strip():
        raise DataError(f"--dataset=folder needs --data_dir=PATH, the image folder ({_LAYOUT})")
    path = os.path.expanduser(os.fspath(data_dir))
    if not os.path.exists(path):
        raise DataError(f"data folder '{path}' does not exist; {_LAYOUT}")
    if not os.path.isdir(path):
        raise DataError(f"data folder '{path}' is not a folder; {_LAYOUT}")
    if not [n for n in os.listdir(path) if not n.startswith(".")]:
        raise DataError(f"data folder '{path}' is empty; {_LAYOUT}")
    return path


def split_folder(root: str, split: str) -> str:
    """``root/train`` for ``"train"``; ``root/test``, else ``root/val``, for ``"test"``."""
    names = ("train",) if split == "train" else TEST_FOLDERS
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    found = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)) and not n.startswith("."))
    shown = ", ".join(f"{n}/" for n in found) or "no sub-folders"
    want = "train/" if split == "train" else "test/ or val/"
    raise DataError(f"data folder '{root}' has no {want} split (found {shown}); {_LAYOUT}")


def _class_folders(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n)) and not n.startswith("."))


def _index(folder: str, class_names: Sequence[str] | None = None):
    """``(paths, labels, class_names)`` of the images under ``folder``, listed by Keras.

    Labels index ``class_names`` (default: ``folder``'s sub-folders, sorted).
    """
    import keras

    try:
        ds = keras.utils.image_dataset_from_directory(
            folder, labels="inferred", label_mode="int", class_names=None if class_names is None
            else list(class_names), batch_size=None, image_size=(1, 1), shuffle=False, follow_links=True, verbose=False)
    except ValueError as exc:  # no images, or no class folders
        raise DataError(f"no images in '{folder}' ({short_error(exc, 160)}); {_LAYOUT}") from None
    names = tuple(ds.class_names)
    paths = list(ds.file_paths)
    by_class = {name: i for i, name in enumerate(names)}
    labels = np.empty(len(paths), np.int64)
    for i, path in enumerate(paths):
        labels[i] = by_class[os.path.relpath(path, folder).split(os.sep)[0]]
    empty = [name for i, name in enumerate(names) if not np.any(labels == i)]
    if empty:
        raise DataError(f"class folder '{os.path.join(folder, empty[0])}' holds no images"
                        f"{f' ({len(empty)} such classes)' if len(empty) > 1 else ''}; "
                        "add images or remove the folder from every split")
    return paths, labels, names


def _check_classes(train: str, test: str, train_names: Sequence[str]) -> None:
    """A one-line error naming the classes that only one of the two splits has."""
    test_names = _class_folders(test)
    if list(test_names) == list(train_names):
        return
    only_train = sorted(set(train_names) - set(test_names))
    only_test = sorted(set(test_names) - set(train_names))

    def listing(names):
        shown = ", ".join(names[:5])
        return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    parts = []
    if only_train:
        parts.append(f"only in {os.path.basename(train)}/: {listing(only_train)}")
    if only_test:
        parts.append(f"only in {os.path.basename(test)}/: {listing(only_test)}")
    raise DataError(f"the class folders of '{train}' and '{test}' differ ({'; '.join(parts)}); "
                    "both splits need the same <class> sub-folders")


def _decode(paths: Sequence[str], shape: tuple[int, int, int] | None, where: str) -> np.ndarray:
    """Decodes ``paths`` to one ``uint8`` array ``(N, H, W, 3)``.

    Args:
        paths: image files.
        shape: the size every image must have (``None``: that of the first).
        where: what the size refers to in an error ("the first training image ...").

    Raises:
        DataError: naming the first file that cannot be decoded, or whose
            size differs.
    """
    import tensorflow as tf

    n = len(paths)
    if n == 0:
        return np.zeros((0,) + tuple(shape or (1, 1, 3)), np.uint8)

    def load(i, path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return i, tf.shape(image), tf.reshape(image, [-1])

    ds = tf.data.Dataset.from_tensor_slices((tf.range(n, dtype=tf.int64), tf.constant(list(paths))))
    ds = ds.map(load, num_parallel_calls=max(2, os.cpu_count() or 2), deterministic=True)
    ds = ds.ignore_errors().ragged_batch(512)
    out = None
    seen = np.zeros(n, dtype=bool)
    for index, shapes, pixels in ds:
        index, shapes = index.numpy(), shapes.numpy()
        if out is None:
            if shape is None:
                shape, where = tuple(int(s) for s in shapes[0]), f"the first image '{paths[index[0]]}'"
            out = np.empty((n,) + tuple(shape), np.uint8)
        wrong = np.flatnonzero(np.any(shapes != np.asarray(shape), axis=1))
        if wrong.size:
            h, w = shapes[wrong[0]][:2]
            raise DataError(
                f"image '{paths[index[wrong[0]]]}' is {w}x{h} pixels but {where} is {shape[1]}x{shape[0]}; "
                "every image of a folder dataset must have the same size: resize them first")
        out[index] = pixels.flat_values.numpy().reshape((len(index),) + tuple(shape))
        seen[index] = True
    missing = np.flatnonzero(~seen)
    if missing.size:
        bad = paths[missing[0]]
        try:
            with open(bad, "rb") as f:
                tf.io.decode_image(f.read(), channels=3, expand_animations=False)
            detail = "cannot be decoded"
        except Exception as exc:  # the decoder's or the file system's reason
            text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", getattr(exc, "message", None) or str(exc))
            detail = " ".join(text.split())[:120] or type(exc).__name__
        more = f" ({missing.size} unreadable files in all)" if missing.size > 1 else ""
        raise DataError(f"cannot read image '{bad}' ({detail}){more}; "
                        "replace or delete it (JPEG, PNG, BMP or GIF files only)")
    return out


def _fingerprint(root: str, paths: Sequence[str], names: Sequence[str]) -> str:
    """A digest of the training files' relative paths and the class names."""
    digest = hashlib.sha1("\n".join(names).encode())
    for path in paths:
        digest.update(b"\0" + os.path.relpath(path, root).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def stats_sample(n: int) -> np.ndarray:
    """The indices (ascending) of the training images the statistics are measured on."""
    if n <= STATS_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(STATS_SEED).choice(n, STATS_SAMPLE, replace=False))


def measure_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``uint8`` images, on the ``[0, 1]`` scale."""
    total = np.zeros(3, np.float64)
    squares = np.zeros(3, np.float64)
    count = 0
    for start in range(0, images.shape[0], 512):  # bounded memory
        chunk = images[start:start + 512].reshape(-1, 3).astype(np.float64) / 255.0
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
        count += chunk.shape[0]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 0.0))
    std = np.where(std > 0, std, 1.0)  # a constant channel: leave it unscaled
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def _read_cache(path: str, fingerprint: str):
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("format") != _STATS_FORMAT \
            or cached.get("fingerprint") != fingerprint:
        return None
    try:
        return {"mean": tuple(float(m) for m in cached["mean"]), "std": tuple(float(s) for s in cached["std"]),
                "image_shape": tuple(int(s) for s in cached["image_shape"])}
    except (KeyError, TypeError, ValueError):
        return None


def folder_stats(data_dir, paths=None, names=None, images=None) -> dict:
    """The normalisation statistics and image shape of a folder dataset, cached in the folder.

    They are measured on the training images of :func:`stats_sample` (all
    of them up to :data:`STATS_SAMPLE`, a seeded sample beyond), so they
    depend on the folder only, never on a run's seed or subsets. The result
    is written atomically to ``PATH/.kdkeras_stats.json`` with a fingerprint
    of the training files' names; it is used while those names are
    unchanged and measured again otherwise. A folder that cannot be written
    (read-only data) is measured again in each process.

    Args:
        data_dir: the dataset folder.
        paths, names: the training split's files and class names, when
            already listed.
        images: the decoded training images (all of them, in ``paths``
            order), when already loaded; otherwise only the sample is decoded.

    Returns:
        ``{"mean": (r, g, b), "std": (r, g, b), "image_shape": (H, W, 3)}``
        (mean and std on the ``[0, 1]`` scale).
    """
    from kdkeras.io_utils import atomic_write_json

    root = _root(data_dir)
    if paths is None or names is None:
        paths, _, names = _index(split_folder(root, "train"))
    fingerprint = _fingerprint(root, paths, names)
    key = (os.path.realpath(root), fingerprint)
    if key in _MEMO:
        return dict(_MEMO[key])
    cache = os.path.join(root, STATS_FILE)
    stats = _read_cache(cache, fingerprint)
    if stats is None:
        sample = stats_sample(len(paths))
        if images is None:
            images = _decode([paths[i] for i in sample], None, "")
        else:
            images = images[sample]
        mean, std = measure_stats(images)
        stats = {"mean": mean, "std": std, "image_shape": tuple(int(s) for s in images.shape[1:])}
        try:
            atomic_write_json(cache, {"format": _STATS_FORMAT, "fingerprint": fingerprint,
                                      "train_images": len(paths), "sample": int(sample.size),
                                      "classes": len(names), "image_shape": list(stats["image_shape"]),
                                      "mean": list(mean), "std": list(std)})
        except OSError:  # read-only data: measured again next time
            pass
    _MEMO[key] = dict(stats)
    return stats


def read_folder(data_dir, splits: Sequence[str]):
    """Loads ``splits`` (``"train"``, ``"test"``) of an image-folder dataset.

    Returns:
        ``({split: (images, labels)}, class_names)``: ``uint8`` ``(N, H, W, 3)``
        and ``int64`` ``(N,)``; labels index the class names (the training
        split's sub-folders, sorted).

    Raises:
        DataError: a missing or empty folder, a missing split, class folders
            that differ between the splits, an empty class folder, or an
            unreadable image or one of another size (each named).
    """
    root = _root(data_dir)
    train = split_folder(root, "train")
    paths, labels, names = _index(train)
    folders = {"train": train}
    if "test" in splits:
        folders["test"] = split_folder(root, "test")
        _check_classes(train, folders["test"], names)
    stats = folder_stats(root, paths, names) if "train" not in splits else None
    out = {}
    if "train" in splits:
        images = _decode(paths, None, "")
        out["train"] = (images, labels)
        stats = folder_stats(root, paths, names, images)
    if "test" in splits:
        test_paths, test_labels, _ = _index(folders["test"], names)
        shape = stats["image_shape"]
        out["test"] = (_decode(test_paths, shape, "the training images' size"), test_labels)
    return out, names


def list_classes(data_dir) -> tuple[str, ...]:
    """The class names of a folder dataset: the sub-folders of its ``train/``, sorted."""
    return tuple(_class_folders(split_folder(_root(data_dir), "train")))


def count_images(data_dir, split: str) -> int:
    """Number of images of a whole split (listed, not decoded)."""
    root = _root(data_dir)
    return len(_index(split_folder(root, split))[0])


def folder_tag(data_dir) -> str:
    """``<basename>.<6 hex digits of the resolved path>``: names a folder dataset in run names."""
    path = os.path.realpath(os.path.expanduser(os.fspath(data_dir)))
    base = os.path.basename(path.rstrip(os.sep)) or "root"
    safe = "".join(c if c.isalnum() or c in "._" else "_" for c in base)
    return f"{safe}.{hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:6]}"
