"""BatchNorm statistics: precise BN and accuracy with batch statistics.

A BatchNorm layer normalises with the current batch's statistics while
training and with its moving averages at inference. When the two disagree,
a network evaluates differently from the way it trains. Two known causes:

* **Dropout's variance shift** (Li et al., "Understanding the Disharmony
  between Dropout and Batch Normalization by Variance Shift", CVPR 2019): a
  BatchNorm layer after dropout records the variance of dropped-out
  activations, which is larger than the variance it sees at inference, when
  dropout is off. Without skip connections, the shrinkage compounds from
  block to block.
* **Stale statistics**: the moving averages lag behind weights that change
  quickly (few steps per epoch, a high learning rate).

This module measures and fixes both:

* :func:`batch_statistics_accuracy`: accuracy when every BatchNorm layer
  uses the statistics of the evaluated batch (dropout off), the reference a
  gap is measured against.
* :func:`population_statistics` / :func:`precise_bn`: the population mean
  and variance of every BatchNorm layer's input over N training batches
  (augmentation and dropout off), as ``PreciseBN`` in pycls and detectron2
  (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021). Each batch runs
  with BatchNorm in training mode, so every layer sees the inputs it sees in
  training; the variance is the exact population variance over all the
  values of the N batches (``E[x^2] - E[x]^2``, each batch weighted by its
  size), not an average of per-batch variances.

Every function restores the moving statistics, dropout rates and momenta it
changes, except :func:`precise_bn`, whose purpose is to replace the
statistics. Works on any Keras model built from ``keras.layers`` (nested
models included); a :class:`kdkeras.distiller.Distiller` is measured through
its student.
"""

from __future__ import annotations

import contextlib
import weakref

import keras
import numpy as np

from kdkeras.errors import UsageError
from kdkeras.layers import nested_layers


def student_of(model):
    """The model whose BatchNorm layers matter: a distiller's student, else ``model``."""
    return getattr(model, "student", model)


def batchnorm_layers(model) -> list:
    """Every ``keras.layers.BatchNormalization`` (subclasses included) of ``model``, in layer order."""
    return nested_layers(model, keras.layers.BatchNormalization)


def dropout_layers(model) -> list:
    """Every ``keras.layers.Dropout`` (subclasses included) of ``model``."""
    return nested_layers(model, keras.layers.Dropout)


