"""The ``tf.data`` pipelines of a run: shuffled augmented training batches, validation and test batches."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from kdkeras.data.augment import crop_flip, pad_for, params_from_bits
from kdkeras.data.loading import dataset_info, load_splits
from kdkeras.data.specs import (
    SPLITS,
    DataError,
    DatasetInfo,
    check_size,
)


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


#: Hosts with at least this many cores autotune under ``auto`` (they have cores to spare).
AUTOTUNE_MIN_CORES = 8

_data_tuning = "auto"


def set_data_tuning(mode: str) -> None:
    """Sets how the pipelines built from now on in this process spread their work (``auto|fixed|autotune``)."""
    global _data_tuning
    from kdkeras.data.specs import DATA_TUNINGS

    if mode not in DATA_TUNINGS:
        from kdkeras.errors import UsageError

        raise UsageError(f"Unknown data_tuning '{mode}'. Valid choices: {', '.join(DATA_TUNINGS)}.")
    _data_tuning = mode


def data_tuning(mode: str | None = None) -> str:
    """``"fixed"`` or ``"autotune"``: what ``mode`` (default: the process's setting) means on this host.

    ``fixed``: tf.data's autotuner off, one parallel batch load per core,
    prefetch 2. Measured on a 2-core CPU: with the autotuner on, ``fit``
    steps of WRN-22x2 intermittently slowed from ~0.55 s to a fixed ~1.02 s
    (its periodic work competes with the training step for the two cores);
    fixed, every window ran at full speed (``kdkeras bench
    --model=wrn22x2_R_g16``: 125 -> ~240 img/s).

    ``autotune``: tf.data chooses the parallelism and the prefetch depth
    (``tf.data.AUTOTUNE``) as it runs, which keeps an accelerator fed and
    uses the cores of a large host.

    ``auto`` is ``autotune`` when TensorFlow sees a GPU or the host has at
    least :data:`AUTOTUNE_MIN_CORES` cores, else ``fixed``.
    """
    mode = mode or _data_tuning
    if mode != "auto":
        return mode
    many_cores = (os.cpu_count() or 1) >= AUTOTUNE_MIN_CORES
    return "autotune" if many_cores or tf.config.list_physical_devices("GPU") else "fixed"


def pipeline_options() -> tf.data.Options:
    """``tf.data`` options of every kdkeras pipeline: the autotuner per :func:`data_tuning`, sharding by data."""
    options = tf.data.Options()
    options.autotune.enabled = data_tuning() == "autotune"
    # Several workers: each builds the same seeded pipeline and keeps its
    # part of every global batch (in-memory tensors have no files to shard).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


#: Parallel batch loads when fixed: one per core, at least 2.
_PARALLEL_CALLS = max(2, os.cpu_count() or 2)

_PREFETCH = 2


def _parallel_calls() -> int:
    return tf.data.AUTOTUNE if data_tuning() == "autotune" else _PARALLEL_CALLS


def _prefetch() -> int:
    return tf.data.AUTOTUNE if data_tuning() == "autotune" else _PREFETCH


def _train_pipeline(x, y, info: DatasetInfo, batch_size, seed, augment,
                    drop_remainder) -> tf.data.Dataset:
    """The shuffled, augmented training batches of in-memory tensors ``x`` / ``y``."""
    n = int(x.shape[0])

    # Shuffle indices rather than images: cheap elements, whole-set buffer.
    ds = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    # One random int64 per example, re-drawn every epoch, deterministic from
    # ``seed``: augmentation needs no stateful RNG inside the parallel map.
    bits = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, bits)).batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(_batch_loader(x, y, info, augment), num_parallel_calls=_parallel_calls())
    return ds.prefetch(_prefetch()).with_options(pipeline_options())


def _batch_loader(x, y, info: DatasetInfo, augment: bool, with_indices: bool = False):
    """``load(indices, random_bits)``: a batch's images (augmented from the bits) and labels.

    ``with_indices``: the batch is ``((images, indices), labels)``, the
    indices (int64) being the examples' positions in ``x``.
    """
    mean, std = info.mean, info.std
    pads = (pad_for(info.image_shape[0]), pad_for(info.image_shape[1]))
    mode = augment if isinstance(augment, str) else "reflect"

    def load(idx, rnd):
        batch = tf.gather(x, idx)
        if augment:
            batch = crop_flip(batch, *params_from_bits(rnd, *pads), *pads, mode=mode)
        images = normalize(batch, mean, std)
        return ((images, idx) if with_indices else images), tf.gather(y, idx)

    return load


def _epoch_order(n: int, seed: int, epoch):
    """Epoch ``epoch``'s example order and augmentation bits: functions of ``(seed, epoch)`` only."""
    epoch = tf.cast(epoch, tf.int64)
    order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                     seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    bits = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed + 1, tf.int64), epoch]),
                                       minval=None, maxval=None, dtype=tf.int64)
    return order, bits


