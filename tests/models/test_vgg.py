"""The CIFAR VGGs of the KD zoo (RepDistiller's models/vgg.py, *_bn): counts, names, taps, PyTorch parity, training."""

import keras
import numpy as np
import pytest

import kdkeras.models.vgg  # noqa: F401  (registers the family)
from kdkeras.errors import UsageError
from kdkeras.models.registry import build_model, family_recipe, list_standard_models, parse_model_name
from kdkeras.models.taps import feature_model, tap_layers, tap_names
from kdkeras.profiling import count_params

#: Trainable parameters at num_classes=100 (RepDistiller's vgg*_bn); VGG has no skip connection: NR only.
PARAMS = {"vgg8": 3965028, "vgg11": 9277284, "vgg13": 9462180, "vgg16": 14774436, "vgg19": 20086692}
#: 3x3 convolutions per block.
CONVS = {"vgg8": (1, 1, 1, 1, 1), "vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3),
         "vgg19": (2, 2, 4, 4, 4)}
TAPS = ["stem", "stage1", "stage2", "stage3", "stage4",
        "stage1_preact", "stage2_preact", "stage3_preact", "stage4_preact"]


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_name(name):
    model = build_model(name)
    assert model.name == name
    assert count_params(model) == PARAMS[name]
    assert model.output.shape == (None, 100)
    assert isinstance(model.layers[-1], keras.layers.Dense) and model.layers[-1].name == "classifier"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == sum(CONVS[name]) and all(layer.use_bias for layer in convs)
    assert not any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert pools == ["pool0", "pool1", "pool2"]  # pool3 only at 64x64


def test_names_round_trip_and_variants():
    for net in PARAMS:
        assert net in list_standard_models() and f"{net}_NR" not in list_standard_models()
        assert not parse_model_name(net).residual
        assert parse_model_name(f"{net}_NR").name == net
        assert parse_model_name(f"{net}_NR_g1").name == net
        assert family_recipe(net) == {"recipe": "crd"}
    assert build_model("vgg8_NR").name == "vgg8"
    assert build_model("vgg8", num_classes=10).output.shape == (None, 10)


@pytest.mark.parametrize("bad", ["vgg13_R", "vgg13_NR_g2", "vgg13_R_g1", "vgg13_X", "vgg12"])
def test_bad_names_are_one_line_usage_errors(bad):
    with pytest.raises(UsageError) as info:
        build_model(bad)
    assert "\n" not in str(info.value)


def _shapes(size):
    sizes = (size, size // 2, size // 4, size // 8, size // 8 if size != 64 else size // 16)
    shapes = {"stem": (sizes[0], sizes[0], 64), "stage1": (sizes[1], sizes[1], 128),
              "stage2": (sizes[2], sizes[2], 256), "stage3": (sizes[3], sizes[3], 512),
              "stage4": (sizes[4], sizes[4], 512)}
    return {**shapes, **{f"{s}_preact": v for s, v in shapes.items() if s != "stem"}}


TAP_CASES = [
    ("vgg8", 32, {"stem": "block0_relu", **{f"stage{s}": f"block{s}_relu" for s in range(1, 5)},
                  **{f"stage{s}_preact": f"block{s}_1" for s in range(1, 5)}}),
    ("vgg16", 32, {"stem": "block0_relu", **{f"stage{s}": f"block{s}_relu" for s in range(1, 5)},
                   "stage1_preact": "block1_4", "stage2_preact": "block2_7", "stage3_preact": "block3_7",
                   "stage4_preact": "block4_7"}),
    ("vgg13", 64, {"stem": "block0_relu", **{f"stage{s}": f"block{s}_relu" for s in range(1, 5)},
                   **{f"stage{s}_preact": f"block{s}_4" for s in range(1, 5)}}),
]


@pytest.mark.parametrize("name,size,layers", TAP_CASES, ids=[f"{c[0]}-{c[1]}" for c in TAP_CASES])
def test_taps(name, size, layers):
    model = build_model(name, input_shape=(size, size, 3))
    assert tap_layers(model) == layers
    assert tap_names(model) == TAPS
    view = feature_model(model)
    assert {k: tuple(v.shape[1:]) for k, v in view.output.items() if k != "logits"} == _shapes(size)
    assert tuple(feature_model(model, ["embedding"]).output["embedding"].shape) == (None, 512)
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert pools == ["pool0", "pool1", "pool2"] + (["pool3"] if size == 64 else [])


def _torch_pair(name, size, seed=0):
    from kdkeras.models.torch_weights import assign_state_dict
    from tests.models.torch_reference.vgg import build, randomize

    reference = randomize(build(name), seed=seed, size=size)
    model = assign_state_dict(build_model(name, input_shape=(size, size, 3)),
                              {k: v.numpy() for k, v in reference.state_dict().items()})
    return reference, model


PARITY = [("vgg8", 32), ("vgg13", 32), ("vgg8", 64), pytest.param("vgg11", 32, marks=pytest.mark.slow),
          pytest.param("vgg16", 32, marks=pytest.mark.slow), pytest.param("vgg19", 32, marks=pytest.mark.slow)]


@pytest.mark.parametrize("name,size", PARITY)
def test_logits_and_taps_equal_pytorch(name, size):
    torch = pytest.importorskip("torch")
    reference, model = _torch_pair(name, size, seed=size + len(name))
    assert sum(p.numel() for p in reference.parameters()) == count_params(model)
    images = np.random.default_rng(1).normal(size=(2, 3, size, size)).astype("float32")
    with torch.no_grad():
        expected, feats = reference(torch.from_numpy(images), features=True)
    expected = expected.numpy()
    outputs = feature_model(model)(np.transpose(images, (0, 2, 3, 1)), training=False)
    actual = np.asarray(model(np.transpose(images, (0, 2, 3, 1)), training=False))
    assert np.abs(expected).max() > 0.3  # the weights are random enough for a wrong mapping to show
    np.testing.assert_allclose(actual, expected, atol=1e-4)
    np.testing.assert_allclose(np.asarray(outputs["logits"]), expected, atol=1e-4)
    for tap in TAPS:  # deep feature maps (a 4608-term sum per value, 16 layers deep): 1e-4 of their scale
        feat = np.transpose(feats[tap].numpy(), (0, 2, 3, 1))
        np.testing.assert_allclose(np.asarray(outputs[tap]), feat, atol=1e-4 * max(1.0, np.abs(feat).max()),
                                   err_msg=tap)


def test_one_training_step_and_saved_model(tmp_path):
    model = build_model("vgg8", num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(4,))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    path = tmp_path / "vgg8.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert restored.name == "vgg8" and tap_layers(restored) == tap_layers(model)
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))
