"""Early-only KD (``kd_epochs``), the gradient-flow callback and ``--notrain_teacher``."""

import os

import numpy as np
import pytest
from helpers import Interrupt, run_script, stop_after
import tensorflow as tf

from kdkeras import config as config_lib
from kdkeras.analysis.gradients import GradientFlow, read_gradient_flow
from kdkeras.callbacks import KDSchedule, read_history
from kdkeras.models.convert import load_model
from kdkeras.training import train_and_evaluate
from kdkeras.training.run_folder import run_dir

pytestmark = pytest.mark.slow  # tiny runs and scripts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {"dataset": "synthetic", "train_size": 256, "test_size": 128, "batch_size": 64, "dropout": 0.0}
KD = {"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2"}


def quiet(message):
    pass


# -- kd_epochs: settings ------------------------------------------------------


def test_kd_epochs_is_validated_and_part_of_the_run_identity():
    throughout = config_lib.resolve({**KD, **TINY, "epochs": 4})
    early = config_lib.resolve({**KD, **TINY, "epochs": 4, "kd_epochs": 2})
    assert config_lib.run_name(early) != config_lib.run_name(throughout)
    # The teacher and the baselines do not depend on it (they are shared by all arms).
    assert config_lib.teacher_config(early) == config_lib.teacher_config(throughout)
    baseline = config_lib.resolve({"model": "wrn10x1_NR_g2", **TINY, "epochs": 4, "kd_epochs": 2})
    assert config_lib.run_name(baseline) == config_lib.run_name(
        config_lib.resolve({"model": "wrn10x1_NR_g2", **TINY, "epochs": 4}))
    for bad, fragment in ((0, "positive integer"), (-1, "positive integer"), (5, "at most epochs (4)")):
        with pytest.raises(ValueError, match=r"kd_epochs"):
            config_lib.resolve({**KD, **TINY, "epochs": 4, "kd_epochs": bad})
        try:
            config_lib.resolve({**KD, **TINY, "epochs": 4, "kd_epochs": bad})
        except ValueError as err:
            assert fragment in str(err)


def test_kd_schedule_values():
    schedule = KDSchedule(3, 0.9)
    assert [schedule.alpha_at(e) for e in range(5)] == [0.9, 0.9, 0.9, 0.0, 0.0]
    with pytest.raises(ValueError, match="kd_epochs"):
        KDSchedule(0, 0.9)


# -- kd_epochs: training --------------------------------------------------------


def _check_objective(row, alpha):
    assert float(row["alpha"]) == pytest.approx(alpha)
    # Train metrics are means over the same examples, so the objective is the
    # alpha-weighted mix of its two logged terms (no weight regularization loss:
    # weight decay lives in the optimizer).
    expected = (1 - alpha) * row["ce"] + alpha * row["kd"]
    assert row["loss"] == pytest.approx(expected, rel=1e-5)  # the same float32 values, averaged by 3 metrics


def test_kd_epochs_switches_the_loss_at_the_right_epoch_also_after_resume(tmp_path):
    config = config_lib.resolve({**KD, **TINY, "epochs": 3, "kd_epochs": 1, "alpha": 0.7})
    logdir = str(tmp_path)
    with pytest.raises(Interrupt):  # stop after epoch 0 (the KD epoch), then resume
        train_and_evaluate(config, logdir, callbacks=[stop_after(0)], log=quiet, verbose=0)
    results = train_and_evaluate(config, logdir, log=quiet, verbose=0)
    history = read_history(os.path.join(results["run_dir"], "history.csv"))
    assert [r["epoch"] for r in history] == [0, 1, 2]
    _check_objective(history[0], 0.7)
    for row in history[1:]:
        _check_objective(row, 0.0)
        assert row["loss"] == pytest.approx(row["ce"], rel=1e-6)  # 1 * ce + 0 * kd: the same values
        assert row["kd"] > 0  # the teacher still runs: the drift from it stays visible
    assert results["kd_epochs"] == 1 and results["alpha"] == 0.7


# -- gradient flow ---------------------------------------------------------------


