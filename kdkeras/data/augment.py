"""The paper's training augmentation: 4-pixel reflect padding, a random 32x32 crop and a random horizontal flip.

One sampler turns a random integer per example into its crop offsets and
flip (:func:`params_from_bits`); the training pipeline and
:func:`augment_batch` both use it."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Reflect padding (pixels per side) of the training augmentation.
PAD = 4


def _reflect(index: tf.Tensor, size: int) -> tf.Tensor:
    """Maps indices in ``[-size+1, 2*size-2]`` into ``[0, size)`` by reflection.

    This is ``tf.pad(mode="REFLECT")`` (edge pixel not repeated) expressed on
    indices, so a crop of the padded image becomes a single gather.
    """
    index = tf.abs(index)
    return (size - 1) - tf.abs((size - 1) - index)


def crop_flip(images: tf.Tensor, offset_y, offset_x, flip) -> tf.Tensor:
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


def params_from_bits(bits: tf.Tensor):
    """The sampler: crop offsets and flip flags from one random integer per example.

    Args:
        bits: ``(B,)`` random integers (any range; reduced modulo ``2**31 - 1``).

    Returns:
        ``(offset_y, offset_x, flip)``: ``(B,)`` int32 offsets in
        ``[0, 2 * PAD]`` (uniform) and ``(B,)`` bool flips (probability 1/2).
    """
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
    bits = tf.random.stateless_uniform([batch], seed=seed, minval=0, maxval=2**31 - 1, dtype=tf.int64)
    out = crop_flip(images, *params_from_bits(bits))
    return out[0] if single else out
