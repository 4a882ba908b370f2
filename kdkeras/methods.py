"""Distillation terms: KD, DKD, FitNets and AT, each a ``keras.distillation.DistillationLoss``.

A term is the distillation part of a student's objective, and only that part:
the hard-target cross-entropy and the weight of each term belong to the
distiller that combines them (docs/methods.md). Four methods:

- :class:`KD`: the soft-target term of Hinton, Vinyals and Dean, "Distilling
  the Knowledge in a Neural Network" (2015), exactly as
  :func:`kdkeras.losses.kd_loss_terms` computes it.
- :class:`DKD`: Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge
  Distillation" (CVPR 2022): target-class and non-target-class KD with their
  own weights, and a linear warm-up.
- :class:`FitNets`: Romero, Ballas, Kahou, Chassang, Gatta and Bengio,
  "FitNets: Hints for Thin Deep Nets" (ICLR 2015): regression of one teacher
  feature map (the hint) from the student's, through an adapter.
- :class:`AT`: Zagoruyko and Komodakis, "Paying More Attention to Attention:
  Improving the Performance of Convolutional Neural Networks via Attention
  Transfer" (ICLR 2017): normalised spatial attention maps at several stages.

The interface every term shares (:class:`DistillationTerm`):

- ``taps``: the feature taps the term reads besides the logits, named as the
  model zoo names its stages (``"stem"``, ``"stage1"``, ``"stage2"``, ...).
- ``teacher_outputs`` / ``student_outputs``: dicts
  ``{"logits": (B, C), "<tap>": (B, H, W, C), ...}``. A bare tensor is
  accepted where the term reads exactly one entry (the logits of KD and DKD,
  the single tap of a one-tap FitNets or AT term): that is what Keras's own
  ``keras.distillation.Distiller`` passes.
- ``per_example_loss(teacher_outputs, student_outputs, labels=None,
  training=None)``: float32 ``(B,)``. ``compute_loss`` (Keras's API) is its
  mean. A distiller that averages per example over the global batch scales the
  loss exactly under ``MirroredStrategy``.
- ``build_adapters(student_shapes, teacher_shapes)``: creates the term's
  trainable adapters (FitNets' regressor) from the tap shapes; ``adapters``
  lists them. A term is a ``keras.layers.Layer``, so a model that holds it as an
  attribute tracks, trains and saves its adapters' weights with its own.
- ``warmup_factor(epoch)``: the factor by which the distiller multiplies the
  term's weight in the (0-based) ``epoch``; 1 except during DKD's warm-up.
- ``default_weight`` / ``default_ce_weight``: the weights of the term and of
  the cross-entropy in the method's published CIFAR recipe.
- ``get_config`` / ``from_config``: the constructor arguments.

Teacher outputs are constants (``stop_gradient``); everything is computed in
float32 whatever the dtype of the outputs.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.losses import (
    PAPER_ALPHA,
    PAPER_TEMPERATURE,
    _soft_target_term,
    check_temperature,
)

#: Logit of a masked-out class: its probability underflows to exactly 0 in
#: float32 while every value stays finite (so no 0 * inf in a gradient).
_MASKED_LOGIT = -1e9
#: ``F.normalize``'s floor on the norm (the attention maps of AT).
_NORM_EPSILON = 1e-12
#: The names of the logits in the output dicts.
LOGITS = "logits"


def _float32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _labels(labels):
    """Integer labels ``(B,)`` from ``(B,)`` or ``(B, 1)``."""
    y = ops.convert_to_tensor(labels)
    if len(y.shape) == 2:
        y = ops.squeeze(y, axis=-1)
    return ops.cast(y, "int32")


def _check_number(name, value, minimum=0.0, strict=False):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or value < minimum
        or (strict and value == minimum)
    ):
        relation = ">" if strict else ">="
        raise UsageError(
            f"`{name}` must be a number {relation} {minimum:g}. "
            f"Received: {name}={value!r}"
        )


def _check_tap(name, tap):
    if not isinstance(tap, str) or not tap or tap == LOGITS:
        raise UsageError(
            f"`{name}` must be a stage name such as 'stage2' (not 'logits'). "
            f"Received: {name}={tap!r}"
        )


def _check_layer_names(teacher_layer_name, student_layer_name, taps):
    if (teacher_layer_name is None) != (student_layer_name is None):
        raise UsageError(
            "Give both `teacher_layer_name` and `student_layer_name`, or "
            f"neither. Received: teacher_layer_name={teacher_layer_name!r}, "
            f"student_layer_name={student_layer_name!r}"
        )
    if teacher_layer_name is not None and len(taps) != 1:
        raise UsageError(
            "Keras's `keras.distillation.Distiller` passes one feature map per "
            "term, so a term with layer names reads exactly one tap. "
            f"Received: taps={tuple(taps)!r}"
        )


def _spatial_shape(shape):
    return tuple(shape[1:3])


def _same_spatial(a, b):
    return all(x is None or y is None or x == y for x, y in zip(a, b))


class DistillationTerm(keras.distillation.DistillationLoss, keras.layers.Layer):
    """Base class of kdkeras's distillation terms (see the module docstring).

    A term is a ``keras.layers.Layer`` only to own variables (adapters) that
    the model holding it tracks and saves; it is never called as a layer.
    Subclasses set ``method``, ``default_weight``, ``default_ce_weight`` and
    ``needs_labels``, implement ``per_example_loss`` and ``get_config``, and
    set ``self.taps``.
    """

    #: The method's name (the planned ``--method`` value).
    method = ""
    #: Weight of this term in the method's published CIFAR recipe.
    default_weight = 1.0
    #: Weight of the hard-target cross-entropy in that recipe.
    default_ce_weight = 1.0
    #: Whether ``per_example_loss`` needs the labels.
    needs_labels = False
    #: Epochs of linear warm-up of the term's weight (0: none).
    warmup_epochs = 0
    #: Keras's ``Distiller`` reads these two (``None``: the final outputs).
    teacher_layer_name = None
    student_layer_name = None

    def __init__(self, name=None):
        keras.layers.Layer.__init__(self, name=name)
        self.taps = ()

    # ----------------------------------------------------------- the interface
    def per_example_loss(
        self, teacher_outputs, student_outputs, labels=None, training=None
    ):
        """The term for each example, a float32 ``(B,)`` tensor.

        Args:
            teacher_outputs: dict ``{"logits": (B, C), "<tap>": (B, H, W, C)}``
                (or a bare tensor where the term reads one entry).
            student_outputs: the same for the student.
            labels: integer ``(B,)`` or ``(B, 1)``; required by terms with
                ``needs_labels``.
            training: passed to the adapters (BatchNormalization mode).
        """
        raise NotImplementedError

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Batch mean of ``per_example_loss`` (``keras.distillation`` API).

        ``labels`` and ``training`` may be passed as keyword arguments; Keras's
        own ``Distiller`` passes neither.
        """
        return ops.mean(
            self.per_example_loss(
                teacher_outputs,
                student_outputs,
                labels=kwargs.get("labels"),
                training=kwargs.get("training"),
            )
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Checks that both sides have every entry the term reads."""
        self._read(teacher_outputs, "teacher")
        self._read(student_outputs, "student")

    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates the term's adapters from ``{tap: (B, H, W, C)}`` shapes.

        A term without adapters only checks nothing and marks itself built.
        """
        self.built = True

    @property
    def adapters(self):
        """The term's adapter layers (trained with the student)."""
        return ()

    def warmup_factor(self, epoch):
        """Factor of the term's weight in the 0-based ``epoch``.

        ``min((epoch + 1) / warmup_epochs, 1)``: a linear ramp that reaches 1 in
        the last warm-up epoch (mdistiller counts epochs from 1 and uses
        ``min(epoch / warmup, 1)``, the same factors). 1 without warm-up.
        """
        if not self.warmup_epochs:
            return 1.0
        return min((int(epoch) + 1) / self.warmup_epochs, 1.0)

    # ------------------------------------------------------------- internals
    def _keys(self):
        """The entries of the output dicts this term reads."""
        return tuple(self.taps) or (LOGITS,)

    def _read(self, outputs, side):
        """``outputs`` as a dict holding at least the term's entries."""
        keys = self._keys()
        if not isinstance(outputs, Mapping):
            if len(keys) != 1:
                raise ValueError(
                    f"{type(self).__name__} reads {keys!r}: pass the {side} "
                    "outputs as a dict, not a single tensor."
                )
            return {keys[0]: outputs}
        missing = [k for k in keys if k not in outputs]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the {side} outputs {missing!r}. "
                f"Received the keys {sorted(outputs)!r}."
            )
        return outputs

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="kdkeras")
class KD(DistillationTerm):
    """Soft-target KD of Hinton, Vinyals and Dean (2015), per example.

        kd = T^2 * KL(softmax(t / T) || softmax(s / T))

    with teacher logits ``t`` and student logits ``s``: the ``kd`` term of
    :func:`kdkeras.losses.kd_loss_terms`, computed by the same code. The
    paper reproduced by kdkeras (section 5) and mdistiller's CIFAR config use
    T = 4 and weight it alpha = 0.9 against (1 - alpha) = 0.1 of
    cross-entropy (``default_weight``, ``default_ce_weight``).

    Args:
        temperature: positive number T. Defaults to 4.
        name: layer name.
    """

    method = "kd"
    default_weight = PAPER_ALPHA
    default_ce_weight = 1.0 - PAPER_ALPHA

    def __init__(self, temperature=PAPER_TEMPERATURE, name=None):
        check_temperature(temperature)
        super().__init__(name=name)
        self.temperature = float(temperature)
        self.built = True

    def per_example_loss(
        self, teacher_outputs, student_outputs, labels=None, training=None
    ):
        t = ops.stop_gradient(_float32(self._read(teacher_outputs, "teacher")[LOGITS]))
        s = _float32(self._read(student_outputs, "student")[LOGITS])
        return _soft_target_term(s, t, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="kdkeras")
