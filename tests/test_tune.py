"""KD hyper-parameter search: the hypermodel, resumable searches and scripts/tune.py."""

import json
import os

import keras
import keras_tuner
import numpy as np
import pytest
import helpers

from kdkeras import config as config_lib
from kdkeras import tuning
from kdkeras.distiller import Distiller
from kdkeras.models.registry import build_model

pytestmark = pytest.mark.slow  # searches of tiny trials

TINY = {"dataset": "synthetic", "epochs": 1, "train_size": 128, "test_size": 64, "batch_size": 64}
STUDENT, TEACHER = "wrn10x1_NR_g2", "wrn10x1_R_g2"


class Log(list):
    def __call__(self, message):
        self.append(message)


class FitCounter(keras.callbacks.Callback):
    """Counts `fit` calls; a class attribute, as KerasTuner deep-copies callbacks."""

    starts = []

    def on_train_begin(self, logs=None):
        FitCounter.starts.append(self.model.temperature)


class InterruptAfterFirstStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt


def kd_config(**overrides):
    return config_lib.resolve({"model": STUDENT, "teacher": TEACHER, **TINY, **overrides})


def run_tune(config, logdir, **kwargs):
    FitCounter.starts.clear()
    log = Log()
    results = tuning.tune(config, logdir, callbacks=[FitCounter(), *kwargs.pop("callbacks", ())], log=log,
                          verbose=0, **kwargs)
    return results, log, list(FitCounter.starts)


def trial_mtimes(folder):
    return {name: os.stat(os.path.join(folder, name, "trial.json")).st_mtime_ns
            for name in os.listdir(folder) if name.startswith("trial_")}


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("logs"))
    config = kd_config()
    results, log, fits = run_tune(config, logdir, max_trials=2)
    return logdir, config, results, log, fits


def test_build_gives_a_compiled_distiller_with_the_trial_values():
    config = tuning.search_config(kd_config(lr_milestones=[1], lr_gamma=0.5))
    assert config.val_size == 13  # 10% of the 128 training images
    teacher = build_model(TEACHER, num_classes=100)
    hypermodel = tuning.KDHyperModel(config, teacher)  # 2 steps per epoch: 128 images, batch 64
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update(temperature=7.5, alpha=0.25, lr=0.05)

    model = hypermodel.build(hp)
    assert isinstance(model, Distiller)
    assert model.temperature == 7.5 and model.alpha == pytest.approx(0.25)
    assert model.teacher is teacher and not teacher.trainable
    assert model.student.name == STUDENT
    assert model.student.count_params() == build_model(STUDENT, num_classes=100).count_params()
    optimizer = model.optimizer
    assert type(optimizer).__name__ == "PyTorchSGD"
    assert (optimizer.momentum, optimizer.coupled_weight_decay) == (config.momentum, config.weight_decay)
    schedule = optimizer._learning_rate  # the recipe's schedule, started from the trial's lr
    assert float(schedule(0)) == pytest.approx(0.05)
    assert float(schedule(1)) == pytest.approx(0.05) and float(schedule(2)) == pytest.approx(0.025)

    # Trials share the student's initial weights; a second execution does not.
    again = hypermodel.build(hp)
    assert all(np.array_equal(a, b) for a, b in zip(model.student.get_weights(), again.student.get_weights()))
    hypermodel.execution = 1
    other = hypermodel.build(hp)
    hypermodel.execution = 0
    assert not np.array_equal(model.student.get_weights()[0], other.student.get_weights()[0])

    # Fixed settings are hp.Fixed, not searched.
    fixed = tuning.KDHyperModel(config, teacher, space=tuning.SearchSpace(temperature=6.0, lr=0.1))
    hp = keras_tuner.HyperParameters()
    fixed.declare_hyperparameters(hp)
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {"temperature": "Fixed", "alpha": "Float", "lr": "Fixed"}
    hp.values["alpha"] = 0.75
    model = fixed.build(hp)
    assert model.temperature == 6.0 and model.alpha == pytest.approx(0.75)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)


def test_continued_trial_starts_its_schedule_at_its_epoch():
    # Hyperband continues a trial at `initial_epoch`: the schedule must be there too.
    config = tuning.search_config(kd_config(lr_milestones=[1], lr_gamma=0.5))
    hypermodel = tuning.KDHyperModel(config, build_model(TEACHER, num_classes=100))
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update(temperature=4.0, alpha=0.9, lr=0.2)
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, epochs=2, initial_epoch=1, verbose=0)  # data: the run's
    assert int(model.optimizer.iterations) == 4  # 2 steps of epoch 2 after the 2 of epoch 1
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)
    assert len(history.history["val_accuracy"]) == 1
    with pytest.raises(ValueError, match="do not pass data"):
        hypermodel.fit(hp, model, epochs=1, validation_data=None)


