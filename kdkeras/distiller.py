"""`Distiller`: trains a student on the KD loss of a frozen teacher.

The loss is `kdkeras.losses.kd_loss` (Hinton et al. 2015), as used in section 5
of "On the Demystification of Knowledge Distillation: A Residual Network
Perspective" (T = 4, alpha = 0.9):

    loss = (1 - alpha) * CE(y, softmax(s))
           + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

averaged over the batch, plus the student's regularization losses. The teacher
is frozen and always runs in inference mode (BatchNormalization uses its moving
statistics, dropout is off). Only the student's trainable variables are
updated.

```python
distiller = Distiller(student, teacher, temperature=4.0, alpha=0.9)
distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
distiller.fit(train_ds, validation_data=test_ds, epochs=120)
distiller.save_student("student.keras")
```

`alpha` lives in a non-trainable variable, so a callback can change it between
epochs without retracing the training function (`distiller.alpha = 0.0` turns
the run into plain hard-target training).
"""

from __future__ import annotations

import numbers

import keras

from kdkeras.errors import UsageError
from kdkeras.losses import (
    PAPER_ALPHA,
    PAPER_TEMPERATURE,
    check_temperature,
    kd_loss_terms,
)


@keras.saving.register_keras_serializable(package="kdkeras")
class Distiller(keras.Model):
    """Knowledge distillation from a frozen teacher into a student.

    Per example, with student logits `s`, teacher logits `t` and label `y`,
    the loss is (Hinton et al. 2015; the paper's section 5 uses T = 4,
    alpha = 0.9):

        (1 - alpha) * CE(y, softmax(s))
        + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

    The training objective is its mean over the global batch plus
    `sum(student.losses)` (weight regularization). `fit` and `evaluate` log
    `loss` (that objective), `ce` (hard-target cross-entropy), `kd` (the
    `T^2 * KL` term, before weighting by alpha) and `accuracy` (the student's
    top-1 accuracy).

    Under `tf.distribute` each replica divides the sum of its per-example
    objectives by the global batch size (the sum of the replicas' batch
    sizes, so also exact for a ragged last batch); the strategy sums the
    replicas' gradients, so the update equals the single-device update on the
    same global batch. The loss is passed through `optimizer.scale_loss`
    (a no-op except for `LossScaleOptimizer`, which unscales the gradients).

    Args:
        student: `keras.Model` mapping images `(batch, H, W, C)` to logits
            `(batch, num_classes)`; the model being trained.
        teacher: `keras.Model` with the same output shape as `student`. It is
            frozen here (`teacher.trainable = False`) and called with
            `training=False`.
        temperature: positive number `T`.
        alpha: weight of the soft-target term, in `[0, 1]`. Stored in the
            non-trainable variable `alpha_variable`; change it with
            `distiller.alpha = value`.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: on a non-`keras.Model` student or teacher, different output
            shapes, `temperature <= 0` or `alpha` outside `[0, 1]`.
    """

    def __init__(
        self,
        student,
        teacher,
        temperature=PAPER_TEMPERATURE,
        alpha=PAPER_ALPHA,
        **kwargs,
    ):
        for arg_name, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, keras.Model):
                raise ValueError(
                    f"`{arg_name}` must be a `keras.Model`. "
                    f"Received: {arg_name}={model!r}"
                )
        _check_output_shapes(student, teacher)
        check_temperature(temperature)
        _check_alpha(alpha)
        super().__init__(**kwargs)

        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.alpha_variable = keras.Variable(
            float(alpha),
            dtype="float32",
            trainable=False,
            autocast=False,
            name="alpha",
        )

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.kd_tracker = keras.metrics.Mean(name="kd")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="accuracy"
        )
        # Functional student and teacher are built already; marking the
        # distiller built lets `BackupAndRestore` load weights before `fit`.
        if student.built and teacher.built:
            self.built = True

    @property
    def alpha(self):
        """The current `alpha` as a Python float (read eagerly)."""
        return float(keras.ops.convert_to_numpy(self.alpha_variable))

    @alpha.setter
    def alpha(self, value):
        _check_alpha(value)
        self.alpha_variable.assign(float(value))

    @property
    def metrics(self):
        # Listed here so that `fit`/`evaluate` reset them at each epoch.
        return [
            self.loss_tracker,
            self.ce_tracker,
            self.kd_tracker,
            self.accuracy_tracker,
        ]

    def compile(self, optimizer="rmsprop", **kwargs):
        """`keras.Model.compile` without `loss` or `metrics`.

        The loss is the built-in KD loss and the logged metrics are fixed.
        Every other argument (`steps_per_execution`, `jit_compile`,
        `run_eagerly`, ...) is passed on.

        Raises:
            ValueError: if `loss`, `loss_weights`, `metrics` or
                `weighted_metrics` is given.
        """
        for arg_name in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(arg_name) is not None:
                raise ValueError(
                    f"`Distiller.compile` does not take `{arg_name}`: the KD "
                    "loss and the metrics loss/ce/kd/accuracy are built in. "
                    f"Received: {arg_name}={kwargs[arg_name]!r}"
                )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Re-runs `compile` when a saved distiller is loaded.

        `keras.Model.compile_from_config` skips models that override
        `compile`; this one's `compile` takes the same saved arguments.
        """
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # before its weights load

    def call(self, x, training=False):
        """Student logits `(batch, num_classes)` for images `x`."""
        return self.student(x, training=training)

    def train_step(self, data):
        import tensorflow as tf  # the gradient tape: TF backend only

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _check_no_sample_weight(sample_weight)
        teacher_logits = self.teacher(x, training=False)  # outside the tape
        with tf.GradientTape() as tape:
            student_logits = self.student(x, training=True)
            per_example = self._per_example_losses(y, student_logits, teacher_logits)
            loss = _tf_replica_share_of_mean(per_example[0])
            loss = self.optimizer.scale_loss(loss)  # no-op unless loss scaling
        variables = self.student.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_trackers(y, student_logits, per_example)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _check_no_sample_weight(sample_weight)
        teacher_logits = self.teacher(x, training=False)
        student_logits = self.student(x, training=False)
        per_example = self._per_example_losses(y, student_logits, teacher_logits)
        return self._update_trackers(y, student_logits, per_example)

    def _per_example_losses(self, y, student_logits, teacher_logits):
        """Per-example objective and its two terms.

        Args:
            y: integer labels `(batch,)`.
            student_logits: `(batch, num_classes)`.
            teacher_logits: `(batch, num_classes)`.

        Returns:
            `(total, ce, kd)`, float32 tensors `(batch,)`: `total` is
            `(1 - alpha) * ce + alpha * kd + sum(student.losses)`, so its mean
            over the batch is the objective; `kd` includes T^2.
        """
        ce, kd = kd_loss_terms(y, student_logits, teacher_logits, self.temperature)
        alpha = self.alpha_variable.value
        regularization = keras.ops.cast(sum(self.student.losses, 0.0), "float32")
        return (1.0 - alpha) * ce + alpha * kd + regularization, ce, kd

    def _update_trackers(self, y, student_logits, per_example):
        total, ce, kd = per_example
        # Per-example values: the trackers' sums and counts aggregate exactly
        # across replicas and across batches of different sizes.
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(ce)
        self.kd_tracker.update_state(kd)
        self.accuracy_tracker.update_state(y, student_logits)
        return {m.name: m.result() for m in self.metrics}

    def save_student(self, filepath):
        """Saves the student alone as a plain `.keras` model.

        kdkeras's fast layers are written as their Keras parents
        (`kdkeras.models.convert.to_plain_keras`), so the file loads without
        kdkeras.

        Args:
            filepath: path ending in `.keras`.

        Raises:
            ValueError: if `filepath` does not end in `.keras`.
        """
        if not str(filepath).endswith(".keras"):
            raise UsageError(
                f"`filepath` must end in `.keras`. Received: filepath={filepath!r}"
            )
        from kdkeras.models.convert import save_model

        save_model(self.student, filepath)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "temperature": self.temperature,
                "alpha": self.alpha,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)


def _tf_replica_share_of_mean(per_example):
    """This replica's share of the global-batch mean of `per_example`.

    Returns `sum(per_example) / global_batch`, where `global_batch` is the sum
    of all replicas' batch sizes. `tf.distribute` sums the replicas'
    gradients, so the applied gradient is that of the mean over the global
    batch: the single-device gradient, also for a ragged last batch split
    unevenly across replicas (e.g. 7 = 4 + 3). Without a strategy this is the
    plain batch mean. (Keras's own trainer instead divides each replica's
    batch mean by the number of replicas, which is exact only for equal
    per-replica batches.)

    Args:
        per_example: float32 tensor `(local_batch,)`.

    Returns:
        float32 scalar.
    """
    import tensorflow as tf  # tf.distribute replica context: TF backend only

    local_batch = keras.ops.cast(keras.ops.shape(per_example)[0], "float32")
    replica_context = tf.distribute.get_replica_context()
    if replica_context is not None and replica_context.num_replicas_in_sync > 1:
        global_batch = replica_context.all_reduce(
            tf.distribute.ReduceOp.SUM, local_batch
        )
    else:
        global_batch = local_batch
    return keras.ops.sum(per_example) / global_batch


def _check_alpha(alpha):
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not 0.0 <= alpha <= 1.0
    ):
        raise UsageError(
            f"`alpha` must be a number in [0, 1]. Received: alpha={alpha!r}"
        )


def _check_output_shapes(student, teacher):
    """Raises if both models have symbolic outputs of different shapes."""
    student_outputs = getattr(student, "outputs", None)
    teacher_outputs = getattr(teacher, "outputs", None)
    if not student_outputs or not teacher_outputs:
        return  # Subclassed models: nothing to compare before the first call.
    student_shapes = [tuple(o.shape) for o in student_outputs]
    teacher_shapes = [tuple(o.shape) for o in teacher_outputs]
    if student_shapes != teacher_shapes:
        raise UsageError(
            "`student` and `teacher` must have the same output shape. "
            f"Received: student output shape(s) {student_shapes}, "
            f"teacher output shape(s) {teacher_shapes}"
        )


def _check_no_sample_weight(sample_weight):
    if sample_weight is not None:
        raise ValueError(
            "`Distiller` does not support sample weights or class weights. "
            f"Received: sample_weight={sample_weight!r}"
        )
