"""RepDistiller's MobileNetV2 ``mobile_half`` (family ``mobilenetv2_half``): counts, names, taps, PyTorch parity."""

import keras
import numpy as np
import pytest

import kdkeras.models.mobilenet_half  # noqa: F401  (registers the family)
from kdkeras.errors import UsageError
from kdkeras.models.registry import build_model, family_of, family_recipe, parse_model_name
from kdkeras.models.taps import feature_model, tap_layers
from kdkeras.models.torch_weights import assign_state_dict
from kdkeras.profiling import profile

#: RepDistiller's count (sum of p.numel() of mobile_half(100)); NR has no projection to drop: the same.
PARAMS = {"MobileNetV2": 812_836, "MobileNetV2_NR": 812_836}
MACS = 6_523_648
TAPS = {"stem": (16, 16, 16), "stage1": (16, 16, 12), "stage2": (8, 8, 16), "stage3": (4, 4, 48),
        "stage4": (2, 2, 160)}


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_and_mac_counts(name):
    model = build_model(name)
    counts = profile(model)
    assert counts.params == PARAMS[name]
    assert counts.macs == MACS
    assert model.output.shape == (None, 100)


def test_names():
    for name in PARAMS:
        assert build_model(name).name == name
    assert parse_model_name("MobileNetV2").residual
    assert not parse_model_name("MobileNetV2_NR").residual
    assert parse_model_name("MobileNetV2_R").name == "MobileNetV2"
    assert parse_model_name("MobileNetV2_NR_g1").name == "MobileNetV2_NR"
    assert family_of("MobileNetV2").name == "mobilenetv2_half"
    assert family_recipe("MobileNetV2") == {"recipe": "crd", "crd_lr": 0.01}
    with pytest.raises(UsageError) as err:
        parse_model_name("MobileNetV2_NR_g4")
    assert "\n" not in str(err.value) and "MobileNetV2_NR" in str(err.value)


def test_not_the_paper_mobilenetv2():
    model = build_model("MobileNetV2")
    assert model.get_layer("conv1_0").kernel.shape == (3, 3, 3, 16)
    assert model.get_layer("classifier_0").kernel.shape == (1280, 100)
    assert not any(isinstance(layer, keras.layers.ReLU) and layer.max_value for layer in model.layers)


@pytest.mark.parametrize("name", list(PARAMS))
def test_taps(name):
    model = build_model(name)
    taps = tap_layers(model)
    assert list(taps) == list(TAPS)
    suffix = "conv_7" if name.endswith("_NR") else "add"
    assert taps["stage1"] == f"blocks_1_1_{suffix}" and taps["stage4"] == "blocks_6_0_conv_7"
    view = feature_model(model, list(TAPS) + ["embedding"])
    shapes = {key: tuple(tensor.shape[1:]) for key, tensor in view.output.items()}
    assert shapes == {"logits": (100,), "embedding": (1280,), **TAPS}


def test_residual_adds():
    adds = [layer.name for layer in build_model("MobileNetV2").layers if isinstance(layer, keras.layers.Add)]
    # s = 1 and cin = c: the later blocks of groups 1, 2, 3, 4, 5.
    assert len(adds) == 10 and "blocks_0_0_add" not in adds and "blocks_6_0_add" not in adds
    assert not any(isinstance(layer, keras.layers.Add) for layer in build_model("MobileNetV2_NR").layers)


@pytest.mark.parametrize("name", list(PARAMS))
def test_matches_pytorch(name):
    torch = pytest.importorskip("torch")
    from torch_reference.mobilenet_half import MobileHalf, randomize

    reference = randomize(MobileHalf(100, residual=not name.endswith("_NR")), seed=3)
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    model = assign_state_dict(build_model(name), state)
    images = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype("float32")
    with torch.no_grad():
        torch_logits, torch_feats = reference(torch.from_numpy(images), features=True)
    outputs = feature_model(model)(np.transpose(images, (0, 2, 3, 1)), training=False)
    np.testing.assert_allclose(np.asarray(outputs["logits"]), torch_logits.numpy(), atol=1e-4)
    for tap, feat in zip(TAPS, torch_feats):
        np.testing.assert_allclose(np.asarray(outputs[tap]), feat.numpy().transpose(0, 2, 3, 1), atol=1e-4)


def test_one_training_step():
    model = build_model("MobileNetV2_NR")
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True,  # eager: no tracing, a few seconds
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernel = model.get_layer("blocks_2_0_conv_3").kernel
    before = np.array(kernel)
    rng = np.random.default_rng(0)
    history = model.fit(rng.normal(size=(4, 32, 32, 3)).astype("float32"), np.array([0, 1, 2, 3]),
                        batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(np.array(kernel), before)
