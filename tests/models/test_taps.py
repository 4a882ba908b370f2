"""Feature taps of the zoo: names, shapes, the multi-output view, saved models and adapters."""

import keras
import numpy as np
import pytest

from kdkeras.errors import UsageError
from kdkeras.layers import GroupedConv2D
from kdkeras.models.convert import load_model, save_model
from kdkeras.models.registry import build_model
from kdkeras.models.taps import feature_model, feature_taps, make_adapter, tap_layers, tap_names
from tests.helpers import relative_error

WRN16_SHAPES = {"stem": (32, 32, 16), "stage1": (32, 32, 16), "stage2": (16, 16, 32), "stage3": (8, 8, 64)}
RESNET_SHAPES = {"stem": (16, 16, 64), "stage1": (16, 16, 64), "stage2": (8, 8, 128), "stage3": (4, 4, 256),
                 "stage4": (2, 2, 512)}
MOBILENET_SHAPES = {"stem": (18, 18, 32), "stage1": (18, 18, 16), "stage2": (9, 9, 24), "stage3": (5, 5, 32),
                    "stage4": (3, 3, 320)}

#: The layer that takes each tap as its input, by structure rather than by the tap's own layer name: the
#: first layer of the next stage's first block, or the head's first layer after the last stage.
WRN_CONSUMERS = {"stem": "stage1_block1_preact_bn", "stage1": "stage2_block1_preact_bn",
                 "stage2": "stage3_block1_preact_bn", "stage3": "head_bn"}
RESNET_CONSUMERS = {"stem": "stage1_block1_unit1_gconv", "stage1": "stage2_block1_unit1_gconv",
                    "stage2": "stage3_block1_unit1_gconv", "stage3": "stage4_block1_unit1_gconv",
                    "stage4": "avg_pool"}
MOBILENET_CONSUMERS = {"stem": "stage1_block1_expand_conv", "stage1": "stage2_block1_expand_conv",
                       "stage2": "stage3_block1_expand_conv", "stage3": "stage4_block1_expand_conv",
                       "stage4": "head_conv"}

CASES = [
    # (model name, input shape, tap shapes, consumers, tap layers)
    ("wrn16x1_R_g1", (32, 32, 3), WRN16_SHAPES, WRN_CONSUMERS,
     {"stem": "stem_conv", "stage1": "stage1_block2_add", "stage2": "stage2_block2_add",
      "stage3": "stage3_block2_add"}),
    ("wrn16x1_NR_G4", (32, 32, 3), WRN16_SHAPES, WRN_CONSUMERS,
     {"stem": "stem_conv", "stage1": "stage1_block2_unit2_pconv", "stage2": "stage2_block2_unit2_pconv",
      "stage3": "stage3_block2_unit2_pconv"}),
    ("resnet18_R_g8", (16, 16, 3), RESNET_SHAPES, RESNET_CONSUMERS,
     {"stem": "stem_relu", **{f"stage{s}": f"stage{s}_block2_out_relu" for s in range(1, 5)}}),
    ("resnet18_NR_G16", (16, 16, 3), RESNET_SHAPES, RESNET_CONSUMERS,
     {"stem": "stem_relu", **{f"stage{s}": f"stage{s}_block2_out_relu" for s in range(1, 5)}}),
    ("mobilenetv2_R_G16", (16, 16, 3), MOBILENET_SHAPES, MOBILENET_CONSUMERS,
     {"stem": "stem_relu", "stage1": "stage1_block1_project_bn", "stage2": "stage2_block2_add",
      "stage3": "stage3_block3_add", "stage4": "stage7_block1_project_bn"}),
    ("mobilenetv2_NR_g4", (16, 16, 3), MOBILENET_SHAPES, MOBILENET_CONSUMERS,
     {"stem": "stem_relu", "stage1": "stage1_block1_project_bn", "stage2": "stage2_block2_project_bn",
      "stage3": "stage3_block3_project_bn", "stage4": "stage7_block1_project_bn"}),
]


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("name,input_shape,shapes,consumers,layers", CASES, ids=[c[0] for c in CASES])
def test_taps_of_every_family(name, input_shape, shapes, consumers, layers):
    model = build_model(name, num_classes=10, input_shape=input_shape)
    assert tap_layers(model) == layers
    assert tap_names(model) == list(shapes)
    taps = feature_taps(model)
    assert {tap: tuple(t.shape[1:]) for tap, t in taps.items()} == shapes

    view = feature_model(model, list(shapes))
    assert view.count_params() == model.count_params()
    assert {id(w) for w in view.weights} == {id(w) for w in model.weights}  # shared, not copied
    x = _images(input_shape)
    out = view(x, training=False)
    assert set(out) == {"logits", *shapes}
    # The view runs the model's own layers (shared weights) on the same inputs in this process: the same
    # kernels, bit-identical. So does the reference below.
    np.testing.assert_array_equal(out["logits"], model(x, training=False))
    # Each tap is what the next stage (or the head) takes as its input.
    reference = keras.Model(model.input, {tap: model.get_layer(layer).input for tap, layer in consumers.items()})
    expected = reference(x, training=False)
    for tap in shapes:
        assert tuple(out[tap].shape) == (2, *shapes[tap])
        np.testing.assert_array_equal(out[tap], expected[tap])