def test_a_trial_needs_a_validation_split():
    with pytest.raises(ValueError, match="needs a validation split"):
        tuning.KDHyperModel(kd_config(), build_model(TEACHER, num_classes=100))
    assert tuning.with_validation(kd_config(val_size=20)).val_size == 20
    assert tuning.with_validation(kd_config(train_size=None)).val_size == 102  # 10% of synthetic's 1024


def test_search_space_and_flag_validation():
    space = tuning.SearchSpace(alpha=[0.5, 1], temperature=4)
    assert space.tuned == ("alpha", "lr")
    assert space.to_dict()["temperature"] == {"fixed": 4.0}
    assert space.to_dict()["lr"] == {"min": 0.02, "max": 0.5, "sampling": "log"}
    assert tuning.parse_range("1,20", "temperature") == (1.0, 20.0)
    assert tuning.parse_range(" 0.9 ", "alpha") == 0.9
    assert tuning.parse_range(None, "lr") == tuning.DEFAULT_RANGES["lr"]
    bad = [
        (lambda: tuning.SearchSpace(temperature=(5, 2)), "MIN < MAX"),
        (lambda: tuning.SearchSpace(lr=(0, 0.1)), "> 0"),
        (lambda: tuning.SearchSpace(alpha=(0.5, 1.5)), "in [0, 1]"),
        (lambda: tuning.SearchSpace(alpha=-0.1), "in [0, 1]"),
        (lambda: tuning.SearchSpace(temperature=4, alpha=0.9, lr=0.1), "Nothing to tune"),
        (lambda: tuning.parse_range("1,2,3", "temperature"), "--temperature_range must be MIN,MAX"),
        (lambda: tuning.parse_range("a,b", "lr"), "--lr_range must be MIN,MAX"),
        (lambda: tuning.parse_range("-1,2", "lr"), "--lr_range: lr range must lie > 0"),
        (lambda: tuning.check_search_settings("random", 2, 1), "Valid choices: bayesian, hyperband"),
        (lambda: tuning.check_search_settings("bayesian", 0, 1), "max_trials must be a positive integer"),
        (lambda: tuning.check_search_settings("hyperband", 3, 0), "executions_per_trial must be"),
    ]
    for make, fragment in bad:
        with pytest.raises(ValueError) as err:
            make()
        assert fragment in str(err.value) and "\n" not in str(err.value)


def test_search_folder_name(monkeypatch):
    config = kd_config()
    name = tuning.tune_name(config)
    assert name.startswith(f"{STUDENT}_from_{TEACHER}-s0-") and name.count("-") == 2
    # The tuned settings given to the config do not change the search ...
    assert tuning.tune_name(kd_config(temperature=8.0, lr=0.3)) == name
    # ... a different space, tuner, executions or recipe does.
    others = {tuning.tune_name(config, tuning.SearchSpace(alpha=(0.5, 1.0))),
              tuning.tune_name(config, tuner="hyperband"),
              tuning.tune_name(config, executions_per_trial=2),
              tuning.tune_name(kd_config(epochs=2)),
              tuning.tune_name(kd_config(seed=1))}
    assert len(others) == 5 and name not in others
    assert tuning.tune_dir(config, "L") == os.path.join("L", "synthetic", "tune", name)

    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_PORT is not"):
        tuning.distributed_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    assert tuning.distributed_role() == "chief"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner3")
    assert tuning.distributed_role() == "worker"


