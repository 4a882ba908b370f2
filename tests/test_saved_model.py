"""A run's model.keras is self-contained: plain Keras, no optimizer, raw images in; kdkeras still loads old files."""

import io
import json
import os
import subprocess
import sys
import zipfile

import h5py
import keras
import numpy as np
import pytest

from kdkeras import config as config_lib
from kdkeras.data import dataset_info, load_splits, normalize
from kdkeras.models import convert
from kdkeras.models.registry import build_model
from kdkeras.optimizers import PyTorchSGD
from kdkeras.profiling import profile
from kdkeras.training import check_teacher, load_model_file, train_and_evaluate
from tests.helpers import relative_error

#: A tiny baseline: its student is compiled with kdkeras's PyTorchSGD while it trains.
TINY = {"model": "wrn10x1_R_g2", "dataset": "synthetic", "epochs": 1, "train_size": 128, "test_size": 100,
        "batch_size": 64}

#: Run in a fresh process that never imports kdkeras: the saved model on raw uint8 test images.
PLAIN_KERAS = """
import json, sys
import numpy as np
import keras

model = keras.saving.load_model(sys.argv[1], safe_mode=True)
data = np.load(sys.argv[2])
images, labels = data["images"], data["labels"]
assert images.dtype == np.uint8, images.dtype
logits = model.predict(images, batch_size=64, verbose=0)
logits_float = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
assert not [name for name in sys.modules if name.split(".")[0] == "kdkeras"], "kdkeras was imported"
np.savez(sys.argv[3], logits=logits, logits_float=logits_float)
print(json.dumps({"correct": int((logits.argmax(-1) == labels).sum()), "total": int(len(labels))}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run: ``(results, raw test images, test labels)``."""
    config = config_lib.resolve(TINY)
    results = train_and_evaluate(config, str(tmp_path_factory.mktemp("logs")), log=lambda message: None,
                                 verbose=0)
    arrays, _ = load_splits("synthetic", ("train", "test"), seed=config.seed,
                            sizes={"train": config.train_size, "test": config.test_size})
    images, labels = arrays["test"]
    return results, images, labels


def _model_file(results):
    return os.path.join(results["run_dir"], "model.keras")


def _normalised(images, dataset="synthetic"):
    info = dataset_info(dataset)
    return normalize(images, info.mean, info.std).numpy()


