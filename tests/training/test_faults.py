"""Fault injection: runs killed at chosen points, full disks, stale claims, missing teachers.

Each fault runs in a subprocess (a small driver script written to ``tmp_path``
that wraps one function of the real code path and then SIGKILLs itself, or
raises the ``OSError`` a full disk raises), then the test checks what a user
would find on disk and what repeating the command does. Product code has no
hooks for any of this. Every run is tiny: WRN-10x1, 3 epochs of 256 synthetic
images (4 steps per epoch), about 5 s of training.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from kdkeras import config as config_lib
from kdkeras import training
from kdkeras.training import run_folder as run_folder_lib
from tests.helpers import checkout_env, run_command

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke_grid.yaml")
TINY = {"model": "wrn10x1_R_g2", "dataset": "synthetic", "epochs": 3, "train_size": 256, "test_size": 128,
        "batch_size": 64}
STEPS_PER_EPOCH = 4  # 256 images / batch 64
TINY_FLAGS = ["--model=wrn10x1_R_g2", "--dataset=synthetic", "--epochs=3", "--train_size=256",
              "--test_size=128", "--batch_size=64"]

pytestmark = [pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="fault injection needs SIGKILL (POSIX)"),
              pytest.mark.slow]  # processes killed mid-run, full grids

# The driver: ``python driver.py FAULT LOGDIR`` trains the TINY run with FAULT
# injected (or none: "none"), printing "EPOCH <epoch> <optimizer iterations>"
# at the start of every epoch it runs. ``python driver.py FAULT --script NAME
# FLAGS...`` runs scripts/NAME with FAULT injected instead.
DRIVER = r'''
import errno, json, os, runpy, shutil, signal, sys, tempfile

fault, target = sys.argv[1], sys.argv[2]
ROOT = os.environ["KDKERAS_ROOT"]

import keras

from kdkeras import config as config_lib
from kdkeras import training


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def nth_call(n, matches):
    """A predicate that is true on the n-th call whose argument ``matches``."""
    seen = []

    def hit(*args):
        if matches(*args):
            seen.append(args)
            return len(seen) == n
        return False

    return hit


if fault in ("weights-partial", "weights-torn"):
    # BackupAndRestore saves latest.weights.h5 with Model.save_weights at every
    # epoch end: at the end of epoch 2, half of the file is on disk when the
    # process dies ("partial"), or all of it but not yet the metadata ("torn").
    save_weights = keras.Model.save_weights
    second = nth_call(2, lambda path: os.path.basename(str(path)) == "latest.weights.h5")

    def faulty_save_weights(self, filepath, *args, **kwargs):
        if not second(filepath):
            return save_weights(self, filepath, *args, **kwargs)
        if fault == "weights-torn":
            save_weights(self, filepath, *args, **kwargs)
            die()
        full = os.path.join(tempfile.mkdtemp(), "full.weights.h5")
        save_weights(self, full, *args, **kwargs)
        with open(full, "rb") as src, open(filepath, "wb") as dst:
            blob = src.read()
            dst.write(blob[: len(blob) // 2])
        die()

    keras.Model.save_weights = faulty_save_weights

elif fault.startswith("replace:"):
    # Dies just before the rename that publishes the named file: its temporary
    # file is complete, the target is not there yet.
    name = fault.split(":", 1)[1]
    replace = os.replace

    def faulty_replace(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)) == name:
            die()
        return replace(src, dst, *args, **kwargs)

    os.replace = faulty_replace

elif fault == "model-partial":
    # Dies while model.keras (its temporary file) is half written.
    from kdkeras.models import convert

    save_model = convert.save_model

    def faulty_save_model(model, filepath):
        save_model(model, filepath)
        with open(filepath, "r+b") as f:
            f.truncate(os.path.getsize(filepath) // 2)
        die()

    convert.save_model = faulty_save_model

elif fault == "enospc-history":
    # The disk fills up at the end of epoch 2: writing history.csv fails with
    # ENOSPC when its temporary file is flushed to disk.
    fsync = os.fsync
    second = nth_call(2, lambda fd: ".history.csv." in os.readlink(f"/proc/self/fd/{fd}"))

    def full_fsync(fd):
        if second(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)

    os.fsync = full_fsync

elif fault == "enospc-raise":
    # The whole run fails the way a full disk fails a write (no training).
    def full_disk(config, logdir, **kwargs):
        path = os.path.join(training.run_folder.run_dir(config, logdir), "history.csv")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    training.train_and_evaluate = full_disk

elif fault != "none":
    raise SystemExit(f"unknown fault {fault}")


class EpochProbe(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        print(f"EPOCH {epoch} {iterations}", flush=True)


if target == "--script":
    script = os.path.join(ROOT, "scripts", sys.argv[3])
    sys.argv = [script, *sys.argv[4:]]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name="__main__")
else:
    config = config_lib.resolve(json.loads(os.environ["KDKERAS_TINY"]))
    training.train_and_evaluate(config, target, callbacks=[EpochProbe()], verbose=0)
'''


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KDKERAS_ROOT": ROOT, "KDKERAS_TINY": json.dumps(TINY),
           **checkout_env()}
    env.pop("KDKERAS_DEBUG", None)
    env.pop("KDKERAS_MIN_FREE_MB", None)
    env.update(extra)
    return env


def _drive(tmp_path, fault, *args, timeout=300, **env):
    driver = tmp_path / "driver.py"
    if not driver.exists():
        driver.write_text(DRIVER)
    return run_command([sys.executable, str(driver), fault, *args], env=_env(**env), timeout=timeout,
                       cwd=str(tmp_path))


def _script(script, *args, **env):
    return run_command([sys.executable, os.path.join(ROOT, "scripts", script), *args], env=_env(**env))


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if ": error: " in line]


def _read(path):
    with open(path) as f:
        return f.read()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _epochs_started(stdout):
    """``[(epoch, optimizer iterations at its start), ...]`` printed by the driver's probe."""
    return [tuple(int(v) for v in line.split()[1:]) for line in stdout.splitlines() if line.startswith("EPOCH ")]


