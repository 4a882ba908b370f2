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

Other methods (`kdkeras.methods`: DKD, FitNets, AT, or KD as a term) are given
as a list of distillation terms:

```python
from kdkeras.methods import AT, FitNets

distiller = Distiller(student, teacher, distillation_losses=[FitNets("stage2"), AT()],
                      loss_weights=[100.0, 1000.0])
```

The loss is then `ce_weight * CE + sum_i weight_i * factor_i * term_i`, with
the terms reading the logits and the feature taps of one forward pass per
model (docs/methods.md).
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

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
        distillation_losses: `None` (the paper's Hinton KD, with
            `temperature` and `alpha`) or a list of `kdkeras.methods` terms
            (or method names); the loss is then `ce_weight * CE +
            sum_i weight_i * factor_i * term_i` (docs/methods.md), and
            `temperature` and `alpha` are not used.
        loss_weights: the terms' weights (`None`: each term's
            `default_weight`); only with `distillation_losses`.
        temperature: positive number `T`.
        alpha: weight of the soft-target term, in `[0, 1]`. Stored in the
            non-trainable variable `alpha_variable`; change it with
            `distiller.alpha = value`.
        ce_weight: weight of the cross-entropy with `distillation_losses`
            (`None`: the terms' `default_ce_weight` if they agree, else 1).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: on a non-`keras.Model` student or teacher, different output
            shapes, `temperature <= 0` or `alpha` outside `[0, 1]`.
    """

    def __init__(
        self,
        student,
        teacher,
        distillation_losses=None,
        loss_weights=None,
        temperature=PAPER_TEMPERATURE,
        alpha=PAPER_ALPHA,
        ce_weight=None,
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
        terms, weights, ce_weight = _check_terms(distillation_losses, loss_weights, ce_weight)
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
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="accuracy"
        )
        if terms is None:
            self.distillation_losses = None
            self.kd_tracker = keras.metrics.Mean(name="kd")
        else:
            self._init_terms(terms, weights, ce_weight)
        # Functional student and teacher are built already; marking the
        # distiller built lets `BackupAndRestore` load weights before `fit`.
        if student.built and teacher.built:
            self.built = True

    def _init_terms(self, terms, weights, ce_weight):
        """Views, adapters, weight variables and metrics of a term distiller."""
        from kdkeras.models.taps import LOGITS, feature_model

        taps = []
        for term in terms:
            taps += [tap for tap in term.taps if tap not in taps]
        # One forward pass per model: the views share the models' layers and
        # weights. Held outside Keras's tracking, so the distiller's weights
        # (and its backups) hold each variable once, under the models.
        if taps:
            views = _Views(feature_model(self.student, taps), feature_model(self.teacher, taps))
            student_shapes = {tap: tuple(views.student.output[tap].shape) for tap in taps}
            teacher_shapes = {tap: tuple(views.teacher.output[tap].shape) for tap in taps}
        else:
            student, teacher = self.student, self.teacher
            views = _Views(
                lambda x, training: {LOGITS: student(x, training=training)},
                lambda x, training: {LOGITS: teacher(x, training=training)},
            )
            student_shapes = teacher_shapes = {}
        self._views = views
        self.taps = tuple(taps)
        for term in terms:
            term.build_adapters(
                {t: student_shapes[t] for t in term.taps},
                {t: teacher_shapes[t] for t in term.taps},
            )
        self.distillation_losses = list(terms)  # tracked: adapters train and save with the distiller
        self.loss_weights = tuple(weights)
        self.ce_weight = float(ce_weight)
        self.ce_weight_variable = keras.Variable(
            self.ce_weight, dtype="float32", trainable=False, autocast=False, name="ce_weight"
        )
        self.term_weight_variables = [
            keras.Variable(w, dtype="float32", trainable=False, autocast=False, name=f"{name}_weight")
            for w, name in zip(self.loss_weights, _term_names(terms))
        ]
        self.term_factor_variables = [
            keras.Variable(term.warmup_factor(0), dtype="float32", trainable=False, autocast=False,
                           name=f"{name}_factor")
            for term, name in zip(terms, _term_names(terms))
        ]
        self.term_trackers = [keras.metrics.Mean(name=name) for name in _term_names(terms)]

    @property
    def term_weights(self):
        """The current weight of each term (Python floats, read eagerly)."""
        self._require_terms("term_weights")
        return [float(keras.ops.convert_to_numpy(v)) for v in self.term_weight_variables]

    @term_weights.setter
    def term_weights(self, values):
        self._require_terms("term_weights")
        values = _check_weights(values, len(self.distillation_losses))
        for variable, value in zip(self.term_weight_variables, values):
            variable.assign(value)

    def set_epoch(self, epoch):
        """Sets each term's warm-up factor for the (0-based) `epoch` (DKD's ramp)."""
        if self.distillation_losses:
            for term, variable in zip(self.distillation_losses, self.term_factor_variables):
                variable.assign(float(term.warmup_factor(epoch)))

    def _require_terms(self, what):
        if not self.distillation_losses:
            raise UsageError(f"`{what}` needs a Distiller with `distillation_losses`; "
                             "plain KD is weighted by `alpha`.")

    @property
    def adapter_variables(self):
        """The trainable variables of the terms' adapters (trained with the student)."""
        return [
            v
            for term in self.distillation_losses or ()
            for adapter in term.adapters
            for v in adapter.trainable_variables
        ]

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
        if self.distillation_losses:
            return [self.loss_tracker, self.ce_tracker, *self.term_trackers, self.accuracy_tracker]
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

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, plus the per-epoch warm-up of terms that have one (DKD)."""
        if self.distillation_losses and any(t.warmup_epochs for t in self.distillation_losses):
            warmup = TermWarmup()  # first, so the other callbacks see this epoch's factors
            if isinstance(callbacks, keras.callbacks.CallbackList):
                callbacks.callbacks.insert(0, warmup)
                warmup.set_model(self)
            else:
                callbacks = [warmup, *(callbacks or [])]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def train_step(self, data):
        import tensorflow as tf  # the gradient tape: TF backend only

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _check_no_sample_weight(sample_weight)
        global_batch, x = _tf_global_batch(tf, x)
        if self.distillation_losses:
            return self._terms_train_step(tf, x, y, global_batch)
        teacher_logits = self.teacher(x, training=False)  # outside the tape
        with tf.GradientTape() as tape:
            student_logits = self.student(x, training=True)
            per_example = self._per_example_losses(y, student_logits, teacher_logits)
            loss = keras.ops.sum(per_example[0]) / global_batch
            loss = self.optimizer.scale_loss(loss)  # no-op unless loss scaling
        variables = self.student.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_trackers(y, student_logits, per_example)

    def _terms_train_step(self, tf, x, y, global_batch):
        teacher_outputs = self._views.teacher(x, training=False)  # outside the tape
        variables = self.student.trainable_variables + self.adapter_variables
        with tf.GradientTape() as tape:
            student_outputs = self._views.student(x, training=True)
            per_example = self._term_losses(y, student_outputs, teacher_outputs, training=True)
            loss = keras.ops.sum(per_example[0]) / global_batch
            loss = self.optimizer.scale_loss(loss)  # no-op unless loss scaling
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_term_trackers(y, student_outputs, per_example)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _check_no_sample_weight(sample_weight)
        if self.distillation_losses:
            teacher_outputs = self._views.teacher(x, training=False)
            student_outputs = self._views.student(x, training=False)
            per_example = self._term_losses(y, student_outputs, teacher_outputs, training=False)
            return self._update_term_trackers(y, student_outputs, per_example)
        teacher_logits = self.teacher(x, training=False)
        student_logits = self.student(x, training=False)
        per_example = self._per_example_losses(y, student_logits, teacher_logits)
        return self._update_trackers(y, student_logits, per_example)

    def teacher_outputs(self, x):
        """What the objective reads of the teacher for images ``x`` (inference mode).

        The logits for plain KD; for a term distiller the dict of its feature-tap
        view (``{"logits": ..., tap: ...}``). Pass it to :meth:`per_example_objective`
        to reuse one teacher pass over a fixed batch.
        """
        if self.distillation_losses:
            return self._views.teacher(x, training=False)
        return self.teacher(x, training=False)

    def per_example_objective(self, x, y, *, teacher_outputs=None, training=True):
        """The training objective per example, float32 ``(batch,)``; its batch mean is the loss.

        The same computation as a training step (one student pass, every term
        with its current weight and factor, the student's regularization
        losses) without the update. ``training`` sets the student's (and the
        adapters') mode: in training mode BatchNormalization statistics and
        dropout state advance as in a step. Instruments call this under their
        own gradient tape (``kdkeras.analysis.gradients.GradientFlow``).
        """
        if teacher_outputs is None:
            teacher_outputs = self.teacher_outputs(x)
        if self.distillation_losses:
            student_outputs = self._views.student(x, training=training)
            return self._term_losses(y, student_outputs, teacher_outputs, training=training)[0]
        student_logits = self.student(x, training=training)
        return self._per_example_losses(y, student_logits, teacher_outputs)[0]

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

    def _term_losses(self, y, student_outputs, teacher_outputs, training):
        """Per-example objective, cross-entropy and terms of a term distiller.

        Returns:
            `(total, ce, terms)`: float32 `(batch,)` tensors and a list of them,
            one per term before weighting; `total` is `ce_weight * ce +
            sum_i weight_i * factor_i * term_i + sum(student.losses)`.
        """
        from kdkeras.models.taps import LOGITS

        ce = _cross_entropy(y, student_outputs[LOGITS])
        total = self.ce_weight_variable.value * ce
        terms = []
        for term, weight, factor in zip(
            self.distillation_losses, self.term_weight_variables, self.term_factor_variables
        ):
            value = term.per_example_loss(
                teacher_outputs,
                student_outputs,
                labels=y if term.needs_labels else None,
                training=training,
            )
            terms.append(value)
            total = total + weight.value * factor.value * value
        regularization = keras.ops.cast(sum(self.student.losses, 0.0), "float32")
        return total + regularization, ce, terms

    def _update_term_trackers(self, y, student_outputs, per_example):
        from kdkeras.models.taps import LOGITS

        total, ce, terms = per_example
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(ce)
        for tracker, value in zip(self.term_trackers, terms):
            tracker.update_state(value)
        self.accuracy_tracker.update_state(y, student_outputs[LOGITS])
        return {m.name: m.result() for m in self.metrics}

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
        if self.distillation_losses:
            config.update(
                {
                    "distillation_losses": [
                        keras.saving.serialize_keras_object(t) for t in self.distillation_losses
                    ],
                    "loss_weights": list(self.loss_weights),
                    "ce_weight": self.ce_weight,
                }
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        if config.get("distillation_losses"):
            config["distillation_losses"] = [
                keras.saving.deserialize_keras_object(t) for t in config["distillation_losses"]
            ]
        return cls(**config)


class _Views:
    """The student's and teacher's output views, hidden from Keras's tracking."""

    def __init__(self, student, teacher):
        self.student = student
        self.teacher = teacher


