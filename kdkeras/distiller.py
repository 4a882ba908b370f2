"""`Distiller`: trains a student from a frozen teacher on a list of distillation methods.

Per example, with the student's outputs `s`, the teacher's `t` and the label `y`:

    loss = ce_weight * CE(y, softmax(s_logits))
           + sum_i weight_i * factor_i(epoch) * method_i(t, s, y)
           + the student's regularization losses

averaged over the global batch. The paper reproduced here ("On the
Demystification of Knowledge Distillation: A Residual Network Perspective",
section 5) uses Hinton KD, T = 4, alpha = 0.9: the list `[KD(T)]` with weight
`alpha` and cross-entropy weight `1 - alpha`. That is the default:

```python
distiller = Distiller(student, teacher, temperature=4.0, alpha=0.9)
distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
distiller.fit(train_ds, validation_data=test_ds, epochs=120)
distiller.save_student("student.keras")
```

Other methods (`kdkeras.methods`, `kdkeras.list_methods()`) come as a list:

```python
from kdkeras.methods import AT, FitNets

distiller = Distiller(student, teacher, distillation_losses=[FitNets("stage2"), AT()],
                      loss_weights=[100.0, 1000.0])
```

The teacher is frozen and runs in inference mode. The methods read the
logits and the feature taps of one forward pass per model, and their
trainable parts (adapters, heads, a learnable temperature) train with the
student and are saved in the distiller's checkpoints, never in the student's
`.keras` (docs/methods.md).
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from kdkeras import methods
from kdkeras.errors import UsageError
from kdkeras.losses import PAPER_ALPHA, PAPER_TEMPERATURE, check_temperature

#: The logits' key in the output dicts.
LOGITS = "logits"


@keras.saving.register_keras_serializable(package="kdkeras")
class Distiller(keras.Model):
    """Knowledge distillation from a frozen teacher into a student (see the module docstring).

    `fit` and `evaluate` log `loss` (the objective), `ce` (the hard-target
    cross-entropy), one column per method before weighting (`kd`, `dkd`,
    `at`, ...; `at_2` for a second AT) and `accuracy` (the student's top-1).

    Under `tf.distribute` each replica divides the sum of its per-example
    objectives by the global batch size (the sum of the replicas' batch
    sizes, so also exact for a ragged last batch); the strategy sums the
    replicas' gradients, so the update equals the single-device update on the
    same global batch. The loss goes through `optimizer.scale_loss`.

    Args:
        student: `keras.Model` mapping images to logits `(batch, classes)`.
        teacher: `keras.Model` with the same output shape; frozen here.
        distillation_losses: `None` (`[KD(temperature)]`, the paper's) or a
            list of `kdkeras.methods` methods (or method names).
        loss_weights: one weight per method (`None`: each method's
            `default_weight`); with `alpha`, KD's entry is `None`.
        temperature: positive number `T` of the default KD term.
        alpha: weight of the KD term, in `[0, 1]`; the cross-entropy is then
            weighted `1 - alpha`. The default for plain KD (0.9); with
            `distillation_losses`, give it to weight their KD term this way.
            Lives in a non-trainable variable: `distiller.alpha = 0.0` turns
            the run into hard-target training without retracing.
        ce_weight: weight of the cross-entropy without `alpha` (`None`: the
            methods' `default_ce_weight` if they agree, else 1).
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    def __init__(self, student, teacher, distillation_losses=None, loss_weights=None,
                 temperature=PAPER_TEMPERATURE, alpha=None, ce_weight=None, **kwargs):
        for arg_name, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, keras.Model):
                raise ValueError(f"`{arg_name}` must be a `keras.Model`. Received: {arg_name}={model!r}")
        _check_output_shapes(student, teacher)
        check_temperature(temperature)
        self.default_objective = distillation_losses is None
        if self.default_objective:
            from kdkeras.methods import KD

            if loss_weights is not None or ce_weight is not None:
                raise UsageError("`loss_weights` and `ce_weight` need `distillation_losses`; plain KD is weighted "
                                 "by `alpha`.")
            distillation_losses, alpha = [KD(temperature=temperature)], PAPER_ALPHA if alpha is None else alpha
        terms, weights, ce_weight = _check_terms(distillation_losses, loss_weights, ce_weight, alpha)
        super().__init__(**kwargs)
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.coupled = alpha is not None  # KD weighted by alpha, the cross-entropy by 1 - alpha
        # The variables in the order the checkpoints of every earlier kdkeras hold them: alpha, then
        # (without alpha) the cross-entropy's weight, then a weight and a warm-up factor per method
        # that has its own (with alpha: every method but KD).
        self.alpha_variable = _variable(PAPER_ALPHA if alpha is None else alpha, "alpha")
        if not self.coupled:
            self.ce_weight_variable = _variable(ce_weight, "ce_weight")
        self.ce_weight = None if self.coupled else float(ce_weight)
        names = _term_names(terms)
        self._own = [i for i, w in enumerate(weights) if w is not None]  # methods with a weight variable
        self.term_weight_variables = [_variable(weights[i], f"{names[i]}_weight") for i in self._own]
        self.term_factor_variables = [_variable(terms[i].warmup_factor(0), f"{names[i]}_factor")
                                      for i in self._own]
        self.loss_weights = tuple(weights)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.term_trackers = [keras.metrics.Mean(name=name) for name in names]
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self._views, self.taps = _views_and_parts(student, teacher, terms)
        self.distillation_losses = list(terms)  # tracked: their parts train and save with the distiller
        if student.built and teacher.built:  # so that BackupAndRestore can load weights before `fit`
            self.built = True

    # ------------------------------------------------------------------ weights
    @property
    def alpha(self):
        """The current `alpha` as a Python float."""
        return float(keras.ops.convert_to_numpy(self.alpha_variable))

    @alpha.setter
    def alpha(self, value):
        _check_alpha(value)
        self.alpha_variable.assign(float(value))

    @property
    def term_weights(self):
        """The current weights of the methods that have their own (every method but an alpha-weighted KD)."""
        return [float(keras.ops.convert_to_numpy(v)) for v in self.term_weight_variables]

    @term_weights.setter
    def term_weights(self, values):
        values = _check_weights(values, len(self.term_weight_variables))
        for variable, value in zip(self.term_weight_variables, values):
            variable.assign(value)

    @property
    def own_loss_weights(self):
        """The configured weights behind :attr:`term_weights`."""
        return [self.loss_weights[i] for i in self._own]

    def set_epoch(self, epoch):
        """Sets each method's warm-up factor and per-epoch state for the (0-based) `epoch`."""
        for i, variable in zip(self._own, self.term_factor_variables):
            variable.assign(float(self.distillation_losses[i].warmup_factor(epoch)))
        for term in self.distillation_losses:
            term.on_epoch_begin(epoch)

    @property
    def adapter_variables(self):
        """The trainable variables of the methods' parts (trained with the student)."""
        return [v for term in self.distillation_losses for v in term.trainable_variables]

    @property
    def trained_variables(self):
        """What a training step updates, in its order: the student's trainable variables, then the parts'."""
        return self.student.trainable_variables + self.adapter_variables

    def _weights(self):
        """`(ce_weight, [weight_i * factor_i])` as tensors of the current values."""
        if self.coupled:
            alpha = self.alpha_variable.value
            ce, weights = 1.0 - alpha, [alpha] * len(self.distillation_losses)
        else:
            ce, weights = self.ce_weight_variable.value, [None] * len(self.distillation_losses)
        for i, w, f in zip(self._own, self.term_weight_variables, self.term_factor_variables):
            weights[i] = w.value * f.value
        return ce, weights

    # ------------------------------------------------------------------ Keras
    @property
    def metrics(self):  # listed so that `fit`/`evaluate` reset them every epoch
        return [self.loss_tracker, self.ce_tracker, *self.term_trackers, self.accuracy_tracker]

    def compile(self, optimizer="rmsprop", **kwargs):
        """`keras.Model.compile` without `loss` or `metrics` (both built in); the rest is passed on."""
        for arg_name in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(arg_name) is not None:
                raise ValueError(f"`Distiller.compile` does not take `{arg_name}`: the distillation loss and "
                                 f"the metrics are built in. Received: {arg_name}={kwargs[arg_name]!r}")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Re-runs `compile` when a saved distiller is loaded (Keras skips models that override `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trained_variables)  # before its weights load, as fit builds it

    def call(self, x, training=False):
        """Student logits `(batch, num_classes)` for images `x`."""
        return self.student(x, training=training)

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, plus the per-epoch warm-up and schedules of the methods that have them.

        The optimizer is built first, over :attr:`trained_variables`: built inside the first traced step (Keras's
        default without a distribution strategy), its momentum buffers would make TensorFlow trace the step twice.
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trained_variables)
        if any(t.warmup_epochs or t.has_epoch_state for t in self.distillation_losses):
            warmup = TermWarmup()  # first, so the other callbacks see this epoch's factors
            if isinstance(callbacks, keras.callbacks.CallbackList):
                callbacks.callbacks.insert(0, warmup)
                warmup.set_model(self)
            else:
                callbacks = [warmup, *(callbacks or [])]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def train_step(self, data):
        import tensorflow as tf  # the gradient tape: TF backend only

        x, indices, y = _unpack(data, self.distillation_losses)
        global_batch, x = _tf_global_batch(tf, x)
        teacher_outputs = self._views.teacher(x, training=False)  # outside the tape
        variables = self.trained_variables
        with tf.GradientTape() as tape:
            student_outputs = self._views.student(x, training=True)
            per_example = self._objective(y, student_outputs, teacher_outputs, training=True, indices=indices)
            loss = self.optimizer.scale_loss(keras.ops.sum(per_example[0]) / global_batch)
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._update_trackers(y, student_outputs, per_example)

    def test_step(self, data):
        x, _, y = _unpack(data)  # no indices: evaluation updates no method state
        student_outputs = self._views.student(x, training=False)
        per_example = self._objective(y, student_outputs, self._views.teacher(x, training=False), training=False)
        return self._update_trackers(y, student_outputs, per_example)

    def teacher_outputs(self, x):
        """What the objective reads of the teacher for images `x` (inference mode): a dict."""
        return self._views.teacher(x, training=False)

    def per_example_objective(self, x, y, *, teacher_outputs=None, training=True):
        """The training objective per example, float32 `(batch,)`: a training step's loss without the update.

        `training` sets the student's (and the parts') mode. Instruments call
        this under their own tape (`kdkeras.analysis.gradients.GradientFlow`).
        Methods with `needs_indices` get `indices=None` (their index-free form; no state update).
        """
        teacher_outputs = self.teacher_outputs(x) if teacher_outputs is None else teacher_outputs
        if not isinstance(teacher_outputs, dict):
            teacher_outputs = {LOGITS: teacher_outputs}
        return self._objective(y, self._views.student(x, training=training), teacher_outputs, training)[0]

    def _objective(self, y, student_outputs, teacher_outputs, training, indices=None):
        """`(total, ce, [method_i])`, float32 `(batch,)` each; `total` is the weighted sum plus regularization."""
        ce = _cross_entropy(y, student_outputs[LOGITS])
        ce_weight, weights = self._weights()
        total, values = ce_weight * ce, []
        for term, weight in zip(self.distillation_losses, weights):
            extra = {"indices": indices} if term.needs_indices else {}
            value = term.per_example_loss(teacher_outputs, student_outputs, labels=y if term.needs_labels else None,
                                          training=training, **extra)
            values.append(value)
            total = total + weight * value
        regularization = keras.ops.cast(sum(self.student.losses, 0.0), "float32")
        return total + regularization, ce, values

    def _update_trackers(self, y, student_outputs, per_example):
        # Per-example values: the trackers aggregate exactly across replicas and ragged batches.
        total, ce, values = per_example
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(ce)
        for tracker, value in zip(self.term_trackers, values):
            tracker.update_state(value)
        self.accuracy_tracker.update_state(y, student_outputs[LOGITS])
        return {m.name: m.result() for m in self.metrics}

    def save_student(self, filepath):
        """Saves the student alone as a plain `.keras` model (loads without kdkeras; no method parts)."""
        if not str(filepath).endswith(".keras"):
            raise UsageError(f"`filepath` must end in `.keras`. Received: filepath={filepath!r}")
        from kdkeras.models.convert import save_model

        save_model(self.student, filepath)

    def get_config(self):
        config = {**super().get_config(), "student": keras.saving.serialize_keras_object(self.student),
                  "teacher": keras.saving.serialize_keras_object(self.teacher), "temperature": self.temperature,
                  "alpha": self.alpha if self.coupled else None}
        if not self.default_objective:
            config.update(distillation_losses=[keras.saving.serialize_keras_object(t)
                                               for t in self.distillation_losses],
                          loss_weights=list(self.loss_weights), ce_weight=self.ce_weight)
        return config

    @classmethod
    def from_config(cls, config):
        methods.import_all()  # the saved terms' classes, registered with Keras before they are deserialized
        config = dict(config)
        for key in ("student", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        if config.get("distillation_losses"):
            config["distillation_losses"] = [keras.saving.deserialize_keras_object(t)
                                             for t in config["distillation_losses"]]
            if None not in config.get("loss_weights", ()):  # saved before alpha could weight a KD method
                config["alpha"] = None
        return cls(**config)


class _Views:
    """The student's and teacher's output views, hidden from Keras's tracking."""

    def __init__(self, student, teacher):
        self.student = student
        self.teacher = teacher


class TermWarmup(keras.callbacks.Callback):
    """Sets the `Distiller`'s warm-up factors and method schedules at the start of every epoch.

    Added by `Distiller.fit` when a method has a warm-up (DKD) or a schedule;
    a resumed `fit` starts at the resumed epoch, so both are right after a
    restart too.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_epoch(epoch)


def _views_and_parts(student, teacher, terms):
    """`(views, taps)`: one forward pass per model for the union of the methods' taps; each method's parts built.

    Each method first receives both models (`Method.bind`). The views share
    the models' layers and are held outside Keras's tracking, so the
    checkpoints hold each variable once, under the models.
    """
    from kdkeras.models.taps import feature_model

    taps = []
    for term in terms:
        term.bind(student, teacher)
        taps += [tap for tap in term.taps if tap not in taps]
    if taps:
        views = _Views(feature_model(student, taps), feature_model(teacher, taps))
        shapes = [{k: tuple(v.shape) for k, v in view.output.items()} for view in (views.student, views.teacher)]
    else:
        views = _Views(lambda x, training: {LOGITS: student(x, training=training)},
                       lambda x, training: {LOGITS: teacher(x, training=training)})
        shapes = [{LOGITS: tuple(m.outputs[0].shape)} if getattr(m, "outputs", None) else {}
                  for m in (student, teacher)]
    for term in terms:
        keys = set(term.taps) | {LOGITS}
        term.build_adapters({k: v for k, v in shapes[0].items() if k in keys},
                            {k: v for k, v in shapes[1].items() if k in keys})
    return views, tuple(taps)


def distiller_for_run(student, teacher, config, *, temperature=None, alpha=None):
    """The `Distiller` of a :class:`kdkeras.config.RunConfig` (its `method`, weights and method settings).

    `--method=kd` (the default) is the paper's `Distiller(student, teacher,
    temperature=T, alpha=alpha)`. `temperature` / `alpha`: a tuning trial's own.
    """
    plan = methods.objective(config, temperature=temperature, alpha=alpha)
    if [t.method for t in plan.terms] == ["kd"]:
        return Distiller(student, teacher, temperature=plan.terms[0].temperature, alpha=plan.alpha)
    return Distiller(student, teacher, distillation_losses=plan.terms, loss_weights=plan.weights,
                     alpha=plan.alpha, ce_weight=plan.ce_weight)


def method_distiller(student, teacher, method, *, temperature=PAPER_TEMPERATURE, alpha=PAPER_ALPHA, weight=None,
                     **settings):
    """The `Distiller` of `--method=method` with its paper's defaults, as a run builds it.

    `weight`: the weight of a single method other than KD (`None`: its
    default); `settings`: method settings by flag name (`dkd_beta=6.0`,
    `hint_tap="stage1"`, `at_weight=500.0`; `None` = the default).

    Raises:
        UsageError: an unknown method, or a setting of another method.
    """
    import types

    methods.check_run_settings(method, settings)
    if weight is not None and "kd" in methods.parse(method):
        raise UsageError("weight is not used by method=kd: its weight is alpha.")
    config = types.SimpleNamespace(method=method, temperature=temperature, alpha=alpha, method_weight=weight,
                                   **{s.flag: settings.get(s.flag) for s in methods.all_settings()})
    return distiller_for_run(student, teacher, config)


def _variable(value, name):
    return keras.Variable(float(value), dtype="float32", trainable=False, autocast=False, name=name)


def _check_terms(distillation_losses, loss_weights, ce_weight, alpha):
    """`(methods, weights, ce_weight)`; with `alpha`, KD's weight is `None` and `ce_weight` is `None`."""
    if isinstance(distillation_losses, (methods.Method, str)):
        distillation_losses = [distillation_losses]
    terms = [methods.get(t)() if isinstance(t, str) else t for t in distillation_losses]
    for term in terms:
        if not isinstance(term, methods.Method):
            raise UsageError("`distillation_losses` must be a list of kdkeras.methods methods or method names. "
                             f"Received: {term!r}")
    if not terms:
        raise UsageError("`distillation_losses` is empty: give at least one method, or None for plain KD.")
    kd = [i for i, t in enumerate(terms) if t.method == "kd"]
    if alpha is not None:
        _check_alpha(alpha)
        if len(kd) != 1 or ce_weight is not None:
            raise UsageError("`alpha` weights exactly one KD method (and the cross-entropy by 1 - alpha), so it "
                             "takes one KD in `distillation_losses` and no `ce_weight`. Received: "
                             f"{[t.method for t in terms]}, ce_weight={ce_weight!r}")
    if loss_weights is None:
        weights = [None if i in kd and alpha is not None else t.default_weight for i, t in enumerate(terms)]
    else:
        weights = list(loss_weights) if isinstance(loss_weights, (list, tuple)) else loss_weights
        if not isinstance(weights, list) or len(weights) != len(terms):
            raise UsageError(f"`loss_weights` must be a list of {len(terms)} number(s). Received: {loss_weights!r}")
        if alpha is not None:
            if weights[kd[0]] is not None:
                raise UsageError("With `alpha`, KD's entry in `loss_weights` is None: alpha is its weight.")
            weights[kd[0]] = 0.0
        weights = _check_weights(weights, len(terms))
        if alpha is not None:
            weights[kd[0]] = None
    if alpha is not None:
        return terms, weights, None
    if ce_weight is None:
        defaults = {t.default_ce_weight for t in terms}
        ce_weight = defaults.pop() if len(defaults) == 1 else 1.0
    elif isinstance(ce_weight, bool) or not isinstance(ce_weight, numbers.Real) or ce_weight < 0:
        raise UsageError(f"`ce_weight` must be a number >= 0. Received: ce_weight={ce_weight!r}")
    return terms, weights, float(ce_weight)


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


def _unpack(data, terms=()):
    """`(x, indices, y)` of a batch `(x, y)` or `((x, indices), y)` (integer `indices`, else `None`).

    Raises a one-line error when a method of `terms` needs the indices and the batch has none.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    _check_no_sample_weight(sample_weight)
    indices = None
    if isinstance(x, (tuple, list)) and len(x) == 2 and "int" in str(getattr(x[1], "dtype", "")):
        x, indices = x
    needing = [t.method for t in terms if t.needs_indices]
    if needing and indices is None:
        raise UsageError(f"Method(s) {', '.join(needing)} need each example's index: train on batches "
                         "((images, indices), labels), e.g. Splits.train_epochs(..., with_indices=True).")
    return x, indices, y


def _check_no_sample_weight(sample_weight):
    if sample_weight is not None:
        raise ValueError(
            "`Distiller` does not support sample weights or class weights. "
            f"Received: sample_weight={sample_weight!r}"
        )
