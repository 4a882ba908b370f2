"""CIFAR from a prepared TensorFlow-Datasets folder; TFDS never uses the network."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from kdkeras.data.specs import (
    CIFAR_URL,
    IMAGE_SHAPE,
    DataError,
    DatasetSpec,
    short_error,
    validate_arrays,
)


class TfdsNotFound(DataError):
    """The TFDS folder does not hold the dataset (``where`` names the folder, for a later message)."""

    def __init__(self, message: str, where: str):
        super().__init__(message)
        self.where = where


def read_tfds(spec: DatasetSpec, splits: Sequence[str], data_dir):
    """Loads ``splits`` from a prepared TFDS folder; never uses the network.

    Raises:
        TfdsNotFound: the folder does not hold the dataset (the caller may
            fall back to the original archive, :mod:`~kdkeras.data.download`).
        DataError: the dataset is there but cannot be read.
    """
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
                raise TfdsNotFound(
                    f"{spec.title} not found in TFDS data_dir '{shown_dir}'. {how}",
                    f"TFDS data_dir '{shown_dir}'",
                ) from None
            raise DataError(f"cannot load {spec.title} from TFDS data_dir '{shown_dir}' "
                            f"({short_error(exc)}). {how}") from None
        except (tf.errors.OpError, OSError, ValueError) as exc:
            raise DataError(
                f"cannot read {spec.title} from TFDS data_dir '{shown_dir}' "
                f"({short_error(exc)}); rebuild it with `tfds build {spec.tfds_name}`. {how}"
            ) from None
        if images:
            x, y = np.concatenate(images), np.concatenate(labels)
        else:
            x = np.zeros((0,) + IMAGE_SHAPE, np.uint8)
            y = np.zeros((0,), np.int64)
        out[split] = validate_arrays(x, y, spec, f"TFDS {spec.tfds_name} {split} split in '{shown_dir}'")
        names = tuple(info.features["label"].names)
    return out, names
