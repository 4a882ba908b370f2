"""CIFAR-100 / CIFAR-10 / synthetic / image-folder data for training and evaluation.

Four sources feed the same in-memory arrays (``uint8`` images ``(N, 32, 32, 3)``
in NHWC order, ``(N, H, W, 3)`` for an image folder, ``int64`` labels ``(N,)``):

* **TFDS** (default for ``cifar100`` / ``cifar10``, :mod:`~kdkeras.data.tfds_source`):
  a prepared TensorFlow-Datasets folder (``data_dir``); TFDS never uses the
  network. When it lacks the dataset, the original archive is read from
  Keras's cache, downloaded there (checksummed) on first use
  (:mod:`~kdkeras.data.download`; ``--nodownload`` turns that off); offline,
  missing data fails within seconds with a :class:`DataError` that says how
  to provide it.
* **archive** (``archive=PATH``, :mod:`~kdkeras.data.archive`): the original
  ``cifar-100-python.tar.gz`` / ``cifar-10-python.tar.gz``, their extracted
  folder, or the folder that contains either, read with an unpickler that
  only accepts the few globals a NumPy array needs.
* **synthetic** (:mod:`~kdkeras.data.synthetic`): learnable random images
  generated from a fixed seed, for smoke runs.
* **folder** (``folder`` with ``data_dir=PATH``, :mod:`~kdkeras.data.folder`):
  any ``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` (or ``val/``)
  image folder, listed by ``keras.utils.image_dataset_from_directory``, at
  the size of its images; its normalisation statistics are measured once and
  cached in the folder.

:mod:`~kdkeras.data.loading` takes subsets and the validation split,
:mod:`~kdkeras.data.augment` is the paper's augmentation (one sampler),
:mod:`~kdkeras.data.pipeline` builds the ``tf.data`` pipelines
(:func:`make_splits`), and :mod:`~kdkeras.data.specs` holds the dataset
constants and :class:`DataError`. Every user-facing problem raises
:class:`DataError` with a one-line message naming the fix. See docs/data.md."""

from kdkeras.data.augment import PAD, augment_batch, crop_flip, pad_for, params_from_bits  # noqa: F401
from kdkeras.data.loading import (  # noqa: F401
    dataset_info,
    load_arrays,
    load_splits,
    split_size,
    subset_indices,
)
from kdkeras.data.pipeline import (  # noqa: F401
    Splits,
    data_tuning,
    make_datasets,
    make_splits,
    measure_throughput,
    normalize,
    pipeline_options,
    set_data_tuning,
)
from kdkeras.data.specs import (
    CIFAR_URL,
    DATA_TUNINGS,
    DATASETS,
    EVAL_SPLITS,
    IMAGE_SHAPE,
    SPLITS,
    DataError,
    DatasetInfo,
)

__all__ = [
    "CIFAR_URL", "DATA_TUNINGS", "DATASETS", "EVAL_SPLITS", "IMAGE_SHAPE", "PAD", "SPLITS", "DataError", "DatasetInfo", "Splits",
    "augment_batch", "crop_flip", "data_tuning", "dataset_info", "load_arrays", "load_splits", "make_datasets", "make_splits",
    "measure_throughput", "normalize", "pad_for", "params_from_bits", "pipeline_options", "set_data_tuning", "split_size", "subset_indices",
]
