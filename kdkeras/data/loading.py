"""Loading splits into memory: the source, seeded class-balanced subsets and the validation split.

CIFAR comes from, in this order: ``archive`` when given (downloaded to that
path first when it is missing and named like the original archive); a
prepared TFDS folder (``data_dir``, default TFDS's own) when it holds the
dataset; the original archive in Keras's cache; the original archive
downloaded into that cache (unless downloads are off). See
:mod:`~kdkeras.data.download`."""

from __future__ import annotations

import numpy as np

from kdkeras.data import download as download_lib
from kdkeras.data.archive import read_archive
from kdkeras.data import specs as specs_lib
from kdkeras.data.folder import count_images, folder_stats, list_classes, read_folder
from kdkeras.data.specs import (
    SPECS,
    SPLITS,
    SYNTHETIC_CLASSES,
    SYNTHETIC_SIZES,
    DataError,
    DatasetInfo,
    check_name,
    check_size,
    check_split,
)
from kdkeras.data.synthetic import synthetic_split
from kdkeras.data.tfds_source import TfdsNotFound, read_tfds


def dataset_info(name: str, class_names=None, train_examples: int = 0, test_examples: int = 0,
                 val_examples: int = 0, *, data_dir=None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` without loading its images.

    Args:
        name: one of :data:`DATASETS`.
        class_names: class names; default ``class_0``, ``class_1``, ...
            (``folder``: its class folders).
        train_examples: value of ``DatasetInfo.train_examples``.
        test_examples: value of ``DatasetInfo.test_examples``.
        val_examples: value of ``DatasetInfo.val_examples``.
        data_dir: the image folder of ``folder`` (ignored otherwise): its
            classes are listed and its cached statistics and image shape
            read (measured on a sample of training images when not cached,
            :func:`kdkeras.data.folder.folder_stats`).
    """
    if check_name(name) != "folder":
        return specs_lib.dataset_info(name, class_names, train_examples, test_examples, val_examples)
    names = tuple(class_names) if class_names is not None else list_classes(data_dir)
    stats = folder_stats(data_dir)
    return DatasetInfo(name="folder", num_classes=len(names), class_names=names,
                       image_shape=tuple(stats["image_shape"]), mean=tuple(stats["mean"]), std=tuple(stats["std"]),
                       train_examples=int(train_examples), test_examples=int(test_examples),
                       val_examples=int(val_examples))


def subset_indices(labels: np.ndarray, size: int, seed) -> np.ndarray:
    """Class-balanced, seeded choice of ``size`` indices, in ascending order.

    ``seed`` is anything ``numpy.random.default_rng`` accepts (an int, or a
    sequence of ints for an independent stream).

    Examples are visited in a seeded random order and taken round-robin over
    the classes (the k-th example of every class before any (k+1)-th), so
    class counts differ by at most one while every class has examples left.
    """
    n = labels.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    permuted = labels[perm]
    by_class = np.argsort(permuted, kind="stable")
    sorted_labels = permuted[by_class]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - first  # rank of each example within its class
    order = np.lexsort((np.arange(n), rank))  # by rank, then by random position
    return np.sort(perm[order[:size]])


def _take_subset(images, labels, size, seed, title, split):
    if size is None or size == labels.shape[0]:
        return images, labels
    if size > labels.shape[0]:
        raise DataError(
            f"requested {size} {split} examples but the {title} {split} split has "
            f"{labels.shape[0]}; use a size of at most {labels.shape[0]} (or none for all)"
        )
    idx = subset_indices(labels, size, seed)
    return images[idx], labels[idx]


#: Second entropy word of the validation split's stream, independent of the subsets'.
_VAL_STREAM = 1


def _hold_out(images, labels, val_size, seed, title):
    """Splits ``(images, labels)`` into a training part and a validation part.

    The validation part is a class-balanced choice of ``val_size`` examples
    from the seeded stream ``(seed, 1)``; both parts keep the original order.

    Returns:
        ``((train_images, train_labels), (val_images, val_labels))``.
    """
    n = labels.shape[0]
    if val_size >= n:
        raise DataError(
            f"val_size={val_size} leaves no training images: the {title} training split has "
            f"{n}; use a val_size below {n} (e.g. {max(1, n // 10)}, 10%)"
        )
    val = subset_indices(labels, val_size, (seed, _VAL_STREAM))
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return (images[keep], labels[keep]), (images[val], labels[val])


def _read_cifar(spec, splits, data_dir, archive, download, mirror):
    """``({split: (images, labels)}, class_names)`` from the first CIFAR source that has the data."""
    if archive is not None:
        return read_archive(download_lib.archive_at(archive, spec, enabled=download, mirror=mirror),
                            spec, splits)
    try:
        return read_tfds(spec, splits, data_dir)
    except TfdsNotFound as missing:
        looked_in = missing.where
    path = download_lib.find_or_download(spec, looked_in=looked_in, enabled=download, mirror=mirror)
    return read_archive(path, spec, splits)


def load_splits(name, splits=SPLITS, *, data_dir=None, archive=None, sizes=None, seed=0,
                val_size=None, download=None, mirror=None):
    """Loads several splits of one dataset into memory, in one pass over its source.

    Args:
        name: one of :data:`DATASETS`.
        splits: names from :data:`SPLITS`, plus ``"val"`` for the validation
            split (which needs ``val_size``).
        data_dir, archive: the data source, as in :func:`load_arrays`
            (``folder``: ``data_dir`` is the image folder).
        download: download a missing CIFAR archive into Keras's cache
            (``None``: the process setting, :func:`kdkeras.data.download.configure`).
        mirror: base URL to download it from (``None``: the process
            setting, then ``$KDKERAS_DATA_MIRROR``, then the original site).
        sizes: ``{split: size}`` subsets; ``"train"`` counts the images
            trained on, taken from what is left after the validation split
            is held out.
        seed: seed of the subsets and of the validation split.
        val_size: validation images held out of the training split
            (class-balanced, from the seeded stream ``(seed, 1)``; they depend
            on ``seed`` and ``val_size`` only); ``None``: no validation split.

    Returns:
        ``({split: (images, labels)}, class_names)``, subsets applied; with
        ``val_size``, ``"train"`` never holds a validation image.

    Raises:
        DataError: unknown name or split, missing or damaged data, or sizes
            larger than the split.
    """
    name = check_name(name)
    spec = SPECS.get(name)
    title = spec.title if spec is not None else f"image folder '{data_dir}'"
    sizes = dict(sizes or {})
    wanted = tuple(splits)
    if "val" in wanted and val_size is None:
        raise DataError("the 'val' split needs val_size=N (the number of training images to hold out)")
    val_size = check_size(val_size, "val_size")
    source_splits = tuple(s for s in SPLITS if s in wanted or (s == "train" and val_size))
    for split in wanted:
        if split != "val":
            check_split(split)
    if name == "synthetic":
        # Generated: the training split is train_size (default 1024) images
        # plus the validation images held out of it.
        generate = dict(sizes)
        if val_size:
            generate["train"] = (sizes.get("train") or SYNTHETIC_SIZES["train"]) + val_size
        arrays = {s: synthetic_split(s, generate.get(s)) for s in source_splits}
        names = tuple(f"class_{i}" for i in range(SYNTHETIC_CLASSES))
        if val_size:
            arrays["train"], arrays["val"] = _hold_out(*arrays["train"], val_size, seed, title)
    else:
        if name == "folder":
            arrays, names = read_folder(data_dir, source_splits)
        else:
            arrays, names = _read_cifar(spec, source_splits, data_dir, archive, download, mirror)
        if spec is not None and len(names) != spec.num_classes:
            names = tuple(f"class_{i}" for i in range(spec.num_classes))
        if val_size:
            # The validation split depends on (seed, val_size) only, never on
            # train_size: runs of different sizes are compared on the same images.
            arrays["train"], arrays["val"] = _hold_out(*arrays["train"], val_size, seed, title)
        for split in source_splits:
            x, y = arrays[split]
            where = "train (after the validation split is held out)" if split == "train" and val_size else split
            arrays[split] = _take_subset(x, y, sizes.get(split), seed, title, where)
    return {s: arrays[s] for s in wanted}, names


def split_size(name: str, split: str = "train", *, data_dir=None, archive=None, download=None,
               mirror=None) -> int:
    """Number of examples of a whole split (``synthetic``: the default generated size)."""
    name = check_name(name)
    check_split(split)
    if name == "synthetic":
        return SYNTHETIC_SIZES[split]
    if name == "folder":
        return count_images(data_dir, split)
    arrays, _ = load_splits(name, (split,), data_dir=data_dir, archive=archive, download=download,
                            mirror=mirror)
    return int(arrays[split][1].shape[0])


def load_arrays(
    name: str,
    split: str,
    *,
    data_dir=None,
    archive=None,
    size: int | None = None,
    seed: int = 0,
    download: bool | None = None,
    mirror: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of a dataset into memory.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        data_dir: prepared TFDS folder (default: TFDS's default data dir);
            for ``folder``, the image folder. Ignored when ``archive`` is
            given and for ``synthetic``.
        archive: path to the original ``cifar-*-python.tar.gz``, its extracted
            folder, or the folder containing either; takes precedence over TFDS.
            Without it, CIFAR missing from TFDS is read from Keras's cache,
            downloaded there first if need be (:mod:`~kdkeras.data.download`).
        size: keep only this many examples: a class-balanced subset chosen
            deterministically from ``seed`` (kept in the original order). For
            ``synthetic`` this is the number of examples generated (default
            1024 train / 256 test).
        seed: seed of the subset choice.
        download, mirror: as in :func:`load_splits`.

    Returns:
        ``(images, labels)``: ``uint8`` array ``(N, 32, 32, 3)`` (NHWC;
        ``folder``: ``(N, H, W, 3)``) and
        ``int64`` array ``(N,)``.

    Raises:
        DataError: unknown name/split, missing or damaged data, or ``size``
            larger than the split.
    """
    size = check_size(size, "size")
    arrays, _ = load_splits(name, (split,), data_dir=data_dir, archive=archive,
                            sizes={split: size}, seed=seed, download=download, mirror=mirror)
    return arrays[split]