class DKD(DistillationTerm):
    """Decoupled Knowledge Distillation (Zhao et al., CVPR 2022), per example.

    With ``p = softmax(z / T)`` for teacher and student logits ``z`` and the
    label ``y`` (the target class):

        b      = [p_y, 1 - p_y]                       (target vs the rest)
        p_hat  = softmax over the classes k != y of z_k / T
        TCKD   = T^2 * KL(b_teacher || b_student)
        NCKD   = T^2 * KL(p_hat_teacher || p_hat_student)
        DKD    = alpha * TCKD + beta * NCKD

    The paper (eq. 1) shows classical KD is
    ``KD = TCKD + (1 - p_y_teacher) * NCKD``; DKD frees the two weights.
    The T^2 factor is mdistiller's (the official implementation).

    Defaults: alpha = 1, beta = 8, T = 4, a 20-epoch warm-up and
    cross-entropy weight 1, the paper's CIFAR-100 setting and mdistiller's
    default config (used for ResNet32x4 -> ResNet8x4). mdistiller tunes beta
    per pair: 6 for WRN-40-2 -> WRN-16-2 and WRN-40-1, 2 for ResNet56 ->
    ResNet20.

    Warm-up: mdistiller multiplies the whole DKD term by
    ``min(epoch / 20, 1)`` (epochs counted from 1). Here the term itself is
    the un-warmed loss; the distiller multiplies the term's weight by
    ``warmup_factor(epoch)`` at the start of each (0-based) epoch.

    DKD needs the labels: ``per_example_loss(..., labels=y)`` (and
    ``compute_loss(..., labels=y)``). Keras's own
    ``keras.distillation.Distiller`` calls ``compute_loss(teacher, student)``
    without labels, so DKD works in kdkeras's distiller only.

    Args:
        alpha: weight of TCKD, a number >= 0. Defaults to 1.
        beta: weight of NCKD, a number >= 0. Defaults to 8.
        temperature: positive number T. Defaults to 4.
        warmup_epochs: epochs of the linear warm-up, an integer >= 0.
            Defaults to 20.
        name: layer name.
    """

    method = "dkd"
    default_weight = 1.0
    default_ce_weight = 1.0
    needs_labels = True

    def __init__(
        self,
        alpha=1.0,
        beta=8.0,
        temperature=4.0,
        warmup_epochs=20,
        name=None,
    ):
        _check_number("alpha", alpha)
        _check_number("beta", beta)
        check_temperature(temperature)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, numbers.Integral) or warmup_epochs < 0:
            raise UsageError(
                "`warmup_epochs` must be an integer >= 0. "
                f"Received: warmup_epochs={warmup_epochs!r}"
            )
        super().__init__(name=name)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.warmup_epochs = int(warmup_epochs)
        self.built = True

    def per_example_terms(self, teacher_outputs, student_outputs, labels):
        """``(tckd, nckd)``, two float32 ``(B,)`` tensors, both with T^2."""
        if labels is None:
            raise ValueError(
                "DKD needs the labels (its target class): pass `labels=`. "
                "Keras's own keras.distillation.Distiller cannot pass them; "
                "use kdkeras's distiller."
            )
        temperature = self.temperature
        t = ops.stop_gradient(_float32(self._read(teacher_outputs, "teacher")[LOGITS])) / temperature
        s = _float32(self._read(student_outputs, "student")[LOGITS]) / temperature
        y = _labels(labels)
        target = ops.cast(ops.one_hot(y, int(s.shape[-1])), "bool")  # (B, C)

        def binary_and_rest(z):
            log_p = ops.log_softmax(z, axis=-1)
            log_p_target = ops.sum(ops.where(target, log_p, 0.0), axis=-1)
            rest = ops.where(target, _MASKED_LOGIT, z)
            log_p_rest = ops.logsumexp(rest, axis=-1) - ops.logsumexp(z, axis=-1)
            return log_p_target, log_p_rest, ops.log_softmax(rest, axis=-1)

        t_target, t_rest, t_hat = binary_and_rest(t)
        s_target, s_rest, s_hat = binary_and_rest(s)
        tckd = ops.exp(t_target) * (t_target - s_target) + ops.exp(t_rest) * (
            t_rest - s_rest
        )
        nckd = ops.sum(
            ops.where(target, 0.0, ops.exp(t_hat) * (t_hat - s_hat)), axis=-1
        )
        scale = temperature**2
        return scale * tckd, scale * nckd

    def per_example_loss(
        self, teacher_outputs, student_outputs, labels=None, training=None
    ):
        tckd, nckd = self.per_example_terms(teacher_outputs, student_outputs, labels)
        return self.alpha * tckd + self.beta * nckd

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": self.temperature,
            "warmup_epochs": self.warmup_epochs,
        }