@pytest.mark.slow  # a process that builds or trains models: over 8 s
def test_plain_keras_on_raw_images_reproduces_the_run_accuracy(run, tmp_path):
    results, images, labels = run
    data, out = tmp_path / "test.npz", tmp_path / "out.npz"
    np.savez(data, images=images, labels=labels)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run([sys.executable, "-c", PLAIN_KERAS, _model_file(results), str(data), str(out)],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["total"] == results["test_examples"] == len(labels)
    assert abs(counts["correct"] - round(results["test_accuracy"] * counts["total"])) <= 1

    # The same numbers as kdkeras's network on the normalised images of its pipelines.
    logits = np.load(out)
    network = load_model_file(_model_file(results))
    expected = keras.ops.convert_to_numpy(network(_normalised(images), training=False))
    # Another process, another batch split (predict's batches of 64 against one call), and the plain
    # layers instead of kdkeras's: the same float32 sums in other orders, ~1e-7 relative per layer.
    assert relative_error(logits["logits"], expected) < 1e-5
    assert relative_error(logits["logits_float"], logits["logits"]) < 1e-5


def test_the_file_holds_plain_keras_and_no_optimizer(run):
    results, _, _ = run
    with zipfile.ZipFile(_model_file(results)) as archive:
        config = json.loads(archive.read("config.json"))
        weights = archive.read("model.weights.h5")

    def walk(node):
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for node in walk(config):
        assert not node.get("compile_config"), node.get("name")
        assert "optimizer" not in node
        assert not str(node.get("module") or "").startswith("kdkeras"), node
        assert not str(node.get("registered_name") or "").startswith("kdkeras"), node
    assert "kdkeras>" not in json.dumps(config)
    with h5py.File(io.BytesIO(weights), "r") as h5:
        names = []
        h5.visit(names.append)
    assert not [name for name in names if "optimizer" in name.lower()]

    # The front: standard layers, recording the dataset's statistics; the counts are the network's.
    model = keras.saving.load_model(_model_file(results), safe_mode=True)
    assert [layer.name for layer in model.layers] == [convert.RAW_INPUT_NAME, convert.PREPROCESS_NAME,
                                                      TINY["model"]]
    assert model.name == TINY["model"]
    recorded = convert.preprocessing_of(model)
    info = dataset_info("synthetic")
    assert recorded["dataset"] == "synthetic"
    # Recorded as float32 (rounded to ~6e-8 relative): 1e-6 relative.
    np.testing.assert_allclose(recorded["mean"], info.mean, rtol=1e-6)
    np.testing.assert_allclose(recorded["std"], info.std, rtol=1e-6)
    expected = profile(build_model(TINY["model"], num_classes=info.num_classes))
    assert (results["params"], results["macs"]) == (expected.params, expected.macs)
    network = load_model_file(_model_file(results))
    assert not convert.has_preprocessing(network)
    assert (profile(network).params, profile(network).macs) == (expected.params, expected.macs)
    assert (profile(model).params, profile(model).macs) == (expected.params, expected.macs)


def test_old_files_without_the_front_still_load_and_predict_the_same(tmp_path):
    """A file as saved before the front: the plain network, compiled with kdkeras's optimizer."""
    info = dataset_info("synthetic")
    model = build_model(TINY["model"], num_classes=info.num_classes)
    old = convert.to_plain_keras(model)
    old.compile(optimizer=PyTorchSGD(0.1, momentum=0.9, weight_decay=4e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    path = str(tmp_path / "old.keras")
    old.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "kdkeras>PyTorchSGD" in archive.read("config.json").decode()

    images = np.random.default_rng(0).integers(0, 256, size=(8,) + info.image_shape, dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(model(_normalised(images), training=False))
    loaded = load_model_file(path, "teacher")
    assert not convert.has_preprocessing(loaded) and loaded.input_shape == model.input_shape
    check_teacher(loaded, config_lib.resolve({**TINY, "teacher": path}), info)
    # kdkeras loads the plain file with its own layers again, the weights byte for byte, in this process:
    # the same kernels as `model`'s, bit-identical.
    np.testing.assert_array_equal(loaded(_normalised(images), training=False), expected)
    assert (profile(loaded).params, profile(loaded).macs) == (profile(model).params, profile(model).macs)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_front_normalises_raw_images_like_the_data_pipelines(dataset, tmp_path):
    info = dataset_info(dataset)
    model = build_model("wrn10x1_R_g2", num_classes=info.num_classes)
    model.compile(optimizer=PyTorchSGD(0.1), loss="sparse_categorical_crossentropy")
    path = str(tmp_path / "m.keras")
    convert.save_model(model, path, dataset=info)
    images = np.random.default_rng(1).integers(0, 256, size=(4,) + info.image_shape, dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(model(_normalised(images, dataset), training=False))

    raw = keras.saving.load_model(path, safe_mode=True)
    assert raw.compiled is False
    assert convert.preprocessing_of(raw)["dataset"] == dataset
    np.testing.assert_allclose(convert.preprocessing_of(raw)["std"], info.std, rtol=1e-6)  # float32: 6e-8
    # Keras's loader: plain layers (Keras's grouped convolution against kdkeras's kernel) behind a front
    # that normalises in its own float32 operations; the same sums in other orders through ~10 layers
    # (seen 2.9e-7 of logits of size ~30): 1e-5 of the scale.
    assert relative_error(raw(images, training=False), expected) < 1e-5
    fast_raw = convert.load_model(path, raw_images=True)
    assert convert.has_preprocessing(fast_raw)
    # kdkeras's layers behind the front: inputs ~6e-8 relative apart, carried through (seen 2.6e-7): 1e-5.
    assert relative_error(fast_raw(images, training=False), expected) < 1e-5
    network = convert.load_model(path)
    assert network.name == model.name and not convert.has_preprocessing(network)
    # The bare network with kdkeras's layers, on the same normalised images: the same kernels, bit-identical.
    np.testing.assert_array_equal(network(_normalised(images, dataset), training=False), expected)
