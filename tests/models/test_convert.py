"""Saved run models are plain Keras; kdkeras loads them back with its fast layers."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from kdkeras.layers import FastBatchNormalization, GroupedConv2D
from kdkeras.models.convert import load_model, save_model, to_fast_keras, to_plain_keras
from kdkeras.models.registry import build_model
from tests.helpers import relative_error

IMAGES = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")


def _kinds(model):
    return {type(layer).__name__ for layer in model.layers}


def test_round_trip_keeps_outputs_and_swaps_layers():
    model = build_model("resnet18_NR_G16")
    plain = to_plain_keras(model)
    assert not {"GroupedConv2D", "FastBatchNormalization"} & _kinds(plain)
    grouped = [layer for layer in plain.layers if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1]
    assert len(grouped) == 16
    # Keras's grouped path and kdkeras's kernel through ResNet-18's ~40 float32 layers: the same sums in
    # other orders (logits up to ~200 apart by 7.6e-5, 4e-7 of the scale, on an AVX2-only host; 0 with AVX-512).
    assert relative_error(plain(IMAGES), model(IMAGES)) < 1e-5
    fast = to_fast_keras(plain)
    assert {"GroupedConv2D", "FastBatchNormalization"} <= _kinds(fast)
    assert relative_error(fast(IMAGES), model(IMAGES)) < 1e-5
    assert [w.shape for w in fast.weights] == [w.shape for w in model.weights]


@pytest.mark.slow  # a process that builds or trains models: over 8 s
def test_saved_file_loads_in_plain_keras_without_kdkeras(tmp_path):
    model = build_model("mobilenetv2_R_g4", num_classes=10)
    path = tmp_path / "m.keras"
    save_model(model, path)
    np.save(tmp_path / "x.npy", IMAGES)
    expected = model(IMAGES, training=False).numpy()
    np.save(tmp_path / "y.npy", expected)
    code = f"""
import sys, numpy as np, keras
model = keras.saving.load_model({str(path)!r}, safe_mode=True)
assert "kdkeras" not in sys.modules, "kdkeras was imported"
np.save({str(tmp_path / 'plain.npy')!r}, keras.ops.convert_to_numpy(model(np.load({str(tmp_path / 'x.npy')!r}))))
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=str(tmp_path))
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
    # Plain Keras layers in another process (which never imports kdkeras) against kdkeras's, through
    # MobileNetV2's ~50 float32 convolutions: the same sums in other orders, ~1e-7 relative per layer
    # (seen 2.6e-6 of the scale with oneDNN, capped to AVX2 or not; 0 without): 2e-5 of the scale.
    assert relative_error(np.load(tmp_path / "plain.npy"), expected) < 2e-5
    loaded = load_model(path)
    assert any(isinstance(layer, GroupedConv2D) for layer in loaded.layers)
    assert any(isinstance(layer, FastBatchNormalization) for layer in loaded.layers)
    # kdkeras's own layers again, the weights byte for byte, in this process: the same kernels, bit-identical.
    np.testing.assert_array_equal(loaded(IMAGES, training=False), expected)
