"""Gradient flow: per-layer gradient norms and the loss during early training.

The paper argues that KD helps a network without skip connections (NR) most
at the start of training. :class:`GradientFlow` measures, every ``every``
steps of the first ``epochs`` epochs, the gradient of the run's own training
objective (cross-entropy for a baseline, the distiller's objective for a
distilled run: KD with the current ``alpha``, or its method's terms with
their current weights) on a fixed probe batch, layer by layer, and
logs it:

* TensorBoard scalars ``gradient_flow/loss``, ``gradient_flow/global_norm``
  and ``gradient_norm/<layer>`` in ``<run>/tensorboard/gradient_flow/``;
* ``<run>/gradient_flow.csv``: one row per measurement (``step``, ``epoch``,
  ``loss``, ``global_norm`` and one column per layer, input to output).

A measurement leaves no trace on training: the BatchNormalization moving
statistics and the dropout random state are restored after it, and the
optimizer is not touched, so a run with the callback trains exactly as one
without. :func:`plot_gradient_flow` draws several runs side by side (e.g. an
NR student with and without KD).
"""

from __future__ import annotations

import csv
import io
import os

import keras
import numpy as np

from kdkeras.errors import UsageError
from kdkeras.io_utils import atomic_write_text
from kdkeras.training.run_folder import GRADIENT_FLOW_FILE, GRADIENT_FLOW_TENSORBOARD_DIR

TENSORBOARD_SUBDIR = GRADIENT_FLOW_TENSORBOARD_DIR
_FIXED_COLUMNS = ("step", "epoch", "loss", "global_norm")


def _layers_with_weights(model):
    return [layer for layer in model.layers if layer.trainable_weights]


class GradientFlow(keras.callbacks.Callback):
    """Logs per-layer gradient norms of the training objective on a probe batch.

    Args:
        probe: ``(images, labels)`` arrays (a fixed batch, no augmentation),
            or a function returning them (called at the start of ``fit``).
        log_dir: folder of the ``gradient_flow.csv`` file and of the
            ``tensorboard/gradient_flow`` event files (a run folder).
        epochs: measure during the first ``epochs`` epochs (0-based epochs
            ``< epochs``).
        every: measure every ``every`` training steps (and once before the
            first step).

    The model being fitted is a plain classifier (logits out) or a
    :class:`kdkeras.distiller.Distiller`, whose student is measured.
    """

    def __init__(self, probe, log_dir, *, epochs=1, every=10):
        super().__init__()
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise UsageError(f"epochs must be a positive integer. Received: epochs={epochs!r}.")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"every must be a positive integer. Received: every={every!r}.")
        self._probe = probe
        self.log_dir = log_dir
        self.epochs = epochs
        self.every = every
        self.csv_path = os.path.join(log_dir, GRADIENT_FLOW_FILE)
        self.rows: list[dict] = []
        self._epoch = 0
        self._steps_per_epoch = None
        self._function = None
        self._writer = None
        self._started = False

    @classmethod
    def for_run(cls, config, run_directory, *, epochs=1, every=10, probe_size=128):
        """The callback for a run: its probe is ``probe_size`` training images.

        The probe is a class-balanced fixed subset of the run's training data
        (normalised, not augmented), loaded when ``fit`` starts.
        """

        def load():
            from kdkeras.analysis.runs import split_arrays

            x, y, _ = split_arrays(config, "train", size=probe_size, seed=config.seed)
            return x, y

        return cls(load, run_directory, epochs=epochs, every=every)

    # -- measurement -------------------------------------------------------

    def _build(self):
        import tensorflow as tf

        from kdkeras.distiller import Distiller

        model = self.model
        distiller = model if isinstance(model, Distiller) else None
        student = distiller.student if distiller is not None else model
        x, y = self._probe() if callable(self._probe) else self._probe
        self._x = tf.constant(np.asarray(x, dtype=np.float32))
        self._y = tf.constant(np.asarray(y, dtype=np.int64))
        self._teacher_outputs = distiller.teacher_outputs(self._x) if distiller is not None else None
        self._student = student
        self._layers = _layers_with_weights(student)
        self._names = [layer.name for layer in self._layers]
        variables = [v for layer in self._layers for v in layer.trainable_weights]
        owner = [i for i, layer in enumerate(self._layers) for _ in layer.trainable_weights]
        self._owner = np.asarray(owner)
        # The adapters of feature methods (FitNets) run in training mode too: their statistics are restored.
        adapters = [a for term in getattr(distiller, "distillation_losses", None) or () for a in term.adapters]
        self._state = list(student.non_trainable_variables) + [
            v for adapter in adapters for v in adapter.non_trainable_variables]

        def objective():
            if distiller is not None:  # the distiller's own objective: plain KD or its method's terms
                per_example = distiller.per_example_objective(self._x, self._y,
                                                              teacher_outputs=self._teacher_outputs)
                return tf.reduce_mean(per_example)
            logits = tf.cast(student(self._x, training=True), tf.float32)
            ce = keras.losses.sparse_categorical_crossentropy(self._y, logits, from_logits=True)
            return tf.reduce_mean(tf.cast(ce, tf.float32)) + tf.cast(sum(student.losses, 0.0), tf.float32)

        @tf.function
        def measure():
            with tf.GradientTape() as tape:
                loss = objective()
            grads = tape.gradient(loss, variables)
            squares = tf.stack([tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in grads])
            return loss, squares

        self._function = measure

    def measure(self) -> tuple[float, np.ndarray]:
        """``(loss, per-layer gradient norms)`` on the probe, without side effects."""
        if self._function is None:
            self._build()
        saved = [v.numpy() for v in self._state]
        try:
            loss, squares = self._function()
        finally:
            for variable, value in zip(self._state, saved):
                variable.assign(value)
        per_layer = np.bincount(self._owner, weights=squares.numpy(), minlength=len(self._layers))
        return float(loss), np.sqrt(per_layer)

    def _record(self, step):
        import tensorflow as tf

        loss, norms = self.measure()
        row = {"step": step, "epoch": self._epoch, "loss": loss,
               "global_norm": float(np.sqrt(np.sum(norms ** 2)))}
        row.update({name: float(n) for name, n in zip(self._names, norms)})
        self.rows.append(row)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, TENSORBOARD_SUBDIR))
        with self._writer.as_default(step=step):
            tf.summary.scalar("gradient_flow/loss", loss)
            tf.summary.scalar("gradient_flow/global_norm", row["global_norm"])
            for name, n in zip(self._names, norms):
                tf.summary.scalar(f"gradient_norm/{name}", float(n))
        self._writer.flush()
        self._write_csv()

    def _write_csv(self):
        columns = list(_FIXED_COLUMNS) + [n for n in self._names]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write_text(self.csv_path, out.getvalue())

    # -- callback hooks ----------------------------------------------------

    def on_train_begin(self, logs=None):
        self._steps_per_epoch = self.params.get("steps") if self.params else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._started or epoch >= self.epochs:
            return
        self._started = True
        # Resumed run: keep the measurements of the epochs before this one.
        self.rows = [r for r in read_gradient_flow(self.csv_path) if r["epoch"] < epoch] \
            if os.path.exists(self.csv_path) else []
        self._record(self._global_step(epoch, 0))

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch >= self.epochs:
            return
        if (batch + 1) % self.every == 0:
            self._record(self._global_step(self._epoch, batch + 1))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _global_step(self, epoch, batch):
        return int(epoch * (self._steps_per_epoch or 0) + batch)


