"""`Distiller` with distillation terms (`--method=dkd|fitnets|at`): loss, adapters, schedule, config, CLI."""

import os
import sys

import keras
import numpy as np
import pytest

from kdkeras import build_model
from kdkeras import config as config_lib
from kdkeras import grid
from kdkeras.callbacks import KDSchedule
from kdkeras.distiller import Distiller, method_distiller
from kdkeras.errors import UsageError
from kdkeras.methods import AT, DKD, KD, FitNets
from kdkeras.models.taps import feature_model
from tests.helpers import relative_error

sys.path.insert(0, os.path.dirname(__file__))
from test_scripts import error_lines, run_script  # noqa: E402

NUM_CLASSES = 10
SHAPE = (16, 16, 3)


def _pair():
    keras.utils.set_random_seed(0)
    student = build_model("wrn10x1_NR_g2", num_classes=NUM_CLASSES, input_shape=SHAPE, dropout=0.0)
    teacher = build_model("wrn10x1_R_g2", num_classes=NUM_CLASSES, input_shape=SHAPE, dropout=0.0)
    return student, teacher


def _data(n=8, seed=0):
    rng = np.random.RandomState(seed)
    return rng.rand(n, *SHAPE).astype("float32"), (np.arange(n) % NUM_CLASSES).astype("int32")


def _ce(y, logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -log_p[np.arange(len(y)), y]


def _expected_loss(distiller, x, y, training):
    """ce_weight * mean(ce) + sum_i weight_i * factor_i * mean(term_i), from the views' outputs."""
    taps = distiller.taps
    student_view, teacher_view = feature_model(distiller.student, taps), feature_model(distiller.teacher, taps)
    s_out, t_out = student_view(x, training=training), teacher_view(x, training=False)
    total = distiller.ce_weight * _ce(y, s_out["logits"]).mean()
    for term, weight, factor in zip(distiller.distillation_losses, distiller.term_weights,
                                    distiller.term_factor_variables):
        value = term.per_example_loss(t_out, s_out, labels=y, training=training)
        total += weight * float(factor.numpy()) * float(np.mean(value))
    return total + float(sum(distiller.student.losses, 0.0))


TERM_CASES = {
    "kd": lambda: [KD()],
    "dkd": lambda: [DKD(warmup_epochs=4)],
    "fitnets": lambda: [FitNets("stage2")],
    "at": lambda: [AT()],
    "fitnets+at": lambda: [FitNets("stage1"), AT(("stage2", "stage3"))],
}


@pytest.mark.parametrize("case", list(TERM_CASES))
def test_loss_equals_hand_computation(case):
    student, teacher = _pair()
    distiller = Distiller(student, teacher, distillation_losses=TERM_CASES[case]())
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    x, y = _data()
    logs = distiller.test_step((x, y))
    # The distiller's ops against eager views and a float64 CE, float32 through ~10 layers: ~1e-7 relative
    # (seen 1.2e-7 of losses up to ~1e3, AT's weight); 1e-5 relative.
    np.testing.assert_allclose(float(logs["loss"]), _expected_loss(distiller, x, y, False), rtol=1e-5)
    names = [t.method for t in distiller.distillation_losses]
    assert set(logs) == {"loss", "ce", "accuracy", *names}
    for metric in distiller.metrics:
        metric.reset_state()
    expected = _expected_loss(distiller, x, y, True)  # the weights before the step
    logs = distiller.train_step((x, y))
    # The same with the batch's statistics, under a gradient tape (seen 9e-8 relative); 1e-4 relative.
    np.testing.assert_allclose(float(logs["loss"]), expected, rtol=1e-4)


def test_kd_term_equals_plain_distiller():
    student, teacher = _pair()
    x, y = _data()
    plain = Distiller(student, teacher, temperature=4.0, alpha=0.9)
    terms = Distiller(student, teacher, distillation_losses=[KD(4.0)], loss_weights=[0.9], ce_weight=0.1)
    for d in (plain, terms):
        d.compile(optimizer="sgd")
    a, b = plain.test_step((x, y)), terms.test_step((x, y))
    # The same networks; the loss summed by two code paths in other float32 orders (seen 1.2e-7 relative,
    # of values of size ~1-4; the KD term is ~4, far above its T^2-scaled rounding): 1e-5 relative.
    for key in ("loss", "ce", "kd", "accuracy"):
        np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-5)


