"""Tests for `kdkeras.distiller.Distiller` on tiny 8x8x3 models."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

from kdkeras.distiller import Distiller
from kdkeras.losses import kd_loss
from tests.helpers import relative_error

NUM_CLASSES = 10
#: Absolute tolerance of KD values (T = 4) computed by other kernels: the KD term is T^2 = 16 times a KL of
#: float32 log-probabilities of size ~log(10), whose rounding (~1e-7 of that size) does not shrink with the
#: KL itself; 1e-6 * T^2. The tiny models' logged KD values are ~0.02-0.03: relative tolerances alone
#: would not do.
KD_ATOL = 1e-6 * 4.0**2
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
HISTORY_KEYS = {
    "loss",
    "ce",
    "kd",
    "accuracy",
    "val_loss",
    "val_ce",
    "val_kd",
    "val_accuracy",
}


def _tiny_model(
    name, width, batchnorm=False, num_classes=NUM_CLASSES, seed=0, l2=None, logit_scale=1.0
):
    """Conv2D(width) [+BN] + ReLU + GlobalAveragePooling + Dense [x scale], 8x8x3 inputs."""
    init = lambda: keras.initializers.GlorotNormal(seed=seed)  # noqa: E731
    regularizer = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(
        width, 3, padding="same", kernel_initializer=init(), name=f"{name}_conv"
    )(inputs)
    if batchnorm:
        h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(
        num_classes,
        kernel_initializer=init(),
        kernel_regularizer=regularizer,
        name=f"{name}_dense",
    )(h)
    if logit_scale != 1.0:
        outputs = keras.layers.Rescaling(logit_scale, name=f"{name}_scale")(outputs)
    return keras.Model(inputs, outputs, name=name)


def _models():
    keras.utils.set_random_seed(0)
    student = _tiny_model("student", 4, seed=1)
    teacher = _tiny_model("teacher", 8, batchnorm=True, seed=2)
    return student, teacher


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, n)
    return x, y


def _compiled_distiller(alpha=0.9, **compile_kwargs):
    student, teacher = _models()
    distiller = Distiller(student, teacher, temperature=4.0, alpha=alpha)
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), **compile_kwargs)
    return distiller


def _np_kd_loss(labels, student_logits, teacher_logits, temperature, alpha):
    """Float64 NumPy reference: (1-a) CE + a T^2 KL(softmax(t/T) || softmax(s/T))."""

    def log_softmax(z):
        z = np.asarray(z, np.float64)
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    ce = -log_softmax(student_logits)[np.arange(len(labels)), labels]
    log_q_t = log_softmax(np.asarray(teacher_logits) / temperature)
    log_q_s = log_softmax(np.asarray(student_logits) / temperature)
    kl = (np.exp(log_q_t) * (log_q_t - log_q_s)).sum(-1)
    return (1 - alpha) * ce + alpha * temperature**2 * kl


# --------------------------------------------------------------------------
# Construction.
# --------------------------------------------------------------------------
def test_stores_models_and_freezes_teacher():
    student, teacher = _models()
    assert teacher.trainable
    distiller = Distiller(student, teacher, temperature=4.0, alpha=0.9)
    assert distiller.student is student
    assert distiller.teacher is teacher
    assert not teacher.trainable
    assert distiller.temperature == 4.0
    assert distiller.alpha == pytest.approx(0.9)
    trainable = {id(v) for v in distiller.trainable_variables}
    assert trainable == {id(v) for v in student.trainable_variables}
    assert not trainable & {id(v) for v in teacher.weights}


def test_call_returns_student_logits():
    student, teacher = _models()
    distiller = Distiller(student, teacher)
    x, _ = _data(4)
    # call() is student(x, training=False): the same kernels on the same inputs, bit-identical.
    np.testing.assert_array_equal(distiller(x), student(x, training=False))
    # predict's compiled graph (which may fuse ops) against eager ops, through 3 layers: float32 sums in
    # another order, ~1e-7 relative per layer (bit-identical here).
    assert relative_error(distiller.predict(x, verbose=0), student(x)) < 1e-6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 1.5}, "Received: alpha=1.5"),
        ({"alpha": -0.1}, "Received: alpha=-0.1"),
        ({"temperature": 0.0}, "Received: temperature=0.0"),
        ({"temperature": -4}, "Received: temperature=-4"),
    ],
)
def test_bad_init_args(kwargs, message):
    student, teacher = _models()
    with pytest.raises(ValueError, match=message):
        Distiller(student, teacher, **kwargs)


def test_bad_models():
    student, _ = _models()
    teacher = _tiny_model("teacher", 8, num_classes=5)
    with pytest.raises(ValueError, match=r"same output shape\. Received: student"):
        Distiller(student, teacher)
    with pytest.raises(ValueError, match="Received: teacher="):
        Distiller(student, "teacher")


def test_compile_rejects_loss_and_metrics():
    student, teacher = _models()
    distiller = Distiller(student, teacher)
    with pytest.raises(ValueError, match="Received: loss="):
        distiller.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="Received: metrics="):
        distiller.compile(optimizer="sgd", metrics=["accuracy"])


def test_sample_weights_are_rejected():
    distiller = _compiled_distiller()
    x, y = _data(8)
    with pytest.raises(ValueError, match="Received: sample_weight="):
        distiller.fit(x, y, sample_weight=np.ones(8), verbose=0)


# --------------------------------------------------------------------------
# The loss.
# --------------------------------------------------------------------------
def test_loss_uses_teacher_logits_as_target():
    """`evaluate` gives the KD loss with the teacher as the target, not swapped."""
    keras.utils.set_random_seed(0)
    student = _tiny_model("student", 4, seed=1, logit_scale=5.0)
    teacher = _tiny_model("teacher", 8, batchnorm=True, seed=2, logit_scale=20.0)
    distiller = Distiller(student, teacher, temperature=4.0, alpha=0.9)
    distiller.compile(optimizer="sgd")
    x, y = _data(16)
    logs = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    s = np.asarray(student(x, training=False))
    t = np.asarray(teacher(x, training=False))

    kd_forward = _np_kd_loss(y, s, t, 4.0, 1.0).mean()  # 16 KL(p_t || p_s)
    kd_reverse = _np_kd_loss(y, t, s, 4.0, 1.0).mean()  # 16 KL(p_s || p_t)
    assert abs(kd_forward - kd_reverse) > 0.05 * kd_forward  # distinguishable
    # evaluate's graph kernels (float32) against float64 NumPy on eager logits: ~1e-7 relative on losses
    # of size ~3-8 (seen 1e-7); 1e-5 relative.
    np.testing.assert_allclose(logs["kd"], kd_forward, rtol=1e-5)
    ce = _np_kd_loss(y, s, t, 4.0, 0.0).mean()
    np.testing.assert_allclose(logs["ce"], ce, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.1 * ce + 0.9 * kd_forward, rtol=1e-5)
    # A count out of 16, exact in float32; every argmax wins by >= 3% of the logits' scale: no kernel flips it.
    np.testing.assert_allclose(logs["accuracy"], np.mean(np.argmax(s, -1) == y))


def test_regularization_losses_are_added():
    keras.utils.set_random_seed(0)
    student = _tiny_model("student", 4, seed=1, l2=0.05)
    teacher = _tiny_model("teacher", 8, batchnorm=True, seed=2)
    distiller = Distiller(student, teacher)
    distiller.compile(optimizer="sgd")
    x, y = _data(8)
    logs = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    regularization = float(sum(student.losses))
    assert regularization > 1e-3
    kd_mean = float(np.mean(kd_loss(y, student(x), teacher(x, training=False))))
    # evaluate's graph against eager kernels, float32 throughout: ~1e-7 relative (seen 3e-8); 1e-5 relative.
    np.testing.assert_allclose(logs["loss"], kd_mean + regularization, rtol=1e-5)


# --------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------
def test_fit_trains_student_and_leaves_teacher_untouched():
    distiller = _compiled_distiller(alpha=0.9)
    x, y = _data(32)
    teacher_before = [w.copy() for w in distiller.teacher.get_weights()]
    student_before = [w.copy() for w in distiller.student.get_weights()]
    moving_mean = distiller.teacher.get_layer("teacher_bn").moving_mean
    moving_mean_before = keras.ops.convert_to_numpy(moving_mean).copy()

    history = distiller.fit(
        x, y, batch_size=8, epochs=2, validation_data=_data(16, seed=1), verbose=0
    ).history

    assert set(history) == HISTORY_KEYS
    assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in history.values())
    # `loss` is the per-example mean of (1 - alpha) ce + alpha kd (no regularizer): the same float32
    # values, averaged by three metrics (seen 2e-7 relative); 1e-5 relative.
    np.testing.assert_allclose(
        history["loss"],
        0.1 * np.array(history["ce"]) + 0.9 * np.array(history["kd"]),
        rtol=1e-5,
    )
    for before, after in zip(teacher_before, distiller.teacher.get_weights()):  # never written: bit-identical
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(
        moving_mean_before, keras.ops.convert_to_numpy(moving_mean)
    )
    for before, after in zip(student_before, distiller.student.get_weights()):
        assert not np.allclose(before, after)


def test_alpha_can_change_during_training():
    """Setting alpha = 0 from a callback turns the loss into plain CE."""

    class HardTargetsFromEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.alpha = 0.0

    class TraceCountingDistiller(Distiller):
        traces = 0

        def train_step(self, data):
            TraceCountingDistiller.traces += 1  # Python runs only when tracing
            return super().train_step(data)

    student, teacher = _models()
    distiller = TraceCountingDistiller(student, teacher, temperature=4.0, alpha=0.9)
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    x, y = _data(16)
    history = distiller.fit(
        x, y, batch_size=8, epochs=2, callbacks=[HardTargetsFromEpoch()], verbose=0
    ).history
    assert distiller.alpha == 0.0
    assert TraceCountingDistiller.traces == 1  # alpha is a variable: no retrace
    assert abs(history["loss"][0] - history["ce"][0]) > 1e-3
    # alpha = 0: loss = 1 * ce + 0 * kd, the same float32 values (bit-identical here); 1e-6 relative.
    np.testing.assert_allclose(history["loss"][1], history["ce"][1], rtol=1e-6)
    assert history["kd"][1] > 0  # still logged


def test_alpha_setter_validates():
    distiller = _compiled_distiller()
    distiller.alpha = 0.25
    assert distiller.alpha == 0.25
    with pytest.raises(ValueError, match="Received: alpha=2"):
        distiller.alpha = 2


def test_compile_options_are_accepted():
    """`steps_per_execution` and `jit_compile` give the same training run."""
    x, y = _data(32)
    histories, weights = [], []
    for kwargs in [{}, {"steps_per_execution": 2, "jit_compile": True}]:
        distiller = _compiled_distiller(**kwargs)
        histories.append(
            distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
        )
        weights.append(distiller.student.get_weights())
    assert distiller.jit_compile is True
    # XLA's kernels against TensorFlow's, through 4 SGD steps: float32 sums in other orders. The metrics
    # (seen 1.2e-5 relative, 3.5e-7 absolute, on the KD term of ~0.03): 1e-4 relative plus KD_ATOL; the
    # weights (seen 1.3e-6 of each array's scale): 1e-5 of it.
    for key in ["loss", "ce", "kd", "accuracy"]:
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-4, atol=KD_ATOL)
    for a, b in zip(*weights):
        assert relative_error(a, b) < 1e-5


def test_loss_scale_optimizer_gives_the_same_update():
    """The loss is multiplied by `optimizer.scale_loss` and the gradients are
    unscaled by the optimizer: with a power-of-two scale both are exact, so the
    update equals plain SGD's. Omitting either step would change it 2^15-fold."""
    x, y = _data(16)
    weights = []
    for wrap in [False, True]:
        student, teacher = _models()
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
        if wrap:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        distiller = Distiller(student, teacher)
        distiller.compile(optimizer=optimizer)
        distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        weights.append(student.get_weights())
    assert float(distiller.optimizer.scale_loss(1.0)) == 2.0**15
    # The same kernels, on values scaled by a power of two: bit-identical here; 1e-6 relative (atol 1e-7,
    # for weights of ~0.5) leaves room for another fusion, and a missed scaling step is 2^15-fold off.
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_backup_and_restore_resumes(tmp_path):
    class InterruptAtEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    x, y = _data(16)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    distiller = _compiled_distiller()
    with pytest.raises(RuntimeError, match="interrupted"):
        distiller.fit(
            x, y, batch_size=8, epochs=3, callbacks=[backup, InterruptAtEpoch()], verbose=0
        )
    saved_student = distiller.student.get_weights()

    restored = _compiled_distiller()  # fresh weights, as after a restart
    restored_weights = []

    class RecordWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            restored_weights.extend(self.model.student.get_weights())

    history = restored.fit(
        x, y, batch_size=8, epochs=3, callbacks=[backup, RecordWeights()], verbose=0
    )
    assert history.epoch == [1, 2]  # resumed after the saved epoch 0
    for a, b in zip(saved_student, restored_weights):
        np.testing.assert_array_equal(a, b)  # the backup's weights, restored byte for byte


