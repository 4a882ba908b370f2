"""CIFAR-100 / CIFAR-10 / synthetic data for training and evaluation.

Three sources feed the same in-memory arrays (``uint8`` images ``(N, 32, 32, 3)``
in NHWC order, ``int64`` labels ``(N,)``):

* **TFDS** (default for ``cifar100`` / ``cifar10``): a prepared
  TensorFlow-Datasets folder (``data_dir``, default TFDS's own data dir).
  The network is never tried (``download=False``, ``try_gcs=False``), so
  missing data fails within seconds with a :class:`DataError` that says how
  to provide it.
* **archive** (``archive=PATH``): the original Python-version archives
  ``cifar-100-python.tar.gz`` / ``cifar-10-python.tar.gz`` from
  https://www.cs.toronto.edu/~kriz/cifar.html, their extracted folder, or the
  folder that contains either.  The tar is read directly, without
  extracting it to disk; the pickles are read with an unpickler that only
  accepts the few globals a NumPy array needs.
* **synthetic**: learnable random images (a per-class template plus noise)
  generated instantly from a fixed seed, for smoke runs.

:func:`make_splits` turns the arrays into ``tf.data`` pipelines: the
training set is shuffled every epoch from a seeded buffer covering the whole
set, batched, augmented batch-wise as in the paper (4-pixel reflect padding,
random 32x32 crop, random horizontal flip), normalised per channel and
prefetched; the validation split (``val_size`` images held out of the
training split, class-balanced and seeded) and the test set are only
normalised, batched and prefetched. :func:`make_datasets` is the same without
a validation split.

Every user-facing problem raises :class:`DataError` with a one-line message
that names the problem and how to fix it.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import os
import pickle
import tarfile
import time
import zlib
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "augment_batch",
    "dataset_info",
    "load_arrays",
    "make_datasets",
    "make_splits",
    "measure_throughput",
    "normalize",
]

#: Dataset names accepted by :func:`load_arrays` and :func:`make_datasets`.
DATASETS = ("cifar100", "cifar10", "synthetic")

#: The splits a dataset source provides.
SPLITS = ("train", "test")
#: The splits a run evaluates: the validation split is held out of ``train``.
EVAL_SPLITS = ("val", "test")

IMAGE_SHAPE = (32, 32, 3)
#: Reflect padding (pixels per side) of the training augmentation.
PAD = 4

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class DataError(ValueError):
    """A user-facing data problem; the message is one line naming the fix."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset as loaded by :func:`make_datasets`.

    Attributes:
        name: one of :data:`DATASETS`.
        num_classes: number of classes.
        class_names: the class names, indexed by label.
        image_shape: ``(32, 32, 3)``.
        mean: per-channel mean on the ``[0, 1]`` scale used by :func:`normalize`.
        std: per-channel standard deviation on the ``[0, 1]`` scale.
        train_examples: training examples after subsetting (and after the
            validation split is held out).
        test_examples: test examples after subsetting.
        val_examples: validation examples held out of the training split
            (0: no validation split).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_examples: int
    test_examples: int
    val_examples: int = 0


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Per-dataset constants (archive layout, TFDS name, statistics)."""

    key: str  # the name in DATASETS
    title: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tfds_name: str = ""
    archive_file: str = ""  # e.g. cifar-100-python.tar.gz
    folder: str = ""  # top folder inside the archive
    split_files: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # train, test
    meta_file: str = ""
    label_key: bytes = b""
    names_key: bytes = b""


# Synthetic images are (template >> 1) + (noise >> 1): the sum of two
# independent uniform variables on {0..127}, so mean 127/255 and standard
# deviation sqrt(2 * (128**2 - 1) / 12) / 255 in every channel.
_SYNTH_MEAN = 127.0 / 255.0
_SYNTH_STD = math.sqrt(2 * (128**2 - 1) / 12.0) / 255.0
_SYNTH_CLASSES = 100
_SYNTH_SIZES = {"train": 1024, "test": 256}
_SYNTH_SEED = 20240  # fixed: synthetic data does not depend on ``seed``

_SPECS = {
    "cifar100": _Spec(
        key="cifar100",
        title="CIFAR-100",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        tfds_name="cifar100",
        archive_file="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        split_files=(("train",), ("test",)),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
    ),
    "cifar10": _Spec(
        key="cifar10",
        title="CIFAR-10",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        tfds_name="cifar10",
        archive_file="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        split_files=(tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
    ),
    "synthetic": _Spec(
        key="synthetic",
        title="synthetic",
        num_classes=_SYNTH_CLASSES,
        mean=(_SYNTH_MEAN,) * 3,
        std=(_SYNTH_STD,) * 3,
    ),
}


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Collapses whitespace (newlines included) so a message fits one line."""
    return " ".join(str(text).split())


