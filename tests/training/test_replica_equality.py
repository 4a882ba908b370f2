"""Several replicas train the network one device trains: the real pipeline, train and KD, step by step.

``tests/replica_runs.py`` runs a train run and a KD run (its student distilled
from that network) through ``kdkeras.training.train_and_evaluate``, as the
commands do: 2 epochs of 3 steps (16, 16 and a ragged last batch: 12 of 44
images for the train run, 13 of 45 for the KD run, whose teacher is the train
run's ``model.keras``), dropout 0.3. Three ways, at once: one process on one device; one process
with MirroredStrategy over 2 logical CPU devices; two worker processes with
MultiWorkerMirroredStrategy. The replicas' steps equal the single device's:
global-batch BatchNorm statistics (synchronized), global-batch dropout masks
(:class:`kdkeras.layers.GlobalBatchDropout`), the mean over the global batch
(the KD objective also for a ragged batch split unevenly, 7 + 6; the train run's
last batch splits evenly, 6 + 6, where Keras's own rule is exact), and the same epochs of data.
docs/distributed.md says what is exactly equal and what only within rounding.
"""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tests.helpers import free_ports, script_env

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "replica_runs.py")
ROOT = os.path.dirname(os.path.dirname(SCRIPT))
RUNS = ("train", "distill")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{"single" | "mirrored" | "multiworker": the script's JSON (the chief's for the workers)}``."""
    root = tmp_path_factory.mktemp("replicas")
    env = script_env(PYTHONPATH=ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    jobs = {
        "single": (["--strategy=none"], {}),
        "mirrored": (["--strategy=mirrored", "--logical_cpus=2"], {}),
        **{f"worker{i}": (["--strategy=multiworker"], {"TF_CONFIG": json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})}) for i in range(2)},
    }
    procs = {}
    for name, (flags, extra) in jobs.items():
        logdir = str(root / ("multiworker" if name.startswith("worker") else name))
        log = open(root / f"{name}.log", "w")
        procs[name] = (subprocess.Popen([sys.executable, SCRIPT, *flags, f"--logdir={logdir}",
                                         f"--out={root / name}.json"], stdout=log, stderr=subprocess.STDOUT,
                                        env={**env, **extra}), log)
    for name, (proc, log) in procs.items():
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            for other, _ in procs.values():
                other.kill()
        log.close()
    failed = [name for name, (proc, _) in procs.items() if proc.returncode != 0]
    assert not failed, "\n".join(f"{n}:\n" + (root / f"{n}.log").read_text()[-3000:] for n in failed)
    out = {name: json.loads((root / f"{name}.json").read_text()) for name in ("single", "mirrored", "worker0")}
    out["multiworker"] = out.pop("worker0")
    out["worker1"] = json.loads((root / "worker1.json").read_text())
    return out


def _weights(run_dir):
    """Every weight array of a run's ``model.keras``, by its path in the file."""
    import h5py

    with zipfile.ZipFile(os.path.join(run_dir, "model.keras")) as z:
        data = z.read("model.weights.h5")
    arrays = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, np.array(obj)) if isinstance(obj, h5py.Dataset)
                     else None)
    return arrays


def test_the_runs_had_two_replicas_and_a_ragged_last_batch(runs):
    assert (runs["single"]["replicas"], runs["mirrored"]["replicas"], runs["multiworker"]["replicas"]) == (1, 2, 2)
    for name in ("single", "mirrored", "multiworker"):
        for run in RUNS:
            assert [len(steps) for steps in runs[name][run]["steps"]] == [3, 3]  # 16 + 16 + 12 or 13


@pytest.mark.parametrize("strategy", ["mirrored", "multiworker"])
@pytest.mark.parametrize("run", RUNS)
def test_every_step_loss_equals_one_devices(runs, strategy, run):
    # The epoch's running mean of the loss after each step (the loss tracker over every replica), all 6 steps. Not bit for bit: the
    # replicas' gradients and BatchNorm sums are added in another order (float32 rounding, compounding over the
    # steps; seen up to 4e-7 relative): 1e-5 relative.
    got, expected = runs[strategy][run]["steps"], runs["single"][run]["steps"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)
    if strategy == "multiworker":  # the other worker reports the same steps
        np.testing.assert_allclose(runs["worker1"][run]["steps"], expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("strategy", ["mirrored", "multiworker"])
@pytest.mark.parametrize("run", RUNS)
def test_the_final_weights_equal_one_devices(runs, strategy, run):
    # Every array of model.keras (weights, BatchNorm statistics), in norm: 1e-4 of the array's norm plus 1e-5 per
    # element (RMS). The replicas add gradients in another order; the rounding enters each parameter through the
    # SGD steps (lr times the gradient's rounding), so on the gradients' scale, not the parameter's: seen up to
    # 7e-6 per element on conv kernels of scale 0.5 and on BatchNorm shifts of scale 1e-4 alike. A real
    # difference (another dropout mask, a mean over the local batch) moves them by 1e-3 and more.
    expected = _weights(runs["single"][run]["run_dir"])
    got = _weights(runs[strategy][run]["run_dir"])
    assert got.keys() == expected.keys() and len(expected) > 60
    for name, value in expected.items():
        error = float(np.linalg.norm(got[name] - value))
        assert error <= 1e-4 * float(np.linalg.norm(value)) + 1e-5 * np.sqrt(value.size), name


def test_keras_dropout_alone_would_not_be_equal():
    # Why the zoo's dropout layer is GlobalBatchDropout: with Keras's layer every replica reuses the first rows of
    # the single-device mask; with it, each replica takes its own rows, also for a ragged split (7 + 3).
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "dropout_replicas.py")], capture_output=True,
                          text=True, env=script_env(), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["global_5_5"] and result["global_7_3"]
    assert not result["keras_5_5"] and not result["keras_7_3"]
    assert 0.3 < result["global_dropped"] < 0.5  # the layer drops (rate 0.4)
