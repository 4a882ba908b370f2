"""A training process killed with SIGKILL resumes from its last finished epoch."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # SIGKILLed training processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["--model=wrn10x1_R_g2", "--dataset=synthetic", "--epochs=4", "--train_size=1024",
        "--test_size=64", "--batch_size=64"]


def _history_epochs(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _run_dir(logdir, prefix="wrn10x1_R_g2"):
    base = os.path.join(logdir, "synthetic")
    if not os.path.isdir(base):
        return None
    dirs = [d for d in os.listdir(base) if d.startswith(prefix)]
    return os.path.join(base, dirs[0]) if dirs else None


def _poll_until(condition, proc, what, timeout=600):
    """Polls ``condition()`` until it is true; fails if ``proc`` ends first or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def _kill_when(proc, *waits):
    """SIGKILLs ``proc`` once each ``(condition, what)`` of ``waits`` holds in turn (see :func:`_poll_until`)."""
    try:
        for condition, what in waits:
            _poll_until(condition, proc, what)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("moment", ["after_history_row", "after_backup"])
def test_sigkill_mid_training_then_resume(tmp_path, moment):
    from kdkeras.training import resume

    command = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), *ARGS, f"--logdir={tmp_path}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    found = {}

    def first_epoch_row():
        found["run_dir"] = found.get("run_dir") or _run_dir(str(tmp_path))
        return bool(found["run_dir"] and _history_epochs(os.path.join(found["run_dir"], "history.csv")))

    # after_history_row: killed right after the first epoch's history row, maybe while its backup is written;
    # after_backup: once that backup is complete, i.e. during the second epoch (mid-epoch).
    waits = [(first_epoch_row, "the first epoch's history row")]
    if moment == "after_backup":
        waits.append((lambda: resume.backup_epoch(os.path.join(found["run_dir"], "backup")) >= 1,
                      "the first epoch's backup"))
    _kill_when(proc, *waits)
    run_dir = found["run_dir"]

    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    done_before = _history_epochs(os.path.join(run_dir, "history.csv"))
    assert done_before and done_before == list(range(len(done_before)))

    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    if moment == "after_backup":
        assert "Resuming" in result.stdout  # killed mid-epoch: continues from the backup
    else:  # killed right after the history row, maybe while the backup was being written
        assert any(m in result.stdout for m in ("Resuming", "using the one before it", "starting over"))
    assert _history_epochs(os.path.join(run_dir, "history.csv")) == [0, 1, 2, 3]
    results = json.load(open(os.path.join(run_dir, "results.json")))
    assert results["epochs"] == 4 and not os.path.exists(os.path.join(run_dir, "backup"))


def _write_pair(folder, suffix, epoch, valid=True):
    import h5py

    weights = os.path.join(folder, "latest.weights.h5" + suffix)
    if valid:
        with h5py.File(weights, "w") as f:
            f["x"] = [epoch]
        with open(os.path.join(folder, "training_metadata.json" + suffix), "w") as f:
            json.dump({"epoch": epoch, "batch": 0}, f)
    else:
        with open(weights, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n" + b"\x00" * 10)  # truncated HDF5


def test_repair_backup_falls_back_to_the_previous_checkpoint(tmp_path):
    from kdkeras.training import backup_epoch, repair_backup

    folder = str(tmp_path / "backup")
    os.makedirs(folder)
    _write_pair(folder, ".bkp", 2)
    _write_pair(folder, "", 3, valid=False)
    messages = []
    repair_backup(folder, log=messages.append)
    assert backup_epoch(folder) == 2 and "one before it" in messages[0]

    _write_pair(folder, ".bkp", 2, valid=False)
    _write_pair(folder, "", 3, valid=False)
    repair_backup(folder, log=messages.append)
    assert not os.path.exists(folder) and "starting over" in messages[-1]

    os.makedirs(folder)
    _write_pair(folder, "", 5)
    repair_backup(folder, log=messages.append)  # a good backup is left alone
    assert backup_epoch(folder) == 5 and len(messages) == 2


def test_history_without_a_backup_starts_over_and_says_so(tmp_path):
    from kdkeras.training import resume

    history = tmp_path / "history.csv"
    backup = str(tmp_path / "backup")
    messages = []
    assert resume.prepare(backup, log=messages.append, history_path=str(history)) == 0 and not messages  # new run

    history.write_text("epoch,accuracy\n0,0.25\n")
    assert resume.prepare(backup, log=messages.append, history_path=str(history)) == 0
    assert messages == [f"{history} records 1 finished epoch but no backup of it was completed "
                        "(interrupted while saving): starting over."]

    os.makedirs(backup)
    _write_pair(backup, "", 3, valid=False)  # an unreadable backup says it once, not twice
    messages.clear()
    assert resume.prepare(backup, log=messages.append, history_path=str(history)) == 0
    assert len(messages) == 1 and "is unreadable" in messages[0]

    os.makedirs(backup)
    _write_pair(backup, "", 1)
    messages.clear()
    assert resume.prepare(backup, log=messages.append, history_path=str(history)) == 1 and not messages


def _rows(path, skip=("epoch_time_s",)):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if k not in skip} for row in csv.DictReader(f)]


