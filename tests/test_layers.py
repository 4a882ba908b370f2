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
