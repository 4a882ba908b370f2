"""Keras callbacks used by every run."""

from __future__ import annotations

import csv
import io
import math
import os
import time

import keras

from kdkeras.io_utils import atomic_write_text


class EpochStats(keras.callbacks.Callback):
    """Adds ``lr`` (the rate of the epoch's last step) and ``epoch_time_s`` to the logs.

    Place it before the callbacks that record logs (CSV, TensorBoard).
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            lr = optimizer._learning_rate(optimizer.iterations - 1)
        logs["lr"] = float(keras.ops.convert_to_numpy(lr))
        logs["epoch_time_s"] = time.perf_counter() - self._start


class HistoryCSV(keras.callbacks.Callback):
    """One CSV row per finished epoch, rewritten atomically after every epoch.

    On resume (``initial_epoch`` > 0) the rows of the epochs that will run
    again are dropped, so the file never holds an epoch twice.

    Args:
        path: the CSV file.
        initial_epoch: the first epoch this ``fit`` runs (from the backup).
    """

    def __init__(self, path, initial_epoch=0):
        super().__init__()
        self.path = path
        self.rows = []
        if initial_epoch and os.path.exists(path):
            with open(path, newline="") as f:
                self.rows = [row for row in csv.DictReader(f) if int(row["epoch"]) < initial_epoch]

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch}
        for key, value in (logs or {}).items():
            value = float(keras.ops.convert_to_numpy(value))
            row[key] = repr(value) if math.isfinite(value) else str(value)
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, out.getvalue())


def read_history(path: str) -> list[dict]:
    """Rows of a ``history.csv`` as dicts of floats (``epoch`` as int)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            rows.append({k: (int(v) if k == "epoch" else float(v) if v else None) for k, v in row.items()})
        return rows


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or inf, keeping the last good backup.

    Place it *before* ``BackupAndRestore``: it raises ``FloatingPointError``
    (naming the epoch and step) in ``on_epoch_end`` before the backup of the
    broken epoch can be written, so the backup still holds the last good epoch.
    """

    def __init__(self):
        super().__init__()
        self.bad = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(keras.ops.convert_to_numpy(loss))):
            self.bad = (batch, float(keras.ops.convert_to_numpy(loss)))
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.bad is not None:
            batch, loss = self.bad
            raise FloatingPointError(
                f"The loss became {loss} at epoch {epoch + 1}, step {batch + 1}; training stopped. "
                f"The last good state (end of epoch {epoch}) is kept for resume; lower --lr or check the data."
            )


class KDSchedule(keras.callbacks.Callback):
    """KD in the first ``kd_epochs`` epochs only, then hard targets only.

    The "Trainee-Mentor" schedule: the teacher acts as an early hint. At the
    start of every epoch the :class:`kdkeras.distiller.Distiller`'s ``alpha``
    is set to ``alpha`` (epoch < ``kd_epochs``) or 0 (afterwards), so the loss
    is the pure cross-entropy from epoch ``kd_epochs`` on (0-based). The
    current value is logged as ``alpha`` in each epoch's logs (and so in
    ``history.csv`` and TensorBoard). The teacher still runs after the switch,
    so the ``kd`` metric keeps showing how far the student drifts from it.
    Resuming from a backup sets the right value, because ``fit`` restarts at
    the resumed epoch.

    Args:
        kd_epochs: number of epochs with KD (positive).
        alpha: weight of the KD term while KD is on.
    """

    def __init__(self, kd_epochs, alpha):
        super().__init__()
        if isinstance(kd_epochs, bool) or not isinstance(kd_epochs, int) or kd_epochs < 1:
            raise ValueError(f"kd_epochs must be a positive integer. Received: kd_epochs={kd_epochs!r}.")
        self.kd_epochs = kd_epochs
        self.kd_alpha = float(alpha)

    def alpha_at(self, epoch: int) -> float:
        """``alpha`` during (0-based) ``epoch``."""
        return self.kd_alpha if epoch < self.kd_epochs else 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.model.alpha = self.alpha_at(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["alpha"] = self.alpha_at(epoch)
