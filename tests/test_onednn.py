"""Grouped networks train with TensorFlow's oneDNN on and off, and both give the same numbers.

Each setting runs in its own process (``TF_ENABLE_ONEDNN_OPTS`` is read once,
when TensorFlow is imported), so this file covers both paths on every host:
oneDNN's grouped kernel (``implementation="tf"``) and the portable forms that
run where it is missing (split, depthwise, dense).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, error_lines, script_command, script_env

STEP_SCRIPT = os.path.join(ROOT, "tests", "onednn_step.py")
#: g2 (dense + split), G4 (dense + depthwise form), depthwise (G1), an NR student distilled from an R teacher
#: (depthwise form on the student, the native/portable teacher), and MobileNetV2.
CASES = ["wrn10x1_R_g2", "wrn10x1_R_G4", "wrn10x1_R_G1", "wrn10x1_NR_g16<-wrn10x1_R_g2", "mobilenetv2_R_G4"]
#: One grouped layer against NumPy in float64: float32 sums of at most 3*3*cin/groups products.
LAYER_TOLERANCE = 1e-5
#: Inference logits through at most ~60 float32 layers with no batch statistics: each layer's rounding
#: (~1e-7 relative) adds up; measured <= 2e-6 between the two settings.
LOGITS_TOLERANCE = 1e-5
#: Gradients and one SGD update: the two settings round differently in every layer, so their difference is
#: bounded by a multiple of the computation's own sensitivity to one float32 rounding of its input, which
#: each process measures (about 5e-7 for the WRNs, 5e-3 for MobileNetV2, whose training-mode BatchNorm on
#: 8 images amplifies rounding; the settings differed by at most 6x that when this was written).
SENSITIVITY_MULTIPLE = 50
#: A floor for that bound, for a computation whose measured sensitivity happens to be ~0.
MIN_GRADIENT_TOLERANCE = 1e-6


def _run_step(onednn, out, cases=CASES):
    env = script_env(TF_ENABLE_ONEDNN_OPTS=onednn)
    done = subprocess.run([sys.executable, STEP_SCRIPT, str(out), *cases], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(out), done.stderr


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onednn")
    return {setting: _run_step(setting, folder / f"step{setting}.npz") for setting in ("0", "1")}


def _group(arrays, case, kind):
    prefix = f"{case}/{kind}/"
    return {k[len(prefix):]: arrays[k].astype(np.float64) for k in arrays.files if k.startswith(prefix)}


def _relative_difference(a: dict, b: dict) -> float:
    """``max |a - b|`` over all arrays of a kind, over the largest ``|b|`` among them (one scale per model)."""
    assert a and a.keys() == b.keys()
    scale = max(np.max(np.abs(v)) for v in b.values())
    return max(np.max(np.abs(a[k] - b[k])) for k in a) / scale


@pytest.mark.slow  # two processes build, train and distil five models each: about a minute
def test_each_setting_takes_its_path(steps):
    off, _, off_stderr = steps["0"]
    on, _, _ = steps["1"]
    assert off["onednn"] is False and off["grouped_conv_kernel"] is False
    # Every portable form is exercised, and the process said once why it uses them.
    used = {impl for model in off["models"].values() for impl in model["implementations"]}
    assert used == {"split", "depthwise", "dense"}
    notes = [line for line in off_stderr.splitlines() if "portable path" in line]
    assert len(notes) == 1 and "TF_ENABLE_ONEDNN_OPTS=0" in notes[0], off_stderr[-2000:]
    if on["onednn"] is not True:
        pytest.skip("this TensorFlow build cannot turn oneDNN on (TF_ENABLE_ONEDNN_OPTS=1 has no effect here)")
    assert on["grouped_conv_kernel"] is True
    assert {impl for model in on["models"].values() for impl in model["implementations"]} == {"tf", "depthwise"}


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["0", "1"])
def test_first_grouped_layer_matches_numpy_in_each_setting(steps, setting):
    report, _, _ = steps[setting]
    for case, model in report["models"].items():
        for what, error in model["reference"].items():
            assert error < LAYER_TOLERANCE, (setting, case, what, error)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_outputs_gradients_and_updates_agree_between_settings(steps, case):
    (off_report, off, _), (on_report, on, _) = steps["0"], steps["1"]
    if on_report["onednn"] is not True:
        pytest.skip("this TensorFlow build cannot turn oneDNN on")
    assert _relative_difference(_group(off, case, "logits"), _group(on, case, "logits")) < LOGITS_TOLERANCE
    sensitivity = max(off_report["models"][case]["sensitivity"], on_report["models"][case]["sensitivity"])
    bound = max(SENSITIVITY_MULTIPLE * sensitivity, MIN_GRADIENT_TOLERANCE)
    for kind in ("grad", "update"):
        difference = _relative_difference(_group(off, case, kind), _group(on, case, kind))
        assert difference < bound, (kind, difference, sensitivity)


#: One network of every zoo family, each as an NR student distilled from an R teacher of another grouping.
FAMILY_PAIRS = [
    ("wrn22x2_NR_g16", "wrn22x2_R_G4"),
    ("resnet18_NR_g8", "resnet18_R_G16"),
    ("mobilenetv2_NR_G8", "mobilenetv2_R_g2"),
]


@pytest.mark.slow  # a process that builds and trains six zoo models for one step each
def test_every_zoo_family_trains_and_distils_with_onednn_off(tmp_path):
    cases = [f"{student}<-{teacher}" for student, teacher in FAMILY_PAIRS] + [t for _, t in FAMILY_PAIRS]
    report, arrays, _ = _run_step("0", tmp_path / "zoo.npz", cases)
    assert report["grouped_conv_kernel"] is False
    for case in cases:
        update = _group(arrays, case, "update")
        assert update and all(np.all(np.isfinite(v)) for v in update.values()), case
        assert max(np.max(np.abs(v)) for v in update.values()) > 0, f"{case}: the step changed nothing"


@pytest.mark.slow  # two commands, each training for an epoch
def test_the_commands_train_and_distil_with_onednn_off(tmp_path):
    env = script_env(TF_ENABLE_ONEDNN_OPTS="0")
    common = ["--dataset=synthetic", "--epochs=1", "--train_size=64", "--test_size=32", "--batch_size=32",
              f"--logdir={tmp_path}"]
    for command in (script_command("train.py", "--model=wrn22x2_R_G4", *common),
                    script_command("distill.py", "--student=wrn22x2_NR_g16", "--teacher=wrn22x2_R_G4", *common)):
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
        assert done.returncode == 0 and not error_lines(done.stderr), done.stderr[-3000:]
        assert "portable path" in done.stderr
    results = [os.path.join(root, "results.json") for root, _, files in os.walk(tmp_path) if "results.json" in files]
    assert len(results) == 2  # the teacher (trained on the way) and the student


#: With oneDNN off: a network of portable grouped layers under MirroredStrategy (two logical CPUs), with
#: jit_compile, and in mixed precision, against one device, plain graph and float32.
_STRATEGIES = r'''
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from kdkeras import host
from kdkeras.layers import GroupedConv2D


def net():
    x = inputs = keras.Input((8, 8, 16))
    for groups in (8, 2, 4):  # 2 channels per group (depthwise form), dense, dense
        x = keras.layers.ReLU()(GroupedConv2D(16, 3, padding="same", groups=groups)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, dtype="float32")(x))


rng = np.random.default_rng(0)
x, y = rng.normal(size=(16, 8, 8, 16)).astype("float32"), rng.integers(0, 10, 16)
keras.utils.set_random_seed(0)
start = net().get_weights()
out = {"grouped_conv_kernel": host.grouped_conv_kernel()}
for name, strategy, jit, policy in (("single", tf.distribute.get_strategy(), False, "float32"),
                                    ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), False, "float32"),
                                    ("jit", tf.distribute.get_strategy(), True, "float32"),
                                    ("mixed", tf.distribute.get_strategy(), False, "mixed_float16")):
    keras.mixed_precision.set_global_policy(policy)
    with strategy.scope():
        model = net()
        model.set_weights(start)
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    layers = [l for l in model.layers if isinstance(l, GroupedConv2D)]
    out[name] = {"loss": float(loss), "weights": [w.tolist() for w in model.get_weights()],
                 "paths": [l._resolved_implementation(16) for l in layers]}
print(json.dumps(out))
'''


@pytest.mark.slow  # a process that builds and trains four small models
def test_the_portable_path_under_mirrored_strategy_jit_and_mixed_precision():
    done = subprocess.run([sys.executable, "-c", _STRATEGIES], capture_output=True, text=True, timeout=600,
                          env=script_env(TF_ENABLE_ONEDNN_OPTS="0"), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["grouped_conv_kernel"] is False
    assert out["single"]["paths"] == out["mirrored"]["paths"] == out["jit"]["paths"] == ["depthwise", "dense", "dense"]
    assert out["mixed"]["paths"] == ["keras"] * 3  # float16 on a CPU: Keras's own grouped path
    single = [np.asarray(w) for w in out["single"]["weights"]]
    for other in ("mirrored", "jit", "mixed"):
        weights = [np.asarray(w) for w in out[other]["weights"]]
        # One SGD step of the same network: float32 sums in other orders (two replicas' gradients added,
        # XLA's fused kernels), ~1e-6 of the update; float16 activations round to ~1e-3 of their scale.
        bound = 2e-2 if other == "mixed" else 1e-5
        assert abs(out[other]["loss"] - out["single"]["loss"]) < bound * abs(out["single"]["loss"]), other
        scale = max(np.max(np.abs(w)) for w in single)
        assert max(np.max(np.abs(a - b)) for a, b in zip(weights, single)) < bound * scale, other


@pytest.mark.slow  # two processes, one trains for an epoch
def test_mixed_precision_trains_where_float16_kernels_exist_and_says_why_not_elsewhere(tmp_path):
    import platform

    def command(logdir):
        return script_command("train.py", "--model=wrn10x1_R_g2", "--dataset=synthetic", "--epochs=1",
                              "--train_size=64", "--test_size=32", "--batch_size=32", "--mixed_precision",
                              f"--logdir={tmp_path / logdir}")

    # TensorFlow's own float16 kernels (oneDNN off) train on every CPU.
    done = subprocess.run(command("eigen"), capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
                          env=script_env(TF_ENABLE_ONEDNN_OPTS="0"))
    assert done.returncode == 0 and "Finished" in done.stdout, done.stderr[-3000:]
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("oneDNN's instruction-set cap below is an x86 setting")
    # oneDNN's kernels capped at AVX2 have no float16 convolution. Some TensorFlow builds fail there, others fall
    # back to their own kernels (TensorFlow 2.21 logs "Falling back to the default Eigen-based implementation").
    # A float16 convolution and its gradients, in plain TensorFlow, tell which this one does: where they fail, the
    # command says so in one line before any training; where they run, it trains.
    avx2 = script_env(ONEDNN_MAX_CPU_ISA="AVX2", TF_ENABLE_ONEDNN_OPTS="1")
    probe = subprocess.run([sys.executable, "-c", FLOAT16_CONV], capture_output=True, text=True, timeout=600,
                           env=avx2)
    done = subprocess.run(command("avx2"), capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=avx2)
    if probe.returncode == 0 and probe.stdout.split() == ["float16", "float16"]:
        assert done.returncode == 0 and "Finished" in done.stdout, done.stderr[-3000:]
        return
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    [line] = error_lines(done.stderr)
    assert "--mixed_precision (float16) cannot train on this CPU" in line and "TF_ENABLE_ONEDNN_OPTS=0" in line


#: What a float16 training step needs, in TensorFlow alone (no kdkeras): a convolution with its two
#: gradients, a batch norm and a matmul; prints the gradients' dtypes.
FLOAT16_CONV = """
import tensorflow as tf
x, w = tf.ones((2, 8, 8, 4), tf.float16), tf.ones((3, 3, 4, 4), tf.float16)
with tf.GradientTape() as tape:
    tape.watch([x, w])
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(tf.nn.conv2d(x, w, 1, "SAME"), tf.ones(4), tf.zeros(4),
                                               is_training=True)
    z = tf.reduce_sum(tf.matmul(tf.reshape(y, (2, -1)), tf.ones((256, 3), tf.float16)))
print(*(g.dtype.name for g in tape.gradient(z, [x, w])))
"""