def test_bad_term_arguments():
    student, teacher = _pair()
    with pytest.raises(UsageError, match="Unknown method 'bogus'"):
        Distiller(student, teacher, distillation_losses=["bogus"])
    with pytest.raises(UsageError, match="list of 1 number"):
        Distiller(student, teacher, distillation_losses=[AT()], loss_weights=[1.0, 2.0])
    with pytest.raises(UsageError, match="need `distillation_losses`"):
        Distiller(student, teacher, loss_weights=[1.0])
    with pytest.raises(UsageError, match="Unknown feature tap 'stage9'"):
        Distiller(student, teacher, distillation_losses=[FitNets("stage9")])


def test_a_saved_distiller_loads_in_a_process_that_imported_no_method(tmp_path):
    """``import kdkeras.methods`` imports no method module (their settings come from the manifest); loading a
    saved distiller registers them with Keras first."""
    import subprocess

    student, teacher = _pair()
    distiller = method_distiller(student, teacher, "dkd+at")
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    code = ("import sys, keras; from kdkeras import Distiller; assert 'kdkeras.methods.dkd' not in sys.modules; "
            f"d = keras.saving.load_model({path!r}); print([type(t).__name__ for t in d.distillation_losses])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "['DKD', 'AT']"


def test_adapter_trains_and_student_is_saved_plain(tmp_path):
    student, teacher = _pair()
    distiller = method_distiller(student, teacher, "fitnets")
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    adapter = distiller.distillation_losses[0].adapter
    assert distiller.adapter_variables and all(
        any(v is w for w in distiller.trainable_variables) for v in distiller.adapter_variables)
    # The optimizer's order (resume) is the distiller's: student first, then the adapters.
    assert [v.path for v in distiller.trainable_variables] == [
        v.path for v in student.trainable_variables + distiller.adapter_variables]
    before = [w.copy() for w in adapter.get_weights()]
    teacher_before = [w.copy() for w in teacher.get_weights()]
    x, y = _data()
    distiller.train_step((x, y))
    assert not np.allclose(before[0], adapter.get_weights()[0])  # the 1x1 kernel moved
    for a, b in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)  # never written: bit-identical
    path = tmp_path / "student.keras"
    distiller.save_student(str(path))
    loaded = keras.saving.load_model(str(path))
    assert not any("adapter" in layer.name for layer in loaded.layers)
    assert len(loaded.weights) == len(student.weights)
    # The saved file holds plain Keras layers: Keras's grouped convolution against kdkeras's kernel through
    # ~10 float32 layers, the same sums in other orders (logits up to ~50 apart by 2.3e-5, 4e-7 of the
    # scale, with oneDNN capped to AVX2; 0 with AVX-512): 1e-5 of the scale.
    assert relative_error(loaded(x), student(x)) < 1e-5


@pytest.mark.slow  # a process that builds or trains models: over 8 s
def test_backup_restores_adapters(tmp_path):
    x, y = _data(16)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    def make():
        student, teacher = _pair()
        d = method_distiller(student, teacher, "fitnets")
        d.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        return d

    first = make()
    with pytest.raises(RuntimeError, match="interrupted"):
        first.fit(x, y, batch_size=8, epochs=2, callbacks=[backup, Interrupt()], verbose=0)
    saved = first.distillation_losses[0].adapter.get_weights()
    restored = make()
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.extend(self.model.distillation_losses[0].adapter.get_weights())

    history = restored.fit(x, y, batch_size=8, epochs=2, callbacks=[backup, Record()], verbose=0)
    assert history.epoch == [1]
    for a, b in zip(saved, seen):
        np.testing.assert_array_equal(a, b)  # the backup's weights, restored byte for byte


@pytest.mark.parametrize("method", ["dkd", "fitnets", "at"])
def test_fit_one_epoch(method):
    student, teacher = _pair()
    distiller = method_distiller(student, teacher, method)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    x, y = _data(16)
    history = distiller.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0)
    assert set(history.history) == {"loss", "ce", method, "accuracy",
                                    "val_loss", "val_ce", f"val_{method}", "val_accuracy"}
    assert np.isfinite(history.history["loss"][0])