def _killed(result):
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-3000:])


def _tiny_run_dir(logdir):
    return run_folder_lib.run_dir(config_lib.resolve(TINY), str(logdir))


def _check_finished(run_dir, expected_epochs=3):
    results = json.loads(_read(os.path.join(run_dir, "results.json")))  # valid JSON
    history = _rows(os.path.join(run_dir, "history.csv"))
    assert [int(r["epoch"]) for r in history] == list(range(expected_epochs))
    assert results["epochs"] == expected_epochs
    assert results["test_accuracy"] == pytest.approx(float(history[-1]["test_accuracy"]))
    assert results["wall_time_s"] == pytest.approx(sum(float(r["epoch_time_s"]) for r in history), abs=2e-3)
    assert not os.path.exists(os.path.join(run_dir, "backup"))
    training.load_model_file(os.path.join(run_dir, "model.keras"))  # loads, in safe mode
    return results, history


# --------------------------------------------------------------------------
# SIGKILL while a checkpoint (the backup) is being written
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["weights-partial", "weights-torn"])
def test_sigkill_while_writing_the_checkpoint_resumes_from_the_last_finished_epoch(tmp_path, fault):
    logdir = tmp_path / "logs"
    run_dir = _tiny_run_dir(logdir)
    _killed(_drive(tmp_path, fault, str(logdir)))
    # Killed in the backup of epoch 2, after its history row (history is written first).
    assert [int(r["epoch"]) for r in _rows(os.path.join(run_dir, "history.csv"))] == [0, 1]
    assert not os.path.exists(os.path.join(run_dir, "results.json"))

    again = _drive(tmp_path, "none", str(logdir))
    assert again.returncode == 0, again.stderr[-3000:]
    started = _epochs_started(again.stdout)
    assert started[0][0] in (1, 2) and "Resuming" in again.stdout  # not from scratch
    # Weights and optimizer state belong to the epoch the run resumes at.
    assert started == [(epoch, epoch * STEPS_PER_EPOCH) for epoch in range(started[0][0], 3)]
    if fault == "weights-partial":
        assert "using the one before it" in again.stdout and started[0][0] == 1
    _check_finished(run_dir)