def test_wrn10_taps_and_a_manual_forward():
    model = build_model("wrn10x1_R_g2", num_classes=10)
    assert tap_layers(model)["stage2"] == "stage2_block1_add"
    x = _images((32, 32, 3))
    out = feature_model(model, ["stage1"])(x, training=False)
    assert set(out) == {"logits", "stage1"}
    # stage1 = U2(ReLU(BN(U1(ReLU(BN(stem)))))) + stem, layer by layer (dropout is off at inference).
    stem = model.get_layer("stem_conv")(x)
    a = model.get_layer("stage1_block1_preact_relu")(model.get_layer("stage1_block1_preact_bn")(stem))
    h = a
    for part in ("unit1_gconv", "unit1_bn", "unit1_pconv", "mid_bn", "mid_relu", "unit2_gconv", "unit2_bn",
                 "unit2_pconv"):
        h = model.get_layer(f"stage1_block1_{part}")(h, training=False)
    # The same layers, called one by one on the same inputs: the same kernels, bit-identical.
    np.testing.assert_array_equal(out["stage1"], h + stem)


def test_the_view_trains_the_model():
    model = build_model("wrn10x1_NR_g1", num_classes=10)
    view = feature_model(model, "stage3")
    bn = model.get_layer("head_bn")
    before = bn.moving_mean.numpy().copy()
    view(_images((32, 32, 3), n=4), training=True)
    assert not np.allclose(bn.moving_mean.numpy(), before)  # the model's own BN statistics moved


def test_saved_and_reloaded_model(tmp_path):
    model = build_model("wrn10x1_NR_g2", num_classes=10)
    x = _images((32, 32, 3))
    expected = feature_model(model)(x, training=False)
    path = tmp_path / "teacher.keras"
    save_model(model, path)
    for loaded in (load_model(path), load_model(path, fast=False), keras.saving.load_model(path, safe_mode=True)):
        assert tap_layers(loaded) == tap_layers(model)
        out = feature_model(loaded)(x, training=False)
        assert set(out) == set(expected)
        for key in expected:
            # load_model(fast=False) and Keras's loader give plain Keras layers: Keras's grouped convolution
            # against kdkeras's kernel through up to ~10 float32 layers, the same sums in other orders (seen
            # 5.8e-7 of the scale with oneDNN capped to AVX2, 0 with AVX-512): 1e-5 of each output's scale.
            assert relative_error(out[key], expected[key]) < 1e-5, key
    assert any(isinstance(layer, GroupedConv2D) for layer in load_model(path).layers)


def test_raw_image_front(tmp_path):
    model = build_model("wrn10x1_R_g1", num_classes=10)
    stats = {"dataset": "cifar10", "mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}
    path = tmp_path / "model.keras"
    save_model(model, path, dataset=stats)
    network = load_model(path)  # the bare network: taps as usual
    assert tap_names(network) == ["stem", "stage1", "stage2", "stage3"]
    raw = load_model(path, raw_images=True)
    with pytest.raises(UsageError, match="raw-image front.*strip_preprocessing"):
        feature_taps(raw)
    view = feature_model(raw, ["stage2"])  # keeps the front: takes raw images
    images = np.random.default_rng(1).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    out = view(images, training=False)
    np.testing.assert_array_equal(out["logits"], raw(images, training=False))  # the same layers: bit-identical
    normalised = (images / 255.0 - np.array(stats["mean"])) / np.array(stats["std"])
    inner = feature_model(network, ["stage2"])(normalised.astype("float32"), training=False)
    # The front normalises in float32, NumPy here in float64: inputs ~6e-8 relative apart, carried through
    # ~6 float32 layers (seen 7.3e-7 of the scale): 1e-5 of it.
    assert relative_error(out["stage2"], inner["stage2"]) < 1e-5


def test_unknown_tap_is_a_one_line_error():
    model = build_model("wrn10x1_R_g1", num_classes=10)
    with pytest.raises(UsageError) as info:
        feature_model(model, ["stage1", "stage4"])
    message = str(info.value)
    assert "\n" not in message
    assert "'stage4'" in message and "Valid taps: stem, stage1, stage2, stage3, embedding." in message


def test_a_model_outside_the_zoo_is_refused():
    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(UsageError, match="not a kdkeras zoo network"):
        feature_taps(other)


def test_adapter_maps_channels():
    student = build_model("wrn10x1_NR_g1", num_classes=10)
    teacher = build_model("wrn10x2_R_g1", num_classes=10)
    s_shape = feature_taps(student)["stage2"].shape
    t_shape = feature_taps(teacher)["stage2"].shape
    adapter = make_adapter(s_shape, t_shape, name="adapter_stage2")
    assert adapter.name == "adapter_stage2"
    assert [layer.name for layer in adapter.layers[1:]] == ["adapter_stage2_conv", "adapter_stage2_bn"]
    assert sum(int(np.prod(w.shape)) for w in adapter.trainable_weights) == 32 * 64 + 2 * 64
    y = adapter(np.ones((2, 16, 16, 32), "float32"), training=False)
    assert tuple(y.shape) == (2, 16, 16, 64)
    assert not {id(w) for w in adapter.weights} & {id(w) for w in student.weights}  # kept out of the student
    assert tuple(make_adapter((8, 8, 16), (None, 8, 8, 16), "same").output_shape) == (None, 8, 8, 16)


def test_adapter_refuses_a_spatial_mismatch():
    with pytest.raises(UsageError, match="16x16 but the teacher's is 8x8"):
        make_adapter((16, 16, 32), (8, 8, 64), name="bad")
    with pytest.raises(UsageError, match="feature-map shape"):
        make_adapter((32,), (8, 8, 64), name="bad")