def test_kd_schedule_zeroes_every_term_and_dkd_warms_up():
    student, teacher = _pair()
    distiller = Distiller(student, teacher, distillation_losses=[DKD(warmup_epochs=2), AT()],
                          loss_weights=[2.0, 500.0])
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append((distiller.term_weights, [float(v.numpy()) for v in distiller.term_factor_variables]))

    x, y = _data(8)
    history = distiller.fit(x, y, batch_size=8, epochs=3, callbacks=[KDSchedule(1, 0.9), Record()], verbose=0)
    assert [w for w, _ in seen] == [[2.0, 500.0], [0.0, 0.0], [0.0, 0.0]]
    assert [f for _, f in seen] == [[0.5, 1.0], [1.0, 1.0], [1.0, 1.0]]
    assert history.history["distill_on"] == [1.0, 0.0, 0.0]
    # Every term weighted 0: loss = 1 * ce + 0 * terms, the same float32 values (bit-identical here).
    np.testing.assert_allclose(history.history["loss"][2], history.history["ce"][2], rtol=1e-6)


KD_RUN = {"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", "dataset": "synthetic", "epochs": 2}


def test_method_is_part_of_the_run_identity():
    plain = config_lib.resolve(KD_RUN)
    assert plain.method == "kd"
    assert config_lib.run_name(config_lib.resolve({**KD_RUN, "method": "kd"})) == config_lib.run_name(plain)
    names = {config_lib.run_name(config_lib.resolve({**KD_RUN, "method": m})) for m in ("kd", "dkd", "fitnets", "at")}
    assert len(names) == 4
    dkd = config_lib.resolve({**KD_RUN, "method": "dkd", "dkd_beta": 6.0})
    assert config_lib.run_name(dkd) != config_lib.run_name(config_lib.resolve({**KD_RUN, "method": "dkd"}))
    teacher = config_lib.teacher_config(dkd)
    assert teacher.method == "kd" and teacher.dkd_beta is None
    assert config_lib.run_name(teacher) == config_lib.run_name(config_lib.teacher_config(plain))


@pytest.mark.parametrize("settings, message", [
    ({"method": "bogus"}, "Unknown method 'bogus'. Valid choices: kd, dkd, fitnets, at."),
    ({"method": "at", "dkd_beta": 2.0}, "dkd_beta is a setting of method=dkd"),
    ({"method": "dkd", "hint_tap": "stage1"}, "hint_tap is a setting of method=fitnets"),
    ({"method_weight": 2.0}, "method_weight is not used by method=kd"),
    ({"method": "dkd", "dkd_warmup": -1}, "dkd_warmup must be an integer >= 0"),
])
def test_bad_method_settings(settings, message):
    with pytest.raises(UsageError, match=message):
        config_lib.resolve({**KD_RUN, **settings})


def test_build_run_model_builds_the_method(tmp_path):
    from kdkeras.training import build_run_model, make_run_data

    config = config_lib.resolve({**KD_RUN, "method": "fitnets", "hint_tap": "stage1", "train_size": 16,
                                 "test_size": 16, "batch_size": 8})
    data = make_run_data(config)
    teacher = build_model("wrn10x1_R_g2", num_classes=data.info.num_classes, input_shape=data.info.image_shape)
    model, student = build_run_model(config, data, teacher)
    assert isinstance(model, Distiller) and model.student is student
    assert [t.method for t in model.distillation_losses] == ["fitnets"]
    assert model.distillation_losses[0].hint_tap == "stage1" and model.term_weights == [100.0]
    plain, _ = build_run_model(config_lib.resolve({**KD_RUN, "train_size": 16, "test_size": 16}), data, teacher)
    assert [t.method for t in plain.distillation_losses] == ["kd"] and plain.coupled
    assert plain.alpha == pytest.approx(0.9) and plain.term_weights == []


@pytest.mark.parametrize("settings", [{"distill": False}, {"method": "fitnets", "hint_tap": "stage1"}],
                         ids=["baseline", "fitnets"])
