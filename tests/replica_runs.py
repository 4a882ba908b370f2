"""Run as a script: a train run and a KD run through the real pipeline, recording every step's loss.

    python tests/replica_runs.py --strategy=none --logdir=L --out=O.json
    python tests/replica_runs.py --strategy=mirrored --logical_cpus=2 --logdir=L --out=O.json
    TF_CONFIG=... python tests/replica_runs.py --strategy=multiworker --logdir=L --out=O.json   (every worker)

Both runs use ``kdkeras.training.train_and_evaluate``, as ``train.py`` and
``distill.py`` do: 2 epochs of 3 steps (16, 16 and a ragged last batch:
12 of 44 images for the train run, 13 of 45 for the KD run), dropout 0.3 in
the WRN blocks, the KD student distilled from the train run's ``model.keras``. Writes JSON:
per run, the epoch's running mean of the loss after each step and the run folder (the chief's ``model.keras`` holds the final weights).
"""

import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--strategy", required=True)
parser.add_argument("--logical_cpus", type=int, default=1)
parser.add_argument("--logdir", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--dropout", type=float, default=0.3)
args = parser.parse_args()

import tensorflow as tf  # noqa: E402

if args.logical_cpus > 1:
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)

import keras  # noqa: E402

from kdkeras import config as config_lib  # noqa: E402
from kdkeras.training import train_and_evaluate  # noqa: E402

COMMON = {"dataset": "synthetic", "test_size": 16, "batch_size": 16, "epochs": 2, "dropout": args.dropout, "seed": 0,
          "strategy": args.strategy}
#: The train run: 44 images, a last batch of 12 (6 + 6 on two replicas). The KD run: 45, a last batch of 13 (7 + 6),
#: its teacher the train run's model.keras.
RUNS = {
    "train": {"model": "wrn10x1_R_g2", "train_size": 44},
    "distill": {"model": "wrn10x1_NR_g2", "train_size": 45},
}


class StepLosses(keras.callbacks.Callback):
    """The epoch's running mean of the loss after each training step, read from the model's loss tracker.

    Read here, outside the step, the tracker's sums and counts are those of
    every replica. (The value ``fit`` passes in ``logs`` under several
    replicas is the mean of each replica's own running mean, which is not
    the global one when a last batch splits unevenly; the epoch's value is.)
    """

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])

    def on_train_batch_end(self, batch, logs=None):
        tracker = next(m for m in self.model.metrics if m.name == "loss")
        self.epochs[-1].append(float(keras.ops.convert_to_numpy(tracker.result())))


def main():
    out = {}
    for name, settings in RUNS.items():
        steps = StepLosses()
        if name == "distill":
            teacher = os.path.join(out["train"]["run_dir"], "model.keras")
            deadline = time.monotonic() + 300  # another worker: the chief writes the file after the collectives
            while not os.path.exists(teacher) and time.monotonic() < deadline:
                time.sleep(0.1)
            settings = {**settings, "teacher": teacher}
        config = config_lib.resolve({**COMMON, **settings})
        results = train_and_evaluate(config, args.logdir, callbacks=[steps], verbose=0)
        out[name] = {"steps": steps.epochs, "run_dir": results["run_dir"]}
    from kdkeras.training import distribute

    out["replicas"] = distribute.make_strategy(args.strategy).num_replicas_in_sync
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