class TermWarmup(keras.callbacks.Callback):
    """Sets the `Distiller`'s term warm-up factors at the start of every epoch.

    Added by `Distiller.fit` when a term has a warm-up (DKD); a resumed `fit`
    starts at the resumed epoch, so the factor is right after a restart too.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_epoch(epoch)


def method_distiller(student, teacher, method, *, temperature=PAPER_TEMPERATURE, alpha=PAPER_ALPHA,
                     weight=None, dkd_beta=None, dkd_warmup=None, hint_tap=None):
    """The `Distiller` of one `--method` (`kdkeras.methods.TERMS`) with its paper's defaults.

    `method="kd"` is the plain Hinton-KD distiller (`temperature`, `alpha`),
    exactly as `Distiller(student, teacher, temperature=..., alpha=...)`.
    Otherwise one term with cross-entropy weight `default_ce_weight` and
    weight `weight` (`None`: the term's `default_weight`); DKD uses
    `temperature`, `dkd_beta` (`None`: 8) and `dkd_warmup` (`None`: 20
    epochs); FitNets uses `hint_tap` (`None`: `"stage2"`); AT uses every
    stage.

    Raises:
        UsageError: an unknown method, or a setting of another method.
    """
    from kdkeras.methods import AT, DKD, KD, TERMS, FitNets

    if method not in TERMS:
        raise UsageError(f"Unknown method '{method}'. Valid choices: {', '.join(TERMS)}.")
    for name, value, owner in (("dkd_beta", dkd_beta, "dkd"), ("dkd_warmup", dkd_warmup, "dkd"),
                               ("hint_tap", hint_tap, "fitnets")):
        if value is not None and method != owner:
            raise UsageError(f"{name} is a setting of method={owner}. Received: method={method}, "
                             f"{name}={value!r}.")
    if method == "kd" and weight is None:
        return Distiller(student, teacher, temperature=temperature, alpha=alpha)
    if method == "kd":
        term = KD(temperature=temperature)
    elif method == "dkd":
        term = DKD(beta=8.0 if dkd_beta is None else dkd_beta, temperature=temperature,
                   warmup_epochs=20 if dkd_warmup is None else dkd_warmup)
    elif method == "fitnets":
        term = FitNets(hint_tap="stage2" if hint_tap is None else hint_tap)
    else:
        term = AT()
    return Distiller(student, teacher, distillation_losses=[term],
                     loss_weights=[term.default_weight if weight is None else weight],
                     ce_weight=term.default_ce_weight)


def _cross_entropy(y, logits):
    """Hard-target cross-entropy per example, float32 `(batch,)` (as `kd_loss_terms`'s `ce`)."""
    s = ops.cast(logits, "float32")
    y = ops.convert_to_tensor(y)
    if len(y.shape) == len(s.shape):
        y = ops.squeeze(y, axis=-1)
    y = ops.cast(y, "int32")
    log_p = ops.log_softmax(s, axis=-1)
    return -ops.take_along_axis(log_p, ops.expand_dims(y, -1), axis=-1)[:, 0]


def _term_names(terms):
    """Metric names: each term's `method`, numbered from the second of a kind (`at`, `at_2`)."""
    names, seen = [], {}
    for term in terms:
        seen[term.method] = seen.get(term.method, 0) + 1
        names.append(term.method if seen[term.method] == 1 else f"{term.method}_{seen[term.method]}")
    return names


def _check_weights(values, count):
    values = list(values) if isinstance(values, (list, tuple)) else values
    if not isinstance(values, list) or len(values) != count or any(
        isinstance(v, bool) or not isinstance(v, numbers.Real) or v < 0 for v in values
    ):
        raise UsageError(
            f"Term weights must be a list of {count} number(s) >= 0. Received: {values!r}"
        )
    return [float(v) for v in values]


def _check_terms(distillation_losses, loss_weights, ce_weight):
    """`(terms, weights, ce_weight)`; `(None, None, None)` for plain KD."""
    if distillation_losses is None:
        if loss_weights is not None or ce_weight is not None:
            raise UsageError("`loss_weights` and `ce_weight` need `distillation_losses`; "
                             "plain KD is weighted by `alpha`.")
        return None, None, None
    from kdkeras.methods import TERMS, DistillationTerm

    if isinstance(distillation_losses, (DistillationTerm, str)):
        distillation_losses = [distillation_losses]
    terms = []
    for term in distillation_losses:
        if isinstance(term, str):
            if term not in TERMS:
                raise UsageError(f"Unknown method '{term}'. Valid choices: {', '.join(TERMS)}.")
            term = TERMS[term]()
        if not isinstance(term, DistillationTerm):
            raise UsageError(
                "`distillation_losses` must be a list of kdkeras.methods terms or method names. "
                f"Received: {term!r}"
            )
        terms.append(term)
    if not terms:
        raise UsageError("`distillation_losses` is empty: give at least one term, or None for plain KD.")
    if loss_weights is None:
        weights = [t.default_weight for t in terms]
    else:
        weights = _check_weights(loss_weights, len(terms))
    if ce_weight is None:
        defaults = {t.default_ce_weight for t in terms}
        ce_weight = defaults.pop() if len(defaults) == 1 else 1.0
    elif isinstance(ce_weight, bool) or not isinstance(ce_weight, numbers.Real) or ce_weight < 0:
        raise UsageError(f"`ce_weight` must be a number >= 0. Received: ce_weight={ce_weight!r}")
    return terms, weights, float(ce_weight)


def _tf_global_batch(tf, x):
    """The number of examples in the global batch, and ``x`` made to wait for it.

    A replica's share of the global-batch mean is ``sum(per_example) /
    global_batch``, where ``global_batch`` is the sum of all replicas' batch
    sizes. ``tf.distribute`` sums the replicas' gradients, so the applied
    gradient is that of the mean over the global batch: the single-device
    gradient, also for a ragged last batch split unevenly across replicas
    (e.g. 13 = 7 + 6). Without a strategy this is the plain batch size.
    (Keras's own trainer instead divides each replica's batch mean by the
    number of replicas, which is exact only for equal per-replica batches.)

    The sum is a collective, taken before the forward pass (the inputs wait
    for it), so that every replica starts its collectives in one order: the
    forward pass has collectives of its own (synchronized BatchNorm,
    :class:`kdkeras.layers.GlobalBatchDropout`).

    Returns:
        ``(global_batch, x)``: a float32 scalar, and ``x`` (a tensor or a nest).
    """
    local_batch = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], "float32")
    replica_context = tf.distribute.get_replica_context()
    if replica_context is None or replica_context.num_replicas_in_sync <= 1:
        return local_batch, x
    global_batch = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, local_batch)
    with tf.control_dependencies([global_batch]):
        x = tf.nest.map_structure(tf.identity, x)
    return global_batch, x


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