# --------------------------------------------------------------------------
# SIGKILL while the final files are being written
# --------------------------------------------------------------------------


def test_sigkill_while_writing_the_final_files_leaves_no_partial_file_and_retrains_nothing(tmp_path):
    logdir = tmp_path / "logs"
    run_dir = _tiny_run_dir(logdir)
    history_path = os.path.join(run_dir, "history.csv")
    model_path = os.path.join(run_dir, "model.keras")

    # 1. Killed while model.keras (its temporary file) is half written.
    _killed(_drive(tmp_path, "model-partial", str(logdir)))
    history_before = _read(history_path)
    assert [int(r["epoch"]) for r in _rows(history_path)] == [0, 1, 2]  # every epoch had finished
    assert not os.path.exists(model_path)  # absent, never half written
    assert not training.is_finished(run_dir)

    # 2. The same command: no epoch trained again; killed just before results.json is renamed into place.
    second = _drive(tmp_path, "replace:results.json", str(logdir))
    _killed(second)
    assert _epochs_started(second.stdout) == []
    training.load_model_file(model_path)  # complete now: written before the results
    assert not os.path.exists(os.path.join(run_dir, "results.json"))  # absent, never half written
    assert not training.is_finished(run_dir)

    # 3. The same command again finishes, still without training.
    third = _drive(tmp_path, "none", str(logdir))
    assert third.returncode == 0, third.stderr[-3000:]
    assert _epochs_started(third.stdout) == []
    assert _read(history_path) == history_before  # rows and epoch times unchanged
    _check_finished(run_dir)


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    from kdkeras.io_utils import atomic_open, atomic_write_json

    path = tmp_path / "results.json"
    atomic_write_json(str(path), {"epochs": 1})
    with pytest.raises(OSError, match="No space left"), atomic_open(str(path)) as f:
        f.write('{"epochs": 2, "test_acc')  # half of the new content, then the disk is full
        raise OSError(28, "No space left on device")
    assert json.loads(path.read_text()) == {"epochs": 1}
    assert os.listdir(tmp_path) == ["results.json"]
    atomic_write_json(str(path), {"epochs": 2})
    assert json.loads(path.read_text()) == {"epochs": 2} and os.listdir(tmp_path) == ["results.json"]


# --------------------------------------------------------------------------
# A grid killed mid-way, then killed again while writing its tables
# --------------------------------------------------------------------------


def _grid_cells(logdir):
    from kdkeras import grid

    return grid.plan(grid.load_grid(SMOKE), str(logdir), half="right")


def test_grid_killed_mid_way_resumes_without_retraining_finished_cells(tmp_path):
    logdir = tmp_path / "logs"
    args = [f"--config={SMOKE}", "--half=right", f"--logdir={logdir}"]
    cells = _grid_cells(logdir)
    assert len(cells) == 4  # R_G8, NR_G8, R_g2 baselines, then NR_G8 from R_g2
    results = [os.path.join(c.run_dir, "results.json") for c in cells]

    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "grid.py"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while sum(map(os.path.exists, results)) < 2:
            assert proc.poll() is None, "the grid ended before it could be killed"
            assert time.time() < deadline, "the grid made no progress"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    done = [c for c, r in zip(cells, results) if os.path.exists(r)]
    assert 2 <= len(done) < len(cells)
    stamps = {c.label: (os.stat(os.path.join(c.run_dir, "results.json")).st_mtime_ns,
                        _read(os.path.join(c.run_dir, "results.json"))) for c in done}

    # Second run: trains the rest (breaking the dead run's claim), dies while writing table.csv.
    second = _drive(tmp_path, "replace:table.csv", "--script", "grid.py", *args)
    _killed(second)
    trained = {line.split()[1].rstrip(":") for line in second.stdout.splitlines() if line.startswith("Finished ")}
    assert trained == {c.label for c in cells} - set(stamps)  # finished cells are not trained again
    for label, (mtime, text) in stamps.items():
        path = os.path.join(str(logdir), "synthetic", label, "results.json")
        assert os.stat(path).st_mtime_ns == mtime and _read(path) == text
    tables = os.path.join(str(logdir), "smoke_grid")
    assert "Distil. gain" in _read(os.path.join(tables, "table.md"))  # written before table.csv
    assert not os.path.exists(os.path.join(tables, "table.csv"))  # never half written

    # Third run: nothing to train, tables complete.
    third = _script("grid.py", *args)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "Finished" not in third.stdout and f"smoke_grid: {len(cells)} done" in third.stdout
    rows = _rows(os.path.join(tables, "table.csv"))
    # No validation split and no precise BN in the smoke grid: those measures are left out.
    assert {(r["measure"], r["row"]) for r in rows} == {
        (measure, row) for measure in ("final", "batch_stats", "best_on_test")
        for row in ("R-g2", "Baseline", "NR-baseline", "Acc. drop", "Distil. gain")}
    assert all(r["student"] == "NR-G8" and r["mean"] for r in rows)  # every cell of the table has a value
    assert not [f for f in os.listdir(os.path.join(str(logdir), "synthetic")) if f.endswith(".lock")]


