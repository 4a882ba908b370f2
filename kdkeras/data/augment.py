"""The paper's training augmentation: 4-pixel reflect padding, a random 32x32 crop and a random horizontal flip.

Images of another size are padded in proportion (:func:`pad_for`: 1/8 of
each side, so 8 pixels for 64x64) and cropped back to their own size. One
sampler turns a random integer per example into its crop offsets and flip
(:func:`params_from_bits`); the training pipeline and :func:`augment_batch`
both use it."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Reflect padding (pixels per side) of the training augmentation of 32x32 images.
PAD = 4


def pad_for(size: int) -> int:
    """Reflect padding of an image side of ``size`` pixels: ``PAD`` per 32 pixels, rounded.

    4 for 32 (the paper's), 3 for 24, 8 for 64, 28 for 224; at least 1 and
    at most ``size - 1`` (what reflection allows).
    """
    size = int(size)
    return max(0, min(size - 1, max(1, (size * PAD + 16) // 32)))


#: Paddings of the crop: ``reflect`` (the paper's) and ``zeros`` (torchvision's ``RandomCrop(padding=4)``).
PAD_MODES = ("reflect", "zeros")


def _reflect(index: tf.Tensor, size: int) -> tf.Tensor:
    """Maps indices in ``[-size+1, 2*size-2]`` into ``[0, size)`` by reflection.

    This is ``tf.pad(mode="REFLECT")`` (edge pixel not repeated) expressed on
    indices, so a crop of the padded image becomes a single gather.
    """
    index = tf.abs(index)
    return (size - 1) - tf.abs((size - 1) - index)


def crop_flip(images: tf.Tensor, offset_y, offset_x, flip, pad_y=None, pad_x=None, mode="reflect") -> tf.Tensor:
    """Crops ``H x W`` windows of the padded batch (reflect or zeros), then flips.

    Args:
        images: ``(B, H, W, C)`` batch.
        offset_y, offset_x: ``(B,)`` int32 window offsets in ``[0, 2 * pad_y]``
            and ``[0, 2 * pad_x]`` (in padded coordinates).
        flip: ``(B,)`` bool, mirror the window horizontally.
        pad_y, pad_x: padding of each side (default :func:`pad_for` of
            ``H`` and ``W``: ``PAD`` for 32x32).
        mode: ``reflect`` (the paper's: ``tf.pad(mode="REFLECT")``) or
            ``zeros`` (torchvision's ``RandomCrop(padding=4)``: zero pixels,
            black in raw images).

    Returns:
        ``(B, H, W, C)`` batch, same dtype.
    """
    height, width = images.shape[1], images.shape[2]
    pad_y = pad_for(height) if pad_y is None else int(pad_y)
    pad_x = pad_for(width) if pad_x is None else int(pad_x)
    if mode not in PAD_MODES:
        raise ValueError(f"Unknown pad mode {mode!r}. Valid choices: {', '.join(PAD_MODES)}.")
    rows = offset_y[:, None] + tf.range(height)[None, :] - pad_y
    cols = offset_x[:, None] + tf.where(
        flip[:, None], tf.range(width - 1, -1, -1)[None, :], tf.range(width)[None, :]
    ) - pad_x
    if mode == "reflect":
        out = tf.gather(images, _reflect(rows, height), axis=1, batch_dims=1)  # (B, H, W, C)
        return tf.gather(out, _reflect(cols, width), axis=2, batch_dims=1)
    out = tf.gather(images, tf.clip_by_value(rows, 0, height - 1), axis=1, batch_dims=1)
    out = tf.gather(out, tf.clip_by_value(cols, 0, width - 1), axis=2, batch_dims=1)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    return tf.where(inside[..., None], out, tf.zeros_like(out))


def params_from_bits(bits: tf.Tensor, pad_y: int = PAD, pad_x: int = PAD):
    """The sampler: crop offsets and flip flags from one random integer per example.

    Args:
        bits: ``(B,)`` random integers (any range; reduced modulo ``2**31 - 1``).
        pad_y, pad_x: the reflect padding of each side (:func:`pad_for`).

    Returns:
        ``(offset_y, offset_x, flip)``: ``(B,)`` int32 offsets in
        ``[0, 2 * pad_y]`` and ``[0, 2 * pad_x]`` (uniform, up to the bias
        of one modulo) and ``(B,)`` bool flips (probability 1/2).
    """
    bits = tf.cast(tf.math.floormod(bits, 2**31 - 1), tf.int32)
    span_y, span_x = 2 * int(pad_y) + 1, 2 * int(pad_x) + 1
    return bits % span_y, (bits // span_y) % span_x, (bits // (span_y * span_x)) % 2 == 1


def augment_batch(images, seed=None) -> tf.Tensor:
    """Applies the paper's training augmentation to a batch.

    Each image is reflect-padded by 4 pixels (to 40x40), a random 32x32
    window is cropped (offsets 0..8, uniform) and mirrored horizontally with
    probability 1/2. Images of another size ``H x W`` are padded by
    :func:`pad_for` of each side and cropped back to ``H x W``.

    Args:
        images: ``(B, H, W, C)`` or a single ``(H, W, C)`` image, any dtype.
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
    pads = (pad_for(images.shape[1]), pad_for(images.shape[2]))
    out = crop_flip(images, *params_from_bits(bits, *pads), *pads)
    return out[0] if single else out