def read_gradient_flow(path: str) -> list[dict]:
    """The rows of a ``gradient_flow.csv`` (numbers parsed; ``step``/``epoch`` ints)."""
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            parsed = {k: float(v) for k, v in row.items()}
            parsed["step"] = int(parsed["step"])
            parsed["epoch"] = int(parsed["epoch"])
            rows.append(parsed)
    return rows


def layer_columns(rows: list[dict]) -> list[str]:
    """The per-layer columns of gradient-flow rows, input to output."""
    return [k for k in rows[0] if k not in _FIXED_COLUMNS] if rows else []


def _is_norm_layer(name: str) -> bool:
    return name.endswith("_bn") or name.startswith("batch_normalization")


def plot_gradient_flow(runs, output: str) -> str:
    """Draws the gradient flow of several runs into one PNG.

    Left: per-layer gradient norm (log scale) against depth at the first and
    the last measured step of each run, for the convolution and dense layers
    (BatchNormalization layers, whose few weights have far smaller gradients,
    are left out of the picture, not out of the CSV); right: the probe loss
    against step.

    Args:
        runs: ``[(label, csv_path), ...]``.
        output: the PNG path (written atomically).

    Returns:
        ``output``.
    """
    import matplotlib

    from kdkeras.plotting import new_figure, save_png

    fig = new_figure(12, 4.5)
    ax_depth, ax_loss = fig.subplots(1, 2)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, path) in enumerate(runs):
        rows = read_gradient_flow(path)
        if not rows:
            raise UsageError(f"'{path}' holds no gradient-flow measurements.")
        layers = [n for n in layer_columns(rows) if not _is_norm_layer(n)] or layer_columns(rows)
        color = colors[i % len(colors)]
        for row, style in ((rows[0], ":"), (rows[-1], "-")):
            ax_depth.plot(range(len(layers)), [max(row[n], 1e-12) for n in layers], style, color=color,
                          label=f"{label}, step {row['step']}")
        ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], "-o", ms=3, color=color,
                     label=label)
    ax_depth.set_yscale("log")
    ax_depth.set_xlabel("convolution / dense layer (input -> output)")
    ax_depth.set_ylabel("gradient norm")
    ax_depth.set_title("Per-layer gradient norm")
    ax_depth.legend(fontsize=7)
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("training objective on the probe batch")
    ax_loss.set_title("Loss during early training")
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, output)
