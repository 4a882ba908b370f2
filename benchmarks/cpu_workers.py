"""Training throughput on a CPU: one run on every core against N runs side by side, each on its own cores.

    python benchmarks/cpu_workers.py                                   # wrn16x1_NR_g2, 2 workers (the study nets)
    python benchmarks/cpu_workers.py --model=wrn40x1_R_g2 --workers=4 --output=cpu_workers.json

This is what ``kdkeras grid --cpu_workers=N`` does with a grid's runs
(docs/distributed.md, "Several runs on one CPU"). It times whole runs, as a
grid trains them: ``kdkeras train`` on synthetic data (``--train_size``
images with the recipe's augmentation, ``--test_size`` test images evaluated
every epoch), ``--epochs`` epochs, each run's rate being its training images
per second of wall time over the epochs after the first (which also traces
the graph). Two rounds:

1. one run on every core this process may use, TensorFlow's default threads;
2. N runs at once, each pinned to 1/N of the cores with as many TensorFlow
   threads and no GPU, exactly as the grid starts its workers
   (:func:`kdkeras.experiments.grid.workers.assign_cpus`).

It prints images/s of each round and the gain of (2) over (1), and writes them
as JSON with the CPU model (``--output``).
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _fail(message):
    """A usage mistake: one line, exit code 2."""
    print(f"cpu_workers.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def _start(args, logdir, worker=None):
    """One ``kdkeras train`` process (pinned and threaded as ``worker`` says, if given)."""
    env = {**os.environ, "PYTHONPATH": ROOT + (os.pathsep + os.environ["PYTHONPATH"]
                                                if os.environ.get("PYTHONPATH") else ""),
           "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}  # both rounds on the CPU
    pin = None
    if worker is not None:
        env.update(worker.env)
        pin = (lambda cpus=worker.cpus: os.sched_setaffinity(0, cpus))
    command = [sys.executable, "-m", "kdkeras", "train", f"--model={args.model}", "--dataset=synthetic",
               f"--train_size={args.train_size}", f"--test_size={args.test_size}", f"--epochs={args.epochs}",
               f"--batch_size={args.batch_size}", f"--logdir={logdir}"]
    log = open(os.path.join(logdir, "train.log"), "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=pin), log


def _rate(logdir, train_size):
    """Training images per second of wall time over the epochs after the first, from the run's history.csv."""
    [history] = [os.path.join(d, "history.csv") for d, _, files in os.walk(logdir) if "history.csv" in files]
    with open(history) as f:
        times = [float(row["epoch_time_s"]) for row in csv.DictReader(f)][1:]
    return train_size / statistics.median(times)


def _round(args, folder, team):
    """Starts the round's runs together, waits for them; their rates (images/s)."""
    procs = []
    for i, worker in enumerate(team):
        logdir = os.path.join(folder, f"run-{i}")
        os.makedirs(logdir)
        procs.append((logdir, *_start(args, logdir, worker)))
    for logdir, proc, log in procs:
        code = proc.wait()
        log.close()
        if code != 0:
            with open(os.path.join(logdir, "train.log")) as f:
                sys.exit(f"A benchmark run failed (exit code {code}); the end of its log:\n{f.read()[-2000:]}")
    return [round(_rate(logdir, args.train_size), 1) for logdir, _, _ in procs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="wrn16x1_NR_g2")
    parser.add_argument("--workers", type=int, default=2, help="runs side by side (N)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--train_size", type=int, default=5120)
    parser.add_argument("--test_size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3, help="at least 2 (the first is not timed)")
    parser.add_argument("--output", default=None, help="JSON record (default: print only)")
    args = parser.parse_args()
    if args.epochs < 2:
        _fail(f"--epochs must be at least 2 (the first epoch, which traces the graph, is not timed). "
              f"Received: {args.epochs}.")

    from kdkeras import cli  # noqa: F401  (first: oneDNN on, TensorFlow's start-up logging quiet, as in a command)
    from kdkeras import host
    from kdkeras.errors import UsageError
    from kdkeras.experiments.grid import workers
    from kdkeras.io_utils import atomic_write_json

    try:
        team = workers.assign_cpus(args.workers)
    except UsageError as err:  # its message names the grid's flag
        _fail(str(err).replace("--cpu_workers", "--workers"))
    every = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="kdkeras-cpu-workers-") as folder:
        [one] = _round(args, os.path.join(folder, "one"), [None])
        side = _round(args, os.path.join(folder, "side"), team)
    record = {
        "model": args.model, "batch_size": args.batch_size, "train_size": args.train_size,
        "test_size": args.test_size, "epochs": args.epochs, "cpu": host.cpu_info()["model"],
        "cores": host.cpu_list(every),
        "command": " ".join(["python", "benchmarks/cpu_workers.py", *sys.argv[1:]]),
        "one_run": {"cores": host.cpu_list(every), "images_per_sec": one},
        "side_by_side": {"workers": args.workers, "cores": [host.cpu_list(w.cpus) for w in team],
                         "images_per_sec": round(sum(side), 1), "per_run": side},
        "gain": round(sum(side) / one, 3),
    }
    print(f"{args.model}, batch {args.batch_size}, {record['cpu']}, cores {record['cores']}:")
    print(f"  1 run on every core: {one:.1f} training images/s")
    print(f"  {args.workers} runs side by side ({', '.join(host.cpu_list(w.cpus) for w in team)}): "
          f"{sum(side):.1f} images/s ({', '.join(f'{r:.1f}' for r in side)})")
    print(f"  gain: x{record['gain']:.2f}")
    if args.output:
        atomic_write_json(args.output, record)
        print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