def test_search_trains_the_teacher_then_persists_every_trial(search):
    logdir, config, results, log, fits = search
    folder = tuning.tune_dir(config, logdir)
    assert results["tune_dir"] == folder
    assert any("training it first" in m for m in log)
    assert os.path.exists(os.path.join(results["teacher_run"], "results.json"))
    assert len(fits) == 2
    assert os.path.exists(os.path.join(folder, "oracle.json"))
    for trial_id in ("0", "1"):
        trial = json.load(open(os.path.join(folder, f"trial_{trial_id}", "trial.json")))
        assert trial["status"] == "COMPLETED"
        assert os.path.exists(os.path.join(folder, f"trial_{trial_id}", "checkpoint.weights.h5"))

    stored = json.load(open(os.path.join(folder, "best.json")))
    assert {k: v for k, v in stored.items()} == {k: v for k, v in results.items() if k != "tune_dir"}
    trials = stored["trials"]
    assert [t["trial"] for t in trials] == ["0", "1"] and stored["completed_trials"] == 2
    for row in trials:
        assert 1 <= row["temperature"] <= 20 and 0 <= row["alpha"] <= 1 and 0.02 <= row["lr"] <= 0.5
        assert 0 <= row["val_accuracy"] <= 1
    assert sorted(fits) == sorted(t["temperature"] for t in trials)  # each trial trained with its T
    best = stored["best"]
    assert best["val_accuracy"] == max(t["val_accuracy"] for t in trials)
    assert {k: v for k, v in best.items() if k != "test_accuracy"} == {
        k: v for k, v in trials[int(best["trial"])].items() if k in best}
    assert 0 <= best["test_accuracy"] <= 1 and stored["val_size"] == 13
    assert "--val_size=13" in stored["distill_command"]
    command = stored["distill_command"]
    assert f"--student={STUDENT}" in command and "--epochs=1" in command and "--train_size=128" in command
    assert f"--temperature={best['temperature']:.6g}" in command and f"--lr={best['lr']:.6g}" in command
    # distill.py --lr=X by name would look for a teacher trained with lr X: the file is passed instead.
    assert f"--teacher={os.path.join(results['teacher_run'], 'model.keras')}" in command
    assert any("val_accuracy" in m and "alpha" in m for m in log)  # the summary table


def test_each_trial_score_is_reproduced_from_its_checkpoint(search):
    """Reload every trial's kept checkpoint and evaluate it on the validation split: its stored score."""
    logdir, config, results, _, _ = search
    tuner = tuning.make_tuner(config, logdir, max_trials=2)
    scores = {}
    for row in results["trials"]:
        trial = tuner.oracle.get_trial(row["trial"])
        model = tuner.load_model(trial)  # a fresh build with the trial's values, then its checkpoint
        tuner.hypermodel.execution = 0
        val = tuner.hypermodel.data().val
        measured = model.evaluate(val, verbose=0, return_dict=True)
        # The trial's own validation pass: the same kernels, weights (a checkpoint, byte for byte) and
        # batches in this process, so the same count (abs 1e-6) and losses to float32 rounding (1e-5 relative).
        assert measured["accuracy"] == pytest.approx(row["val_accuracy"], abs=1e-6), row
        # The accuracy of 13 images after one epoch can equal an untrained model's: the
        # losses cannot. One epoch, so the kept epoch is the last one.
        for name in ("loss", "ce", "kd"):
            assert measured[name] == pytest.approx(trial.metrics.get_last_value(f"val_{name}"), rel=1e-5), name


def test_repeating_a_search_trains_nothing(search):
    logdir, config, results, _, _ = search
    folder = results["tune_dir"]
    before = trial_mtimes(folder)
    again, log, fits = run_tune(config, logdir, max_trials=2)
    assert fits == [] and trial_mtimes(folder) == before
    assert again["trials"] == results["trials"] and again["best"] == results["best"]
    assert not any("training it first" in m for m in log)


def test_raising_max_trials_adds_exactly_the_new_trials(search):
    logdir, config, results, _, _ = search
    folder = results["tune_dir"]
    before = trial_mtimes(folder)
    more, _, fits = run_tune(config, logdir, max_trials=3)
    assert len(fits) == 1
    assert [t["trial"] for t in more["trials"]] == ["0", "1", "2"]
    assert more["trials"][:2] == results["trials"]
    after = trial_mtimes(folder)
    assert {k: after[k] for k in before} == before and set(after) == set(before) | {"trial_2"}


def test_an_interrupted_trial_is_rerun_and_the_others_kept(search):
    logdir, config, _, _, _ = search
    folder = tuning.tune_dir(config, logdir)
    with pytest.raises(KeyboardInterrupt):
        run_tune(config, logdir, max_trials=4, callbacks=[InterruptAfterFirstStep()])
    interrupted = json.load(open(os.path.join(folder, "trial_3", "trial.json")))
    assert interrupted["status"] == "RUNNING"
    before = trial_mtimes(folder)
    results, _, fits = run_tune(config, logdir, max_trials=4)
    assert fits == [interrupted["hyperparameters"]["values"]["temperature"]]  # the same trial, once
    assert [t["trial"] for t in results["trials"]] == ["0", "1", "2", "3"]
    assert all(t["status"] == "COMPLETED" for t in results["trials"])
    after = trial_mtimes(folder)
    assert all(after[k] == before[k] for k in ("trial_0", "trial_1", "trial_2"))