class _FeatureTerm(DistillationTerm):
    """A term over feature taps; optional layer names for Keras's ``Distiller``."""

    def _init_feature_term(self, taps, teacher_layer_name, student_layer_name):
        _check_layer_names(teacher_layer_name, student_layer_name, taps)
        self.taps = tuple(taps)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def _keras_tap_shapes(self, teacher, student):
        """``(student_shapes, teacher_shapes)`` from Keras layer names."""
        shapes = []
        for side, model, layer_name in (
            ("student", student, self.student_layer_name),
            ("teacher", teacher, self.teacher_layer_name),
        ):
            try:
                layer = model.get_layer(name=layer_name)
            except ValueError as error:
                raise ValueError(f"In the {side} model: {error}") from error
            shapes.append({self.taps[0]: tuple(layer.output.shape)})
        return tuple(shapes)

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        }


@keras.saving.register_keras_serializable(package="kdkeras")
class FitNets(_FeatureTerm):
    """Hint regression of FitNets (Romero et al., ICLR 2015), per example.

    With the student's feature map ``S`` and the teacher's ``T`` at the hint
    tap, both ``(B, H, W, C)``, and the adapter ``r`` (Romero et al.'s
    regressor: a 1x1 convolution to the teacher's channels, then
    BatchNormalization):

        fitnets = mean over (H, W, C_teacher) of (r(S) - T)^2

    whose batch mean is mdistiller's ``F.mse_loss(r(S), T)``. Defaults: the
    hint at ``"stage2"`` (the middle stage of a three-stage WRN, mdistiller's
    ``HINT_LAYER = 2``), weight 100 and cross-entropy weight 1 (mdistiller's
    CIFAR config, ``FITNET.LOSS.FEAT_WEIGHT``). Romero et al. train the hint
    in a separate first stage; mdistiller and kdkeras add it to the
    student's objective in one stage.

    The adapter is :func:`kdkeras.models.make_adapter`: 1x1 conv (no bias)
    + BatchNormalization (PyTorch's momentum and epsilon, synchronized
    across replicas), float32; unlike mdistiller's ``ConvReg`` it has no
    ReLU, because the stage outputs of pre-activation nets (WRN) are not
    rectified. Student and teacher maps must have the same spatial size. It
    is built by ``build_adapters`` (or on the first call, from the tensors'
    shapes) and is not part of the student; build it before compiling so
    that the optimizer sees its variables.

    Args:
        hint_tap: the stage of the hint. Defaults to ``"stage2"``.
        adapter: ``"always"`` (default: Romero et al. always regress) or
            ``"if_needed"`` (no adapter when the channel counts match).
        teacher_layer_name, student_layer_name: for Keras's own
            ``keras.distillation.Distiller`` only, which extracts one layer
            output per term by layer name; kdkeras's distiller uses the tap.
        name: layer name.
    """

    method = "fitnets"
    default_weight = 100.0
    default_ce_weight = 1.0
    ADAPTER_MODES = ("always", "if_needed")

    def __init__(
        self,
        hint_tap="stage2",
        adapter="always",
        teacher_layer_name=None,
        student_layer_name=None,
        name=None,
    ):
        _check_tap("hint_tap", hint_tap)
        if adapter not in self.ADAPTER_MODES:
            raise UsageError(
                f"`adapter` must be one of {self.ADAPTER_MODES}. "
                f"Received: adapter={adapter!r}"
            )
        super().__init__(name=name)
        self._init_feature_term((hint_tap,), teacher_layer_name, student_layer_name)
        self.hint_tap = hint_tap
        self.adapter_mode = adapter
        self.adapter = None

    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates the adapter from ``{hint_tap: (B, H, W, C)}`` shapes.

        Raises:
            UsageError: if the spatial sizes differ.
            ValueError: if a shape of the hint tap is missing.
        """
        tap = self.hint_tap
        for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
            if tap not in shapes:
                raise ValueError(f"FitNets needs the {side} shape of {tap!r}.")
        s_shape, t_shape = tuple(student_shapes[tap]), tuple(teacher_shapes[tap])
        if len(s_shape) != 4 or len(t_shape) != 4:
            raise UsageError(
                f"FitNets hints are (B, H, W, C) maps. Received: student "
                f"{s_shape}, teacher {t_shape} at {tap!r}"
            )
        if not _same_spatial(_spatial_shape(s_shape), _spatial_shape(t_shape)):
            raise UsageError(
                f"FitNets needs the same spatial size for student and teacher at "
                f"{tap!r}. Received: student {s_shape}, teacher {t_shape}"
            )
        if self.adapter is not None:
            self.built = True
            return
        if self.adapter_mode == "if_needed" and s_shape[-1] == t_shape[-1]:
            self.built = True
            return
        from kdkeras.models.taps import make_adapter

        adapter = make_adapter(s_shape, t_shape, name=f"{self.name}_adapter")
        self.adapter = adapter
        self.built = True

    @property
    def adapters(self):
        return () if self.adapter is None else (self.adapter,)

    def validate_model_compatibility(self, teacher, student):
        """With layer names (Keras's ``Distiller``): checks them, builds the adapter."""
        if self.teacher_layer_name is not None:
            student_shapes, teacher_shapes = self._keras_tap_shapes(teacher, student)
            self.build_adapters(student_shapes, teacher_shapes)

    def per_example_loss(
        self, teacher_outputs, student_outputs, labels=None, training=None
    ):
        tap = self.hint_tap
        t = ops.stop_gradient(_float32(self._read(teacher_outputs, "teacher")[tap]))
        s = _float32(self._read(student_outputs, "student")[tap])
        if not self.built:
            self.build_adapters({tap: tuple(s.shape)}, {tap: tuple(t.shape)})
        if self.adapter is not None:
            s = self.adapter(s, training=training)
        if tuple(s.shape[1:]) != tuple(t.shape[1:]) and None not in tuple(s.shape[1:]) + tuple(t.shape[1:]):
            raise UsageError(
                f"FitNets: the student hint at {tap!r} has shape {tuple(s.shape)} "
                f"(after the adapter), the teacher's {tuple(t.shape)}."
            )
        return ops.mean(ops.square(s - t), axis=(1, 2, 3))

    def get_config(self):
        return {
            **super().get_config(),
            "hint_tap": self.hint_tap,
            "adapter": self.adapter_mode,
        }


@keras.saving.register_keras_serializable(package="kdkeras")
class AT(_FeatureTerm):
    """Attention transfer (Zagoruyko and Komodakis, ICLR 2017), per example.

    The attention map of a feature map ``A`` of shape ``(H, W, C)`` is

        Q(A) = vec(mean over channels of |A|^p)            (p = 2)
        q(A) = Q(A) / max(||Q(A)||_2, 1e-12)

    (the paper's sum over channels; the mean of the authors' code differs by
    a constant that the normalisation removes), and

        at = sum over taps j of mean over the H * W positions of
             (q(S_j) - q(T_j))^2

    for student and teacher maps ``S_j``, ``T_j``. Its batch mean is the
    authors' code (``(at(x) - at(y)).pow(2).mean()`` summed over the groups)
    and mdistiller's ``at_loss``. The paper writes the loss as
    ``beta / 2 * || q_S - q_T ||_p`` with beta = 1000 "divided by the number of
    elements in the attention map and the batch size"; the code squares the
    difference, and mdistiller weights it by 1000 with cross-entropy weight 1
    (``AT.LOSS.FEAT_WEIGHT``): ``default_weight = 1000``.

    Student and teacher maps at a tap must have the same spatial size (the
    channel counts may differ); mdistiller pools the larger map, this term
    raises instead. ``q`` is unchanged by scaling a map by a positive
    constant, and ``at`` is 0 for identical maps.

    Args:
        taps: the stages, by default ``("stage1", "stage2", "stage3")``: the
            end of every stage of a WRN, as in the paper (mdistiller uses the
            same stage outputs).
        p: the exponent, a positive number. Defaults to 2 (the paper's).
        teacher_layer_name, student_layer_name: for Keras's own
            ``keras.distillation.Distiller`` only (one layer per term, so one
            tap).
        name: layer name.
    """

    method = "at"
    default_weight = 1000.0
    default_ce_weight = 1.0

    def __init__(
        self,
        taps=("stage1", "stage2", "stage3"),
        p=2.0,
        teacher_layer_name=None,
        student_layer_name=None,
        name=None,
    ):
        if isinstance(taps, str) or not taps:
            raise UsageError(f"`taps` must be a non-empty list of stage names. Received: taps={taps!r}")
        for tap in taps:
            _check_tap("taps", tap)
        if len(set(taps)) != len(taps):
            raise UsageError(f"`taps` has a repeated stage. Received: taps={taps!r}")
        _check_number("p", p, strict=True)
        super().__init__(name=name)
        self._init_feature_term(tuple(taps), teacher_layer_name, student_layer_name)
        self.p = float(p)
        self.built = True

    def attention_map(self, features):
        """``q(A)``: float32 ``(B, H * W)``, unit L2 norm per example."""
        a = _float32(features)
        q = ops.mean(ops.power(ops.abs(a), self.p), axis=-1)  # (B, H, W)
        q = ops.reshape(q, (ops.shape(q)[0], -1))
        norm = ops.sqrt(ops.sum(ops.square(q), axis=-1, keepdims=True))
        return q / ops.maximum(norm, _NORM_EPSILON)

    def validate_model_compatibility(self, teacher, student):
        """With layer names (Keras's ``Distiller``): checks them and their sizes."""
        if self.teacher_layer_name is not None:
            student_shapes, teacher_shapes = self._keras_tap_shapes(teacher, student)
            tap = self.taps[0]
            self._check_sizes(tap, student_shapes[tap], teacher_shapes[tap])

    def _check_sizes(self, tap, s_shape, t_shape):
        if len(s_shape) != 4 or len(t_shape) != 4 or not _same_spatial(
            _spatial_shape(s_shape), _spatial_shape(t_shape)
        ):
            raise UsageError(
                f"AT needs (B, H, W, C) maps of the same spatial size at {tap!r}. "
                f"Received: student {tuple(s_shape)}, teacher {tuple(t_shape)}"
            )

    def per_example_loss(
        self, teacher_outputs, student_outputs, labels=None, training=None
    ):
        teacher_outputs = self._read(teacher_outputs, "teacher")
        student_outputs = self._read(student_outputs, "student")
        total = 0.0
        for tap in self.taps:
            t = ops.stop_gradient(_float32(teacher_outputs[tap]))
            s = _float32(student_outputs[tap])
            self._check_sizes(tap, tuple(s.shape), tuple(t.shape))
            diff = self.attention_map(s) - self.attention_map(t)
            total = total + ops.mean(ops.square(diff), axis=-1)
        return total

    def get_config(self):
        return {**super().get_config(), "taps": list(self.taps), "p": self.p}


#: The terms by method name (the planned ``--method`` values).
TERMS = {term.method: term for term in (KD, DKD, FitNets, AT)}