def _kill_after_epoch_2_and_resume(command, tmp_path, prefix):
    """Runs ``command(logdir)`` whole, and again SIGKILLed after epoch 2 of 4 then resumed: both run folders."""
    from kdkeras.training import resume

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True, env=env, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    found = {}

    def backup_of_epoch_2():
        found["run_dir"] = found.get("run_dir") or _run_dir(str(killed), prefix)
        return bool(found["run_dir"] and resume.backup_epoch(os.path.join(found["run_dir"], "backup")) >= 2)

    _kill_when(proc, (backup_of_epoch_2, "a complete backup of epoch 2"))
    run_dir = found["run_dir"]
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    again = subprocess.run(command(killed), capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Resuming" in again.stdout and "at epoch 3/4" in again.stdout, again.stdout[-2000:]
    return _run_dir(str(tmp_path / "whole"), prefix), run_dir


def _assert_same_run(run_dir, whole_dir):
    """The same history (every column), final weights and results, within float tolerance."""
    import numpy as np

    from kdkeras.models.convert import load_model

    # Both runs use the same kernels (one machine, the same settings, --deterministic) on the same batches:
    # bit-identical in practice. 1e-6 relative, and 1e-7 absolute for metrics and weights near 0 (they are
    # of size ~0.1-5), admit only a kernel whose threads split a sum otherwise; a restart that lost state
    # (weights, momentum, RNG, adapter) trains otherwise from epoch 3 on.
    expected, got = _rows(os.path.join(whole_dir, "history.csv")), _rows(os.path.join(run_dir, "history.csv"))
    assert [r["epoch"] for r in got] == [0, 1, 2, 3]
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["epoch"], key)
    for wa, wb in zip(load_model(os.path.join(run_dir, "model.keras")).get_weights(),
                      load_model(os.path.join(whole_dir, "model.keras")).get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
    with open(os.path.join(run_dir, "results.json")) as f, open(os.path.join(whole_dir, "results.json")) as g:
        ours, theirs = json.load(f), json.load(g)
    assert ours["test_accuracy"] == theirs["test_accuracy"] and ours["test_loss"] == pytest.approx(theirs["test_loss"])


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_resumed_deterministic_run_ends_as_the_uninterrupted_one(tmp_path):
    """Killed after epoch 2 of 4 and resumed: the same history and the same weights as a run never killed.

    Epoch k's shuffle and augmentation depend only on (seed, k), the backup holds the weights, the optimizer
    and the dropout RNG, and --deterministic makes the ops repeatable.
    """
    args = [*ARGS, "--deterministic", "--dropout=0.3"]

    def command(logdir):
        return [sys.executable, os.path.join(ROOT, "scripts", "train.py"), *args, f"--logdir={logdir}"]

    _assert_same_run(*reversed(_kill_after_epoch_2_and_resume(command, tmp_path, "wrn10x1_R_g2")))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_resumed_fitnets_run_restores_its_adapter(tmp_path):
    """FitNets trains a 1x1 conv + BN adapter beside the student; SIGKILLed and resumed, the run ends as the
    uninterrupted one (its per-epoch hint loss included), which it cannot if the adapter restarts from scratch."""
    teacher_dir = tmp_path / "teacher"
    train = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), *ARGS, "--epochs=1",
                            f"--logdir={teacher_dir}"], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert train.returncode == 0, train.stderr[-2000:]
    teacher = os.path.join(_run_dir(str(teacher_dir)), "model.keras")
    student = [a for a in ARGS if not a.startswith("--model=")]

    def command(logdir):
        return [sys.executable, os.path.join(ROOT, "scripts", "distill.py"), "--student=wrn10x1_NR_g2",
                f"--teacher={teacher}", "--method=fitnets", *student, "--deterministic",
                f"--logdir={logdir}"]

    run_dir, whole_dir = reversed(_kill_after_epoch_2_and_resume(command, tmp_path, "wrn10x1_NR_g2"))
    _assert_same_run(run_dir, whole_dir)
    assert "fitnets" in _rows(os.path.join(run_dir, "history.csv"))[3]