def _short(exc: BaseException, limit: int = 200) -> str:
    """A one-line, length-limited description of an exception."""
    text = _one_line(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} "
            "(e.g. --dataset=cifar100)"
        )
    return name.strip().lower()


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def _check_size(size, what: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DataError(f"{what} must be a positive integer or None (all examples), got {size!r}")
    return int(size)


def _flag_value(path) -> str:
    return os.fspath(path) if path is not None else "<default>"


# --------------------------------------------------------------------------
# Validation and subsetting (shared by all sources)
# --------------------------------------------------------------------------


def _validate(images: np.ndarray, labels: np.ndarray, spec: _Spec, where: str):
    """Checks shapes, dtypes and label range; returns contiguous arrays."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{where}: images have shape {images.shape}, expected (N, 32, 32, 3); "
            f"the data is not {spec.title}"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images have dtype {images.dtype}, expected uint8")
    if images.shape[0] == 0:
        raise DataError(f"{where}: no examples; the data is empty or damaged")
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"{where}: {labels.shape} labels for {images.shape[0]} images; "
            "the data is corrupt"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels have dtype {labels.dtype}, expected integers")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(
            f"{where}: labels range over [{labels.min()}, {labels.max()}] but "
            f"{spec.title} has {spec.num_classes} classes (0..{spec.num_classes - 1}); "
            f"the data is corrupt or not {spec.title}"
        )
    return np.ascontiguousarray(images), labels


def _subset_indices(labels: np.ndarray, size: int, seed) -> np.ndarray:
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
    idx = _subset_indices(labels, size, seed)
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
    val = _subset_indices(labels, val_size, (seed, _VAL_STREAM))
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return (images[keep], labels[keep]), (images[val], labels[val])


# --------------------------------------------------------------------------
# Source: synthetic
# --------------------------------------------------------------------------


def _synthetic(split: str, size: int | None):
    """Learnable random data: per-class templates plus uniform noise.

    The data is a fixed function of ``(split, size)``; both splits share the
    class templates so that a model trained on one generalises to the other.
    """
    n = _SYNTH_SIZES[split] if size is None else size
    templates = np.random.default_rng(_SYNTH_SEED).integers(
        0, 256, size=(_SYNTH_CLASSES,) + IMAGE_SHAPE, dtype=np.uint8
    )
    rng = np.random.default_rng((_SYNTH_SEED, SPLITS.index(split) + 1))
    labels = np.arange(n, dtype=np.int64) % _SYNTH_CLASSES
    rng.shuffle(labels)
    noise = rng.integers(0, 256, size=(n,) + IMAGE_SHAPE, dtype=np.uint8)
    images = (templates[labels] >> 1) + (noise >> 1)
    return images, labels


# --------------------------------------------------------------------------
# Source: original Python-version archives
# --------------------------------------------------------------------------

# Globals a pickled NumPy array (Python 2 or 3, NumPy 1 or 2) may reference.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except NumPy array reconstruction."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            # NumPy 2 moved numpy.core to numpy._core; avoid the deprecated alias.
            module = "numpy._core." + module[len("numpy.core.") :]
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a damaged file
        raise DataError(
            f"{where} is not a readable CIFAR pickle ({_short(exc)}); "
            f"download the archive again from {CIFAR_URL}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, expected a CIFAR dict")
    return obj


def _decode_batch(obj: dict, spec: _Spec, where: str):
    """Converts one unpickled batch dict into NHWC images and labels."""
    if b"data" not in obj or spec.label_key not in obj:
        other = _other_spec(spec)
        if b"data" in obj and other.label_key in obj:
            raise DataError(
                f"{where} holds {other.title} labels, not {spec.title}; "
                f"use --dataset={other.key} or the {spec.archive_file} archive"
            )
        raise DataError(
            f"{where} lacks the keys b'data' / {spec.label_key!r}; it is not a "
            f"{spec.title} batch file"
        )
    data = np.asarray(obj[b"data"])
    n = data.shape[0] if data.ndim else 0
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{where}: b'data' has shape {data.shape}, expected (N, 3072) "
            f"(32x32 RGB, channel-major); the file is corrupt or not {spec.title}"
        )
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or (
            n and (data.min() < 0 or data.max() > 255)
        ):
            raise DataError(f"{where}: b'data' has dtype {data.dtype}, expected uint8 pixels")
        data = data.astype(np.uint8)
    # Channel-major rows (1024 R, 1024 G, 1024 B, each row-major 32x32) -> NHWC.
    images = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(obj[spec.label_key])
    return _validate(images, labels, spec, where)


def _decode_names(obj: dict, spec: _Spec, where: str) -> tuple[str, ...]:
    names = obj.get(spec.names_key)
    if names is None or len(names) != spec.num_classes:
        raise DataError(
            f"{where} lacks {spec.num_classes} class names under {spec.names_key!r}; "
            f"it is not the {spec.title} meta file"
        )
    return tuple(
        n.decode("utf-8", errors="replace") if isinstance(n, bytes) else str(n) for n in names
    )


def _wrong_dataset(spec: _Spec, where: str, found: _Spec) -> DataError:
    return DataError(
        f"{where} contains {found.title} ({found.folder}/), not {spec.title}; "
        f"pass --dataset={found.key} or the {spec.title} archive {spec.archive_file} "
        f"(from {CIFAR_URL})"
    )


def _other_spec(spec: _Spec) -> _Spec:
    return _SPECS["cifar10"] if spec is _SPECS["cifar100"] else _SPECS["cifar100"]


def _read_tar(path: str, spec: _Spec, wanted: set[str]) -> dict[str, bytes]:
    """Reads the members ``<folder>/<name>`` for ``name in wanted`` in one pass."""
    other = _other_spec(spec)
    found: dict[str, bytes] = {}
    # Damaged archives surface as any of these, at open time or while reading.
    damaged = (tarfile.TarError, EOFError, OSError, zlib.error, gzip.BadGzipFile)
    try:
        tar = tarfile.open(path, mode="r:*")
    except damaged as exc:
        # tarfile's ReadError lists every compression it tried: too long to show.
        detail = "not a gzip/bzip2/xz/tar file"
        if not isinstance(exc, tarfile.ReadError):
            detail = _short(exc)
        raise DataError(
            f"{path!r} is not a readable tar archive ({detail}); pass the original "
            f"{spec.archive_file} (from {CIFAR_URL}) or its extracted folder"
        ) from None
    try:
        with tar:
            # Stream sequentially (seeking backwards in a .tar.gz re-decompresses)
            # and read to the end, so that a truncated download is always noticed.
            for member in tar:
                parts = member.name.replace("\\", "/").strip("/").split("/")
                if len(parts) < 2:
                    continue
                folder, base = parts[-2], parts[-1]
                if folder == other.folder and not found:
                    raise _wrong_dataset(spec, f"archive {path!r}", other)
                if folder != spec.folder or base not in wanted or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                found[base] = handle.read() if handle is not None else b""
                if len(found[base]) != member.size:
                    raise EOFError(f"{member.name} is cut short")
    except DataError:
        raise
    except damaged as exc:
        raise DataError(
            f"archive {path!r} is corrupt or truncated ({_short(exc)}); download "
            f"{spec.archive_file} again from {CIFAR_URL}"
        ) from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(
            f"archive {path!r} lacks {', '.join(spec.folder + '/' + m for m in missing)}; "
            f"expected the original {spec.archive_file} from {CIFAR_URL}"
        )
    return found


def _read_folder(folder: str, wanted: set[str]) -> dict[str, bytes]:
    found = {}
    missing = []
    for name in sorted(wanted):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            missing.append(name)
            continue
        try:
            with open(path, "rb") as f:
                found[name] = f.read()
        except OSError as exc:
            raise DataError(
                f"cannot read {path!r} ({_short(exc)}); check its permissions"
            ) from None
    if missing:
        raise DataError(
            f"folder {folder!r} lacks {', '.join(missing)}; extract the complete "
            f"original archive there (from {CIFAR_URL})"
        )
    return found


def _read_archive(path, spec: _Spec, splits: Sequence[str]):
    """Loads ``splits`` and the class names from an archive path.

    Returns:
        ``({split: (images, labels)}, class_names)``.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.exists(path):
        raise DataError(
            f"archive path {path!r} does not exist; pass --archive=/path/to/"
            f"{spec.archive_file} (from {CIFAR_URL}) or its extracted folder"
        )
    split_files = {s: spec.split_files[SPLITS.index(s)] for s in splits}
    wanted = {spec.meta_file}.union(*split_files.values())
    other = _other_spec(spec)

    if os.path.isdir(path):
        candidates = [path] if os.path.basename(os.path.normpath(path)) == spec.folder else []
        candidates.append(os.path.join(path, spec.folder))
        folder = next((c for c in candidates if os.path.isdir(c)), None)
        tar_in_dir = os.path.join(path, spec.archive_file)
        if folder is not None:
            blobs = _read_folder(folder, wanted)
            source = folder
        elif os.path.isfile(tar_in_dir):
            blobs = _read_tar(tar_in_dir, spec, wanted)
            source = tar_in_dir
        elif os.path.basename(os.path.normpath(path)) == other.folder or os.path.isdir(
            os.path.join(path, other.folder)
        ):
            raise _wrong_dataset(spec, f"folder {path!r}", other)
        else:
            raise DataError(
                f"folder {path!r} contains neither {spec.folder}/ nor {spec.archive_file}; "
                f"pass --archive=/path/to/{spec.archive_file} (from {CIFAR_URL}) "
                "or its extracted folder"
            )
    else:
        blobs = _read_tar(path, spec, wanted)
        source = path

    where = _where(source, spec.meta_file)
    names = _decode_names(_unpickle(blobs.pop(spec.meta_file), where), spec, where)
    out = {}
    for split, files in split_files.items():
        parts = []
        for fname in files:
            where = _where(source, fname)
            parts.append(_decode_batch(_unpickle(blobs.pop(fname), where), spec, where))
        if len(parts) == 1:
            out[split] = parts[0]
        else:
            out[split] = (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
    return out, names


def _where(source: str, fname: str) -> str:
    return f"{fname!r} in {source!r}"


# --------------------------------------------------------------------------
# Source: TFDS
# --------------------------------------------------------------------------


def _read_tfds(spec: _Spec, splits: Sequence[str], data_dir):
    """Loads ``splits`` from a prepared TFDS folder; never uses the network."""
    import tensorflow_datasets as tfds  # slow import: only on this path

    shown_dir = os.fspath(data_dir) if data_dir is not None else tfds.core.constants.DATA_DIR
    how = (
        f"Provide it with --archive=/path/to/{spec.archive_file} (from {CIFAR_URL}) "
        f"or --data_dir=<folder prepared with `tfds build {spec.tfds_name}`>, "
        "or use --dataset=synthetic for a smoke run."
    )
    out = {}
    names: tuple[str, ...] = ()
    for split in splits:
        try:
            ds, info = tfds.load(
                spec.tfds_name,
                split=split,
                data_dir=None if data_dir is None else os.fspath(data_dir),
                download=False,
                try_gcs=False,
                as_supervised=True,  # (image, label); label is the fine label
                with_info=True,
            )
            images, labels = [], []
            # Batched iteration rather than batch_size=-1, which aborts the
            # process (std::length_error) under tfds.testing.mock_data.
            for x, y in tfds.as_numpy(ds.batch(5000)):
                images.append(x)
                labels.append(y)
        except AssertionError as exc:  # TFDS signals "not prepared" this way
            if "could not find data" in str(exc):
                raise DataError(
                    f"{spec.title} not found in TFDS data_dir '{shown_dir}' and this "
                    f"machine cannot download it. {how}"
                ) from None
            raise DataError(f"cannot load {spec.title} from TFDS data_dir '{shown_dir}' "
                            f"({_short(exc)}). {how}") from None
        except (tf.errors.OpError, OSError, ValueError) as exc:
            raise DataError(
                f"cannot read {spec.title} from TFDS data_dir '{shown_dir}' "
                f"({_short(exc)}); rebuild it with `tfds build {spec.tfds_name}`. {how}"
            ) from None
        if images:
            x, y = np.concatenate(images), np.concatenate(labels)
        else:
            x = np.zeros((0,) + IMAGE_SHAPE, np.uint8)
            y = np.zeros((0,), np.int64)
        out[split] = _validate(x, y, spec, f"TFDS {spec.tfds_name} {split} split in '{shown_dir}'")
        names = tuple(info.features["label"].names)
    return out, names


# --------------------------------------------------------------------------
# Public loading API
# --------------------------------------------------------------------------


def load_splits(name, splits=SPLITS, *, data_dir=None, archive=None, sizes=None, seed=0,
                val_size=None):
    """Loads several splits of one dataset into memory, in one pass over its source.

    Args:
        name: one of :data:`DATASETS`.
        splits: names from :data:`SPLITS`, plus ``"val"`` for the validation
            split (which needs ``val_size``).
        data_dir, archive: the data source, as in :func:`load_arrays`.
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
    name = _check_name(name)
    spec = _SPECS[name]
    sizes = dict(sizes or {})
    wanted = tuple(splits)
    if "val" in wanted and val_size is None:
        raise DataError("the 'val' split needs val_size=N (the number of training images to hold out)")
    val_size = _check_size(val_size, "val_size")
    source_splits = tuple(s for s in SPLITS if s in wanted or (s == "train" and val_size))
    for split in wanted:
        if split != "val":
            _check_split(split)
    if name == "synthetic":
        # Generated: the training split is train_size (default 1024) images
        # plus the validation images held out of it.
        generate = dict(sizes)
        if val_size:
            generate["train"] = (sizes.get("train") or _SYNTH_SIZES["train"]) + val_size
        arrays = {s: _synthetic(s, generate.get(s)) for s in source_splits}
        names = tuple(f"class_{i}" for i in range(_SYNTH_CLASSES))
        if val_size:
            arrays["train"], arrays["val"] = _hold_out(*arrays["train"], val_size, seed, spec.title)
    else:
        if archive is not None:
            arrays, names = _read_archive(archive, spec, source_splits)
        else:
            arrays, names = _read_tfds(spec, source_splits, data_dir)
        if len(names) != spec.num_classes:
            names = tuple(f"class_{i}" for i in range(spec.num_classes))
        if val_size:
            # The validation split depends on (seed, val_size) only, never on
            # train_size: runs of different sizes are compared on the same images.
            arrays["train"], arrays["val"] = _hold_out(*arrays["train"], val_size, seed, spec.title)
        for split in source_splits:
            x, y = arrays[split]
            where = "train (after the validation split is held out)" if split == "train" and val_size else split
            arrays[split] = _take_subset(x, y, sizes.get(split), seed, spec.title, where)
    return {s: arrays[s] for s in wanted}, names


def split_size(name: str, split: str = "train", *, data_dir=None, archive=None) -> int:
    """Number of examples of a whole split (``synthetic``: the default generated size)."""
    name = _check_name(name)
    _check_split(split)
    if name == "synthetic":
        return _SYNTH_SIZES[split]
    arrays, _ = load_splits(name, (split,), data_dir=data_dir, archive=archive)
    return int(arrays[split][1].shape[0])


def _load(name, splits, *, data_dir, archive, sizes, seed):
    """:func:`load_splits` without a validation split (kept for its callers)."""
    return load_splits(name, splits, data_dir=data_dir, archive=archive, sizes=sizes, seed=seed)


def load_arrays(
    name: str,
    split: str,
    *,
    data_dir=None,
    archive=None,
    size: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of a dataset into memory.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        data_dir: prepared TFDS folder (default: TFDS's default data dir).
            Ignored when ``archive`` is given and for ``synthetic``.
        archive: path to the original ``cifar-*-python.tar.gz``, its extracted
            folder, or the folder containing either; takes precedence over TFDS.
        size: keep only this many examples: a class-balanced subset chosen
            deterministically from ``seed`` (kept in the original order). For
            ``synthetic`` this is the number of examples generated (default
            1024 train / 256 test).
        seed: seed of the subset choice.

    Returns:
        ``(images, labels)``: ``uint8`` array ``(N, 32, 32, 3)`` (NHWC) and
        ``int64`` array ``(N,)``.

    Raises:
        DataError: unknown name/split, missing or damaged data, or ``size``
            larger than the split.
    """
    size = _check_size(size, "size")
    arrays, _ = _load(name, (split,), data_dir=data_dir, archive=archive,
                      sizes={split: size}, seed=seed)
    return arrays[split]


def dataset_info(name: str, class_names: Sequence[str] | None = None,
                 train_examples: int = 0, test_examples: int = 0, val_examples: int = 0) -> DatasetInfo:
    """The static :class:`DatasetInfo` of ``name`` (without loading data).

    Args:
        name: one of :data:`DATASETS`.
        class_names: class names; default ``class_0``, ``class_1``, ...
        train_examples: value of ``DatasetInfo.train_examples``.
        test_examples: value of ``DatasetInfo.test_examples``.
        val_examples: value of ``DatasetInfo.val_examples``.
    """
    name = _check_name(name)
    spec = _SPECS[name]
    if class_names is None:
        class_names = tuple(f"class_{i}" for i in range(spec.num_classes))
    return DatasetInfo(
        name=name,
        num_classes=spec.num_classes,
        class_names=tuple(class_names),
        image_shape=IMAGE_SHAPE,
        mean=tuple(float(m) for m in spec.mean),
        std=tuple(float(s) for s in spec.std),
        train_examples=int(train_examples),
        test_examples=int(test_examples),
        val_examples=int(val_examples),
    )


# --------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------


def normalize(images_uint8, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """Scales pixels to ``[0, 1]`` and standardises each channel.

    Args:
        images_uint8: ``uint8`` images ``(..., 3)`` (array or tensor).
        mean: per-channel mean on the ``[0, 1]`` scale.
        std: per-channel standard deviation on the ``[0, 1]`` scale.

    Returns:
        ``float32`` tensor ``(x / 255 - mean) / std``, same shape.
    """
    x = tf.cast(images_uint8, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _reflect(index: tf.Tensor, size: int) -> tf.Tensor:
    """Maps indices in ``[-size+1, 2*size-2]`` into ``[0, size)`` by reflection.

    This is ``tf.pad(mode="REFLECT")`` (edge pixel not repeated) expressed on
    indices, so a crop of the padded image becomes a single gather.
    """
    index = tf.abs(index)
    return (size - 1) - tf.abs((size - 1) - index)


def _crop_flip(images: tf.Tensor, offset_y, offset_x, flip) -> tf.Tensor:
    """Crops 32x32 windows of the 4-pixel reflect-padded batch, then flips.

    Args:
        images: ``(B, H, W, C)`` batch.
        offset_y, offset_x: ``(B,)`` int32 window offsets in ``[0, 2 * PAD]``
            (in padded coordinates).
        flip: ``(B,)`` bool, mirror the window horizontally.

    Returns:
        ``(B, H, W, C)`` batch, same dtype.
    """
    height, width = images.shape[1], images.shape[2]
    rows = _reflect(offset_y[:, None] + tf.range(height)[None, :] - PAD, height)
    cols = offset_x[:, None] + tf.where(
        flip[:, None], tf.range(width - 1, -1, -1)[None, :], tf.range(width)[None, :]
    )
    cols = _reflect(cols - PAD, width)
    out = tf.gather(images, rows, axis=1, batch_dims=1)  # (B, H, W, C)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def _params_from_bits(bits: tf.Tensor):
    """Crop offsets and flip flags from one random int64 per example."""
    bits = tf.cast(tf.math.floormod(bits, 2**31 - 1), tf.int32)
    span = 2 * PAD + 1
    return bits % span, (bits // span) % span, (bits // (span * span)) % 2 == 1


def augment_batch(images, seed=None) -> tf.Tensor:
    """Applies the paper's training augmentation to a batch.

    Each image is reflect-padded by 4 pixels (to 40x40), a random 32x32
    window is cropped (offsets 0..8, uniform) and mirrored horizontally with
    probability 1/2.

    Args:
        images: ``(B, 32, 32, C)`` or a single ``(32, 32, C)`` image, any dtype.
        seed: ``None`` (fresh randomness), an int, or a shape-``(2,)`` seed of
            the stateless random ops; the same seed gives the same result.

    Returns:
        Tensor of the input's shape and dtype.
    """
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[None]
    batch = tf.shape(images)[0]
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    elif isinstance(seed, (int, np.integer)):
        seed = [0, int(seed)]
    span = 2 * PAD + 1
    params = tf.random.stateless_uniform([3, batch], seed=seed, minval=0, maxval=span * 2,
                                         dtype=tf.int32)
    out = _crop_flip(images, params[0] % span, params[1] % span, params[2] % 2 == 1)
    return out[0] if single else out


# --------------------------------------------------------------------------
# tf.data pipelines
# --------------------------------------------------------------------------


def pipeline_options() -> tf.data.Options:
    """``tf.data`` options of every kdkeras pipeline: autotuning off.

    Measured on a 2-core CPU: with tf.data's autotuner on, ``fit`` steps of
    WRN-22x2 intermittently slow from ~0.55 s to a fixed ~1.02 s (the
    autotuner's periodic work competes with the training step for the two
    cores); with it off, every window runs at full speed
    (``python scripts/bench.py --model=wrn22x2_R_g16``: 125 -> ~240 img/s).
    Parallelism is set explicitly instead (:data:`_PARALLEL_CALLS`, prefetch 2).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


#: Parallel batch loads: one per core, at least 2.
_PARALLEL_CALLS = max(2, os.cpu_count() or 2)
_PREFETCH = 2


def _train_pipeline(x, y, info: DatasetInfo, batch_size, seed, augment,
                    drop_remainder) -> tf.data.Dataset:
    """The shuffled, augmented training batches of in-memory tensors ``x`` / ``y``."""
    n = int(x.shape[0])
    mean, std = info.mean, info.std

    # Shuffle indices rather than images: cheap elements, whole-set buffer.
    ds = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    # One random int64 per example, re-drawn every epoch, deterministic from
    # ``seed``: augmentation needs no stateful RNG inside the parallel map.
    bits = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, bits)).batch(batch_size, drop_remainder=drop_remainder)

    def load(idx, rnd):
        batch = tf.gather(x, idx)
        if augment:
            batch = _crop_flip(batch, *_params_from_bits(rnd))
        return normalize(batch, mean, std), tf.gather(y, idx)

    ds = ds.map(load, num_parallel_calls=_PARALLEL_CALLS)
    return ds.prefetch(_PREFETCH).with_options(pipeline_options())


def _eval_pipeline(x, y, info: DatasetInfo, batch_size, shuffle_seed=None) -> tf.data.Dataset:
    """Normalised, unaugmented batches in a fixed order (``shuffle_seed``: one seeded permutation)."""
    n = int(x.shape[0])
    mean, std = info.mean, info.std

    def load(idx):
        return normalize(tf.gather(x, idx), mean, std), tf.gather(y, idx)

    ds = tf.data.Dataset.range(n)
    if shuffle_seed is not None:
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size).map(load, num_parallel_calls=_PARALLEL_CALLS)
    return ds.prefetch(_PREFETCH).with_options(pipeline_options())


def _test_pipeline(images, labels, info: DatasetInfo, batch_size) -> tf.data.Dataset:
    return _eval_pipeline(tf.constant(images), tf.constant(labels), info, batch_size)


@dataclasses.dataclass(frozen=True)
class Splits:
    """The pipelines of one run (see :func:`make_splits`).

    Attributes:
        train: shuffled, augmented training batches, reshuffled and
            re-augmented every time it is iterated.
        val: validation batches (``None`` without a validation split).
        test: test batches.
        train_plain: the training images in one seeded order, unaugmented
            (population statistics for precise BN).
        info: the :class:`DatasetInfo`.
        steps_per_epoch: training batches per epoch.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset
    train_plain: tf.data.Dataset
    info: DatasetInfo
    steps_per_epoch: int

    def eval_splits(self) -> dict:
        """``{"val": ..., "test": ...}`` (``"val"`` only when present)."""
        out = {"val": self.val} if self.val is not None else {}
        out["test"] = self.test
        return out


def make_splits(
    name: str = "cifar100",
    *,
    batch_size: int = 128,
    data_dir=None,
    archive=None,
    train_size: int | None = None,
    test_size: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
    augment: bool = True,
    drop_remainder: bool = False,
) -> Splits:
    """Builds the training, validation and test pipelines of a run.

    Args:
        name: one of :data:`DATASETS`.
        batch_size: examples per batch.
        data_dir: prepared TFDS folder (default: TFDS's default data dir).
        archive: original ``cifar-*-python.tar.gz``, its extracted folder or
            their parent folder; takes precedence over TFDS.
        train_size: train on a class-balanced seeded subset of this many
            training examples (``synthetic``: generate this many; default
            1024), taken after the validation images are held out.
        test_size: same for the test split (``synthetic`` default 256).
        val_size: hold out this many training examples (class-balanced,
            seeded) as the validation split; never trained on or augmented.
        seed: seed of the subsets, the validation split, the per-epoch
            shuffle and the augmentation.
        augment: apply reflect-pad / random-crop / flip to training batches.
        drop_remainder: drop the last incomplete training batch (evaluation
            pipelines always keep every example).

    Returns:
        A :class:`Splits`. Every dataset yields ``(images, labels)`` with
        ``float32`` normalised images ``(batch, 32, 32, 3)`` and ``int64``
        labels ``(batch,)``.

    Raises:
        DataError: as :func:`load_splits`, or for a bad ``batch_size``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    sizes = {"train": _check_size(train_size, "train_size"),
             "test": _check_size(test_size, "test_size")}
    wanted = ("train", "val", "test") if val_size is not None else SPLITS
    arrays, names = load_splits(name, wanted, data_dir=data_dir, archive=archive, sizes=sizes,
                                seed=seed, val_size=val_size)
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["test"]
    x_val, y_val = arrays.get("val", (np.zeros((0,) + IMAGE_SHAPE, np.uint8), np.zeros((0,), np.int64)))
    info = dataset_info(name, names, x_train.shape[0], x_test.shape[0], x_val.shape[0])
    batch_size, seed = int(batch_size), int(seed)
    x, y = tf.constant(x_train), tf.constant(y_train)  # shared by both training pipelines
    n = x_train.shape[0]
    return Splits(
        train=_train_pipeline(x, y, info, batch_size, seed, augment, drop_remainder),
        val=_test_pipeline(x_val, y_val, info, batch_size) if val_size is not None else None,
        test=_test_pipeline(x_test, y_test, info, batch_size),
        train_plain=_eval_pipeline(x, y, info, batch_size, shuffle_seed=seed + 2),
        info=info,
        steps_per_epoch=int(n // batch_size if drop_remainder else math.ceil(n / batch_size)),
    )


def make_datasets(
    name: str = "cifar100",
    *,
    batch_size: int = 128,
    data_dir=None,
    archive=None,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    augment: bool = True,
    drop_remainder: bool = False,
) -> tuple[tf.data.Dataset, tf.data.Dataset, DatasetInfo]:
    """The training and test pipelines, without a validation split.

    Same arguments as :func:`make_splits` (without ``val_size``).

    Returns:
        ``(train_ds, test_ds, info)``. ``train_ds`` is reshuffled (and
        re-augmented) every time it is iterated, deterministically from
        ``seed``.
    """
    splits = make_splits(name, batch_size=batch_size, data_dir=data_dir, archive=archive,
                         train_size=train_size, test_size=test_size, seed=seed, augment=augment,
                         drop_remainder=drop_remainder)
    return splits.train, splits.test, splits.info


def measure_throughput(dataset: tf.data.Dataset, steps: int, *, warmup: int = 2) -> float:
    """Iterates ``steps`` batches of ``dataset`` and returns images per second.

    Args:
        dataset: yields ``(images, labels)`` batches (or image batches).
        steps: batches timed (the dataset is repeated if it is shorter).
        warmup: batches consumed first and not timed (pipeline start-up).

    Returns:
        Images per second over the timed batches.
    """
    it = iter(dataset.repeat())
    for _ in range(warmup):
        next(it)
    count = 0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def _main(argv: Iterable[str] | None = None) -> int:
    """``python -m kdkeras.data``: check a data source and time the pipeline."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar100", help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--data_dir", default=None, help="prepared TFDS folder")
    parser.add_argument("--archive", default=None, help="cifar-*-python.tar.gz or its folder")
    parser.add_argument("--train_size", type=int, default=None)
    parser.add_argument("--test_size", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200, help="batches timed")
    parser.add_argument("--no_augment", action="store_true")
    args = parser.parse_args(argv)
    try:
        start = time.perf_counter()
        train, test, info = make_datasets(
            args.dataset, batch_size=args.batch_size, data_dir=args.data_dir,
            archive=args.archive, train_size=args.train_size, test_size=args.test_size,
            augment=not args.no_augment)
        loaded = time.perf_counter() - start
    except DataError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"{info.name}: {info.train_examples} train / {info.test_examples} test examples, "
          f"{info.num_classes} classes, loaded in {loaded:.1f} s")
    print(f"train pipeline: {measure_throughput(train, args.steps):.0f} images/s "
          f"(batch {args.batch_size}, augment={not args.no_augment})")
    print(f"test pipeline: {measure_throughput(test, args.steps):.0f} images/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