def test_waiting_shard_takes_over_a_teacher_whose_shard_died(tmp_path):
    """A KD cell waits while another process holds its teacher's claim, and trains it once that process dies."""
    from kdkeras import grid

    logdir = str(tmp_path / "logs")
    base = {"dataset": "synthetic", "epochs": 1, "train_size": 128, "test_size": 64, "batch_size": 64}
    kd = grid.Cell("kd", config_lib.resolve({**base, "model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2"}),
                   run_folder_lib.run_dir(config_lib.resolve({**base, "model": "wrn10x1_NR_g2",
                                                          "teacher": "wrn10x1_R_g2"}), logdir))
    teacher_dir = run_folder_lib.run_dir(config_lib.teacher_config(kd.config), logdir)
    from kdkeras import claims

    # The other shard holds the teacher's claim until it is killed (it waits on its stdin, which stays open).
    hold = f"import sys; from kdkeras import claims; assert claims.try_claim({teacher_dir!r}); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE)
    messages = []

    def log(message):
        messages.append(message)
        if message.startswith("Waiting for teacher"):  # the shard is waiting: now the other one dies
            holder.kill()
            holder.wait()

    try:
        deadline = time.monotonic() + 300  # the holder's import of TensorFlow may be slow on a loaded machine
        while claims.owner(teacher_dir) is None:
            assert holder.poll() is None, "the process holding the teacher's claim ended"
            assert time.monotonic() < deadline, "the holder did not claim the teacher within 300 s"
            time.sleep(0.05)
        assert claims.owner(teacher_dir).pid == holder.pid
        hang_guard = threading.Timer(600, holder.kill)  # if the wait were never logged: fail, not hang
        hang_guard.start()
        try:
            outcome = grid.run_cell(kd, logdir, log=log, poll_s=0.2, verbose=0)
        finally:
            hang_guard.cancel()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdin.close()
    assert outcome == "trained"
    assert any(m.startswith("Waiting for teacher") for m in messages)
    finished = [m.split()[1].rstrip(":") for m in messages if m.startswith("Finished ")]
    assert finished == [os.path.basename(teacher_dir), kd.label]  # the teacher once, then the student
    assert not os.path.exists(teacher_dir + ".lock") and not os.path.exists(kd.run_dir + ".lock")


# --------------------------------------------------------------------------
# Storage: a nearly full disk at start, a full disk mid-run
# --------------------------------------------------------------------------


def _fake_usage(free_mb):
    usage = shutil.disk_usage(os.getcwd())
    return lambda path: usage._replace(free=int(free_mb * 2**20))