def test_a_run_traces_its_training_step_once(settings):
    """The optimizer is built with the model, over what the step updates (the adapters too): a momentum buffer
    created inside the first traced step would make TensorFlow trace the step a second time."""
    from kdkeras.training import build_run_model, make_run_data

    run = {"model": "wrn10x1_R_g2", "dataset": "synthetic"} if "distill" in settings else \
        {**KD_RUN, **settings}
    config = config_lib.resolve({**run, "train_size": 16, "test_size": 16, "batch_size": 8, "epochs": 2})
    data = make_run_data(config)
    teacher = build_model("wrn10x1_R_g2", num_classes=data.info.num_classes, input_shape=data.info.image_shape)
    model, student = build_run_model(config, data, teacher if config.distill else None)
    assert model.optimizer.built
    updated = model.trained_variables if config.distill else student.trainable_variables
    assert len(model.optimizer.variables) == 1 + len(updated)  # the step counter, one momentum buffer each
    traced = []
    step = model.train_step
    model.train_step = lambda batch: (traced.append(1), step(batch))[1]
    model.fit(data.train_epochs(0, 2), epochs=2, steps_per_epoch=data.steps_per_epoch, shuffle=False, verbose=0)
    assert len(traced) == 1
    assert int(model.optimizer.iterations.numpy()) == 2 * data.steps_per_epoch


def test_a_distiller_built_in_user_code_traces_its_training_step_once():
    """The Python API (README): a Distiller compiled with an unbuilt optimizer builds it in ``fit``."""
    from kdkeras.optimizers import PyTorchSGD

    student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
    teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
    distiller = Distiller(student, teacher)
    distiller.compile(optimizer=PyTorchSGD(0.1, momentum=0.9))
    assert not distiller.optimizer.built
    traced = []
    step = distiller.train_step
    distiller.train_step = lambda batch: (traced.append(1), step(batch))[1]
    x = np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)
    y = np.arange(16) % 10
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    # the step counter, the learning rate (a float here, not a schedule), one momentum buffer each
    assert len(traced) == 1 and len(distiller.optimizer.variables) == 2 + len(student.trainable_variables)


def test_method_is_a_grid_axis(tmp_path):
    spec = grid.GridSpec(name="methods", net="wrn10x1", dataset="synthetic", settings={"epochs": 1},
                         halves={"left": {"students": ["NR_g2"], "teachers": ["R_g2"]}},
                         axes={"method": ["kd", "dkd", "at"]})
    cells = grid.plan(spec, str(tmp_path))
    kd_cells = [c for c in cells if c.kind == "kd"]
    assert [c.config.method for c in kd_cells] == ["kd", "dkd", "at"]
    assert len({c.run_dir for c in kd_cells}) == 3
    plain = [c for c in grid.plan(grid.GridSpec(name="methods", net="wrn10x1", dataset="synthetic",
                                                settings={"epochs": 1},
                                                halves={"left": {"students": ["NR_g2"], "teachers": ["R_g2"]}}),
                                  str(tmp_path)) if c.kind == "kd"]
    assert plain[0].run_dir == kd_cells[0].run_dir  # method=kd is the plain grid's KD run


