"""The ``synthetic`` dataset: learnable random images (a per-class template plus noise), generated from a fixed seed."""

from __future__ import annotations

import numpy as np

from kdkeras.data.specs import (
    IMAGE_SHAPE,
    SPLITS,
    SYNTHETIC_CLASSES,
    SYNTHETIC_SEED,
    SYNTHETIC_SIZES,
)


def synthetic_split(split: str, size: int | None):
    """Learnable random data: per-class templates plus uniform noise.

    The data is a fixed function of ``(split, size)``; both splits share the
    class templates so that a model trained on one generalises to the other.
    """
    n = SYNTHETIC_SIZES[split] if size is None else size
    templates = np.random.default_rng(SYNTHETIC_SEED).integers(
        0, 256, size=(SYNTHETIC_CLASSES,) + IMAGE_SHAPE, dtype=np.uint8
    )
    rng = np.random.default_rng((SYNTHETIC_SEED, SPLITS.index(split) + 1))
    labels = np.arange(n, dtype=np.int64) % SYNTHETIC_CLASSES
    rng.shuffle(labels)
    noise = rng.integers(0, 256, size=(n,) + IMAGE_SHAPE, dtype=np.uint8)
    images = (templates[labels] >> 1) + (noise >> 1)
    return images, labels