def test_check_logdir_refuses_a_nearly_full_disk_before_creating_anything(tmp_path, monkeypatch):
    monkeypatch.delenv("KDKERAS_MIN_FREE_MB", raising=False)
    logdir = tmp_path / "a" / "logs"
    monkeypatch.setattr(shutil, "disk_usage", _fake_usage(100))
    with pytest.raises(PermissionError) as exc:
        training.check_logdir(str(logdir))
    message = str(exc.value)
    assert "\n" not in message and "nearly full disk: 100 MiB free" in message
    assert f"at least {training.MIN_FREE_MB} MiB" in message and "KDKERAS_MIN_FREE_MB" in message
    assert not (tmp_path / "a").exists()

    training.check_logdir(str(logdir), min_free_mb=50)  # a lower limit passes ...
    assert logdir.is_dir() and os.listdir(logdir) == []  # ... and leaves no probe file behind
    with pytest.raises(PermissionError, match="100 MiB free, a run needs at least 150 MiB"):
        training.check_logdir(str(logdir), min_free_mb=150)

    monkeypatch.setenv("KDKERAS_MIN_FREE_MB", "0")  # 0: no check
    monkeypatch.setattr(shutil, "disk_usage", _fake_usage(0))
    training.check_logdir(str(logdir))
    monkeypatch.setenv("KDKERAS_MIN_FREE_MB", "lots")
    with pytest.raises(ValueError, match="KDKERAS_MIN_FREE_MB must be a number of MiB"):
        training.check_logdir(str(logdir))


def test_check_logdir_reports_a_folder_it_cannot_write_to(tmp_path, monkeypatch):
    # Root may write anywhere, so the refusal is injected where check_logdir opens its probe file.
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, os.strerror(13), path)

    from kdkeras.training import run_folder

    monkeypatch.setattr(run_folder, "open", refuse, raising=False)
    with pytest.raises(PermissionError) as exc:
        training.check_logdir(str(tmp_path), min_free_mb=0)
    assert str(exc.value) == f"--logdir '{tmp_path}' is not writable: Permission denied."


def test_nearly_full_disk_does_not_block_reading_a_finished_run(tmp_path, monkeypatch):
    run_dir = _tiny_run_dir(tmp_path)
    os.makedirs(run_dir)
    stored = {"test_accuracy": 0.5, "best_test_accuracy": 0.6, "epochs": 3}
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(stored, f)
    monkeypatch.setattr(shutil, "disk_usage", _fake_usage(0))
    messages = []
    results = training.train_and_evaluate(config_lib.resolve(TINY), str(tmp_path), log=messages.append)
    assert results == {**stored, "run_dir": run_dir} and "already finished" in messages[0]


@pytest.mark.parametrize("script, args", [
    ("train.py", TINY_FLAGS),
    ("grid.py", [f"--config={SMOKE}"]),
])
def test_nearly_full_disk_is_one_line_exit_2_and_writes_nothing(tmp_path, script, args):
    logdir = tmp_path / "logs"
    result = _script(script, *args, f"--logdir={logdir}", KDKERAS_MIN_FREE_MB=str(2**50))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert f"--logdir '{logdir}' is on a nearly full disk" in line and "MiB free" in line
    assert not logdir.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="the driver finds the file being synced in /proc")
def test_disk_full_mid_run_keeps_the_finished_epochs_and_resumes(tmp_path):
    logdir = tmp_path / "logs"
    run_dir = _tiny_run_dir(logdir)
    full = _drive(tmp_path, "enospc-history", "--script", "train.py", *TINY_FLAGS, f"--logdir={logdir}")
    assert full.returncode not in (0, -signal.SIGKILL), full.stderr[-3000:]
    assert "No space left on device" in full.stderr
    # The failed write left the previous history intact and no temporary file;
    # the failure came before epoch 2's backup, so the backup holds epoch 1.
    assert [int(r["epoch"]) for r in _rows(os.path.join(run_dir, "history.csv"))] == [0]
    assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]
    assert training.backup_epoch(os.path.join(run_dir, "backup")) == 1
    assert not os.path.exists(os.path.join(run_dir, "results.json"))

    again = _drive(tmp_path, "none", str(logdir))  # space freed: the same command again
    assert again.returncode == 0, again.stderr[-3000:]
    assert _epochs_started(again.stdout) == [(1, STEPS_PER_EPOCH), (2, 2 * STEPS_PER_EPOCH)]
    _check_finished(run_dir)