def test_method_flag_is_validated_in_one_line():
    result = run_script("distill.py", "--student=wrn10x1_NR_g2", "--teacher=wrn10x1_R_g2", "--method=bogus")
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Unknown method 'bogus'. Valid choices: kd, dkd, fitnets, at, " in lines[0]
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------
# MirroredStrategy: every term gives the single-device update (a subprocess:
# logical devices must be set up before TensorFlow initialises them).
# --------------------------------------------------------------------------
_MIRRORED_METHODS = r'''
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from kdkeras.distiller import method_distiller


def tiny(name, width):
    # Zoo layer names (kdkeras.models.taps finds "stem", "stage1", "stage2" by them); no BatchNorm in
    # the networks, whose per-replica statistics would differ from one device's by design.
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", name="stem_conv")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(width, 3, padding="same", name="stage1_block1_unit2_pconv")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", name="stage2_block1_unit2_pconv")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", name="stage3_block1_unit2_pconv")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)


rng = np.random.default_rng(0)
x = rng.random((15, 8, 8, 3), dtype=np.float32)  # batches of 8, then 7 (4 + 3 on two replicas)
y = rng.integers(0, 10, 15)
keras.utils.set_random_seed(0)
student_weights, teacher_weights = tiny("student", 4).get_weights(), tiny("teacher", 6).get_weights()
out = {}
# One strategy for every run: collective instance keys are per strategy object.
strategies = (("single", tf.distribute.get_strategy()),
              ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])))
for method in sys.argv[1].split(","):
    runs = {}
    for where, strategy in strategies:
        keras.utils.set_random_seed(1)  # the adapter's initial weights
        with strategy.scope():
            student, teacher = tiny("student", 4), tiny("teacher", 6)
            student.set_weights(student_weights)
            teacher.set_weights(teacher_weights)
            kwargs = {"hint_tap": "stage1"} if method == "fitnets" else {}
            if method == "dkd":
                kwargs["dkd_warmup"] = 1
            distiller = method_distiller(student, teacher, method, **kwargs)
            lr = 0.002 if method == "at" else 0.05  # AT's weight of 1000 diverges on these tiny nets at 0.05
            distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9))
        history = distiller.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        runs[where] = {
            "replicas": strategy.num_replicas_in_sync,
            "history": {k: [float(v) for v in vs] for k, vs in history.items()},
            "student": [w.tolist() for w in student.get_weights()],
            "adapters": [v.numpy().tolist() for v in (distiller.adapter_variables or [])],
        }
    out[method] = runs
print("RESULT" + json.dumps({"methods": out, "initial": [w.tolist() for w in student_weights]}))
'''


@pytest.mark.slow
def test_every_method_under_mirrored_strategy_matches_one_device():
    import json
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _MIRRORED_METHODS, "kd,dkd,fitnets,at"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))[len("RESULT"):])
    for method, runs in result["methods"].items():
        single, mirrored = runs["single"], runs["mirrored"]
        assert (single["replicas"], mirrored["replicas"]) == (1, 2)
        assert set(single["history"]) == {"loss", "ce", method, "accuracy"}
        for key, values in single["history"].items():
            # Two replicas sum in another order: 1e-5 relative (losses up to ~100, FitNets' and AT's
            # weights; seen 4e-6). KD and DKD are KL divergences of nearly equal distributions: small
            # differences of O(T^2) numbers, whose float32 rounding is absolute, ~1e-7 * T^2 (seen 2.5e-7
            # on a KD term of 1e-3, 1.8e-6 on a DKD term of 1.3e-2): atol 1e-6 * T^2, T = 4.
            np.testing.assert_allclose(mirrored["history"][key], values, rtol=1e-5, atol=1e-6 * 4.0**2,
                                       err_msg=f"{method}: {key}")
        for got, expected, initial in zip(mirrored["student"], single["student"], result["initial"]):
            assert not np.allclose(expected, initial), method  # the steps moved every weight
        assert len(single["adapters"]) == (3 if method == "fitnets" else 0)  # the 1x1 kernel, BN's gamma and beta
        if method == "fitnets":
            # The adapter's synchronized BatchNorm computes the variance as E[x^2] - E[x]^2 over the
            # replicas' sums; its rounding, through the hint's weight of 100, moves weights by up to 8e-5
            # whatever their own size (seen on weights of scale ~1; one device alone differs by 2.5e-5
            # between that formula and the plain one): 2e-4 of the scale of all the student's (adapter's)
            # weights. Without the synchronization the replicas normalise 4 and 3 examples each: 3.6e-2 apart.
            flat = lambda arrays: np.concatenate([np.ravel(a) for a in arrays])  # noqa: E731
            assert relative_error(flat(mirrored["student"]), flat(single["student"])) < 2e-4, method
            assert relative_error(flat(mirrored["adapters"]), flat(single["adapters"])) < 2e-4, method
        else:
            # Another summation order only (seen <= 1.2e-6 of each array's scale): 1e-5 of it.
            for got, expected in zip(mirrored["student"], single["student"]):
                assert relative_error(got, expected) < 1e-5, method


