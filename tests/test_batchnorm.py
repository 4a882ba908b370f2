"""Precise BN and batch-statistics accuracy against a NumPy hand computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras import batchnorm
from kdkeras.layers import FastBatchNormalization

EPS = 1e-3
BATCHES = (4, 4, 2)  # a ragged last batch: population weighting must count values, not batches


def _tiny(bn_class):
    """1x1 conv -> BN -> ReLU -> Dropout -> 1x1 conv -> BN -> GAP -> Dense, on 4x4x2 images."""
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="conv1")(inputs)
    x = bn_class(epsilon=EPS, momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Conv2D(2, 1, use_bias=False, name="conv2")(x)
    x = bn_class(epsilon=EPS, momentum=0.9, name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    for bn in (model.get_layer("bn1"), model.get_layer("bn2")):  # non-trivial affine and stale statistics
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
        bn.beta.assign(rng.normal(size=c).astype("float32"))
        bn.moving_mean.assign(rng.normal(size=c).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 3.0, c).astype("float32"))
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(sum(BATCHES), 4, 4, 2)).astype("float32")
    y = rng.integers(0, 3, size=sum(BATCHES))
    starts = np.cumsum((0,) + BATCHES)
    batches = [(x[a:b], y[a:b]) for a, b in zip(starts[:-1], starts[1:])]

    def generate():
        yield from batches

    spec = (tf.TensorSpec((None, 4, 4, 2), tf.float32), tf.TensorSpec((None,), tf.int64))
    return batches, tf.data.Dataset.from_generator(generate, output_signature=spec)


def _weights(model):
    get = lambda name, w: keras.ops.convert_to_numpy(getattr(model.get_layer(name), w)).astype(np.float64)  # noqa: E731
    return {"w1": get("conv1", "kernel")[0, 0], "w2": get("conv2", "kernel")[0, 0],
            "g1": get("bn1", "gamma"), "b1": get("bn1", "beta"), "g2": get("bn2", "gamma"), "b2": get("bn2", "beta"),
            "wd": get("head", "kernel"), "bd": get("head", "bias")}


def _numpy_forward(w, x):
    """Training-mode forward of one batch (batch statistics, dropout off): BN inputs and logits."""
    def bn(z, g, b):
        mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))  # biased, as Keras tracks
        return g * (z - mean) / np.sqrt(var + EPS) + b

    z1 = x.astype(np.float64) @ w["w1"]                      # (B, 4, 4, 3)
    z2 = np.maximum(bn(z1, w["g1"], w["b1"]), 0.0) @ w["w2"]  # (B, 4, 4, 2)
    logits = bn(z2, w["g2"], w["b2"]).mean(axis=(1, 2)) @ w["wd"] + w["bd"]
    return (z1, z2), logits


@pytest.mark.parametrize("bn_class", [keras.layers.BatchNormalization, FastBatchNormalization])
def test_population_statistics_match_a_hand_computation(bn_class):
    model = _tiny(bn_class)
    batches, dataset = _data()
    w = _weights(model)
    inputs = [_numpy_forward(w, x)[0] for x, _ in batches]
    expected = []
    for layer in (0, 1):
        values = np.concatenate([z[layer].reshape(-1, z[layer].shape[-1]) for z in inputs])  # every value
        expected.append((values.mean(axis=0), values.var(axis=0)))

    trainable = [v.numpy().copy() for v in model.trainable_variables]
    before = batchnorm.get_statistics(model)
    rates = [d.rate for d in batchnorm.dropout_layers(model)]
    stats = batchnorm.population_statistics(model, dataset, len(BATCHES))
    # float32 kernels' sums over 160 values per channel (BN inputs of size ~1-4) against float64: ~1e-7 of
    # that size (seen 4e-7 absolute). 1e-4 relative, and 1e-5 absolute (~1e-5 of the inputs' size) for a
    # channel whose mean is near 0.
    for (mean, var), (m, v) in zip(stats, expected):
        np.testing.assert_allclose(mean, m, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var, v, rtol=1e-4, atol=1e-5)
    # Measuring changes nothing: statistics, momenta, dropout rates, weights.
    after = batchnorm.get_statistics(model)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(before, after))
    assert [bn.momentum for bn in batchnorm.batchnorm_layers(model)] == [0.9, 0.9]
    assert [d.rate for d in batchnorm.dropout_layers(model)] == rates == [0.5]

    # precise_bn assigns them and leaves every trainable weight untouched.
    batchnorm.precise_bn(model, dataset, len(BATCHES))
    for (mean, var), bn in zip(expected, batchnorm.batchnorm_layers(model)):  # the same tolerances as above
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(trainable, model.trainable_variables))


def test_population_variance_is_not_the_mean_of_batch_variances():
    # Batches with different means: the population variance includes the spread of the means.
    model = _tiny(keras.layers.BatchNormalization)
    x = np.concatenate([np.full((4, 4, 4, 2), -3.0), np.full((4, 4, 4, 2), 3.0)]).astype("float32")
    x += np.random.default_rng(0).normal(0, 0.1, x.shape).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(4)
    (mean, var), _ = batchnorm.population_statistics(model, dataset, 2)
    z = x.astype(np.float64) @ _weights(model)["w1"]
    # float32 kernels against float64 on variances of size ~1-6, none near 0 (seen 1.7e-7): 1e-4 relative.
    np.testing.assert_allclose(var, z.reshape(-1, 3).var(axis=0), rtol=1e-4)
    halves = z[:4].reshape(-1, 3), z[4:].reshape(-1, 3)
    within = np.mean([h.var(axis=0) for h in halves], axis=0)  # the mean of the batch variances
    between = ((halves[0].mean(axis=0) - halves[1].mean(axis=0)) / 2) ** 2
    np.testing.assert_allclose(var, within + between, rtol=1e-4)
    assert np.max(var / within) > 100


def test_batch_statistics_accuracy_matches_a_hand_computation():
    model = _tiny(keras.layers.BatchNormalization)
    batches, dataset = _data()
    w = _weights(model)
    correct = sum(int(np.sum(np.argmax(_numpy_forward(w, x)[1], axis=1) == y)) for x, y in batches)
    before = batchnorm.get_statistics(model)
    # A count: every argmax here wins by >= 2% of the logits' scale, far above float32 rounding: exact.
    assert batchnorm.batch_statistics_accuracy(model, dataset) == pytest.approx(correct / sum(BATCHES))
    after = batchnorm.get_statistics(model)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(before, after))


def test_dropout_on_changes_the_statistics_and_bad_arguments_fail():
    model = _tiny(keras.layers.BatchNormalization)
    _, dataset = _data()
    off = batchnorm.population_statistics(model, dataset, 3)
    on = batchnorm.population_statistics(model, dataset, 3, dropout=True)
    # Before the dropout: the same kernels on the same inputs, bit-identical.
    np.testing.assert_array_equal(on[0][0], off[0][0])
    assert np.all(on[1][1] > off[1][1])  # after it: the variance grows (the variance shift)
    with pytest.raises(ValueError, match="num_batches must be a positive integer"):
        batchnorm.population_statistics(model, dataset, 0)
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="has no BatchNormalization layer"):
        batchnorm.population_statistics(plain, dataset, 1)
