"""Several runs on one device: the throughput of 1 against K training processes at once.

The check starts K processes on the same device, each with GPU memory
growth (``KDKERAS_GPU_MEMORY=growth``, as ``kdkeras grid --workers_per_gpu``
gives its workers) and the same small run (:data:`kdkeras.gpu_check.cases.SMALL_RUN`,
``throughput.build_step``). Each builds and warms up its model, says so
with a file, and waits. Then, through files in a scratch folder:

1. ``single``: process 0 alone times its windows (the others wait, idle);
2. ``together``: all K time their windows at the same moment.

The ``together`` rate is the sum of the K processes' medians; against the
``single`` rate it says what K runs per GPU gain (or lose). Each process
reports its own peak GPU memory. Run as ``python -m kdkeras.gpu_check.concurrent SPEC``
(the worker side); :func:`measure_concurrent` is the check's side.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

#: Seconds a worker may take to start (TensorFlow, the model, the warm-up) or to time one round.
TIMEOUT_S = 600.0
_POLL_S = 0.05


def _path(folder: str, name: str) -> str:
    return os.path.join(folder, name)


def _worker_env() -> dict:
    from kdkeras import host

    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, host.GPU_MEMORY_VARIABLE: "growth", "TF_FORCE_GPU_ALLOW_GROWTH": "true",
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": package_parent + (os.pathsep + path if path else "")}


def _wait_for(path: str, procs, folder: str, what: str, timeout_s: float) -> dict:
    """The JSON of ``path`` once a worker wrote it; a worker that exits first is an error with its own error."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        for i, proc in enumerate(procs):
            code = proc.poll()
            if code is not None and code != 0:
                raise RuntimeError(f"concurrent worker {i} exited with code {code} before {what}: "
                                   f"{_worker_error(folder, i)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(_POLL_S)
    with open(path) as f:
        return json.load(f)


def _worker_error(folder: str, index: int, chars: int = 600) -> str:
    """The error a worker recorded (``error-<i>.json``), else the end of its log."""
    try:
        with open(_path(folder, f"error-{index}.json")) as f:
            return json.load(f)["error"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        with open(_path(folder, f"worker-{index}.log"), errors="replace") as f:
            return " ".join(f.read()[-chars:].split())
    except OSError:
        return "(no log)"


def measure_concurrent(case, steps, timeout_s: float = TIMEOUT_S) -> dict:
    """1 against ``case.runs`` training processes of ``case.model`` on this process's first device."""
    runs = int(case.runs)
    with tempfile.TemporaryDirectory(prefix="kdkeras-concurrent-") as folder:
        procs, logs = [], []
        try:
            for i in range(runs):
                spec = {"folder": folder, "index": i, "model": case.model, "rounds": ["single", "together"] if i == 0
                        else ["together"], "warmup": steps.warmup, "steps": steps.steps, "repeats": steps.repeats,
                        "batch_size": steps.batch_size}
                logs.append(open(_path(folder, f"worker-{i}.log"), "w"))
                procs.append(subprocess.Popen([sys.executable, "-m", "kdkeras.gpu_check.concurrent", json.dumps(spec)],
                                              stdout=logs[-1], stderr=subprocess.STDOUT, env=_worker_env()))
            start = time.perf_counter()
            ready = [_wait_for(_path(folder, f"ready-{i}.json"), procs, folder, f"worker {i}'s warm-up", timeout_s)
                     for i in range(runs)]
            build_s = time.perf_counter() - start
            results = {}
            for round_name, members in (("single", [0]), ("together", list(range(runs)))):
                open(_path(folder, f"go-{round_name}"), "w").close()
                results[round_name] = [_wait_for(_path(folder, f"result-{round_name}-{i}.json"), procs, folder,
                                                 f"worker {i}'s {round_name} round", timeout_s) for i in members]
            for proc in procs:
                proc.wait(timeout=60)
        finally:
            for proc in procs:  # only the processes started here
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for log in logs:
                log.close()
    single = results["single"][0]
    together = [r["images_per_sec"] for r in results["together"]]
    total = sum(together)
    return {
        "variants": {
            "1 run": {"images_per_sec": single["images_per_sec"], "step_ms": single["step_ms"], "runs": single["runs"]},
            f"{runs} runs": {"images_per_sec": round(total, 1), "per_run": together,
                             "step_ms": round(statistics.median(r["step_ms"] for r in results["together"]), 3)},
        },
        "speedup": round(total / single["images_per_sec"], 3),
        "batch_size": ready[0]["batch_size"], "build_s": round(build_s, 1),
        "peak_gpu_mib": [r["peak_gpu_mib"] for r in results["together"]],
        "memory": "growth",
    }


def worker_main(text: str) -> None:
    """One of the K processes (see the module docstring); ``text`` is its JSON spec."""
    from kdkeras import host, throughput  # kdkeras first, then TensorFlow: oneDNN on, as in any kdkeras process
    from kdkeras.gpu_check import measure
    from kdkeras.io_utils import atomic_write_json

    spec = json.loads(text)
    folder, index = spec["folder"], spec["index"]
    host.configure_gpu_memory()
    timer = throughput.build_step(spec["model"], "train", batch_size=spec["batch_size"])
    timer.warm_up(spec["warmup"])
    atomic_write_json(_path(folder, f"ready-{index}.json"), {"pid": os.getpid(), "batch_size": timer.batch_size,
                                                             "device": throughput.device_name()})
    for round_name in spec["rounds"]:
        deadline = time.monotonic() + TIMEOUT_S
        while not os.path.exists(_path(folder, f"go-{round_name}")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no go for round {round_name} within {TIMEOUT_S:.0f} s")
            time.sleep(_POLL_S / 5)
        measure.reset_peak_memory()
        rates = [timer.window(spec["steps"]) for _ in range(spec["repeats"])]
        median = statistics.median(rates)
        atomic_write_json(_path(folder, f"result-{round_name}-{index}.json"), {
            "images_per_sec": round(median, 1), "step_ms": round(1000.0 * timer.batch_size / median, 3),
            "runs": [round(r, 1) for r in rates], "peak_gpu_mib": measure.peak_memory_mib()})


def _main(text: str) -> None:
    try:
        worker_main(text)
    except Exception as err:  # recorded for the check's error line, then the traceback in the log
        from kdkeras.data.specs import short_error
        from kdkeras.io_utils import atomic_write_json

        spec = json.loads(text)
        atomic_write_json(_path(spec["folder"], f"error-{spec['index']}.json"), {"error": short_error(err, 300)})
        raise


if __name__ == "__main__":
    _main(sys.argv[1])
