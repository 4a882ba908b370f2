"""Every registered method, through the registry's one declaration: flags, docs, a run, checkpoints.

These tests take their list from ``kdkeras.list_methods()``, so a new method
file is covered without editing them.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kdkeras
from kdkeras import config as config_lib
from kdkeras import methods
from kdkeras.distiller import Distiller, method_distiller
from kdkeras.errors import UsageError
from kdkeras.models import build_model
from tests.helpers import run_command

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = methods.list_methods()
#: The methods the paper, the ablation and the field's comparisons need (docs/methods.md).
REQUIRED = ("kd", "dkd", "fitnets", "at")


def test_the_registry_lists_every_method_once_with_kd_first():
    assert METHODS[:4] == list(REQUIRED)
    assert kdkeras.methods.list_methods() == METHODS and len(set(METHODS)) == len(METHODS)
    assert all(methods.get(name).method == name for name in METHODS)
    with pytest.raises(UsageError, match="Unknown method 'bogus'. Valid choices: kd, dkd"):
        methods.get("bogus")


@pytest.mark.parametrize("name", METHODS)
def test_a_method_declares_its_paper_reads_and_settings(name):
    method_class = methods.get(name)
    assert method_class.paper and method_class.reads and method_class.__doc__
    assert method_class.__module__ == f"kdkeras.methods.{name}", "one file per method, named after it"
    for item in methods.settings_of(name):
        assert item.help and item.source, f"{item.flag}: help and source are declared"
        assert item.check(item.default) == item.default, f"{item.flag}: its default is valid"
        assert item.flag in config_lib.FIELDS and item.flag in config_lib.KD_FIELDS
    # The method builds from its default settings.
    term = method_class.from_settings(method_class.Settings(), temperature=4.0)
    assert isinstance(term, methods.Method)


def test_docs_methods_md_holds_the_generated_table():
    text = open(os.path.join(ROOT, "docs", "methods.md")).read()
    assert methods.docs_table() in text, ('docs/methods.md: paste the output of python -c "import kdkeras.methods '
                                          'as m; print(m.docs_table())"')


def test_a_setting_of_a_method_not_chosen_is_a_one_line_error():
    with pytest.raises(UsageError, match="dkd_beta is a setting of method=dkd"):
        methods.check_run_settings("at", {"dkd_beta": 6.0})
    methods.check_run_settings("dkd+at", {"dkd_beta": 6.0, "at_weight": 500.0})
    with pytest.raises(UsageError, match="dkd_beta must be a number >= 0"):
        methods.check_run_settings("dkd", {"dkd_beta": -1.0})
    with pytest.raises(UsageError, match="names a method twice"):
        methods.parse("at+at")


def test_a_single_methods_weight_flag_is_its_method_weight():
    base = {"model": "wrn16x1_NR_g2", "teacher": "wrn16x1_R_g2", "dataset": "synthetic", "method": "at"}
    one = config_lib.resolve({**base, "at_weight": 500.0})
    other = config_lib.resolve({**base, "method_weight": 500.0})
    assert one.method_weight == 500.0 and one.at_weight is None
    assert config_lib.run_name(one) == config_lib.run_name(other)
    with pytest.raises(UsageError, match="method_weight and at_weight both"):
        config_lib.resolve({**base, "at_weight": 1.0, "method_weight": 2.0})
    with pytest.raises(UsageError, match="method_weight is the weight of a single method"):
        config_lib.resolve({**base, "method": "kd+at", "method_weight": 2.0})


def test_kd_plus_a_method_weights_kd_by_alpha_and_the_other_by_its_weight():
    student, teacher = _pair()
    distiller = method_distiller(student, teacher, "kd+at", alpha=0.8, at_weight=500.0)
    assert distiller.coupled and [t.method for t in distiller.distillation_losses] == ["kd", "at"]
    assert distiller.term_weights == [500.0]
    distiller.compile(optimizer="sgd")
    x, y = _data(8)
    logs = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    # float32 evaluate against a float64 sum of the logged float32 parts: ~1e-7 relative; 1e-5.
    np.testing.assert_allclose(logs["loss"], 0.2 * logs["ce"] + 0.8 * logs["kd"] + 500.0 * logs["at"], rtol=1e-5)


def _pair(classes=10):
    keras.utils.set_random_seed(0)
    student = build_model("wrn10x1_NR_g2", num_classes=classes, input_shape=(32, 32, 3))
    teacher = build_model("wrn10x1_R_g2", num_classes=classes, input_shape=(32, 32, 3))
    return student, teacher


def _data(n, classes=10):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 32, 32, 3)).astype("float32"), rng.integers(0, classes, n)


@pytest.mark.parametrize("name", METHODS)
def test_a_method_trains_checkpoints_its_parts_and_stays_out_of_the_student_file(name, tmp_path):
    student, teacher = _pair()
    distiller = method_distiller(student, teacher, name)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    x, y = _data(16)
    for term in distiller.distillation_losses:  # per-example state (memory banks) sized to the data
        if term.needs_data_size:
            term.set_data_size(16)
    inputs = (x, np.arange(16)) if any(t.needs_indices for t in distiller.distillation_losses) else x
    history = distiller.fit(inputs, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and name.split("+")[-1] in history
    # The method's parts and state are in the distiller's weights, and come back.
    parts = [v for term in distiller.distillation_losses for v in term.variables]
    before = [np.array(v) for v in parts]
    weights = str(tmp_path / "d.weights.h5")
    distiller.save_weights(weights)
    for v in parts:
        v.assign(np.zeros(v.shape, v.dtype) + 7)
    distiller.load_weights(weights)
    for v, value in zip(parts, before):
        np.testing.assert_array_equal(np.array(v), value)
    # ... and never in the student's .keras file.
    path = str(tmp_path / "student.keras")
    distiller.save_student(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert len(loaded.weights) == len(student.weights)


def _teacher_file(tmp_path):
    from kdkeras.models.convert import save_model

    path = str(tmp_path / "teacher.keras")
    save_model(build_model("wrn10x1_R_g2", num_classes=100, input_shape=(32, 32, 3)), path)
    return path


def _distill(tmp_path, method):
    args = [sys.executable, os.path.join(ROOT, "scripts", "distill.py"), "--student=wrn10x1_NR_g2",
            f"--teacher={_teacher_file(tmp_path)}", "--dataset=synthetic", "--epochs=1", "--train_size=32",
            "--test_size=16", "--batch_size=16", f"--method={method}", f"--logdir={tmp_path / 'logs'}"]
    return run_command(args, timeout=600)


def test_a_combination_of_methods_runs_through_distill_py(tmp_path):
    done = _distill(tmp_path, "kd+dkd+at")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Finished" in done.stdout


@pytest.mark.slow
def test_each_method_runs_through_distill_py(tmp_path):
    """distill.py's command, with its flags, trains and evaluates a student with each method alone.

    One process runs them all (tests/methods/distill_each.py): the same flags and ``main`` as
    ``scripts/distill.py --method=<name>``, one TensorFlow start instead of fifteen.
    """
    logdir = tmp_path / "logs"
    done = subprocess.run([sys.executable, os.path.join(HERE, "distill_each.py"), str(logdir),
                           _teacher_file(tmp_path), *METHODS], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("ok ")] == [f"ok {m}" for m in METHODS]
    for name in METHODS:
        [run] = [d for d in os.listdir(logdir / name / "synthetic") if "_from_" in d]
        header = open(logdir / name / "synthetic" / run / "history.csv").readline().split(",")
        assert name in header and "ce" in header


def test_an_unknown_method_flag_value_is_one_line(tmp_path):
    done = _distill(tmp_path, "bogus")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("distill.py: error: Unknown method 'bogus'.")


def test_every_settings_field_is_a_dataclass_field_of_run_config():
    names = {f.name for f in dataclasses.fields(config_lib.RunConfig)}
    assert {s.flag for s in methods.all_settings()} <= names


def test_method_settings_are_hparams_columns_of_one_type():
    from kdkeras import hparams

    base = {"model": "wrn16x1_NR_g2", "teacher": "wrn16x1_R_g2", "dataset": "synthetic"}
    settings = hparams.run_settings(config_lib.resolve({**base, "method": "dkd+at", "at_weight": 5, "dkd_warmup": 3,
                                                        "at_taps": ["stage2", "stage3"]}))
    assert settings["method"] == "dkd+at" and settings["dkd_warmup"] == 3
    assert isinstance(settings["at_weight"], float) and settings["at_taps"] == "stage2,stage3"
