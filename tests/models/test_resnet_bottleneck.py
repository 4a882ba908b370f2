"""ResNet50 of the KD zoo (RepDistiller's models/resnetv2.py): counts, names, taps, PyTorch parity, training."""

import keras
import numpy as np
import pytest

import kdkeras.models.resnet_bottleneck  # noqa: F401  (registers the family)
from kdkeras.errors import UsageError
from kdkeras.models.registry import build_model, family_recipe, list_standard_models, parse_model_name
from kdkeras.models.taps import feature_model, tap_layers, tap_names
from kdkeras.profiling import count_params

#: Trainable parameters at num_classes=100. NR: without the four projection `shortcut`s
#: (64->256, 256->512, 512->1024, 1024->2048 channels, 1x1 conv + BN each).
PARAMS = {"ResNet50": 23705252, "ResNet50_NR": 20928676}

SHAPES = {"stem": (32, 32, 64), "stage1": (32, 32, 256), "stage2": (16, 16, 512), "stage3": (8, 8, 1024),
          "stage4": (4, 4, 2048)}
SHAPES = {**SHAPES, **{f"{k}_preact": v for k, v in SHAPES.items() if k != "stem"}}
LAST_BLOCKS = {1: "layer1_2", 2: "layer2_3", 3: "layer3_5", 4: "layer4_2"}


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_name_and_taps(name):
    model = build_model(name)
    assert model.name == name
    assert count_params(model) == PARAMS[name]
    assert isinstance(model.layers[-1], keras.layers.Dense) and model.layers[-1].name == "linear"
    preact = "add" if name == "ResNet50" else "bn3"
    assert tap_layers(model) == {"stem": "stem_relu",
                                 **{f"stage{s}": f"{b}_out_relu" for s, b in LAST_BLOCKS.items()},
                                 **{f"stage{s}_preact": f"{b}_{preact}" for s, b in LAST_BLOCKS.items()}}
    assert tap_names(model) == list(SHAPES)
    view = feature_model(model, taps=list(SHAPES) + ["embedding"])
    shapes = {k: tuple(v.shape[1:]) for k, v in view.output.items()}
    assert shapes == {"logits": (100,), **SHAPES, "embedding": (2048,)}


def test_names():
    assert "ResNet50" in list_standard_models() and "ResNet50_NR" in list_standard_models()
    assert parse_model_name("ResNet50_R").name == "ResNet50"
    assert parse_model_name("ResNet50_NR_g1").name == "ResNet50_NR"
    assert parse_model_name("ResNet50").residual and not parse_model_name("ResNet50_NR").residual
    assert family_recipe("ResNet50") == {"recipe": "crd"}
    for bad in ("ResNet50_NR_g4", "ResNet50_XR", "resnet50", "ResNet50_R_G1"):
        with pytest.raises(UsageError) as info:
            parse_model_name(bad)
        assert "\n" not in str(info.value)


@pytest.mark.slow  # ResNet50 in both frameworks: over 5 s
@pytest.mark.parametrize("name", list(PARAMS))
def test_logits_and_features_equal_pytorch(name):
    torch = pytest.importorskip("torch")
    from kdkeras.models.torch_weights import assign_state_dict
    from tests.models.torch_reference.resnet_bottleneck import ResNetBottleneck, randomize

    reference = randomize(ResNetBottleneck(num_classes=100, residual=name == "ResNet50"), seed=1)
    assert sum(p.numel() for p in reference.parameters()) == PARAMS[name]
    model = assign_state_dict(build_model(name), {k: v.numpy() for k, v in reference.state_dict().items()})
    images = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype("float32")
    with torch.no_grad():
        expected, feats = reference(torch.from_numpy(images), features=True)
    taps = ["stem", "stage1", "stage2", "stage3", "stage4"]
    outputs = feature_model(model, taps)(np.transpose(images, (0, 2, 3, 1)), training=False)
    assert np.abs(expected.numpy()).max() > 0.3  # the weights are random enough for a wrong mapping to show
    np.testing.assert_allclose(np.asarray(outputs["logits"]), expected.numpy(), atol=1e-4)
    for tap, feat in zip(taps, feats):
        np.testing.assert_allclose(np.asarray(outputs[tap]), np.transpose(feat.numpy(), (0, 2, 3, 1)), atol=1e-4)


@pytest.mark.slow  # a ResNet50 training step on CPU: over 5 s
def test_one_training_step():
    model = build_model("ResNet50", num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(4,))
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
