"""The CIFAR ResNets of the KD zoo (RepDistiller's models/resnet.py): counts, names, taps, PyTorch parity, training."""

import keras
import numpy as np
import pytest

import kdkeras.models.cifar_resnet  # noqa: F401  (registers the family)
from kdkeras.errors import UsageError
from kdkeras.models.registry import build_model, family_recipe, list_standard_models, parse_model_name
from kdkeras.models.taps import feature_model, tap_layers, tap_names
from kdkeras.profiling import count_params

#: Trainable parameters at num_classes=100: (R, NR). R: RepDistiller's counts; NR: without the
#: `downsample` projections (2 of 16->32 and 32->64 channels; 3 on the x4 nets, the first at stride 1).
PARAMS = {
    "resnet8": (83892, 81140),
    "resnet14": (181108, 178356),
    "resnet20": (278324, 275572),
    "resnet32": (472756, 470004),
    "resnet44": (667188, 664436),
    "resnet56": (861620, 858868),
    "resnet110": (1736564, 1733812),
    "resnet8x4": (1233540, 1189636),
    "resnet32x4": (7433860, 7389956),
}
#: resnet110 takes over 5 s to build on a busy CPU.
MODELS = [pytest.param(name, variant, id=name, marks=[pytest.mark.slow] if net == "resnet110" else [])
          for variant in (0, 1) for net in PARAMS for name in [net if variant == 0 else f"{net}_NR"]]


@pytest.mark.parametrize("name,variant", MODELS)
def test_parameter_count_and_name(name, variant):
    model = build_model(name)
    assert model.name == name
    assert count_params(model) == PARAMS[name.partition("_")[0]][variant]
    assert model.output.shape == (None, 100)
    assert isinstance(model.layers[-1], keras.layers.Dense) and model.layers[-1].name == "fc"


def test_names_round_trip_and_variants():
    for net in PARAMS:
        assert net in list_standard_models() and f"{net}_NR" in list_standard_models()
        assert parse_model_name(net).residual and not parse_model_name(f"{net}_NR").residual
        assert parse_model_name(f"{net}_R").name == net
        assert parse_model_name(f"{net}_NR_g1").name == f"{net}_NR"
        assert family_recipe(net) == {"recipe": "crd"}
    assert build_model("resnet8", num_classes=10).output.shape == (None, 10)


@pytest.mark.parametrize("bad", ["resnet56_NR_g2", "resnet56_X", "resnet56_R_G1", "resnet57"])
def test_bad_names_are_one_line_usage_errors(bad):
    with pytest.raises(UsageError) as info:
        build_model(bad)
    assert "\n" not in str(info.value)


def _shapes(c0, c1, c2, c3):
    shapes = {"stem": (32, 32, c0), "stage1": (32, 32, c1), "stage2": (16, 16, c2), "stage3": (8, 8, c3)}
    return {**shapes, **{f"{k}_preact": v for k, v in shapes.items() if k != "stem"}}


TAP_CASES = [
    ("resnet8x4", _shapes(32, 64, 128, 256),
     {"stem": "stem_relu", "stage1": "layer1_0_out_relu", "stage2": "layer2_0_out_relu",
      "stage3": "layer3_0_out_relu", "stage1_preact": "layer1_0_add", "stage2_preact": "layer2_0_add",
      "stage3_preact": "layer3_0_add"}),
    ("resnet20_NR", _shapes(16, 16, 32, 64),
     {"stem": "stem_relu", "stage1": "layer1_2_out_relu", "stage2": "layer2_2_out_relu",
      "stage3": "layer3_2_out_relu", "stage1_preact": "layer1_2_bn2", "stage2_preact": "layer2_2_bn2",
      "stage3_preact": "layer3_2_bn2"}),
]


@pytest.mark.parametrize("name,shapes,layers", TAP_CASES, ids=[c[0] for c in TAP_CASES])
def test_taps(name, shapes, layers):
    model = build_model(name)
    assert tap_layers(model) == layers
    assert tap_names(model) == list(shapes)
    view = feature_model(model)
    assert {k: tuple(v.shape[1:]) for k, v in view.output.items() if k != "logits"} == shapes
    embedding = feature_model(model, ["embedding"]).output["embedding"]
    assert tuple(embedding.shape) == (None, shapes["stage3"][-1])


def _torch_pair(name, seed=0):
    from tests.models.torch_reference.cifar_resnet import CifarResNet, randomize

    net, _, variant = name.partition("_")
    reference = randomize(CifarResNet(net, num_classes=100, residual=variant != "NR"), seed=seed)
    from kdkeras.models.torch_weights import assign_state_dict

    model = assign_state_dict(build_model(name), {k: v.numpy() for k, v in reference.state_dict().items()})
    return reference, model


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "resnet20_NR", "resnet32"])
def test_logits_equal_pytorch(name):
    torch = pytest.importorskip("torch")
    reference, model = _torch_pair(name)
    assert sum(p.numel() for p in reference.parameters()) == count_params(model)
    images = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).numpy()
    actual = np.asarray(model(np.transpose(images, (0, 2, 3, 1)), training=False))
    assert np.abs(expected).max() > 0.3  # the weights are random enough for a wrong mapping to show
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_taps_equal_pytorch_features():
    torch = pytest.importorskip("torch")
    reference, model = _torch_pair("resnet8x4", seed=3)
    images = np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype("float32")
    with torch.no_grad():
        _, feats = reference(torch.from_numpy(images), features=True)
    outputs = feature_model(model, ["stem", "stage1", "stage2", "stage3"])(np.transpose(images, (0, 2, 3, 1)),
                                                                            training=False)
    for tap, feat in zip(["stem", "stage1", "stage2", "stage3"], feats):
        np.testing.assert_allclose(np.asarray(outputs[tap]), np.transpose(feat.numpy(), (0, 2, 3, 1)), atol=1e-4)


def test_one_training_step():
    model = build_model("resnet8_NR", num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(4,))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