def run_script(*args):
    return helpers.run_script("tune.py", *args)


def test_script_end_to_end_with_a_fixed_temperature(search):
    logdir, config, _, _, _ = search
    args = [f"--student={STUDENT}", f"--teacher={TEACHER}", "--dataset=synthetic", "--epochs=1",
            "--train_size=128", "--test_size=64", "--batch_size=64", "--max_trials=2",
            "--temperature_range=4", "--alpha_range=0.5,1", f"--logdir={logdir}"]
    result = run_script(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training it first" not in result.stdout  # the search fixture's teacher is reused
    space = tuning.SearchSpace(temperature=4.0, alpha=(0.5, 1.0))
    folder = tuning.tune_dir(config, logdir, space)
    assert folder != tuning.tune_dir(config, logdir)
    stored = json.load(open(os.path.join(folder, "best.json")))
    assert [t["trial"] for t in stored["trials"]] == ["0", "1"]
    assert all(t["temperature"] == 4.0 and 0.5 <= t["alpha"] <= 1 for t in stored["trials"])
    assert stored["search_space"]["temperature"] == {"fixed": 4.0}
    assert stored["distill_command"] in result.stdout and "--temperature=4 " in stored["distill_command"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--temperature_range=5,2"], "MIN < MAX"),
        (["--tuner=grid"], "Unknown tuner 'grid'"),
        (["--max_trials=0"], "max_trials must be a positive integer"),
    ],
)
def test_script_user_errors_are_one_line_with_exit_code_2(tmp_path, args, fragment):
    logdir = tmp_path / "logs"
    result = run_script(f"--student={STUDENT}", f"--teacher={TEACHER}", "--dataset=synthetic", *args,
                        f"--logdir={logdir}")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not logdir.exists()


@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # the counting test pipeline
def test_the_search_never_evaluates_the_test_split(tmp_path, monkeypatch):
    """The test split is read once, after the search, for the best trial only."""
    import dataclasses

    import tensorflow as tf

    from kdkeras import training

    reads, phase = [], ["search"]
    original = training.make_run_data

    def counted(dataset):
        batches = list(dataset.as_numpy_iterator())

        def generate():
            reads.append(phase[0])
            yield from batches

        return tf.data.Dataset.from_generator(generate, output_signature=dataset.element_spec)

    def make_run_data(config):
        splits = original(config)
        return dataclasses.replace(splits, test=counted(splits.test))

    measure = tuning.measure_test_accuracy

    def measure_after_search(search, trial_id):
        phase[0] = "after"
        return measure(search, trial_id)

    # The teacher's own baseline run reports its test accuracy (the paper's
    # protocol, no selection): trained first, before counting.
    training.ensure_teacher_run(tuning.search_config(kd_config(val_size=16)), str(tmp_path), log=Log(),
                                verbose=0)
    monkeypatch.setattr(training, "make_run_data", make_run_data)
    from kdkeras.experiments.tuning import search as search_module  # where tune() looks it up

    monkeypatch.setattr(search_module, "measure_test_accuracy", measure_after_search)
    results, _, fits = run_tune(kd_config(val_size=16), str(tmp_path), max_trials=2)
    assert len(fits) == 2 and results["completed_trials"] == 2
    assert reads == ["after"]  # one pass over the test split, after both trials
    assert results["best"]["test_accuracy"] is not None

    reads.clear()
    again, _, fits = run_tune(kd_config(val_size=16), str(tmp_path), max_trials=2)
    assert fits == [] and reads == []  # measured once: a repeated command reuses it
    assert again["best"]["test_accuracy"] == results["best"]["test_accuracy"]


