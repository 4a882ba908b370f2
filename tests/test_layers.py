"""GroupedConv2D against an independent NumPy grouped convolution and Keras's own path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras import host
from kdkeras.layers import CONV_IMPLEMENTATIONS, GroupedConv2D, portable_implementation
from tests.grouped_conv_reference import np_grouped_conv2d, np_grouped_conv2d_with_grads, relative_error

CASES = [
    # (channels, groups, stride): g-style (fixed groups), G-style (fixed group size), depthwise
    (8, 2, 1), (8, 2, 2), (16, 4, 1), (12, 6, 2), (8, 8, 1), (8, 8, 2), (8, 1, 1),
]
#: Every implementation but "auto" names one kernel path; "tf" needs TensorFlow's grouped kernel.
IMPLEMENTATIONS = [i for i in CONV_IMPLEMENTATIONS]
#: float32 sums of at most 3*3*16 products of O(1) values, against float64: a few float32 ulps of
#: the largest value compared, times the number of terms, stays far below 1e-5 of the scale.
FLOAT32_SCALE_TOLERANCE = 1e-5


def _skip_without_grouped_kernel(implementation, groups, channels):
    if implementation == "tf" and groups > 1 and not host.grouped_conv_kernel():
        pytest.skip("TensorFlow's grouped kernel has no gradient in this process (oneDNN off, no GPU); "
                    "tests/test_onednn.py covers both settings in subprocesses")


@pytest.mark.parametrize("channels, groups, stride", CASES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_matches_numpy_reference(channels, groups, stride, implementation):
    _skip_without_grouped_kernel(implementation, groups, channels)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 7, channels)).astype("float32")
    layer = GroupedConv2D(channels, 3, strides=stride, padding="same", groups=groups,
                          use_bias=False, implementation=implementation)
    y = layer(x)
    kernel = layer.kernel.numpy()
    assert kernel.shape == (3, 3, channels // groups, channels)  # Keras weight layout
    assert relative_error(y, np_grouped_conv2d(x, kernel, stride, groups)) < FLOAT32_SCALE_TOLERANCE


@pytest.mark.parametrize("channels, groups, stride", CASES + [(12, 3, 1), (6, 2, 2)])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_gradients_match_numpy_reference(channels, groups, stride, implementation):
    """Both gradients of every implementation against the NumPy sums that define them."""
    _skip_without_grouped_kernel(implementation, groups, channels)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(3, 6, 6, channels)).astype("float32"))
    upstream = rng.normal(size=(3, -(-6 // stride), -(-6 // stride), channels)).astype("float32")
    layer = GroupedConv2D(channels, 3, strides=stride, padding="same", groups=groups, use_bias=False,
                          implementation=implementation)
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * upstream)
    dx, dk = tape.gradient(loss, [x, layer.kernel])
    _, dx_ref, dk_ref = np_grouped_conv2d_with_grads(x.numpy(), layer.kernel.numpy(), stride, groups, upstream)
    assert relative_error(dx, dx_ref) < FLOAT32_SCALE_TOLERANCE
    assert relative_error(dk, dk_ref) < FLOAT32_SCALE_TOLERANCE


@pytest.mark.parametrize("channels, groups, stride", CASES)
def test_fast_path_equals_keras_path_with_gradients(channels, groups, stride):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(4, 9, 9, channels)).astype("float32"))
    fast = GroupedConv2D(channels, 3, strides=stride, padding="same", groups=groups, use_bias=True)
    ref = GroupedConv2D(channels, 3, strides=stride, padding="same", groups=groups,
                        use_bias=True, implementation="keras")
    fast.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(fast.get_weights())

    def value_and_grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(y))
        return y, tape.gradient(loss, [x, *layer.trainable_variables])

    y_fast, g_fast = value_and_grads(fast)
    y_ref, g_ref = value_and_grads(ref)
    # Two float32 kernels summing the same <= 3*3*16 products in different orders.
    assert relative_error(y_fast, y_ref) < FLOAT32_SCALE_TOLERANCE
    for a, b in zip(g_fast, g_ref):
        assert relative_error(a, b) < FLOAT32_SCALE_TOLERANCE


@pytest.mark.parametrize("in_channels, groups, expected", [
    (32, 16, "depthwise"), (64, 32, "depthwise"),  # 2 channels per group: the depthwise form
    (32, 2, "dense"), (32, 8, "dense"), (16, 4, "dense"),  # narrow layers: one block-diagonal conv
    (64, 16, "depthwise"), (128, 32, "depthwise"),  # 4 per group on wider layers
    (64, 2, "split"), (128, 16, "split"), (640, 4, "split"),  # 8 or more per group
])
def test_portable_rule(in_channels, groups, expected):
    assert portable_implementation(in_channels, groups, in_channels) == expected
    assert portable_implementation(in_channels, groups, in_channels, dilated=True) in ("dense", "split")


def test_auto_resolves_to_the_native_kernel_only_where_it_trains(monkeypatch):
    layer = GroupedConv2D(64, 3, groups=16)
    monkeypatch.setattr(host, "grouped_conv_kernel", lambda: True)
    assert layer._resolved_implementation(64) == "tf"
    monkeypatch.setattr(host, "grouped_conv_kernel", lambda: False)
    assert layer._resolved_implementation(64) == "depthwise"
    assert GroupedConv2D(64, 3, groups=2)._resolved_implementation(64) == "split"
    assert GroupedConv2D(8, 3, groups=8)._resolved_implementation(8) == "depthwise"  # depthwise layer


def test_config_round_trip_and_conv2d_layout():
    layer = GroupedConv2D(16, 3, strides=2, padding="same", groups=4, implementation="tf", name="g")
    config = layer.get_config()
    plain = keras.layers.Conv2D(16, 3, strides=2, padding="same", groups=4, name="g").get_config()
    assert {k: v for k, v in config.items() if k != "implementation"} == plain
    clone = GroupedConv2D.from_config(config)
    assert clone.groups == 4 and clone.implementation == "tf"


def test_bad_implementation():
    with pytest.raises(ValueError, match="Valid choices: auto, tf, split, depthwise, dense, keras"):
        GroupedConv2D(8, 3, groups=2, implementation="cuda")


def _bn_pair(channels, **kwargs):
    from kdkeras.layers import FastBatchNormalization

    fast = FastBatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
    return fast, ref


@pytest.mark.parametrize("shape", [(8, 6, 6, 4), (3, 5, 7, 16)])
def test_fast_batch_norm_equals_keras_in_training(shape):
    rng = np.random.default_rng(2)
    fast, ref = _bn_pair(shape[-1])
    fast.build(shape)
    ref.build(shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()]
    weights[3] = np.abs(weights[3]) + 0.5  # moving variance > 0
    fast.set_weights(weights)
    ref.set_weights(weights)
    for step in range(3):  # several steps: the moving statistics must track Keras's
        x = tf.constant(rng.normal(loc=step, scale=2.0, size=shape).astype("float32"))
        outs, grads = [], []
        for layer in (fast, ref):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.sin(y))
            outs.append(y)
            grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(fast.moving_mean, ref.moving_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fast.moving_variance, ref.moving_variance, rtol=1e-5, atol=1e-6)
    x = rng.normal(size=shape).astype("float32")
    np.testing.assert_allclose(fast(x, training=False), ref(x, training=False), rtol=1e-5, atol=1e-5)


def test_fast_batch_norm_falls_back_where_the_fused_kernel_does_not_apply():
    fast, ref = _bn_pair(4, axis=1)  # channels-first axis: parent path
    x = np.random.default_rng(3).normal(size=(2, 4, 3, 3)).astype("float32")
    np.testing.assert_allclose(fast(x, training=True), ref(x, training=True), rtol=1e-5, atol=1e-5)
    frozen, ref2 = _bn_pair(4)
    frozen.trainable = ref2.trainable = False  # frozen BN uses the moving statistics
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 4)).astype("float32")
    np.testing.assert_allclose(frozen(x, training=True), ref2(x, training=True), rtol=1e-5, atol=1e-5)


def test_global_batch_dropout_is_keras_dropout_on_one_device():
    # One replica: Keras's layer, bit for bit (several replicas: tests/training/test_replica_equality.py).
    from kdkeras.layers import GlobalBatchDropout

    x = np.random.default_rng(0).normal(size=(6, 4, 4, 3)).astype("float32")
    ours, theirs = GlobalBatchDropout(0.3, seed=5), keras.layers.Dropout(0.3, seed=5)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.seed_generator.state.assign(ours.seed_generator.state.value)
    a, b = ours(x, training=True), theirs(x, training=True)
    np.testing.assert_array_equal(a, b)  # exact: the same ops on the same random numbers
    assert 0 < float(np.mean(keras.ops.convert_to_numpy(a) == 0)) < 0.6
    np.testing.assert_array_equal(ours(x, training=False), x)
    again = keras.layers.deserialize(keras.layers.serialize(ours))
    assert type(again) is GlobalBatchDropout and again.rate == 0.3
