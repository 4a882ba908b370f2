"""Run as a script: a train run and a KD run through the real pipeline, recording every step's loss.

    python tests/replica_runs.py --strategy=none --logdir=L --out=O.json
    python tests/replica_runs.py --strategy=mirrored --logical_cpus=2 --logdir=L --out=O.json
    TF_CONFIG=... python tests/replica_runs.py --strategy=multiworker --logdir=L --out=O.json   (every worker)

Both runs use ``kdkeras.training.train_and_evaluate``, as ``train.py`` and
``distill.py`` do: 2 epochs of 3 steps (16, 16 and a ragged 12 of 44
images), dropout 0.3 in the WRN blocks, a KD student distilled from the
train run's network (found finished in the same log folder). Writes JSON:
per run, the loss ``fit`` reports after each step (the running mean of the
epoch) and the run folder (the chief's ``model.keras`` holds the final weights).
"""

import argparse
import json
import os
import sys

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

COMMON = {"dataset": "synthetic", "train_size": 44, "test_size": 16, "batch_size": 16, "epochs": 2, "dropout": args.dropout,
          "seed": 0, "strategy": args.strategy}
RUNS = {
    "train": {"model": "wrn10x1_R_g2"},
    "distill": {"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2"},
}


class StepLosses(keras.callbacks.Callback):
    """The loss ``fit`` reports after each training step, per epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1].append(float(keras.ops.convert_to_numpy(logs["loss"])))


def main():
    out = {}
    for name, settings in RUNS.items():
        steps = StepLosses()
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