# --------------------------------------------------------------------------
# Saving.
# --------------------------------------------------------------------------
def test_save_student_writes_plain_keras_model(tmp_path):
    distiller = _compiled_distiller()
    x, y = _data(8)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "student.keras"
    distiller.save_student(str(path))
    loaded = keras.saving.load_model(str(path))
    assert isinstance(loaded, keras.Model) and not isinstance(loaded, Distiller)
    assert loaded.name == "student"
    # The same Keras layers, weights saved and loaded byte for byte, in this process: the same kernels on
    # the same inputs, bit-identical.
    np.testing.assert_array_equal(loaded(x), distiller.student(x))
    with pytest.raises(ValueError, match="Received: filepath="):
        distiller.save_student(str(tmp_path / "student.h5"))


def test_distiller_config_round_trip(tmp_path):
    distiller = _compiled_distiller(alpha=0.3)
    x, y = _data(8)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "`compile()` was not called"
        loaded = keras.saving.load_model(str(path))
    assert isinstance(loaded, Distiller)
    assert isinstance(loaded.optimizer, keras.optimizers.SGD)
    assert int(loaded.optimizer.iterations) == 1
    assert loaded.alpha == pytest.approx(0.3)
    assert loaded.temperature == 4.0
    assert not loaded.teacher.trainable
    # The same layers and weights (saved byte for byte) in this process: the same kernels, bit-identical.
    np.testing.assert_array_equal(loaded(x), distiller(x))
    np.testing.assert_array_equal(loaded.teacher(x), distiller.teacher(x))


