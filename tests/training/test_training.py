"""End-to-end runs of train_and_evaluate on tiny models and generated data."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import Interrupt, stop_after
import yaml

from kdkeras import config as config_lib
from kdkeras.callbacks import read_history
from kdkeras.data import make_datasets
from kdkeras.models.convert import load_model
from kdkeras.models.registry import build_model
from kdkeras.profiling import profile
from kdkeras.training import train_and_evaluate
from kdkeras.training import run_folder as run_folder_lib

pytestmark = pytest.mark.slow  # end-to-end runs

TINY = {"dataset": "synthetic", "epochs": 2, "train_size": 256, "test_size": 128, "batch_size": 64}
RESULT_KEYS = {"model", "teacher", "dataset", "epochs", "test_accuracy", "best_test_accuracy",
               "params", "macs", "seed", "wall_time_s"}


class Log(list):
    def __call__(self, message):
        self.append(message)


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("logs"))
    config = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", **TINY})
    log = Log()
    results = train_and_evaluate(config, logdir, log=log, verbose=0)
    return logdir, config, results, log


def test_teacher_is_trained_first_and_reused(kd_run):
    logdir, config, results, log = kd_run
    teacher_dir = run_folder_lib.run_dir(config_lib.teacher_config(config), logdir)
    assert any("training it first" in m for m in log)
    assert results["teacher_run"] == teacher_dir
    teacher_results = json.load(open(os.path.join(teacher_dir, "results.json")))
    assert teacher_results["model"] == "wrn10x1_R_g2" and teacher_results["teacher"] is None


def test_run_folder_contents(kd_run):
    logdir, config, results, _ = kd_run
    run_dir = run_folder_lib.run_dir(config, logdir)
    assert results["run_dir"] == run_dir
    assert sorted(os.listdir(run_dir)) == ["config.yaml", "history.csv", "initial.weights.h5",
                                           "model.keras", "results.json", "tensorboard"]
    # initial.weights.h5: the student before its first step (same architecture, other values).
    student = load_model(os.path.join(run_dir, "model.keras"))
    final = student.get_weights()
    student.load_weights(os.path.join(run_dir, "initial.weights.h5"))
    assert any(not np.array_equal(a, b) for a, b in zip(final, student.get_weights()))

    saved = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    assert saved.pop("run") == os.path.basename(run_dir)
    assert saved.pop("data") == config_lib.data_fingerprint(config).to_dict() == results["data"]
    assert config_lib.resolve(saved) == config

    history = read_history(os.path.join(run_dir, "history.csv"))
    assert [row["epoch"] for row in history] == [0, 1]
    for key in ("loss", "ce", "kd", "accuracy", "test_loss", "test_accuracy", "test_kd", "lr", "epoch_time_s"):
        assert all(np.isfinite(row[key]) for row in history), key
    assert not any(key.startswith("val_") for key in history[0])  # no validation split asked for
    # 2 epochs: the WRN milestones 30/60/90 of 120 scale to epochs 1 and 2.
    assert [row["lr"] for row in history] == [pytest.approx(0.1), pytest.approx(0.02)]

    stored = json.load(open(os.path.join(run_dir, "results.json")))
    assert RESULT_KEYS <= set(stored)
    assert stored["teacher"] == "wrn10x1_R_g2" and stored["epochs"] == 2 and stored["seed"] == 0
    assert stored["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"])
    assert stored["best_test_accuracy"] == pytest.approx(max(r["test_accuracy"] for r in history))
    assert "best_val_epoch" not in stored and stored["val_examples"] == 0
    expected = profile(build_model("wrn10x1_NR_g2", num_classes=100))
    assert (stored["params"], stored["macs"]) == (expected.params, expected.macs)

    events = [f for _, _, files in os.walk(os.path.join(run_dir, "tensorboard")) for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)


def test_saved_student_reproduces_the_reported_accuracy(kd_run):
    logdir, config, results, _ = kd_run
    from kdkeras.models import convert

    # The file takes raw images; its network (the front stripped) takes the pipeline's normalised ones.
    student = convert.strip_preprocessing(
        keras.saving.load_model(os.path.join(results["run_dir"], "model.keras"), safe_mode=True))
    assert student.name == "wrn10x1_NR_g2"
    _, test_ds, _ = make_datasets("synthetic", batch_size=64, train_size=256, test_size=128, seed=0)
    correct = total = 0
    for images, labels in test_ds:
        predictions = np.argmax(student(images, training=False), axis=-1)
        correct += int((predictions == labels.numpy()).sum())
        total += len(labels)
    assert total == 128
    # Keras's plain layers here, kdkeras's in the run: the same float32 sums in other orders (on some CPUs),
    # which can flip an argmax near a tie: one example at most.
    assert abs(correct - round(results["test_accuracy"] * total)) <= 1


def test_repeating_a_finished_run_trains_nothing(kd_run):
    logdir, config, results, _ = kd_run
    model_file = os.path.join(results["run_dir"], "model.keras")
    before = os.stat(model_file).st_mtime_ns
    log = Log()
    again = train_and_evaluate(config, logdir, log=log, verbose=0)
    assert again == results
    assert len(log) == 1 and "already finished" in log[0]
    assert os.stat(model_file).st_mtime_ns == before


def test_interrupted_run_resumes_from_its_last_finished_epoch(tmp_path):
    config = config_lib.resolve({"model": "wrn10x1_R_g2", **TINY, "epochs": 3})
    run_dir = run_folder_lib.run_dir(config, str(tmp_path))
    with pytest.raises(Interrupt):
        train_and_evaluate(config, str(tmp_path), callbacks=[stop_after(1)], verbose=0)
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    assert [r["epoch"] for r in read_history(os.path.join(run_dir, "history.csv"))] == [0, 1]
    first_two = read_history(os.path.join(run_dir, "history.csv"))

    log = Log()
    results = train_and_evaluate(config, str(tmp_path), log=log, verbose=0)
    assert any("Resuming" in m and "epoch 3/3" in m for m in log)
    history = read_history(os.path.join(run_dir, "history.csv"))
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert history[:2] == first_two  # finished epochs are kept, not retrained
    assert results["epochs"] == 3 and not os.path.exists(os.path.join(run_dir, "backup"))


def test_tfds_path_offline_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    config = config_lib.resolve({"model": "wrn10x1_R_g2", "dataset": "cifar100", "epochs": 1,
                                 "batch_size": 32})
    with tfds.testing.mock_data(num_examples=64):
        results = train_and_evaluate(config, str(tmp_path), verbose=0)
    assert results["train_examples"] == 64 and results["dataset"] == "cifar100"


def test_archive_path_and_teacher_file_checks(tmp_path, kd_run):
    from cifar_archives import CIFAR10, write_cifar

    archive, _, _ = write_cifar(str(tmp_path), CIFAR10, n_train=60, n_test=20)
    base = {"dataset": "cifar10", "archive": archive, "epochs": 1, "batch_size": 32}
    results = train_and_evaluate(config_lib.resolve({"model": "wrn10x1_R_g2", **base}),
                                 str(tmp_path / "logs"), verbose=0)
    assert (results["train_examples"], results["test_examples"]) == (60, 20)
    ten_class_teacher = os.path.join(results["run_dir"], "model.keras")

    # A teacher file works as teacher ...
    kd = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": ten_class_teacher, **base})
    assert train_and_evaluate(kd, str(tmp_path / "logs"), verbose=0)["teacher_run"] == ten_class_teacher

    # ... but one trained on other data is refused, and with that check off (distilling across data on
    # purpose) one with 100 outputs still does not fit a 10-class dataset.
    hundred = os.path.join(kd_run[2]["teacher_run"], "model.keras")
    other_data = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": hundred, **base})
    with pytest.raises(ValueError, match="was trained on synthetic data .* but this run reads cifar10 data"):
        train_and_evaluate(other_data, str(tmp_path / "logs"), verbose=0)
    with pytest.raises(ValueError, match="has 100 outputs, but dataset cifar10 has 10 classes"):
        train_and_evaluate(other_data, str(tmp_path / "logs"), verbose=0, teacher_data_check=False)

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="Cannot load teacher file"):
        train_and_evaluate(config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": str(corrupt), **base}),
                           str(tmp_path / "logs"), verbose=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_and_evaluate(config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": str(tmp_path / "no.keras"),
                                               **base}), str(tmp_path / "logs"), verbose=0)


def test_unwritable_logdir_is_reported_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = config_lib.resolve({"model": "wrn10x1_R_g2", **TINY})
    with pytest.raises(PermissionError, match="Cannot create --logdir"):
        train_and_evaluate(config, str(blocker / "logs"), verbose=0)


def test_diverging_run_stops_with_epoch_and_step_and_keeps_the_last_good_epoch(tmp_path):
    # Two good epochs at a normal rate, then one at an absurd rate from a resumed run.
    base = {"model": "wrn10x1_R_g2", **TINY, "epochs": 3, "lr_schedule": "step",
            "lr_milestones": [2], "lr_gamma": 1e30}
    config = config_lib.resolve(base)
    with pytest.raises(FloatingPointError, match=r"at epoch 3, step \d+"):
        train_and_evaluate(config, str(tmp_path), verbose=0)
    run_dir = run_folder_lib.run_dir(config, str(tmp_path))
    history = read_history(os.path.join(run_dir, "history.csv"))
    assert [r["epoch"] for r in history] == [0, 1]
    meta = json.load(open(os.path.join(run_dir, "backup", "training_metadata.json")))
    assert meta["epoch"] == 2  # the backup holds the end of the last good epoch
    assert not os.path.exists(os.path.join(run_dir, "results.json"))


def test_mixed_precision_run_keeps_a_float32_kd_loss(tmp_path):
    from kdkeras import host

    if not host.float16_kernels():
        pytest.skip("this process has no float16 CPU kernels (oneDNN without AVX512-FP16): "
                    "tests/test_onednn.py trains in mixed precision with TensorFlow's own kernels instead")
    config = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", **TINY,
                                 "epochs": 1, "mixed_precision": True})
    policy = keras.mixed_precision.global_policy().name
    try:
        results = train_and_evaluate(config, str(tmp_path), verbose=0)
    finally:
        keras.mixed_precision.set_global_policy(policy)  # the run set mixed_float16 for the whole process
    history = read_history(os.path.join(results["run_dir"], "history.csv"))
    assert all(np.isfinite(history[0][k]) for k in ("loss", "ce", "kd", "test_loss"))
    from kdkeras.models import convert

    student = convert.strip_preprocessing(
        keras.saving.load_model(os.path.join(results["run_dir"], "model.keras"), safe_mode=True))
    assert student.get_layer("stage1_block1_unit1_gconv").dtype_policy.name == "mixed_float16"
    # The test KD term of the last epoch, recomputed in NumPy (float64) from the two networks' float16 logits:
    # the loss reads low-precision logits in float32, so it matches to float32 rounding (1e-4 relative; a loss
    # computed in float16 would be ~1e-3 off). That needs the run's own float16 logits: kdkeras's layers (Keras's
    # grouped path sums in another order on some CPUs) in compiled graphs like the run's evaluation, where oneDNN
    # fuses ops that eager float16 ops round in between (eager: logits 5e-4 of their scale apart, the KD 9e-5).
    student = load_model(os.path.join(results["run_dir"], "model.keras"))
    teacher = load_model(os.path.join(results["teacher_run"], "model.keras"))
    _, test_ds, _ = make_datasets("synthetic", batch_size=64, train_size=256, test_size=128, seed=0)
    per_example = []
    for images, _ in test_ds:
        s_logits, t_logits = (m.predict(images, batch_size=len(images), verbose=0) for m in (student, teacher))
        assert keras.backend.standardize_dtype(s_logits.dtype) == "float16"
        s64, t64 = (np.asarray(z, np.float64) / config.temperature for z in (s_logits, t_logits))
        log_s = s64 - np.log(np.exp(s64 - s64.max(-1, keepdims=True)).sum(-1, keepdims=True)) - s64.max(-1, keepdims=True)
        log_t = t64 - np.log(np.exp(t64 - t64.max(-1, keepdims=True)).sum(-1, keepdims=True)) - t64.max(-1, keepdims=True)
        per_example.append(config.temperature ** 2 * (np.exp(log_t) * (log_t - log_s)).sum(-1))
    assert history[-1]["test_kd"] == pytest.approx(np.concatenate(per_example).mean(), rel=1e-4)


def test_explicit_milestones_are_kept_and_followed(tmp_path):
    config = config_lib.resolve({"model": "wrn10x1_R_g2", **TINY, "epochs": 3, "lr_milestones": [2]})
    log = Log()
    results = train_and_evaluate(config, str(tmp_path), log=log, verbose=0)
    assert any("Learning rate: step: lr 0.1, x0.2 at epochs 2 of 3" in m for m in log)
    saved = yaml.safe_load(open(os.path.join(results["run_dir"], "config.yaml")))
    assert saved["lr_milestones"] == [2] and results["lr_milestones"] == [2]
    history = read_history(os.path.join(results["run_dir"], "history.csv"))
    assert [row["lr"] for row in history] == [pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.02)]


def test_precise_bn_over_augmented_batches_is_kept_and_the_same_after_a_resume(tmp_path):
    """``precise_bn_augment``: the saved statistics are the population statistics of the fixed augmented draw,
    not of the unaugmented images, and an interrupted run ends with the ones an uninterrupted run has."""
    from kdkeras import batchnorm
    from kdkeras.training import make_run_data

    settings = {"model": "wrn10x1_R_g2", **TINY, "pad_mode": "zeros", "precise_bn": 2}
    config = config_lib.resolve({**settings, "precise_bn_augment": True, "precise_bn_every_epoch": True})
    assert config_lib.run_name(config) != config_lib.run_name(config_lib.resolve(settings))
    with pytest.raises(ValueError, match="precise_bn_augment needs precise_bn=N"):
        config_lib.resolve({"model": "wrn10x1_R_g2", "precise_bn_augment": True})
    whole = train_and_evaluate(config, str(tmp_path / "whole"), verbose=0)
    with pytest.raises(Interrupt):
        train_and_evaluate(config, str(tmp_path / "resumed"), callbacks=[stop_after(0)], verbose=0)
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"), verbose=0)
    assert whole["precise_bn_augment"] is True
    assert resumed["test_accuracy_precise_bn"] == whole["test_accuracy_precise_bn"]
    models = [load_model(os.path.join(r["run_dir"], "model.keras")) for r in (whole, resumed)]
    for a, b in zip(*(batchnorm.get_statistics(m) for m in models), strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    data = make_run_data(config)
    augmented = batchnorm.population_statistics(models[0], data.train_augmented, 2)
    plain = batchnorm.population_statistics(models[0], data.train_plain, 2)
    for (mean, var), (plain_mean, _), bn in zip(augmented, plain, batchnorm.batchnorm_layers(models[0])):
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    assert not np.allclose(augmented[0][0], plain[0][0], rtol=1e-3, atol=1e-4)  # the crops moved them
    history = read_history(os.path.join(whole["run_dir"], "history.csv"))
    assert history[-1]["test_accuracy_precise_bn"] == pytest.approx(whole["test_accuracy_precise_bn"], abs=1e-6)
