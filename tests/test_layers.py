"""GroupedConv2D against an independent NumPy grouped convolution and Keras's own path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.layers import GroupedConv2D


def np_grouped_conv2d(x, kernel, stride, groups):
    """Reference 'same' grouped convolution in NumPy (TF's SAME padding rule).

    x: (N, H, W, Cin); kernel: (kh, kw, Cin / groups, Cout) -> (N, Ho, Wo, Cout).
    """
    n, h, w, cin = x.shape
    kh, kw, cin_g, cout = kernel.shape
    cout_g = cout // groups
    ho, wo = -(-h // stride), -(-w // stride)
    pad_h = max((ho - 1) * stride + kh - h, 0)
    pad_w = max((wo - 1) * stride + kw - w, 0)
    xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((n, ho, wo, cout), dtype=np.float64)
    for g in range(groups):
        xs = xp[..., g * cin_g:(g + 1) * cin_g]
        ks = kernel[..., g * cout_g:(g + 1) * cout_g]
        for i in range(ho):
            for j in range(wo):
                patch = xs[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
                out[:, i, j, g * cout_g:(g + 1) * cout_g] = np.einsum("nhwc,hwco->no", patch, ks)
    return out


CASES = [
    # (channels, groups, stride): g-style (fixed groups), G-style (fixed group size), depthwise
    (8, 2, 1), (8, 2, 2), (16, 4, 1), (12, 6, 2), (8, 8, 1), (8, 8, 2), (8, 1, 1),
]


@pytest.mark.parametrize("channels, groups, stride", CASES)
@pytest.mark.parametrize("implementation", ["auto", "tf", "keras"])
def test_matches_numpy_reference(channels, groups, stride, implementation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 7, channels)).astype("float32")
    layer = GroupedConv2D(channels, 3, strides=stride, padding="same", groups=groups,
                          use_bias=False, implementation=implementation)
    y = layer(x)
    kernel = layer.kernel.numpy()
    assert kernel.shape == (3, 3, channels // groups, channels)  # Keras weight layout
    np.testing.assert_allclose(y, np_grouped_conv2d(x, kernel, stride, groups), rtol=1e-4, atol=1e-4)


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
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_depthwise_implementation_checks_shape():
    layer = GroupedConv2D(8, 3, padding="same", groups=4, implementation="depthwise")
    with pytest.raises(ValueError, match="groups == input channels == filters"):
        layer(np.zeros((1, 5, 5, 8), "float32"))


def test_config_round_trip_and_conv2d_layout():
    layer = GroupedConv2D(16, 3, strides=2, padding="same", groups=4, implementation="tf", name="g")
    config = layer.get_config()
    plain = keras.layers.Conv2D(16, 3, strides=2, padding="same", groups=4, name="g").get_config()
    assert {k: v for k, v in config.items() if k != "implementation"} == plain
    clone = GroupedConv2D.from_config(config)
    assert clone.groups == 4 and clone.implementation == "tf"


def test_bad_implementation():
    with pytest.raises(ValueError, match="Valid choices: auto, tf, depthwise, keras"):
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
