"""Multi-worker training through the real scripts: two worker processes on 127.0.0.1.

``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``, as docs/distributed.md
describes it: the same command in every worker, one run folder written by
the chief, the step losses of one process on the same global batch, and a
resume after a worker is killed.
"""

import csv
import json
import os
import shlex
import signal
import subprocess
import time

import pytest

from tests.helpers import free_ports, script_command, script_env

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _readme_command():
    """The README's multi-worker example: ``(TF_CONFIG of worker 0, the train.py flags)``.

    The test runs exactly that command (on free ports, in its own log folder).
    """
    with open(os.path.join(ROOT, "README.md")) as f:
        [line] = [line for line in f if line.startswith("TF_CONFIG=") and "scripts/train.py" in line]
    tf_config = json.loads(shlex.split(line)[0].split("=", 1)[1])
    flags = shlex.split(line.split("scripts/train.py", 1)[1])
    return tf_config, flags


TF_CONFIG, README_FLAGS = _readme_command()
#: The README's flags without the log folder. One step per epoch: the global
#: batch is the whole training set, so each epoch's loss in history.csv is one
#: step's loss.
RUN = [f for f in README_FLAGS if not f.startswith(("--logdir=", "--strategy=", "--epochs="))]
EPOCHS = int(next(f for f in README_FLAGS if f.startswith("--epochs=")).split("=")[1])


