"""Registry-driven checks over every registered model name."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.layers import GroupedConv2D
from kdkeras.models.registry import build_model, list_models, parse_model_name

IMAGES = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


#: One model per family runs in the quick tier; the others of :data:`SWEPT` are marked slow.
QUICK = {"wrn22x2_NR_G4", "resnet18_R_g8", "mobilenetv2_NR_G16"}


def swept_models() -> list[str]:
    """The registered models this file runs: of each network its R and NR versions, together at a g grouping
    (a number of groups) and a G grouping (channels per group), G1 (the depthwise form) included; WRN-22x10,
    the widest, at its README pair only (R_g2 teacher, NR_G4 student). Every grouping of every network uses
    the same builders and the same grouped layer (tests/test_layers.py checks that layer at each grouping
    against NumPy), and all 108 models are built and counted against Tables 8 and 9 in
    tests/test_profiling.py."""
    names = list_models()
    chosen = {"wrn22x2": {"R": ("g2", "G2", "G8"), "NR": ("g16", "G1", "G16")},
              "wrn22x10": {"R": ("g2",), "NR": ("G4",)}}
    default = {"R": ("g4", "G16"), "NR": ("G1",)}
    keep = set(QUICK)
    for n in names:
        net, residual, grouping = n.rsplit("_", 2)
        if grouping in chosen.get(net, default)[residual]:
            keep.add(n)
    return [n for n in names if n in keep]


SWEPT = swept_models()


def test_the_sweep_covers_every_net_residual_flag_and_grouping():
    names = list_models()
    assert {n.rsplit("_", 2)[0] for n in SWEPT} == {n.rsplit("_", 2)[0] for n in names}
    assert {n.rsplit("_", 1)[1] for n in SWEPT} == {n.rsplit("_", 1)[1] for n in names}
    assert {tuple(n.rsplit("_", 2)[:2]) for n in SWEPT} == {tuple(n.rsplit("_", 2)[:2]) for n in names}


@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in SWEPT])
def test_registered_model(name, tmp_path):
    model = build_model(name, num_classes=100, input_shape=(32, 32, 3))
    assert model.name == name

    # Forward: shape and finite values (inference and training mode).
    logits = model(IMAGES, training=False)
    assert logits.shape == (2, 100)
    assert np.isfinite(logits).all()

    # Backward: every trainable variable gets a gradient.
    labels = tf.constant([3, 7])
    with tf.GradientTape() as tape:
        train_logits = model(IMAGES, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(labels, train_logits, from_logits=True)
        loss = tf.reduce_mean(loss)
    assert np.isfinite(loss.numpy())
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing

    # The training-mode pass moved the BN statistics: take fresh reference logits.
    logits = model(IMAGES, training=False)

    # .keras save / load (safe mode): the model is rebuilt from its get_config() (same layers, same
    # names) and gives identical outputs with the stored weights: the same layer classes and weights
    # (stored byte for byte) in this process run the same kernels, bit-identical.
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]
    assert restored.count_params() == model.count_params()
    np.testing.assert_array_equal(restored(IMAGES, training=False), logits)


@pytest.mark.parametrize(
    "name, residual_adds",
    [
        ("wrn22x2_R_g2", 9), ("wrn22x2_NR_g2", 0), ("wrn40x2_R_G4", 18),
        ("resnet18_R_g4", 8), ("resnet18_NR_g4", 0),
        ("mobilenetv2_R_g2", 10), ("mobilenetv2_NR_g2", 0),
    ],
)
def test_residual_connections(name, residual_adds):
    model = build_model(name)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == residual_adds
    shortcuts = [layer for layer in model.layers if "shortcut" in layer.name]
    if not parse_model_name(name).residual:
        assert not shortcuts


@pytest.mark.parametrize(
    "name, expected_groups",
    [
        # WRN-22x2 grouped convs see 16, 32, 64, 128 channels.
        ("wrn22x2_R_g4", {16: 4, 32: 4, 64: 4, 128: 4}),
        ("wrn22x2_R_G4", {16: 4, 32: 8, 64: 16, 128: 32}),
        ("wrn22x2_NR_G1", {16: 16, 32: 32, 64: 64, 128: 128}),  # depthwise
        ("resnet18_R_G16", {64: 4, 128: 8, 256: 16, 512: 32}),
    ],
)
def test_grouping_per_layer(name, expected_groups):
    model = build_model(name)
    for layer in model.layers:
        if isinstance(layer, GroupedConv2D):
            channels = layer.kernel.shape[2] * layer.groups
            assert layer.groups == expected_groups[channels], layer.name


def test_mobilenet_spatial_sizes():
    model = build_model("mobilenetv2_R_g2")
    sizes = [model.get_layer(f"stage{s}_block1_gconv").output.shape[1] for s in range(1, 8)]
    assert model.get_layer("stem_conv").output.shape[1] == 34
    assert sizes == [34, 17, 9, 5, 5, 5, 5]


def test_wrn_dropout_option():
    model = build_model("wrn22x2_R_g2", dropout=0.0)
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len([layer for layer in build_model("wrn22x2_R_g2").layers
                if isinstance(layer, keras.layers.Dropout)]) == 9
    with pytest.raises(ValueError, match="dropout"):
        build_model("wrn22x2_R_g2", dropout=1.5)


def test_other_input_shapes_and_classes():
    model = build_model("wrn16x1_NR_g2", num_classes=10, input_shape=(24, 24, 1))
    assert model(np.zeros((3, 24, 24, 1), "float32")).shape == (3, 10)
