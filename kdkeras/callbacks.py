"""Keras callbacks used by every run.

No host stall per step: when any callback of ``fit`` has per-step work
(``on_train_batch_end``) and is not marked ``async_safe``, Keras 3 reads
every log value of every step on the host in the training loop's own thread
(``keras.callbacks.CallbackList``: ``pythonify_logs``), which waits for the
step to finish before the next one is dispatched. The callbacks here either
have no per-step work or are ``async_safe`` (Keras then reads the logs in a
worker thread), and :func:`host_syncing_callbacks` names those of a list
that would stall (docs/benchmarks.md, "GPU").
"""

from __future__ import annotations

import csv
import io
import math
import os
import threading
import time

import keras

from kdkeras.errors import UsageError
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


class EpochKeyedDropout(keras.callbacks.Callback):
    """Sets every dropout RNG at the start of epoch ``k`` to where an uninterrupted run has it.

    A Keras ``SeedGenerator`` holds ``[seed, counter]``; the seed comes from
    the global seed when the model is built, and the counter advances by one
    per training step. Its state is not part of a ``BackupAndRestore``
    checkpoint, so a resumed run would draw epoch ``k``'s dropout masks from
    counter 0. Setting the counter to ``k * steps_per_epoch`` at each epoch's
    start makes the masks of epoch ``k`` depend only on (seed, ``k``), like
    its shuffle and augmentation: a resumed run trains as the uninterrupted
    one (docs/training.md, "Deterministic runs").
    """

    def __init__(self, steps_per_epoch: int):
        super().__init__()
        self.steps_per_epoch = int(steps_per_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        for generator in seed_generators(self.model):
            state = generator.state
            seed = keras.ops.convert_to_numpy(state.value)[0]
            state.assign(keras.ops.convert_to_tensor([seed, epoch * self.steps_per_epoch], dtype=state.dtype))


def seed_generators(model) -> list:
    """The ``keras.random.SeedGenerator`` of every layer of ``model`` with one (dropout), nested models included."""
    found, seen, stack = [], set(), [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        generator = getattr(layer, "seed_generator", None)
        if isinstance(generator, keras.random.SeedGenerator):
            found.append(generator)
        stack.extend(getattr(layer, "layers", None) or ())
    return found


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


def host_syncing_callbacks(callbacks) -> list[str]:
    """The class names of the callbacks in ``callbacks`` that make ``fit`` read every step's logs on the host.

    Keras's rule (``keras.callbacks.CallbackList``): a callback that
    overrides ``on_batch_end`` or ``on_train_batch_end`` and is not
    ``async_safe`` makes the training loop convert every log value to a
    Python float after every step (or every ``steps_per_execution`` steps),
    in its own thread: a host-device sync per step on a GPU. An empty list:
    ``fit`` dispatches step after step and the logs are read off the loop's thread.
    """
    base = keras.callbacks.Callback
    found = []
    for callback in callbacks:
        if getattr(callback, "async_safe", False):
            continue
        kind = type(callback)
        if kind.on_batch_end is not base.on_batch_end or kind.on_train_batch_end is not base.on_train_batch_end:
            found.append(kind.__name__)
    return found


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or inf, keeping the last good backup.

    Place it *before* ``BackupAndRestore``: it raises ``FloatingPointError``
    (naming the epoch and step) in ``on_epoch_end`` before the backup of the
    broken epoch can be written, so the backup still holds the last good epoch.

    ``async_safe``: Keras may call its per-step check in a worker thread with
    the logs already read there, so the check adds no host sync to the
    training loop; training stops a step or two after the bad one, and the
    error names the first bad step seen (the running loss stays non-finite
    from there on).
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self.bad = None
        self._lock = threading.Lock()

    def on_train_begin(self, logs=None):
        self.bad = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(keras.ops.convert_to_numpy(loss))  # a Python float already: Keras read the logs
        if not math.isfinite(value):
            with self._lock:  # worker threads may report batches out of order: keep the first
                if self.bad is None or batch < self.bad[0]:
                    self.bad = (batch, value)
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

    Every method weighted by its own weight (``--method=dkd|fitnets|at|...``,
    or the second method of ``kd+at``) has that weight while KD is on and 0
    afterwards (the cross-entropy keeps its weight). A distiller without
    ``alpha`` (no KD among its methods) logs ``distill_on`` (1 or 0) instead
    of ``alpha``.

    Args:
        kd_epochs: number of epochs with KD (positive).
        alpha: weight of the KD term while KD is on (plain KD only).
    """

    def __init__(self, kd_epochs, alpha):
        super().__init__()
        if isinstance(kd_epochs, bool) or not isinstance(kd_epochs, int) or kd_epochs < 1:
            raise UsageError(f"kd_epochs must be a positive integer. Received: kd_epochs={kd_epochs!r}.")
        self.kd_epochs = kd_epochs
        self.kd_alpha = float(alpha)

    def alpha_at(self, epoch: int) -> float:
        """``alpha`` during (0-based) ``epoch``."""
        return self.kd_alpha if epoch < self.kd_epochs else 0.0

    def on_epoch_begin(self, epoch, logs=None):
        on = epoch < self.kd_epochs
        if self.model.coupled:
            self.model.alpha = self.alpha_at(epoch)
        self.model.term_weights = [w if on else 0.0 for w in self.model.own_loss_weights]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            if self.model.coupled:
                logs["alpha"] = self.alpha_at(epoch)
            else:
                logs["distill_on"] = float(epoch < self.kd_epochs)


class EvaluateSplits(keras.callbacks.Callback):
    """Evaluates more splits at the end of every epoch: ``<split>_<metric>`` in the logs.

    ``fit``'s ``validation_data`` gives the ``val_*`` metrics; this callback
    adds others, such as the test split (``test_loss``, ``test_accuracy``,
    ...), with the model's own ``evaluate``. Place it before the callbacks
    that record logs.

    Args:
        datasets: ``{split name: dataset}``.
    """

    def __init__(self, datasets):
        super().__init__()
        self.datasets = dict(datasets)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for split, dataset in self.datasets.items():
            for key, value in self.model.evaluate(dataset, verbose=0, return_dict=True).items():
                logs[f"{split}_{key}"] = value


class PreciseBNEvaluation(keras.callbacks.Callback):
    """Accuracy with precise BatchNorm statistics after every epoch; training is unchanged.

    At each epoch end the population statistics over ``num_batches`` batches
    of ``batches`` (dropout off) replace the moving statistics while
    ``datasets`` are evaluated, then the moving statistics come back, so the
    next epoch trains exactly as without this callback. Logs
    ``<split>_accuracy_precise_bn`` and ``<split>_loss_precise_bn``.

    Args:
        batches: training batches, the same whenever iterated: unaugmented
            (:attr:`kdkeras.data.Splits.train_plain`) or one fixed draw of
            augmented ones (:attr:`~kdkeras.data.Splits.train_augmented`).
        num_batches: batches of ``batches`` per recomputation.
        datasets: ``{split name: dataset}`` to evaluate.
    """

    def __init__(self, batches, num_batches, datasets):
        super().__init__()
        self.batches = batches
        self.num_batches = int(num_batches)
        self.datasets = dict(datasets)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        from kdkeras import batchnorm

        statistics = batchnorm.population_statistics(self.model, self.batches, self.num_batches)
        with batchnorm.swapped_statistics(batchnorm.student_of(self.model), statistics):
            for split, dataset in self.datasets.items():
                values = self.model.evaluate(dataset, verbose=0, return_dict=True)
                logs[f"{split}_accuracy_precise_bn"] = values["accuracy"]
                logs[f"{split}_loss_precise_bn"] = values["loss"]


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore``, ``async_safe`` when it saves once per epoch.

    With ``save_freq="epoch"`` (how runs use it) its per-step hook does
    nothing, but Keras sees that it overrides ``on_train_batch_end`` and
    reads every step's logs on the host in the training loop (see the module
    docstring). Marked ``async_safe`` then, it leaves the loop alone; with
    a step frequency it stays synchronous.
    """

    @property
    def async_safe(self):
        return self.save_freq == "epoch"


class TensorBoard(keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` that also writes other splits in their own folders.

    Keras writes ``val_*`` metrics to ``<log_dir>/validation`` and every other
    key to ``<log_dir>/train``; the ``<split>_*`` keys of ``extra_splits``
    (e.g. ``test_accuracy``) go to ``<log_dir>/<split>`` as ``epoch_<metric>``
    here, so TensorBoard draws train, validation and test on one chart.

    Args:
        log_dir: the TensorBoard folder.
        extra_splits: split names whose metrics get their own folder.
        **kwargs: passed to ``keras.callbacks.TensorBoard``.
    """

    def __init__(self, log_dir, extra_splits=("test",), **kwargs):
        super().__init__(log_dir, **kwargs)
        self.extra_splits = tuple(extra_splits)
        self._extra_writers = {}

    @property
    def async_safe(self):
        """Per-epoch summaries and no profiling: its per-step hook only writes the graph, once, at the first step.

        Keras may then run that hook in a worker thread (no host sync per
        step; see the module docstring). Per-step summaries or profiling keep
        it in the training loop's thread.
        """
        return self.update_freq == "epoch" and not getattr(self, "_should_trace", True)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        extra = {}
        for split in self.extra_splits:
            prefix = f"{split}_"
            for key in [k for k in logs if k.startswith(prefix)]:
                extra.setdefault(split, {})[key[len(prefix):]] = logs.pop(key)
        super().on_epoch_end(epoch, logs)
        if not extra:
            return
        import tensorflow as tf  # tf.summary (TF backend)

        for split, values in extra.items():
            if split not in self._extra_writers:
                self._extra_writers[split] = tf.summary.create_file_writer(os.path.join(self.log_dir, split))
            with self._extra_writers[split].as_default():
                for name, value in values.items():
                    tf.summary.scalar(f"epoch_{name}", float(keras.ops.convert_to_numpy(value)), step=epoch)
            self._extra_writers[split].flush()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        for writer in self._extra_writers.values():
            writer.close()
        self._extra_writers = {}
