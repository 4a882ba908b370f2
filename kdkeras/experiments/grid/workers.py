"""A grid as worker processes on one machine: ``--gpus=0,1,... --workers_per_gpu=K`` or ``--cpu_workers=N``.

The command with ``--gpus`` trains nothing itself: it starts ``len(gpus) x K``
processes of the same grid command, worker ``j`` with

* ``--shard=j/N`` (N workers in all; with ``--shard=i/n`` given too, the
  machine's part is split further: worker ``j`` runs shard ``i + n*j`` of
  ``n*N``, since every ``N``-th cell of every ``n``-th cell is every
  ``n*N``-th cell);
* ``CUDA_VISIBLE_DEVICES=<gpu>``: GPU ``gpus[j % len(gpus)]``, so
  consecutive shards land on different GPUs;
* ``KDKERAS_GPU_MEMORY``: ``growth`` (each process takes GPU memory as it
  needs it; TensorFlow's default reserves nearly all of it in the first
  process), or ``--gpu_memory_mb`` each (:func:`kdkeras.host.configure_gpu_memory`).

With ``--cpu_workers=N`` it starts N processes instead, worker ``j`` with
its shard as above, pinned to the ``j``-th of N near-equal, disjoint parts of
the cores this process may use (``os.sched_getaffinity``), with as many
TensorFlow threads (``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS``)
and no GPU (``CUDA_VISIBLE_DEVICES=""``). The small networks of the reduced
studies use several cores poorly within one step, so on a CPU several
single-core runs side by side train more images per second than one run on
all cores (docs/distributed.md, "Several runs on one CPU").

The workers are ordinary shards: they share ``--logdir`` and its run claims
(:mod:`kdkeras.claims`), so every run trains once, a KD run whose teacher
another worker trains comes after the worker's other runs, and a worker that dies has its runs taken over by the others
(:mod:`kdkeras.experiments.grid.run`). The launcher writes
``<logdir>/<grid>/workers/workers.json`` (each worker's index, GPU, shard,
environment, process id, log file and, at the end, exit code) and one log
per worker beside it, waits for all of them, and reports the ones that
failed. docs/distributed.md, "A node of 8 GPUs".
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import socket
import subprocess
import sys
import time

from kdkeras.errors import UsageError

#: The record of a launch, in ``<logdir>/<grid>/workers/``.
WORKERS_FILE = "workers.json"


@dataclasses.dataclass(frozen=True)
class Worker:
    """One worker process: its index, its GPU or CPU cores, its shard ``(i, n)`` and the environment it gets."""

    index: int
    gpu: str | None
    shard: tuple
    env: dict
    cpus: tuple = ()  # --cpu_workers: the cores it is pinned to

    @property
    def shard_text(self) -> str:
        return f"{self.shard[0]}/{self.shard[1]}"

    @property
    def log_name(self) -> str:
        return f"worker-{self.index}.log"


def parse_gpus(values) -> list[str]:
    """``--gpus`` as GPU indices (strings of non-negative integers, each once).

    Raises:
        UsageError: an empty list, a value that is not a GPU index, or one given twice.
    """
    gpus = [str(v).strip() for v in (values or [])]
    if not gpus or any(not g.isdigit() for g in gpus):
        raise UsageError(f"--gpus takes GPU indices, e.g. --gpus=0,1,2,3. Received: {','.join(gpus) or '(none)'}.")
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus names a GPU twice: use --workers_per_gpu for several workers on one GPU. "
                         f"Received: {','.join(gpus)}.")
    return gpus


def assign(gpus, workers_per_gpu: int, shard=(0, 1), gpu_memory_mb: int | None = None) -> list[Worker]:
    """The workers of one machine: ``len(gpus) * workers_per_gpu`` of them (see the module docstring).

    Args:
        gpus: GPU indices (:func:`parse_gpus`).
        workers_per_gpu: worker processes per GPU (K).
        shard: this machine's part ``(i, n)`` of the grid (``--shard``; ``(0, 1)``: all of it).
        gpu_memory_mb: each worker's GPU memory limit (``None``: memory growth).

    Raises:
        UsageError: ``workers_per_gpu`` or ``gpu_memory_mb`` not positive.
    """
    from kdkeras import host

    if isinstance(workers_per_gpu, bool) or not isinstance(workers_per_gpu, int) or workers_per_gpu < 1:
        raise UsageError(f"--workers_per_gpu must be a positive integer. Received: {workers_per_gpu!r}.")
    if gpu_memory_mb is not None and gpu_memory_mb < 1:
        raise UsageError(f"--gpu_memory_mb must be a positive number of MiB. Received: {gpu_memory_mb}.")
    gpus = parse_gpus(gpus)
    first, parts = shard
    count = len(gpus) * workers_per_gpu
    memory = {host.GPU_MEMORY_VARIABLE: "growth", "TF_FORCE_GPU_ALLOW_GROWTH": "true"} if gpu_memory_mb is None \
        else {host.GPU_MEMORY_VARIABLE: str(int(gpu_memory_mb))}
    return [Worker(j, gpus[j % len(gpus)], (first + parts * j, parts * count),
                   {"CUDA_VISIBLE_DEVICES": gpus[j % len(gpus)], **memory}) for j in range(count)]


def assign_cpus(count: int, shard=(0, 1), cpus=None) -> list[Worker]:
    """``--cpu_workers=N``: N workers, each pinned to its own part of the cores (see the module docstring).

    Args:
        count: worker processes (N).
        shard: this machine's part ``(i, n)`` of the grid (``--shard``; ``(0, 1)``: all of it).
        cpus: the cores to share out (default: those this process may run on).

    Raises:
        UsageError: ``count`` not a positive integer, more workers than cores, or
            a system without ``os.sched_getaffinity`` (not Linux).
    """
    if cpus is None and not hasattr(os, "sched_getaffinity"):
        raise UsageError("--cpu_workers pins each worker to its own cores, which this operating system does not "
                         "let a process do (Linux does): start shards by hand instead (--shard=i/n).")
    cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UsageError(f"--cpu_workers must be a positive integer. Received: {count!r}.")
    if count > len(cpus):
        raise UsageError(f"--cpu_workers={count} is more workers than the {len(cpus)} CPU cores this process may "
                         f"use: give at most --cpu_workers={len(cpus)}.")
    first, parts = shard
    out = []
    for j in range(count):
        part = tuple(cpus[j * len(cpus) // count:(j + 1) * len(cpus) // count])
        threads = str(len(part))
        out.append(Worker(j, None, (first + parts * j, parts * count),
                          {"CUDA_VISIBLE_DEVICES": "", "TF_NUM_INTRAOP_THREADS": threads,
                           "TF_NUM_INTEROP_THREADS": threads}, part))
    return out


def describe(worker: Worker) -> str:
    """``worker 2: GPU 0, shard 2/4, KDKERAS_GPU_MEMORY=growth`` or ``worker 1: CPUs 2-3, shard 1/2, 2 threads``."""
    from kdkeras import host

    if worker.gpu is None:
        threads = worker.env["TF_NUM_INTRAOP_THREADS"]
        return (f"worker {worker.index}: CPU{'s' if len(worker.cpus) > 1 else ''} {host.cpu_list(worker.cpus)}, "
                f"shard {worker.shard_text}, {threads} TensorFlow thread{'s' if threads != '1' else ''}")
    return (f"worker {worker.index}: GPU {worker.gpu}, shard {worker.shard_text}, "
            f"{host.GPU_MEMORY_VARIABLE}={worker.env[host.GPU_MEMORY_VARIABLE]}")


def print_assignment(workers, out=print) -> None:
    """The workers a launch would start, one line each (``--dry_run``)."""
    from kdkeras import host

    if workers[0].gpu is None:
        out(f"{len(workers)} workers on CPUs {host.cpu_list(c for w in workers for c in w.cpus)}:")
    else:
        gpus = sorted({w.gpu for w in workers}, key=int)
        out(f"{len(workers)} workers on GPU {', '.join(gpus)} ({len(workers) // len(gpus)} per GPU):")
    for worker in workers:
        out(f"  {describe(worker)}")


def _command(args, worker: Worker) -> list[str]:
    return [sys.executable, "-m", "kdkeras", "grid", *args, f"--shard={worker.shard_text}"]


def _env(worker: Worker) -> dict:
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, **worker.env, "PYTHONPATH": package_parent + (os.pathsep + path if path else "")}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def launch(workers, args, folder: str, *, log=print, poll_s: float = 1.0) -> list[Worker]:
    """Starts the workers (``kdkeras grid <args> --shard=...``), waits for them; returns the ones that failed.

    Args:
        workers: from :func:`assign`.
        args: the grid command's flags for every worker (without ``--shard``, ``--gpus``, ...).
        folder: where ``workers.json`` and the workers' logs go.
        log: progress lines.
        poll_s: seconds between two looks at the workers.

    A ``SIGTERM`` or ``Ctrl-C`` to the launcher stops its workers (their
    claims are then taken over by whoever runs the grid next).
    """
    from kdkeras.io_utils import atomic_write_json

    os.makedirs(folder, exist_ok=True)
    record = {"started_at": _now(), "host": socket.gethostname(), "args": list(args), "workers": []}
    procs, logs = [], []

    def write():
        atomic_write_json(os.path.join(folder, WORKERS_FILE), record)

    previous = _stop_on_sigterm()
    try:
        for worker in workers:
            path = os.path.join(folder, worker.log_name)
            logs.append(open(path, "w"))
            pin = (lambda cpus=worker.cpus: os.sched_setaffinity(0, cpus)) if worker.cpus else None
            procs.append(subprocess.Popen(_command(args, worker), stdout=logs[-1], stderr=subprocess.STDOUT,
                                          env=_env(worker), preexec_fn=pin))
            entry = {"index": worker.index, "gpu": worker.gpu, "shard": worker.shard_text, "env": worker.env}
            if worker.cpus:
                entry["cpus"] = list(worker.cpus)
            record["workers"].append({**entry, "pid": procs[-1].pid, "log": path, "returncode": None})
            log(f"{describe(worker)}, pid {procs[-1].pid} -> {path}")
        write()
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
    finally:
        for proc in procs:  # only the processes started here; after a normal end there are none left
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for entry, proc in zip(record["workers"], procs):
            entry["returncode"] = proc.returncode
        record["finished_at"] = _now()
        write()
        for f in logs:
            f.close()
        _restore_sigterm(previous)
    failed = [w for w, p in zip(workers, procs) if p.returncode != 0]
    log(f"{len(workers) - len(failed)} of {len(workers)} workers finished"
        + (f"; failed: {', '.join(f'worker {w.index} (see {os.path.join(folder, w.log_name)})' for w in failed)}"
           if failed else ""))
    return failed


def _stop_on_sigterm():
    """Turns SIGTERM into ``SystemExit`` in the main thread (so the launcher stops its workers); the old handler."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