@pytest.mark.parametrize("method", ["fitnets", "at", "dkd"])
def test_gradient_flow_measures_the_method_objective(tmp_path, method):
    """GradientFlow's loss is the method's objective (not plain KD), and it restores the adapters' statistics."""
    import tensorflow as tf

    from kdkeras.analysis.gradients import GradientFlow

    student, teacher = _pair()
    distiller = method_distiller(student, teacher, method)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _data(16)
    flow = GradientFlow((x, y), str(tmp_path), epochs=1, every=1)
    flow.set_model(distiller)
    state = [v.numpy().copy() for v in student.non_trainable_variables + [
        v for a in distiller.distillation_losses[0].adapters for v in a.non_trainable_variables]]
    loss, norms = flow.measure()
    after = student.non_trainable_variables + [
        v for a in distiller.distillation_losses[0].adapters for v in a.non_trainable_variables]
    assert len(after) == len(state) and len(after) > len(student.non_trainable_variables) * (method == "fitnets")
    for before, variable in zip(state, after):  # restored byte for byte
        np.testing.assert_array_equal(before, variable.numpy(), err_msg=variable.path)
    # GradientFlow's compiled step against eager views and a float64 CE (seen 6e-8 relative): 1e-5 relative.
    assert loss == pytest.approx(_expected_loss(distiller, x, y, training=True), rel=1e-5)
    # By hand: the gradient of the same objective with respect to the first layer with weights.
    layer = next(layer for layer in student.layers if layer.trainable_weights)
    with tf.GradientTape() as tape:
        objective = tf.reduce_mean(distiller.per_example_objective(x, y))
    grads = tape.gradient(objective, layer.trainable_weights)
    # Gradients through ~10 float32 layers by another execution (seen 2e-7 relative): 1e-4 relative.
    assert norms[0] == pytest.approx(float(tf.sqrt(sum(tf.reduce_sum(g * g) for g in grads))), rel=1e-4)


@pytest.mark.parametrize("method", ["kd", "dkd", "fitnets"])
def test_checkpoints_keep_the_layout_of_earlier_runs(method, tmp_path):
    """A distiller's weights file holds the same entries, in the same places, as before the method registry.

    tests/fixtures/distiller_checkpoint_layout.json lists every dataset (path and shape) of the
    `save_weights` file of each method's distiller on wrn10x1, written by the distiller that
    preceded the registry; a run folder's backup from then still loads and resumes.
    """
    import json
    import os

    import h5py

    from kdkeras.optimizers import PyTorchSGD

    recorded = json.load(open(os.path.join(os.path.dirname(__file__), "fixtures",
                                           "distiller_checkpoint_layout.json")))[method]
    student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
    teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
    distiller = method_distiller(student, teacher, method)
    distiller.compile(optimizer=PyTorchSGD(0.1, momentum=0.9))
    distiller.optimizer.build(distiller.student.trainable_variables + distiller.adapter_variables)
    path = str(tmp_path / "d.weights.h5")
    distiller.save_weights(path)
    rows = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: rows.append([name, list(obj.shape)]) if isinstance(obj, h5py.Dataset)
                     else None)
    assert rows == recorded
    distiller.load_weights(path)


def test_the_distiller_class_stays_short_method_specifics_live_in_the_methods():
    """One path, and no method's specifics in the Distiller: the class stays about 250 lines."""
    import ast
    import inspect

    import kdkeras.distiller as module

    [node] = [n for n in ast.parse(inspect.getsource(module)).body
              if isinstance(n, ast.ClassDef) and n.name == "Distiller"]
    assert node.end_lineno - node.lineno + 1 <= 260
    docstrings = {id(n.body[0].value) for n in ast.walk(node)
                  if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.body and isinstance(n.body[0], ast.Expr)}
    code = " ".join(
        (n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else str(n.value)).lower()
        for n in ast.walk(node)
        if isinstance(n, (ast.Name, ast.Attribute)) or (isinstance(n, ast.Constant) and id(n) not in docstrings))
    for method in ("dkd", "fitnets", "crd", "ctkd", "reviewkd"):
        assert method not in code, method
