"""The CIFAR WRNs of the KD zoo (RepDistiller's models/wrn.py): counts, names, taps, PyTorch parity, training."""

import keras
import numpy as np
import pytest

import kdkeras.models.cifar_wrn  # noqa: F401  (registers the family)
from kdkeras.errors import UsageError
from kdkeras.layers import GlobalBatchDropout
from kdkeras.models.registry import build_model, family_recipe, list_standard_models, parse_model_name
from kdkeras.models.taps import feature_model, tap_layers, tap_names
from kdkeras.profiling import count_params

#: Trainable parameters at num_classes=100: (R, NR). R: RepDistiller's counts; NR: without the
#: `convShortcut` projections (16->32 and 32->64 channels at k=1; 16->32, 32->64 and 64->128 at k=2).
PARAMS = {
    "wrn_16_1": (180916, 178356),
    "wrn_16_2": (703284, 692532),
    "wrn_40_1": (569780, 567220),
    "wrn_40_2": (2255156, 2244404),
}
MODELS = [(net, 0) for net in PARAMS] + [(f"{net}_NR", 1) for net in PARAMS]
TAPS = ["stem", "stage1", "stage2", "stage3", "stage1_preact", "stage2_preact", "stage3_preact"]


def _net(name):
    return name.removesuffix("_NR")


@pytest.mark.parametrize("name,variant", MODELS, ids=[m[0] for m in MODELS])
def test_parameter_count_and_name(name, variant):
    model = build_model(name)
    assert model.name == name
    assert count_params(model) == PARAMS[_net(name)][variant]
    assert model.output.shape == (None, 100)
    assert isinstance(model.layers[-1], keras.layers.Dense) and model.layers[-1].name == "fc"
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    shortcuts = [layer for layer in model.layers if "convShortcut" in layer.name]
    _, depth, width = _net(name).split("_")
    projections = 2 if width == "1" else 3  # k > 1: block1's first block changes the width too
    assert (len(adds), len(shortcuts)) == ((0, 0) if variant else (3 * (int(depth) - 4) // 6, projections))
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)  # RepDistiller: dropRate 0


def test_names_round_trip_and_variants():
    for net in PARAMS:
        assert net in list_standard_models() and f"{net}_NR" in list_standard_models()
        assert parse_model_name(net).residual and not parse_model_name(f"{net}_NR").residual
        assert parse_model_name(f"{net}_R").name == net
        assert parse_model_name(f"{net}_R_g1").name == net
        assert parse_model_name(f"{net}_NR_g1").name == f"{net}_NR"
        assert family_recipe(net) == {"recipe": "crd"}
    # The paper zoo's WRN-16-2 is another network with another name.
    assert parse_model_name("wrn16x2_R_g1").net == "wrn16x2"
    assert build_model("wrn_16_1", num_classes=10).output.shape == (None, 10)


@pytest.mark.parametrize("bad", ["wrn_16_2_NR_g2", "wrn_16_2_X", "wrn_16_2_R_G1", "wrn_16_3", "wrn_40_2_NR_R"])
def test_bad_names_are_one_line_usage_errors(bad):
    with pytest.raises(UsageError) as info:
        build_model(bad)
    assert "\n" not in str(info.value)


def test_dropout_option():
    model = build_model("wrn_16_1", dropout=0.3)
    drops = [layer for layer in model.layers if isinstance(layer, GlobalBatchDropout)]
    assert len(drops) == 6 and all(layer.rate == 0.3 for layer in drops)
    assert count_params(model) == PARAMS["wrn_16_1"][0]
    with pytest.raises(UsageError):
        build_model("wrn_16_1", dropout=1.0)


def _shapes(k):
    shapes = {"stem": (32, 32, 16), "stage1": (32, 32, 16 * k), "stage2": (16, 16, 32 * k), "stage3": (8, 8, 64 * k)}
    return {**shapes, **{f"{s}_preact": v for s, v in shapes.items() if s != "stem"}}


PREACT = {"stage1_preact": "block2_layer_0_bn1", "stage2_preact": "block3_layer_0_bn1", "stage3_preact": "bn1"}
TAP_CASES = [
    ("wrn_16_2", _shapes(2),
     {"stem": "conv1", "stage1": "block1_layer_1_add", "stage2": "block2_layer_1_add",
      "stage3": "block3_layer_1_add", **PREACT}),
    ("wrn_40_1_NR", _shapes(1),
     {"stem": "conv1", "stage1": "block1_layer_5_conv2", "stage2": "block2_layer_5_conv2",
      "stage3": "block3_layer_5_conv2", **PREACT}),
]


@pytest.mark.parametrize("name,shapes,layers", TAP_CASES, ids=[c[0] for c in TAP_CASES])
def test_taps(name, shapes, layers):
    model = build_model(name)
    assert tap_layers(model) == layers
    assert tap_names(model) == TAPS == list(shapes)
    view = feature_model(model)
    assert {k: tuple(v.shape[1:]) for k, v in view.output.items() if k != "logits"} == shapes
    embedding = feature_model(model, ["embedding"]).output["embedding"]
    assert tuple(embedding.shape) == (None, shapes["stage3"][-1])


def _torch_pair(name, seed=0):
    from kdkeras.models.torch_weights import assign_state_dict
    from tests.models.torch_reference.cifar_wrn import build, randomize

    reference = randomize(build(name), seed=seed)
    model = assign_state_dict(build_model(name), {k: v.numpy() for k, v in reference.state_dict().items()})
    return reference, model


#: (name, relative): ``relative`` scales the logits' tolerance by their largest value, as for every feature map.
#: 36 convolutions without a skip connection (wrn_40_1_NR) grow float32 rounding to ~1e-4 of the values' scale in
#: PyTorch itself (its float32 forward is as far from its float64 forward as kdkeras's is).
PARITY = [("wrn_16_2", False), ("wrn_16_1_NR", False), pytest.param("wrn_40_2", False, marks=pytest.mark.slow),
          pytest.param("wrn_40_1_NR", True, marks=pytest.mark.slow)]


def _close(actual, expected, relative, what):
    atol = 1e-4 * max(1.0, float(np.abs(expected).max())) if relative else 1e-4
    np.testing.assert_allclose(actual, expected, atol=atol, err_msg=what)


@pytest.mark.parametrize("name,relative", PARITY)
def test_logits_and_taps_equal_pytorch(name, relative):
    torch = pytest.importorskip("torch")
    reference, model = _torch_pair(name, seed=len(name))
    assert sum(p.numel() for p in reference.parameters()) == count_params(model)
    images = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype("float32")
    with torch.no_grad():
        expected, feats = reference(torch.from_numpy(images), features=True)
    expected = expected.numpy()
    outputs = feature_model(model)(np.transpose(images, (0, 2, 3, 1)), training=False)
    actual = np.asarray(model(np.transpose(images, (0, 2, 3, 1)), training=False))
    assert np.abs(expected).max() > 0.3  # the weights are random enough for a wrong mapping to show
    _close(actual, expected, relative, "logits")
    _close(np.asarray(outputs["logits"]), expected, relative, "feature_model logits")
    for tap in TAPS:
        _close(np.asarray(outputs[tap]), np.transpose(feats[tap].numpy(), (0, 2, 3, 1)), True, tap)


def test_one_training_step_and_saved_model(tmp_path):
    model = build_model("wrn_16_1_NR", num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(4,))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    path = tmp_path / "wrn_16_1_NR.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert restored.name == "wrn_16_1_NR" and tap_layers(restored) == tap_layers(model)
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))