def _train_epochs_pipeline(x, y, info: DatasetInfo, batch_size, seed, augment, drop_remainder,
                           start: int, stop: int, with_indices: bool = False) -> tf.data.Dataset:
    """The training batches of epochs ``start`` .. ``stop - 1``, back to back.

    ``with_indices``: batches ``((images, indices), labels)``, each example's
    int64 position in the training split beside its image (the same images,
    labels and order as without).

    Each epoch's order and augmentation come from stateless random ops keyed
    by ``(seed, epoch)``: the same in every process that builds them (every
    worker of a multi-worker run) and whenever a run resumes at an epoch.
    """
    n = int(x.shape[0])

    def epoch_batches(epoch):
        order, bits = _epoch_order(n, seed, epoch)
        return tf.data.Dataset.from_tensor_slices((order, bits)).batch(batch_size, drop_remainder=drop_remainder)

    ds = tf.data.Dataset.range(int(start), int(stop)).flat_map(epoch_batches)
    ds = ds.map(_batch_loader(x, y, info, augment, with_indices), num_parallel_calls=_parallel_calls())
    return ds.prefetch(_prefetch()).with_options(pipeline_options())


def _eval_pipeline(x, y, info: DatasetInfo, batch_size, shuffle_seed=None) -> tf.data.Dataset:
    """Normalised, unaugmented batches in a fixed order (``shuffle_seed``: one seeded permutation)."""
    n = int(x.shape[0])
    mean, std = info.mean, info.std

    def load(idx):
        return normalize(tf.gather(x, idx), mean, std), tf.gather(y, idx)

    ds = tf.data.Dataset.range(n)
    if shuffle_seed is not None:
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size).map(load, num_parallel_calls=_parallel_calls())
    return ds.prefetch(_prefetch()).with_options(pipeline_options())


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
        train_augmented: the training images in another seeded order,
            augmented as for training with one seeded draw of crops and
            flips, the same batches whenever iterated (precise BN over
            augmented batches, ``precise_bn_augment``). Its order and
            augmentation depend only on the seed, never on how far training
            got, so a resumed run measures what an uninterrupted one would.
        info: the :class:`DatasetInfo`.
        steps_per_epoch: training batches per epoch.
        train_epochs: ``train_epochs(start, stop, with_indices=False)``:
            the training batches of epochs ``start`` .. ``stop - 1`` back to
            back (``steps_per_epoch`` each); epoch ``e``'s order and
            augmentation depend only on ``(seed, e)``. Runs train on it, so
            a resumed run sees the epochs an uninterrupted one would, and
            every worker of a multi-worker run sees the same global batches.
            ``with_indices=True``: batches ``((images, indices), labels)``,
            ``indices`` (int64) being each example's position in the
            training split (``0 .. train_examples - 1``), for methods with
            per-example state.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset
    train_plain: tf.data.Dataset
    info: DatasetInfo
    steps_per_epoch: int
    train_epochs: Callable[..., tf.data.Dataset]
    train_augmented: tf.data.Dataset

    def eval_splits(self) -> dict:
        """``{"val": ..., "test": ...}`` (``"val"`` only when present)."""
        out = {"val": self.val} if self.val is not None else {}
        out["test"] = self.test
        return out


#: Offset of the seed of :attr:`Splits.train_augmented` from the run's (training uses ``seed`` and ``seed + 1``,
#: ``train_plain`` ``seed + 2``).
PRECISE_BN_SEED = 3


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
    augment: bool | str = True,
    drop_remainder: bool = False,
) -> Splits:
    """Builds the training, validation and test pipelines of a run.

    Args:
        name: one of :data:`DATASETS`.
        batch_size: examples per batch.
        data_dir: prepared TFDS folder (default: TFDS's default data dir);
            for ``folder``, the image folder (``train/<class>/...`` and
            ``test/<class>/...`` or ``val/<class>/...``).
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
        augment: apply pad / random-crop / flip to training batches (the
            padding follows the image size, :func:`~kdkeras.data.augment.pad_for`):
            ``True`` or ``"reflect"`` (the paper's), ``"zeros"`` (the crd
            recipe's), ``False``: none.
        drop_remainder: drop the last incomplete training batch (evaluation
            pipelines always keep every example).

    Returns:
        A :class:`Splits`. Every dataset yields ``(images, labels)`` with
        ``float32`` normalised images ``(batch, 32, 32, 3)`` (``folder``:
        ``(batch, H, W, 3)``) and ``int64``
        labels ``(batch,)``.

    Raises:
        DataError: as :func:`load_splits`, or for a bad ``batch_size``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    sizes = {"train": check_size(train_size, "train_size"),
             "test": check_size(test_size, "test_size")}
    wanted = ("train", "val", "test") if val_size is not None else SPLITS
    arrays, names = load_splits(name, wanted, data_dir=data_dir, archive=archive, sizes=sizes,
                                seed=seed, val_size=val_size)
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["test"]
    x_val, y_val = arrays.get("val", (np.zeros((0,) + x_train.shape[1:], np.uint8), np.zeros((0,), np.int64)))
    info = dataset_info(name, names, x_train.shape[0], x_test.shape[0], x_val.shape[0], data_dir=data_dir)
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
        train_epochs=functools.partial(_train_epochs_pipeline, x, y, info, batch_size, seed, augment,
                                       drop_remainder),
        # Epoch 0 of seeds (seed + PRECISE_BN_SEED, + 1): neither a training epoch's order nor its crops.
        train_augmented=_train_epochs_pipeline(x, y, info, batch_size, seed + PRECISE_BN_SEED, augment, False, 0, 1),
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
    augment: bool | str = True,
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
