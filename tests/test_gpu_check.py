"""The GPU check (`kdkeras bench --gpu`): its CPU smoke end to end, its budget, its projections; no host stalls.

The smoke runs the command as a user would, on CPU: every kind of case once
on a tiny network (the pipeline, train and distill with their variants,
MirroredStrategy, 1 against 2 processes on one device, steps_per_execution,
inference), and checks the record and the report it writes. The rest runs
in this process on fixed numbers: the budget, the GPU-hour arithmetic, the
GPU default of steps_per_execution, the GPU memory setting, and which
callbacks make `fit` read every step's logs on the host.
"""

import json
import math

import keras
import numpy as np
import pytest

from helpers import run_script

from kdkeras import gpu_check, host, runtime
from kdkeras.errors import UsageError
from kdkeras.gpu_check import cases as cases_lib
from kdkeras.gpu_check import projection, report


# --------------------------------------------------------------------------
# The CPU smoke, end to end
# --------------------------------------------------------------------------


def test_cpu_smoke_measures_every_kind_of_case_and_writes_its_record_and_report(tmp_path):
    output = tmp_path / "check.json"
    result = run_script("bench.py", "--cpu_smoke", f"--output={output}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    assert record["kind"] == "kdkeras gpu check" and record["smoke"] and record["complete"]
    keys = [r["key"] for r in record["results"]]
    assert keys == [c.key for c in cases_lib.smoke_suite(2)]
    assert all(r["status"] == "measured" for r in record["results"]), [(r["key"], r.get("error"))
                                                                        for r in record["results"]]
    by_section = {}
    for r in record["results"]:
        by_section.setdefault(r["section"], []).append(r)
        for variant in r["variants"].values():
            assert variant["images_per_sec"] > 0
    reference = next(r for r in by_section["reference"] if r["kind"] == "train")
    assert set(reference["variants"]) == {"step", "host_sync", "fed"}
    # The run pipeline's own callbacks, as a run builds them: the ones that would read every step's logs.
    assert isinstance(reference["run_callbacks_host_syncing"], list)
    assert by_section["strategy"][0]["strategy"] == "mirrored"
    assert by_section["steps_per_execution"][0]["steps_per_execution"] == 2
    concurrent = by_section["concurrent"][0]
    assert set(concurrent["variants"]) == {"1 run", "2 runs"} and len(concurrent["variants"]["2 runs"]["per_run"]) == 2
    assert concurrent["speedup"] > 0
    if not record["gpu"]:
        assert all(r["peak_gpu_mib"] is None for r in record["results"] if r["kind"] != "concurrent")
    # Table 3's projection from the smoke's rates (meaningless numbers, the real arithmetic).
    table3 = record["projections"]["tables"]["3"]
    assert table3["net"] == "wrn22x2" and table3["fastest"] == "fp32" and table3["hours"]["fp32"] > 0
    text = (tmp_path / "check.md").read_text()
    for heading in ("## Images per second", "## Is the GPU fed?", "## A host read per step",
                    "## Several runs on one device", "## Projected GPU-hours"):
        assert heading in text
    assert "CPU smoke" in text
    assert result.stdout.rstrip().splitlines()[-1] == f"Wrote {output} and {tmp_path / 'check.md'}"


# --------------------------------------------------------------------------
# The check's loop: budget, failures, a record after every case
# --------------------------------------------------------------------------


def _fake_measure(seen, output):
    def measure(case, steps):
        seen.append(case.key)
        if len(seen) > 1:  # the record of the cases before is on disk already
            assert len(json.loads(output.read_text())["results"]) == len(seen) - 1
        if case.key == "boom":
            raise RuntimeError("out of memory")
        return {"variants": {"step": {"images_per_sec": 1000.0, "step_ms": 128.0, "runs": [1000.0]}},
                "peak_gpu_mib": None, "build_s": 0.0}
    return measure


def test_cases_that_do_not_fit_the_budget_are_skipped_and_a_failure_is_recorded(tmp_path):
    cases = [cases_lib.Case("a", "pipeline", "data"), cases_lib.Case("boom", "reference", "train", "wrn10x1_R_g2"),
             cases_lib.Case("c", "reference", "train", "wrn10x1_R_g2", jit_compile=True)]
    output, seen = tmp_path / "r.json", []
    # 10 s (data) fits a 40 s budget, then 20 s (train) fits, then 20 + 30 s (train with XLA) does not.
    record = gpu_check.run_check(str(output), budget_s=40, cases=cases, measure_fn=_fake_measure(seen, output),
                                 steps=gpu_check.SMOKE_STEPS, log=lambda *_: None)
    assert seen == ["a", "boom"]
    assert [r["status"] for r in record["results"]] == ["measured", "failed", "skipped"]
    assert record["results"][1]["error"] == "RuntimeError: out of memory"
    assert record["results"][2]["error"].startswith("time budget")
    on_disk = json.loads(output.read_text())
    assert on_disk["complete"] and [r["key"] for r in on_disk["results"]] == ["a", "boom", "c"]
    assert "## Not measured" in (tmp_path / "r.md").read_text()


def test_the_full_suite_asks_each_question_before_the_tables_and_prices_every_table():
    suite = cases_lib.full_suite(4)
    keys = [c.key for c in suite]
    assert len(set(keys)) == len(keys)
    sections = [c.section for c in suite]
    assert set(sections) == set(cases_lib.SECTIONS)
    assert sorted(dict.fromkeys(sections), key=cases_lib.SECTIONS.index) == list(dict.fromkeys(sections))
    first_table = sections.index("tables")
    for question in ("pipeline", "reference", "precision", "strategy", "concurrent", "steps_per_execution"):
        assert question in sections[:first_table], question
    priced = {(c.table, c.kind) for c in suite if c.table is not None and c.setting == "fp32"}
    assert priced == {(t, k) for t in cases_lib.TABLES for k in ("train", "distill")}
    assert {c.precision + ("+xla" if c.jit_compile else "") for c in suite if c.section == "precision"} == {
        "mixed_float16", "fp32+xla", "mixed_float16+xla"}
    spe = next(c for c in suite if c.section == "steps_per_execution")
    assert spe.steps_per_execution == 23  # the GPU default for CIFAR-100 at batch 128 (391 steps = 17 x 23)
    assert [c.model for c in suite if c.section == "zoo" and c.kind == "distill"] == ["resnet20", "resnet32",
                                                                                      "resnet8x4", "wrn_16_2"]


# --------------------------------------------------------------------------
# GPU-hours
# --------------------------------------------------------------------------


def _measured(table, kind, rate, precision="fp32", xla=False):
    model = {"train": "x_R_g2", "distill": "x_NR_g2"}[kind]
    return {"status": "measured", "table": table, "kind": kind, "model": model, "precision": precision,
            "jit_compile": xla, "strategy": "none", "steps_per_execution": 1,
            "variants": {"step": {"images_per_sec": rate}}}


def test_projection_is_runs_times_epochs_times_images_over_the_measured_rate():
    plans = {t: projection.table_plan(t) for t in (2, 3)}
    # The grids' plans: 17 hard-target and 36 KD runs of 120 epochs; MobileNetV2's KD students 300 epochs.
    assert plans[3]["runs"] == {"baseline": 17, "kd": 36}
    assert plans[3]["epochs"] == {"baseline": 17 * 120, "kd": 36 * 120}
    assert plans[2]["epochs"] == {"baseline": 17 * 120, "kd": 36 * 300}
    results = [_measured(3, "train", 2000.0), _measured(3, "distill", 1000.0),
               _measured(3, "train", 4000.0, "mixed_float16"), _measured(3, "distill", 2500.0, "mixed_float16"),
               _measured(2, "train", 1000.0)]  # Table 2 lacks its KD rate: not priced
    out = projection.project(results, plans)
    expected = (17 * 120 * 50_000 / 2000.0 + 36 * 120 * 50_000 / 1000.0) / 3600
    assert math.isclose(out["tables"][3]["hours"]["fp32"], expected, abs_tol=0.01)
    assert out["tables"][3]["fastest"] == "mixed_float16"
    assert out["tables"][2]["hours"] == {} and out["tables"][2]["fastest"] is None
    assert out["paper"]["hours"] == {} and out["paper"]["fastest_hours"] is None  # not every table measured
    text = report.render({"steps": {"warmup": 5, "steps": 50, "repeats": 3}, "results": [], "projections": out})
    assert "| 2 | mobilenetv2 | 53 | not measured | n/a |" in text


# --------------------------------------------------------------------------
# steps_per_execution, GPU memory
# --------------------------------------------------------------------------


def test_steps_per_execution_default_is_one_on_cpu_and_a_divisor_of_the_epoch_on_gpu():
    assert runtime.steps_per_execution(None, 391, gpu=False) == 1
    assert runtime.steps_per_execution(None, 391, gpu=True) == 23  # CIFAR at batch 128
    assert runtime.steps_per_execution(None, 782, gpu=True) == 23  # at batch 64 (2 x 17 x 23)
    assert runtime.steps_per_execution(None, 1024, gpu=True) == 32
    assert runtime.steps_per_execution(None, 7, gpu=True) == 7
    assert runtime.steps_per_execution(17, 391) == 17
    with pytest.raises(UsageError, match=r"must divide the 391 training steps .* Received: 8\. Values that divide "
                                         r"it: 1, 17, 23\."):
        runtime.steps_per_execution(8, 391)


def test_keras_runs_whole_calls_across_an_epochs_end():
    """Why steps_per_execution must divide the epoch: 3 steps per epoch, 2 per call, 4 steps in the first epoch."""
    import tensorflow as tf

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    seen = []

    class Steps(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    data = tf.data.Dataset.from_tensors((tf.zeros((1, 1)), tf.zeros((1, 1)))).repeat()
    model.fit(data, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False, callbacks=[Steps()])
    assert seen == [4, 8]  # not [3, 6]: every epoch after the first starts a step late


def test_gpu_memory_setting(monkeypatch):
    assert host.gpu_memory_setting("growth") == "growth"
    assert host.gpu_memory_setting(" 8000 ") == 8000
    assert host.gpu_memory_setting("") is None
    with pytest.raises(UsageError, match=r"KDKERAS_GPU_MEMORY must be 'growth' or a positive number of MiB\. "
                                         r"Received: '8G'\."):
        host.gpu_memory_setting("8G")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv(host.GPU_MEMORY_VARIABLE, "growth")
    assert host.gpu_assignment() == "GPU 3 (CUDA_VISIBLE_DEVICES=3), GPU memory: growth"


# --------------------------------------------------------------------------
# No host stalls
# --------------------------------------------------------------------------


def test_the_runs_own_callbacks_leave_the_training_loop_alone(tmp_path):
    from kdkeras import config as config_lib
    from kdkeras.callbacks import BackupAndRestore, TensorBoard, host_syncing_callbacks
    from kdkeras.training import make_run_data, training_callbacks

    config = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", "dataset": "synthetic",
                                 "train_size": 32, "test_size": 32, "batch_size": 32, "kd_epochs": 1,
                                 "precise_bn": 2, "precise_bn_every_epoch": True})
    callbacks = training_callbacks(config, make_run_data(config))
    assert host_syncing_callbacks(callbacks) == []
    assert host_syncing_callbacks([BackupAndRestore(str(tmp_path / "b")), TensorBoard(str(tmp_path / "t"))]) == []
    # Keras's own, or a per-step setting, would read every step's logs on the host.
    assert host_syncing_callbacks([keras.callbacks.BackupAndRestore(str(tmp_path / "k")),
                                   BackupAndRestore(str(tmp_path / "s"), save_freq=5),
                                   TensorBoard(str(tmp_path / "u"), update_freq="batch")]) == [
        "BackupAndRestore", "BackupAndRestore", "TensorBoard"]


def test_a_non_finite_loss_stops_training_at_its_step_when_checked_off_the_training_loop():
    from kdkeras.callbacks import StopOnNonFiniteLoss

    x = np.ones((48, 4), "float32")
    x[24:] = np.nan  # batches 3 to 5 of 8 examples (0-based) are NaN
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    stop = StopOnNonFiniteLoss()
    with pytest.raises(FloatingPointError, match=r"The loss became nan at epoch 1, step 4;"):
        model.fit(x, np.zeros((48, 1), "float32"), batch_size=8, epochs=2, shuffle=False, verbose=0,
                  callbacks=[stop])
    assert stop.bad[0] == 3  # the first bad batch, whatever order the worker threads reported in
