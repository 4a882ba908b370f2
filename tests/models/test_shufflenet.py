"""RepDistiller's ShuffleV1 / ShuffleV2 (families shufflenet_v1 / shufflenet_v2): counts, names, taps, parity."""

import keras
import numpy as np
import pytest

import kdkeras.models.shufflenet  # noqa: F401  (registers the families)
from kdkeras.errors import UsageError
from kdkeras.models.registry import build_model, family_of, family_recipe, parse_model_name
from kdkeras.models.shufflenet import ChannelShuffle, ChannelSplit
from kdkeras.models.taps import feature_model, tap_layers
from kdkeras.models.torch_weights import assign_state_dict
from kdkeras.profiling import profile

#: RepDistiller's counts (sum of p.numel() at 100 classes) and the MACs of one 32x32 image.
PARAMS = {"ShuffleV1": 949_258, "ShuffleV2": 1_355_528}
MACS = {"ShuffleV1": 38_691_456, "ShuffleV2": 44_504_448}
FAMILIES = {"ShuffleV1": "shufflenet_v1", "ShuffleV2": "shufflenet_v2"}
STAGES = {"ShuffleV1": ((16, 16, 240), (8, 8, 480), (4, 4, 960)),
          "ShuffleV2": ((16, 16, 116), (8, 8, 232), (4, 4, 464))}
IMAGES = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype("float32")  # NCHW


def _taps(name):
    stages = STAGES[name]
    return {"stem": (32, 32, 24), **{f"stage{s}": shape for s, shape in enumerate(stages, start=1)},
            **{f"stage{s}_preact": shape for s, shape in enumerate(stages, start=1)}}


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_and_mac_counts(name):
    model = build_model(name)
    counts = profile(model)
    assert counts.params == PARAMS[name]
    assert counts.macs == MACS[name]
    assert model.output.shape == (None, 100)


@pytest.mark.parametrize("name", list(PARAMS))
def test_names(name):
    assert build_model(name).name == name
    assert parse_model_name(name).residual
    assert parse_model_name(f"{name}_R_g1").name == name
    assert family_of(name).name == FAMILIES[name]
    assert family_recipe(name) == {"recipe": "crd", "crd_lr": 0.01}
    with pytest.raises(UsageError) as err:  # no NR variant: the shortcuts carry channels
        parse_model_name(f"{name}_NR")
    message = str(err.value)
    assert "\n" not in message and "no NR variant" in message


@pytest.mark.parametrize("name", list(PARAMS))
def test_taps(name):
    model = build_model(name)
    expected = _taps(name)
    assert list(tap_layers(model)) == list(expected)
    view = feature_model(model, list(expected) + ["embedding"])
    shapes = {key: tuple(tensor.shape[1:]) for key, tensor in view.output.items()}
    embedding = 960 if name == "ShuffleV1" else 1024
    assert shapes == {"logits": (100,), "embedding": (embedding,), **expected}


def test_channel_shuffle_order_is_pytorchs():
    # NCHW view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4): output channel j * g + i = input channel i * C/g + j.
    x = np.arange(2 * 1 * 2 * 12, dtype="float32").reshape(2, 1, 2, 12)
    y = np.asarray(ChannelShuffle(3)(x))
    expected = x.reshape(2, 1, 2, 3, 4).transpose(0, 1, 2, 4, 3).reshape(2, 1, 2, 12)
    np.testing.assert_array_equal(y, expected)
    assert y[0, 0, 0, :6].tolist() == [0, 4, 8, 1, 5, 9]
    np.testing.assert_array_equal(np.asarray(ChannelShuffle(1)(x)), x)
    first, second = ChannelSplit(0.5)(x)
    np.testing.assert_array_equal(np.asarray(first), x[..., :6])
    np.testing.assert_array_equal(np.asarray(second), x[..., 6:])


@pytest.mark.parametrize("name", list(PARAMS))
def test_matches_pytorch(name):
    torch = pytest.importorskip("torch")
    from torch_reference import shufflenet as reference_module

    reference = reference_module.randomize(getattr(reference_module, name)(100), seed=4)
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    model = assign_state_dict(build_model(name), state)
    with torch.no_grad():
        torch_logits, feats, preacts = reference(torch.from_numpy(IMAGES), features=True)
    outputs = feature_model(model)(np.transpose(IMAGES, (0, 2, 3, 1)), training=False)
    np.testing.assert_allclose(np.asarray(outputs["logits"]), torch_logits.numpy(), atol=1e-4)
    taps = list(_taps(name))
    for tap, feat in zip(taps, feats + preacts):
        np.testing.assert_allclose(np.asarray(outputs[tap]), feat.numpy().transpose(0, 2, 3, 1), atol=1e-4,
                                   err_msg=tap)


@pytest.mark.slow  # ~10 s on 2 CPU cores
def test_save_and_load(tmp_path):
    model = build_model("ShuffleV2")
    images = np.transpose(IMAGES, (0, 2, 3, 1))
    logits = model(images, training=False)
    path = tmp_path / "ShuffleV2.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(restored(images, training=False), logits, atol=1e-6)


def _train_one_step(name, run_eagerly):
    model = build_model(name)
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=run_eagerly,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernel = model.get_layer("layer2_1_conv1").kernel
    before = np.array(kernel)
    rng = np.random.default_rng(0)
    history = model.fit(rng.normal(size=(4, 32, 32, 3)).astype("float32"), np.array([0, 1, 2, 3]),
                        batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(np.array(kernel), before)


@pytest.mark.parametrize("name", list(PARAMS))
def test_one_training_step(name):
    _train_one_step(name, run_eagerly=True)  # eager: no tracing, a few seconds


@pytest.mark.slow  # tracing the train function: ~10 s on 2 CPU cores
def test_one_compiled_training_step():
    _train_one_step("ShuffleV2", run_eagerly=False)  # the shuffle / split layers inside a tf.function
