"""Several grid workers per GPU (`kdkeras grid --gpus=... --workers_per_gpu=K`), on CPU.

The end-to-end test starts 2 workers "on GPU 0" of a 3-run grid: each gets
its shard, `CUDA_VISIBLE_DEVICES` and GPU memory growth (seen in its own log,
printed by the worker from its environment, and in workers.json), they
share the run claims, and together they train every run exactly once. On
a CPU the variables change nothing else; on a GPU they are what lets K
processes share one device.
"""

import json
import os

import pytest

from helpers import one_pair_grid, run_script

from kdkeras import grid, host
from kdkeras.errors import UsageError
from kdkeras.experiments.grid import workers

TINY_GRID = one_pair_grid("tiny_workers", epochs=1, train_size=32, batch_size=32)


def test_two_workers_on_one_device_train_every_run_once(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_GRID)
    logdir = tmp_path / "logs"
    result = run_script("grid.py", f"--config={config}", f"--logdir={logdir}", "--gpus=0", "--workers_per_gpu=2",
                        timeout=600)
    folder = logdir / "tiny_workers" / "workers"
    logs = {p.name: p.read_text() for p in folder.glob("worker-*.log")} if folder.exists() else {}
    assert result.returncode == 0, result.stderr[-2000:] + "\n".join(v[-2000:] for v in logs.values())
    record = json.loads((folder / workers.WORKERS_FILE).read_text())
    assert [(w["index"], w["gpu"], w["shard"], w["returncode"]) for w in record["workers"]] == [
        (0, "0", "0/2", 0), (1, "0", "1/2", 0)]
    for w in record["workers"]:
        assert w["env"] == {"CUDA_VISIBLE_DEVICES": "0", host.GPU_MEMORY_VARIABLE: "growth",
                            "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
        # The worker's own first line: the assignment as its environment had it.
        assert logs[f"worker-{w['index']}.log"].count(
            f"Grid shard {w['shard']} on GPU 0 (CUDA_VISIBLE_DEVICES=0), GPU memory: growth") == 1
    assert record["args"] == [f"--config={config}", f"--logdir={logdir}"]  # no --gpus, --shard: each its own
    finished = [line.split()[1].rstrip(":") for text in logs.values() for line in text.splitlines()
                if line.startswith("Finished ")]
    cells = grid.plan(grid.load_grid(str(config)), str(logdir))
    assert sorted(finished) == sorted(os.path.basename(c.run_dir) for c in cells)  # each run trained exactly once
    assert all(grid.state(c) == "done" for c in cells)
    assert (logdir / "tiny_workers" / "table.md").exists()
    assert "2 of 2 workers finished" in result.stdout


def test_workers_are_spread_over_the_gpus_and_split_the_machines_shard():
    team = workers.assign(["0", "1"], 2)
    assert [(w.index, w.gpu, w.shard_text) for w in team] == [(0, "0", "0/4"), (1, "1", "1/4"), (2, "0", "2/4"),
                                                              (3, "1", "3/4")]
    # Machine 1 of 3 (--shard=1/3) with 4 workers: every 4th of its every-3rd cell is every 12th cell.
    machine = workers.assign(["0", "1"], 2, shard=(1, 3), gpu_memory_mb=8000)
    assert [w.shard_text for w in machine] == ["1/12", "4/12", "7/12", "10/12"]
    cells = list(range(50))
    mine = grid.shard(cells, 1, 3)
    assert sorted(c for w in machine for c in grid.shard(cells, *w.shard)) == mine
    assert machine[0].env == {"CUDA_VISIBLE_DEVICES": "0", host.GPU_MEMORY_VARIABLE: "8000"}


@pytest.mark.parametrize("gpus, per_gpu, memory, message", [
    (["0", "x"], 1, None, "--gpus takes GPU indices, e.g. --gpus=0,1,2,3. Received: 0,x."),
    (["0", "0"], 1, None, "--gpus names a GPU twice: use --workers_per_gpu"),
    (["0"], 0, None, "--workers_per_gpu must be a positive integer. Received: 0."),
    (["0"], 1, 0, "--gpu_memory_mb must be a positive number of MiB. Received: 0."),
])
def test_bad_worker_settings_are_one_line_errors(gpus, per_gpu, memory, message):
    with pytest.raises(UsageError, match=message.replace(".", r"\.").replace("(", r"\(")):
        workers.assign(gpus, per_gpu, gpu_memory_mb=memory)


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda pid: ())(0)) < 2,
                    reason="--cpu_workers=2 needs 2 CPU cores and Linux's sched_setaffinity")