def test_a_trial_trains_exactly_as_distill_py(tmp_path):
    """Same settings (--noaugment, --kd_epochs, a validation split): the same first epoch."""
    from kdkeras.callbacks import read_history

    settings = {**TINY, "epochs": 2, "val_size": 16, "augment": False, "kd_epochs": 1}
    config = kd_config(**settings)
    results, _, _ = run_tune(config, str(tmp_path), max_trials=1,
                             space=tuning.SearchSpace(temperature=3.0, alpha=0.7, lr=(0.05, 0.2)))
    folder = results["tune_dir"]
    trial = results["trials"][0]
    teacher = os.path.join(results["teacher_run"], "model.keras")
    run = helpers.run_script(
        "distill.py", f"--student={STUDENT}", f"--teacher={teacher}", "--dataset=synthetic", "--epochs=2",
        "--train_size=128", "--test_size=64", "--batch_size=64", "--val_size=16", "--noaugment", "--kd_epochs=1",
        f"--temperature={trial['temperature']!r}", f"--alpha={trial['alpha']!r}", f"--lr={trial['lr']!r}",
        f"--logdir={tmp_path / 'runs'}")
    assert run.returncode == 0, run.stderr[-3000:]
    [run_dir] = [os.path.join(root, "history.csv") for root, _, files in os.walk(tmp_path / "runs")
                 if "history.csv" in files and "_from_" in root]
    ours = read_history(os.path.join(folder, "trial_0", "history.csv"))
    theirs = read_history(run_dir)
    shared = sorted((set(ours[0]) & set(theirs[0])) - {"epoch_time_s"})
    assert {"loss", "ce", "kd", "accuracy", "val_loss", "val_accuracy", "lr", "alpha"} <= set(shared)
    assert not any(k.startswith("test_") for k in ours[0])  # a trial never sees the test split
    # Two processes with the same settings on one machine: the same kernels and batches; 1e-5 relative
    # (and 1e-6 absolute for a value near 0) admits a sum split otherwise over two epochs.
    for row in (0, 1):  # epoch 2 trains on hard targets only (--kd_epochs=1) in both
        for key in shared:
            assert ours[row][key] == pytest.approx(theirs[row][key], rel=1e-5, abs=1e-6), (row, key)
    assert ours[1]["alpha"] == 0.0