def test_disk_full_mid_run_is_one_line_saying_the_run_resumes(tmp_path):
    result = _drive(tmp_path, "enospc-raise", "--script", "train.py", *TINY_FLAGS, f"--logdir={tmp_path}/logs")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert "No space left on device" in line and "history.csv" in line and "resume" in line


# --------------------------------------------------------------------------
# Teachers
# --------------------------------------------------------------------------


def test_missing_teacher_run_without_training_it_is_one_line_exit_2(tmp_path):
    logdir = tmp_path / "logs"
    args = ["--student=wrn10x1_NR_g2", "--teacher=wrn10x1_R_g2", "--dataset=synthetic", "--epochs=1",
            "--train_size=128", "--test_size=64", f"--logdir={logdir}"]
    result = _script("distill.py", *args, "--train_teacher=false")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = _error_lines(result.stderr)
    teacher = config_lib.resolve({"model": "wrn10x1_R_g2", "dataset": "synthetic", "epochs": 1,
                                  "train_size": 128, "test_size": 64})
    teacher_dir = run_folder_lib.run_dir(teacher, str(logdir))
    assert f"Teacher wrn10x1_R_g2 has no finished run at {teacher_dir}" in line and "--train_teacher" in line
    assert not os.path.exists(teacher_dir)  # nothing trained
    assert not os.path.exists(os.path.join(str(logdir), "synthetic"))  # no run folder started either


def test_a_pair_the_method_cannot_distil_fails_before_its_teacher_trains(tmp_path):
    """RD needs equal stage shapes: wrn10x2's stage1 is twice as wide as wrn10x1's. The one-line error comes
    before the teacher (by name, no run yet) trains, not after; nothing is left in the log folder."""
    logdir = tmp_path / "logs"
    result = _script("distill.py", "--student=wrn10x1_NR_g2", "--teacher=wrn10x2_R_g2", "--method=rd",
                     "--dataset=synthetic", "--epochs=1", "--train_size=128", "--test_size=64", f"--logdir={logdir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = _error_lines(result.stderr)
    assert "RD feeds the student's stage1 to the teacher's later stages" in line, line
    assert "training it first" not in result.stdout and "Epoch 1/1" not in result.stdout, result.stdout
    assert os.listdir(logdir / "synthetic") == []  # no teacher run, no claim left behind


def test_untrusted_truncated_or_misfit_teacher_files_fail_before_training(tmp_path):
    import keras

    from kdkeras.models.convert import save_model
    from kdkeras.models.registry import build_model

    def distill_from(teacher):
        config = config_lib.resolve({**TINY, "model": "wrn10x1_NR_g2", "teacher": str(teacher)})
        return config, lambda: training.train_and_evaluate(config, str(tmp_path / "logs"), verbose=0)

    # Code inside a .keras file (a Python lambda) is refused: files load in safe mode.
    unsafe = tmp_path / "unsafe.keras"
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                      keras.layers.Lambda(lambda x: x[:, :100])]).save(unsafe)
    with pytest.raises(ValueError, match=r"Cannot load teacher file .*Lambda.*arbitrary code execution"):
        distill_from(unsafe)[1]()

    # A truncated download of a good file.
    small = tmp_path / "small_input.keras"
    save_model(build_model("wrn10x1_R_g2", num_classes=100, input_shape=(16, 16, 3)), small)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(small.read_bytes()[: small.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"Cannot load teacher file '{truncated}'"):
        distill_from(truncated)[1]()

    # A teacher for other images than the dataset's (and so the student's).
    config, run = distill_from(small)
    with pytest.raises(ValueError, match=r"takes inputs of shape \(16, 16, 3\), but dataset synthetic has "
                                         r"images of shape \(32, 32, 3\)"):
        run()
    run_dir = run_folder_lib.run_dir(config, str(tmp_path / "logs"))
    assert not os.path.exists(os.path.join(run_dir, "history.csv"))  # not one epoch trained
    assert not os.path.exists(os.path.join(run_dir, "backup"))
