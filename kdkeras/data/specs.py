"""Dataset constants (classes, archive layout, normalisation statistics), :class:`DatasetInfo` and :class:`DataError`."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from kdkeras.errors import UsageError

#: ``--data_tuning`` choices: how tf.data spreads its work (:func:`kdkeras.data.data_tuning`).
DATA_TUNINGS = ("auto", "fixed", "autotune")

#: Dataset names accepted by :func:`load_arrays` and :func:`make_datasets`
#: (``folder``: any image folder, ``data_dir=PATH``; see :mod:`kdkeras.data.folder`).
DATASETS = ("cifar100", "cifar10", "synthetic", "folder")

#: The splits a dataset source provides.
SPLITS = ("train", "test")

#: The splits a run evaluates: the validation split is held out of ``train``.
EVAL_SPLITS = ("val", "test")

IMAGE_SHAPE = (32, 32, 3)

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class DataError(UsageError):
    """A user-facing data problem, a :class:`~kdkeras.errors.UsageError`; one line naming the fix."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset as loaded by :func:`make_datasets`.

    Attributes:
        name: one of :data:`DATASETS`.
        num_classes: number of classes.
        class_names: the class names, indexed by label.
        image_shape: ``(32, 32, 3)`` (``folder``: the size of its images).
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
class DatasetSpec:
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
    train_examples: int = 0  # the full training split (0: it depends on the source)
    test_examples: int = 0


_SYNTH_MEAN = 127.0 / 255.0

_SYNTH_STD = math.sqrt(2 * (128**2 - 1) / 12.0) / 255.0

SYNTHETIC_CLASSES = 100

SYNTHETIC_SIZES = {"train": 1024, "test": 256}

SYNTHETIC_SEED = 20240  # fixed: synthetic data does not depend on ``seed``

SPECS = {
    "cifar100": DatasetSpec(
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
        train_examples=50_000,
        test_examples=10_000,
    ),
    "cifar10": DatasetSpec(
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
        train_examples=50_000,
        test_examples=10_000,
    ),
    "synthetic": DatasetSpec(
        key="synthetic",
        title="synthetic",
        num_classes=SYNTHETIC_CLASSES,
        mean=(_SYNTH_MEAN,) * 3,
        std=(_SYNTH_STD,) * 3,
    ),
}


def _one_line(text: str) -> str:
    """Collapses whitespace (newlines included) so a message fits one line."""
    return " ".join(str(text).split())


def short_error(exc: BaseException, limit: int = 200) -> str:
    """A one-line, length-limited description of an exception."""
    text = _one_line(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_name(name: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} "
            "(e.g. --dataset=cifar100)"
        )
    return name.strip().lower()


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def check_size(size, what: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DataError(f"{what} must be a positive integer or None (all examples), got {size!r}")
    return int(size)


def validate_arrays(images: np.ndarray, labels: np.ndarray, spec: DatasetSpec, where: str):
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


def dataset_info(name: str, class_names: Sequence[str] | None = None,
                 train_examples: int = 0, test_examples: int = 0, val_examples: int = 0) -> DatasetInfo:
    """The static :class:`DatasetInfo` of ``name`` (without loading data).

    ``folder`` has no static description: its classes, image shape and
    statistics come from its folder (:func:`kdkeras.data.dataset_info` with
    ``data_dir``).

    Args:
        name: one of :data:`DATASETS` except ``folder``.
        class_names: class names; default ``class_0``, ``class_1``, ...
        train_examples: value of ``DatasetInfo.train_examples``.
        test_examples: value of ``DatasetInfo.test_examples``.
        val_examples: value of ``DatasetInfo.val_examples``.
    """
    name = check_name(name)
    if name not in SPECS:
        raise DataError(f"the {name} dataset is described by its data: call "
                        "kdkeras.data.dataset_info(name, data_dir=PATH)")
    spec = SPECS[name]
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