def get_statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(moving_mean, moving_variance)]`` of every BatchNorm layer, as NumPy copies."""
    return [(np.array(keras.ops.convert_to_numpy(bn.moving_mean)),
             np.array(keras.ops.convert_to_numpy(bn.moving_variance))) for bn in batchnorm_layers(model)]


def set_statistics(model, statistics) -> None:
    """Assigns ``[(mean, variance)]`` (as from :func:`get_statistics`) to the BatchNorm layers."""
    layers = batchnorm_layers(model)
    if len(layers) != len(statistics):
        raise ValueError(f"{len(statistics)} statistics for {len(layers)} BatchNormalization layers.")
    for bn, (mean, variance) in zip(layers, statistics):
        bn.moving_mean.assign(np.asarray(mean, dtype=bn.moving_mean.dtype))
        bn.moving_variance.assign(np.asarray(variance, dtype=bn.moving_variance.dtype))


@contextlib.contextmanager
def swapped_statistics(model, statistics):
    """Uses ``statistics`` in the BatchNorm layers inside the block, then restores the old ones."""
    old = get_statistics(model)
    set_statistics(model, statistics)
    try:
        yield
    finally:
        set_statistics(model, old)


@contextlib.contextmanager
def _batch_statistics_mode(model, dropout: bool):
    """Momentum 0 (moving statistics = the last batch's), dropout optionally off; all restored."""
    layers = batchnorm_layers(model)
    drops = [] if dropout else dropout_layers(model)
    momenta = [bn.momentum for bn in layers]
    rates = [d.rate for d in drops]
    saved = get_statistics(model)
    for bn in layers:
        bn.momentum = 0.0
    for d in drops:
        d.rate = 0.0
    try:
        yield layers
    finally:
        for bn, m in zip(layers, momenta):
            bn.momentum = m
        for d, r in zip(drops, rates):
            d.rate = r
        set_statistics(model, saved)


_FORWARDS = weakref.WeakKeyDictionary()


def _forward(model, dropout: bool):
    """The compiled training-mode forward pass used inside :func:`_batch_statistics_mode`.

    It is traced the first time it runs in that mode, so it captures momentum
    0 and the dropout rates of the mode; one per model and mode is kept.
    """
    import tensorflow as tf  # a compiled forward pass (TF backend)

    per_model = _FORWARDS.setdefault(model, {})
    if dropout not in per_model:

        @tf.function(reduce_retracing=True)
        def forward(x):
            return model(x, training=True)

        per_model[dropout] = forward
    return per_model[dropout]


def _images(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def population_statistics(model, dataset, num_batches: int, *, dropout: bool = False):
    """Population mean and variance of every BatchNorm layer's input over ``num_batches`` batches.

    Args:
        model: a Keras model (a distiller: its student is measured).
        dataset: yields ``(images, labels)`` or image batches, e.g. the
            unaugmented training batches (:attr:`kdkeras.data.Splits.train_plain`);
            repeated if shorter than ``num_batches``.
        num_batches: batches to average over (positive).
        dropout: keep dropout on during the passes (a diagnostic: separates
            dropout's variance shift from stale statistics). Default off.

    Returns:
        ``[(mean, variance)]`` per BatchNorm layer (layer order), float32
        arrays of shape ``(channels,)``; the variance is the biased
        population variance, as Keras's moving variance. The model's own
        statistics are left unchanged.

    Raises:
        ValueError: ``num_batches`` is not a positive integer, or the model
            has no BatchNormalization layer.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise UsageError(f"num_batches must be a positive integer. Received: num_batches={num_batches!r}.")
    model = student_of(model)
    if not batchnorm_layers(model):
        raise UsageError(f"Model '{model.name}' has no BatchNormalization layer to recompute.")
    with _batch_statistics_mode(model, dropout) as layers:
        forward = _forward(model, dropout)
        # Per layer: sum over batches of b * mean_b and b * (var_b + mean_b^2).
        # Every batch has b * H_l * W_l values per channel at layer l, and
        # H_l * W_l is the same for every batch, so weighting by the batch
        # size b gives the mean and E[x^2] over all values.
        first = [np.zeros(bn.moving_mean.shape, np.float64) for bn in layers]
        second = [np.zeros(bn.moving_mean.shape, np.float64) for bn in layers]
        weight = 0.0
        for batch in dataset.repeat().take(num_batches):
            x = _images(batch)
            forward(x)
            b = float(x.shape[0])
            for s1, s2, bn in zip(first, second, layers):
                mean = np.asarray(keras.ops.convert_to_numpy(bn.moving_mean), np.float64)
                var = np.asarray(keras.ops.convert_to_numpy(bn.moving_variance), np.float64)
                s1 += b * mean
                s2 += b * (var + mean**2)
            weight += b
    out = []
    for s1, s2 in zip(first, second):
        mean = s1 / weight
        variance = np.maximum(s2 / weight - mean**2, 0.0)
        out.append((mean.astype(np.float32), variance.astype(np.float32)))
    return out


def precise_bn(model, dataset, num_batches: int) -> list:
    """Replaces every BatchNorm layer's moving statistics by its population statistics.

    The statistics come from :func:`population_statistics` (dropout off) over
    ``num_batches`` batches of ``dataset``; trainable weights are untouched.

    Returns:
        The assigned ``[(mean, variance)]``.
    """
    statistics = population_statistics(model, dataset, num_batches)
    set_statistics(student_of(model), statistics)
    return statistics


def batch_statistics_accuracy(model, dataset) -> float:
    """Top-1 accuracy when every BatchNorm layer normalises with the evaluated batch's statistics.

    Dropout is off, as at inference; only the source of the BatchNorm
    statistics differs from a normal evaluation. The result depends on the
    batch size (each batch is normalised on its own). The moving statistics
    are restored afterwards.

    Args:
        model: a Keras classifier returning logits (a distiller: its student).
        dataset: yields ``(images, labels)`` batches.

    Returns:
        The accuracy in ``[0, 1]``.
    """
    model = student_of(model)
    correct = total = 0
    with _batch_statistics_mode(model, dropout=False):
        forward = _forward(model, False)
        for images, labels in dataset:
            logits = keras.ops.convert_to_numpy(forward(images))
            correct += int(np.sum(np.argmax(logits, axis=-1) == np.asarray(labels)))
            total += int(np.asarray(labels).shape[0])
    return correct / max(total, 1)