def _probe(n=32):
    from kdkeras.analysis.runs import split_arrays

    config = config_lib.resolve({**KD, **TINY, "epochs": 1})
    x, y, _ = split_arrays(config, "train", size=n, seed=1)
    return x, y


@pytest.fixture(scope="module")
def flow_runs(tmp_path_factory):
    """The same KD run twice: with and without the gradient-flow callback."""
    probe = _probe()
    out = {}
    for name, with_callback in (("with", True), ("without", False)):
        logdir = str(tmp_path_factory.mktemp(name))
        config = config_lib.resolve({**KD, **TINY, "epochs": 2})
        directory = run_dir(config, logdir)
        callbacks = [GradientFlow(probe, directory, epochs=1, every=2)] if with_callback else []
        results = train_and_evaluate(config, logdir, callbacks=callbacks, log=quiet, verbose=0)
        out[name] = (config, results["run_dir"], logdir)
    return out, probe


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gradient_flow_leaves_training_unchanged(flow_runs, tmp_path, dropout):
    """Same weights with and without the callback; with dropout, its random state is restored too."""
    if dropout == 0.0:
        runs, _ = flow_runs
        dirs = runs["with"][1], runs["without"][1]
    else:
        probe, dirs = _probe(), []
        for name, with_callback in (("with", True), ("without", False)):
            logdir = str(tmp_path / name)
            config = config_lib.resolve({**KD, **TINY, "epochs": 1, "dropout": dropout})
            directory = run_dir(config, logdir)
            callbacks = [GradientFlow(probe, directory, epochs=1, every=2)] if with_callback else []
            dirs.append(train_and_evaluate(config, logdir, callbacks=callbacks, log=quiet, verbose=0)["run_dir"])
    a = load_model(os.path.join(dirs[0], "model.keras"))
    b = load_model(os.path.join(dirs[1], "model.keras"))
    for wa, wb in zip(a.get_weights(), b.get_weights()):  # the same run, repeated in this process: bit-identical
        np.testing.assert_array_equal(wa, wb)


def test_gradient_flow_rows_steps_and_tensorboard(flow_runs):
    runs, _ = flow_runs
    directory = runs["with"][1]
    rows = read_gradient_flow(os.path.join(directory, "gradient_flow.csv"))
    # 256 images / batch 64 = 4 steps per epoch; measured before step 1 and every 2 steps,
    # in the first epoch only.
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert all(r["epoch"] == 0 for r in rows)
    student = load_model(os.path.join(directory, "model.keras"))
    layers = [layer.name for layer in student.layers if layer.trainable_weights]
    assert list(rows[0])[4:] == layers  # one column per layer with weights, input to output
    events = []
    for root, _, files in os.walk(os.path.join(directory, "tensorboard", "gradient_flow")):
        events += [os.path.join(root, f) for f in files if f.startswith("events.out")]
    assert events
    tags = set()
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        tags.update(v.tag for v in event.summary.value)
    assert {"gradient_flow/loss", "gradient_flow/global_norm", f"gradient_norm/{layers[0]}"} <= tags