def test_two_cpu_workers_each_on_its_own_core_train_every_run_once(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_GRID)
    logdir = tmp_path / "logs"
    cores = sorted(os.sched_getaffinity(0))[:2]
    result = run_script("grid.py", f"--config={config}", f"--logdir={logdir}", "--cpu_workers=2", timeout=600,
                        preexec_fn=lambda: os.sched_setaffinity(0, cores))
    folder = logdir / "tiny_workers" / "workers"
    logs = {p.name: p.read_text() for p in folder.glob("worker-*.log")} if folder.exists() else {}
    assert result.returncode == 0, result.stderr[-2000:] + "\n".join(v[-2000:] for v in logs.values())
    record = json.loads((folder / workers.WORKERS_FILE).read_text())
    assert [(w["index"], w["gpu"], w["cpus"], w["shard"], w["returncode"]) for w in record["workers"]] == [
        (0, None, [cores[0]], "0/2", 0), (1, None, [cores[1]], "1/2", 0)]
    for w in record["workers"]:
        assert w["env"] == {"CUDA_VISIBLE_DEVICES": "", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
        # The worker's own first line: the core it runs on (read by the worker from its affinity) and its threads.
        assert logs[f"worker-{w['index']}.log"].count(
            f"Grid shard {w['shard']} on CPU {w['cpus'][0]}, TensorFlow threads: TF_NUM_INTRAOP_THREADS=1, "
            f"TF_NUM_INTEROP_THREADS=1") == 1
    finished = [line.split()[1].rstrip(":") for text in logs.values() for line in text.splitlines()
                if line.startswith("Finished ")]
    cells = grid.plan(grid.load_grid(str(config)), str(logdir))
    assert sorted(finished) == sorted(os.path.basename(c.run_dir) for c in cells)  # each run trained exactly once
    assert "2 of 2 workers finished" in result.stdout
    assert "worker 0: CPU" in result.stdout


def test_cpu_workers_share_out_the_cores_and_split_the_machines_shard():
    team = workers.assign_cpus(3, cpus=[0, 1, 2, 3, 4, 5, 6, 7])
    assert [(w.cpus, w.shard_text, w.env["TF_NUM_INTRAOP_THREADS"]) for w in team] == [
        ((0, 1), "0/3", "2"), ((2, 3, 4), "1/3", "3"), ((5, 6, 7), "2/3", "3")]
    assert all(w.gpu is None and w.env["CUDA_VISIBLE_DEVICES"] == "" for w in team)
    machine = workers.assign_cpus(2, shard=(1, 3), cpus=[4, 9])
    assert [(w.cpus, w.shard_text) for w in machine] == [((4,), "1/6"), ((9,), "4/6")]
    assert workers.describe(machine[1]) == "worker 1: CPU 9, shard 4/6, 1 TensorFlow thread"
    assert host.cpu_list([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"


@pytest.mark.parametrize("count, message", [
    (0, "--cpu_workers must be a positive integer. Received: 0."),
    (5, "--cpu_workers=5 is more workers than the 4 CPU cores this process may use: give at most --cpu_workers=4."),
])
def test_bad_cpu_worker_settings_are_one_line_errors(count, message):
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        workers.assign_cpus(count, cpus=[0, 1, 2, 3])