def _start_workers(script, args, logdir, out_dir, tag):
    """Starts the two workers of a cluster on 127.0.0.1; returns the processes and their log paths."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs, logs = [], []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        log_path = os.path.join(out_dir, f"{tag}-worker{index}.log")
        with open(log_path, "w") as log:
            procs.append(subprocess.Popen(
                script_command(script, *args, "--strategy=multiworker", f"--logdir={logdir}"),
                stdout=log, stderr=subprocess.STDOUT, text=True, env=script_env(TF_CONFIG=tf_config)))
        logs.append(log_path)
    return procs, logs


def _wait(procs, logs, timeout=420):
    deadline = time.time() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("workers did not finish:\n" + "\n".join(open(path).read()[-3000:] for path in logs))
    for p, path in zip(procs, logs):
        assert p.returncode == 0, open(path).read()[-3000:]
    return [open(path).read() for path in logs]


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def _run_dirs(logdir):
    root = os.path.join(logdir, "synthetic")
    return sorted(os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def test_two_workers_train_like_one_process_and_resume_after_a_kill(tmp_path):
    # The reference: one process, the same global batch.
    single = str(tmp_path / "single")
    ref = subprocess.run(script_command("train.py", *RUN, f"--epochs={EPOCHS}", "--strategy=none",
                                        f"--logdir={single}"),
                         capture_output=True, text=True, env=script_env(), timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = _history(_run_dirs(single)[0])

    # Two workers, 4 epochs; both are killed once the chief has backed up epoch 2.
    logdir = str(tmp_path / "mw")
    assert TF_CONFIG["task"] == {"type": "worker", "index": 0} and len(TF_CONFIG["cluster"]["worker"]) == 2
    assert "--strategy=multiworker" in README_FLAGS and EPOCHS == 4
    args = [*RUN, f"--epochs={EPOCHS}"]
    procs, logs = _start_workers("train.py", args, logdir, str(tmp_path), "first")
    deadline = time.monotonic() + 600
    backup = None
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        dirs = _run_dirs(logdir) if os.path.isdir(os.path.join(logdir, "synthetic")) else []
        meta = os.path.join(dirs[0], "backup", "training_metadata.json") if dirs else ""
        if meta and os.path.exists(meta):
            try:
                with open(meta) as f:
                    backup = json.load(f)["epoch"]
            except ValueError:
                backup = None
            if backup and backup >= 2:
                break
        time.sleep(0.05)
    alive = all(p.poll() is None for p in procs)
    if not (alive and backup and backup >= 2):
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pytest.fail(("no backup of epoch 2 within 600 s" if alive else "a worker ended before it could be killed")
                    + ":\n" + "\n".join(open(path).read()[-3000:] for path in logs))
    procs[1].send_signal(signal.SIGKILL)  # a worker dies mid-run ...
    procs[1].wait()
    procs[0].send_signal(signal.SIGKILL)  # ... and its job is stopped, as a scheduler would
    procs[0].wait()
    [run_dir] = _run_dirs(logdir)
    with open(os.path.join(run_dir, "backup", "training_metadata.json")) as f:
        resume_epoch = json.load(f)["epoch"]
    assert 2 <= resume_epoch < 4
    before = _history(run_dir)[:resume_epoch]

    # The step losses equal the single process's (one step per epoch): the two workers' gradients are summed
    # by a collective, in another float32 order, and that rounding compounds over the steps; 1e-4 relative
    # (atol 1e-5 for a loss near 0; these are ~2).
    for row, ref_row in zip(before, reference):
        assert float(row["loss"]) == pytest.approx(float(ref_row["loss"]), rel=1e-4, abs=1e-5)

    # Both restarted with the same command: the run resumes from the last backed-up epoch.
    procs, logs = _start_workers("train.py", args, logdir, str(tmp_path), "again")
    outputs = _wait(procs, logs)
    assert f"Resuming {os.path.basename(run_dir)} at epoch {resume_epoch + 1}/4" in outputs[0]
    assert _run_dirs(logdir) == [run_dir]  # exactly one run folder
    history = _history(run_dir)
    assert [int(r["epoch"]) for r in history] == [0, 1, 2, 3]
    assert history[:resume_epoch] == before  # the epochs before the kill are kept as they were
    # Epoch k's batches depend only on (seed, k): the resumed epochs train as the uninterrupted run did.
    for row, ref_row in zip(history, reference):  # the same tolerance as above
        assert float(row["loss"]) == pytest.approx(float(ref_row["loss"]), rel=1e-4, abs=1e-5)
    results = json.load(open(os.path.join(run_dir, "results.json")))
    assert results["epochs"] == 4
    assert not os.path.exists(os.path.join(run_dir, ".workers"))  # the other worker's scratch is gone
    assert "PerReplica" not in "".join(outputs)


def test_two_workers_distill_with_a_teacher_trained_first(tmp_path):
    logdir = str(tmp_path / "mw")
    args = ["--student=wrn10x1_NR_g2", "--teacher=wrn10x1_R_g2", *RUN[1:], "--epochs=1"]
    procs, logs = _start_workers("distill.py", args, logdir, str(tmp_path), "kd")
    outputs = _wait(procs, logs)
    assert "training it first" in outputs[0]
    run_dirs = _run_dirs(logdir)
    assert [os.path.basename(d).split("-")[0] for d in run_dirs] == ["wrn10x1_NR_g2_from_wrn10x1_R_g2",
                                                                     "wrn10x1_R_g2"]
    for run_dir in run_dirs:
        assert os.path.exists(os.path.join(run_dir, "results.json"))
        assert not os.path.exists(os.path.join(run_dir, ".workers"))
    assert not [f for f in os.listdir(os.path.join(logdir, "synthetic")) if f.endswith(".lock")]


def _fake_backup(folder, epoch, rows):
    """A run folder's backup at ``epoch`` (readable files, as resume.prepare checks them) and ``rows`` history rows."""
    import h5py

    os.makedirs(folder.backup_dir, exist_ok=True)
    with h5py.File(os.path.join(folder.backup_dir, "latest.weights.h5"), "w"):
        pass
    with open(os.path.join(folder.backup_dir, "training_metadata.json"), "w") as f:
        json.dump({"epoch": epoch}, f)
    with open(folder.history_path, "w") as f:
        f.write("epoch,loss\n" + "".join(f"{e},{1.0 + e}\n" for e in range(rows)))


@pytest.mark.parametrize("own", [0, 1, 3])
def test_a_worker_behind_or_ahead_of_the_chief_takes_the_chiefs_backup_and_history(tmp_path, monkeypatch, own):
    # Killed at another moment than the chief: its backup is at another epoch and its history may lack rows
    # (a worker killed before it recorded epoch 1 resumed with a 3-row history of 4 epochs and failed).
    from kdkeras.callbacks import read_history
    from kdkeras.training import distribute, pipeline, resume
    from kdkeras.training.run_folder import RunFolder

    chief = RunFolder(str(tmp_path / "run"))
    _fake_backup(chief, epoch=2, rows=2)
    work = chief.worker("worker-1")
    if own:
        _fake_backup(work, epoch=own, rows=own)
        if own == 1:  # killed between the collective step of epoch 1 and its row
            with open(work.history_path, "w") as f:
                f.write("epoch,loss\n0,9.0\n")
    monkeypatch.setattr(distribute, "chief_value", lambda strategy, value: 2)
    assert pipeline._resume_epoch(None, chief, work, chief=False, log=lambda *a: None) == 2
    assert resume.backup_epoch(work.backup_dir) == 2
    assert read_history(work.history_path) == read_history(chief.history_path)