def test_gradient_flow_first_row_matches_an_independent_gradient(flow_runs):
    """Step 0 = initial weights: recompute the KD objective's gradient by hand."""
    runs, (x, y) = flow_runs
    config, directory, logdir = runs["with"]
    rows = read_gradient_flow(os.path.join(directory, "gradient_flow.csv"))
    student = load_model(os.path.join(directory, "model.keras"))
    student.load_weights(os.path.join(directory, "initial.weights.h5"))
    teacher_dir = run_dir(config_lib.teacher_config(config), logdir)
    teacher = load_model(os.path.join(teacher_dir, "model.keras"))
    t = teacher(x, training=False)
    temperature, alpha = config.temperature, config.alpha
    with tf.GradientTape() as tape:
        s = student(x, training=True)
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, s))
        p_t = tf.nn.softmax(t / temperature)
        kl = tf.reduce_sum(p_t * (tf.math.log(p_t) - tf.nn.log_softmax(s / temperature)), axis=-1)
        loss = (1 - alpha) * ce + alpha * temperature**2 * tf.reduce_mean(kl)
    layers = [layer for layer in student.layers if layer.trainable_weights]
    grads = tape.gradient(loss, [w for layer in layers for w in layer.trainable_weights])
    # The callback's compiled step against these eager ops (other fusions and summation orders) through ~10
    # float32 layers with the batch's statistics, ~1e-6 relative: the loss to 1e-4 relative, each layer's
    # gradient norm to 1e-3 relative, and 1e-7 absolute for a layer whose gradient is ~0.
    assert rows[0]["loss"] == pytest.approx(float(loss), rel=1e-4)
    i = 0
    for layer in layers:
        k = len(layer.trainable_weights)
        norm = float(tf.sqrt(sum(tf.reduce_sum(tf.square(g)) for g in grads[i:i + k])))
        i += k
        assert rows[0][layer.name] == pytest.approx(norm, rel=1e-3, abs=1e-7), layer.name


def test_gradient_flow_plot_script(flow_runs, tmp_path):
    runs, _ = flow_runs
    out = tmp_path / "flow.png"
    result = run_script("gradflow.py", f"--runs={runs['with'][1]}", f"--output={out}")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_script("gradflow.py", f"--runs={runs['without'][1]}")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--gradient_flow_epochs" in bad.stderr


# -- scripts ---------------------------------------------------------------------


def test_distill_flags_kd_epochs_gradient_flow_and_notrain_teacher(tmp_path):
    logdir = tmp_path / "logs"
    common = ["--student=wrn10x1_NR_g2", "--teacher=wrn10x1_R_g2", "--dataset=synthetic", "--epochs=2",
              "--train_size=128", "--test_size=64", "--batch_size=64", f"--logdir={logdir}"]
    missing = run_script("distill.py", *common, "--notrain_teacher")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    errors = [line for line in missing.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "has no finished run" in errors[0] and "wrn10x1_R_g2" in errors[0]
    assert not any(f.endswith("results.json") for _, _, fs in os.walk(logdir) for f in fs)

    ok = run_script("distill.py", *common, "--kd_epochs=1", "--gradient_flow_epochs=1",
                    "--gradient_flow_every=1")
    assert ok.returncode == 0, ok.stderr
    assert "KD in the first 1 epochs only" in ok.stdout
    config = config_lib.resolve({**KD, "dataset": "synthetic", "epochs": 2, "train_size": 128,
                                 "test_size": 64, "batch_size": 64, "kd_epochs": 1})
    directory = run_dir(config, str(logdir))
    history = read_history(os.path.join(directory, "history.csv"))
    assert [float(r["alpha"]) for r in history] == [0.9, 0.0]
    rows = read_gradient_flow(os.path.join(directory, "gradient_flow.csv"))
    assert [r["step"] for r in rows] == [0, 1, 2]

    bad = run_script("distill.py", *common, "--kd_epochs=3")
    assert bad.returncode == 2 and "kd_epochs must be at most epochs (2)" in bad.stderr


def test_grid_kd_epochs_reuses_baselines_and_names_its_tables(tmp_path):
    config = os.path.join(ROOT, "configs", "ablations", "early_kd_smoke.yaml")
    logdir = str(tmp_path / "logs")
    plain = run_script("grid.py", f"--config={config}", f"--logdir={logdir}", "--dry_run")
    early = run_script("grid.py", f"--config={config}", f"--logdir={logdir}", "--dry_run", "--kd_epochs=1")
    assert plain.returncode == 0 and early.returncode == 0, early.stderr

    def cells(text):
        return {line.split()[-1] for line in text.splitlines() if "wrn10x1_" in line}

    plain_cells, early_cells = cells(plain.stdout), cells(early.stdout)
    baselines = {c for c in plain_cells if "_from_" not in c}
    assert baselines and baselines <= early_cells  # shared by both arms
    assert {c for c in early_cells if "_from_" in c}.isdisjoint(plain_cells)
    assert "early_kd_smoke-kd1" in early.stdout