#: Runs ``scripts/tune.py`` (argv[1], its flags after it) as a worker of a distributed search whose first trial
#: waits until every worker named in $KDKERAS_TEST_WORKERS holds one (a file each in $KDKERAS_TEST_BARRIER).
_WORKER_WITH_BARRIER = r'''
import os, runpy, sys, time

from kdkeras import tuning

barrier, workers = os.environ["KDKERAS_TEST_BARRIER"], os.environ["KDKERAS_TEST_WORKERS"].split(",")
begin = tuning.KDTunerMixin.on_trial_begin


def on_trial_begin(self, trial):
    open(os.path.join(barrier, os.environ["KERASTUNER_TUNER_ID"]), "w").close()
    deadline = time.monotonic() + 600  # then train anyway: the test reports which worker ran nothing
    while not all(os.path.exists(os.path.join(barrier, w)) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    begin(self, trial)


tuning.KDTunerMixin.on_trial_begin = on_trial_begin
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def test_distributed_search_with_a_chief_and_two_workers(tmp_path):
    """KerasTuner's chief/worker mode, for real: three tune.py processes on localhost."""
    import collections
    import re
    import socket
    import subprocess
    import sys
    import time

    from kdkeras.models.convert import save_model

    pytest.importorskip("grpc", reason="KerasTuner's distributed mode needs grpcio")
    teacher = tmp_path / "teacher.keras"  # untrained: the search's machinery is under test, not its scores
    save_model(build_model(TEACHER, num_classes=100), teacher)
    logdir = tmp_path / "logs"
    max_trials = 3
    args = [f"--student={STUDENT}", f"--teacher={teacher}", "--dataset=synthetic", "--epochs=1",
            "--train_size=64", "--test_size=32", "--batch_size=32", f"--max_trials={max_trials}",
            f"--logdir={logdir}"]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    ids = ("chief", "tuner0", "tuner1")
    procs, logs = {}, {}
    # The oracle's port, from the OS and held by this test for the whole search: SO_REUSEPORT lets the chief's
    # gRPC server (which sets it too) listen on it, while no other process can take it meanwhile; this socket
    # itself never listens, so every connection goes to the chief.
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        try:
            for tuner_id in ids:
                env = helpers.script_env(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                                         KERASTUNER_ORACLE_PORT=str(port), KDKERAS_TEST_BARRIER=str(barrier),
                                         KDKERAS_TEST_WORKERS="tuner0,tuner1")
                # The workers run tune.py with their first trial held until both hold one, so that each runs
                # at least one trial however long either one's start-up takes on a loaded machine.
                command = (helpers.script_command("tune.py", *args) if tuner_id == "chief" else
                           [sys.executable, "-c", _WORKER_WITH_BARRIER, *helpers.script_command("tune.py", *args)[1:]])
                with open(tmp_path / f"{tuner_id}.log", "w") as out:
                    procs[tuner_id] = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 900  # a guard against a hang: about a minute on an idle 2-core machine
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for tuner_id in procs:
                logs[tuner_id] = (tmp_path / f"{tuner_id}.log").read_text()
    tails = "\n".join(f"--- {tuner_id} ---\n{logs[tuner_id][-3000:]}" for tuner_id in ids)
    assert {tuner_id: proc.returncode for tuner_id, proc in procs.items()} == dict.fromkeys(ids, 0), tails
    assert sorted(os.listdir(barrier)) == ["tuner0", "tuner1"]  # both workers went through the barrier

    # Every trial ran on exactly one worker, and each worker ran at least one (each held its first trial until
    # the other held one too).
    ran = {tuner_id: re.findall(rf"^Worker {tuner_id} runs trial (\w+):", logs[tuner_id], re.M)
           for tuner_id in ids}
    assert ran["chief"] == [] and "this process is the chief" in logs["chief"]
    counts = collections.Counter(ran["tuner0"] + ran["tuner1"])
    assert sorted(counts) == [str(i) for i in range(max_trials)] and set(counts.values()) == {1}, ran
    assert ran["tuner0"] and ran["tuner1"], ran

    folder = tuning.tune_dir(kd_config(teacher=str(teacher), train_size=64, test_size=32, batch_size=32),
                             str(logdir))
    names = set(os.listdir(folder))
    assert {f"trial_{i}" for i in range(max_trials)} == {n for n in names if n.startswith("trial_")}
    assert {"oracle.json", "chief.json", "tuner0.json", "tuner1.json"} <= names
    oracle = json.load(open(os.path.join(folder, "oracle.json")))  # the chief's final state
    # No trial left "ongoing" (a restarted chief would run it again), none retried.
    assert sorted(oracle["end_order"]) == sorted(counts) and oracle["ongoing_trials"] == {}
    assert oracle["retry_queue"] == [] and set(oracle["run_times"].values()) == {1}
    for trial_id in counts:
        trial = json.load(open(os.path.join(folder, f"trial_{trial_id}", "trial.json")))
        assert trial["status"] == "COMPLETED" and 0 <= trial["score"] <= 1
        assert os.path.exists(os.path.join(folder, f"trial_{trial_id}", "checkpoint.weights.h5"))

    # The chief alone writes the results, once the workers are done.
    written = [os.path.join(root, name) for root, _, files in os.walk(tmp_path) for name in files
               if name == tuning.BEST_FILE]
    assert written == [os.path.join(folder, tuning.BEST_FILE)]
    stored = json.load(open(written[0]))
    assert stored["max_trials"] == max_trials and stored["completed_trials"] == max_trials
    assert sorted(row["trial"] for row in stored["trials"]) == sorted(counts)
    assert all(row["status"] == "COMPLETED" for row in stored["trials"])
    assert stored["best"]["trial"] in counts and 0 <= stored["best"]["test_accuracy"] <= 1
    assert logs["chief"].count(stored["distill_command"]) == 1  # the summary
    for worker in ("tuner0", "tuner1"):
        assert stored["distill_command"] not in logs[worker] and "the chief writes" in logs[worker]


def test_the_reproduce_command_passes_teacher_epochs_only_with_a_teacher_by_name():
    """A tuned lr names the teacher by its model file, which is that teacher already trained: no --teacher_epochs."""
    from kdkeras.experiments.tuning.results import distill_command

    config = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", "dataset": "synthetic",
                                 "epochs": 2, "teacher_epochs": 4, "val_size": 16})
    by_name = distill_command(config, {"temperature": 4.0, "alpha": 0.9, "lr": 0.1}, "logs")
    assert "--teacher=wrn10x1_R_g2 " in by_name and "--teacher_epochs=4" in by_name
    by_file = distill_command(config, {"temperature": 4.0, "alpha": 0.9, "lr": 0.05}, "logs")
    assert "/model.keras" in by_file and "teacher_epochs" not in by_file
    for command in (by_name, by_file):  # each command resolves to a valid run
        flags = dict(arg[2:].split("=", 1) for arg in command.split()[2:])
        settings = {"model": flags.pop("student"), **flags}
        settings.pop("logdir", None)
        config_lib.resolve({k: (int(v) if v.isdigit() else float(v) if k in ("lr", "temperature", "alpha") else v)
                            for k, v in settings.items()})