# --------------------------------------------------------------------------
# tf.distribute.MirroredStrategy (subprocess: logical devices must be set up
# before TensorFlow initialises them, which has already happened here).
# --------------------------------------------------------------------------
_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

    import keras
    import numpy as np
    from kdkeras.distiller import Distiller

    def tiny(name, width, batchnorm, l2):
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(width, 3, padding="same")(inputs)
        if batchnorm:
            h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        regularizer = keras.regularizers.L2(l2) if l2 else None
        outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(h)
        return keras.Model(inputs, outputs, name=name)

    def build():
        # No BN in the student: per-replica batch statistics would differ
        # from single-device ones. The L2 term checks regularizer scaling.
        return tiny("student", 4, False, 0.01), tiny("teacher", 8, True, None)

    keras.utils.set_random_seed(0)
    student0, teacher0 = build()
    student_weights, teacher_weights = student0.get_weights(), teacher0.get_weights()
    rng = np.random.default_rng(0)
    x = rng.random((15, 8, 8, 3), dtype=np.float32)  # 2 steps: 8, then 7 (4 + 3)
    y = rng.integers(0, 10, 15)

    def run(strategy):
        with strategy.scope():
            student, teacher = build()
            student.set_weights(student_weights)
            teacher.set_weights(teacher_weights)
            distiller = Distiller(student, teacher, temperature=4.0, alpha=0.9)
            distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
        history = distiller.fit(
            x, y, batch_size=8, epochs=2, shuffle=False, verbose=0
        ).history
        logs = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
        return {
            "replicas": strategy.num_replicas_in_sync,
            "history": {k: [float(v) for v in vs] for k, vs in history.items()},
            "evaluate": {k: float(v) for k, v in logs.items()},
            "weights": [w.tolist() for w in student.get_weights()],
            "initial": [w.tolist() for w in student_weights],
        }

    single = run(tf.distribute.get_strategy())
    mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT" + json.dumps({"single": single, "mirrored": mirrored}))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    single, mirrored = result["single"], result["mirrored"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)

    # Two replicas sum in another order: the metrics 1e-5 relative, plus KD_ATOL for the small KD term
    # (seen: 2.8e-7 of 0.021, 1.3e-5 relative); the weights (seen 9e-7 of each array's scale) 1e-5 of it.
    for key in ["loss", "ce", "kd", "accuracy"]:
        np.testing.assert_allclose(
            mirrored["history"][key], single["history"][key], rtol=1e-5, atol=KD_ATOL, err_msg=key
        )
        np.testing.assert_allclose(
            mirrored["evaluate"][key], single["evaluate"][key], rtol=1e-5, atol=KD_ATOL, err_msg=key
        )
    for got, expected, initial in zip(
        mirrored["weights"], single["weights"], single["initial"]
    ):
        assert not np.allclose(expected, initial)
        assert relative_error(got, expected) < 1e-5
