"""What every distillation method declares, and the one interface the :class:`~kdkeras.distiller.Distiller` uses.

A method is one file in this package (docs/methods.md, "Adding a method"),
holding:

- a settings dataclass whose fields are declared with :func:`setting`: type
  (the annotation), default, valid range or choices, help text and the paper
  the default comes from. Each field becomes the flag ``--<method>_<field>``
  (or the flag it names), a :class:`kdkeras.config.RunConfig` field that is
  part of the run's identity when set, an HParams column and a row of the
  generated table in docs/methods.md;
- a :class:`Method` subclass: its ``method`` name, ``paper``, what it ``reads``
  (logits, stage taps, the embedding), the trainable ``parts`` it adds, and
  its loss per example.

A method is the distillation part of the student's objective only: the
hard-target cross-entropy and the weight of each method belong to the
distiller, which computes

    ce_weight * CE + sum_i weight_i * factor_i(epoch) * method_i

per example (docs/methods.md).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

import keras
from keras import ops

from kdkeras.errors import UsageError

#: The key of the logits in the output dicts.
LOGITS = "logits"
#: The key of the embedding (the pooled features the classifier reads) in the output dicts.
EMBEDDING = "embedding"


# ------------------------------------------------------------------ settings
# Declared in kdkeras/methods/_settings.py, which imports no Keras (flags and configs read them without it).
from kdkeras.methods._settings import NoSettings, Setting, declared_settings, setting  # noqa: E402,F401


# ------------------------------------------------------------------ helpers
def as_float32(x):
    """``x`` as a float32 tensor."""
    return ops.cast(ops.convert_to_tensor(x), "float32")


def int_labels(labels):
    """Integer labels ``(B,)`` from ``(B,)`` or ``(B, 1)``."""
    y = ops.convert_to_tensor(labels)
    if len(y.shape) == 2:
        y = ops.squeeze(y, axis=-1)
    return ops.cast(y, "int32")


def check_tap(name, tap):
    """A one-line error unless ``tap`` is a stage name (not the logits)."""
    if not isinstance(tap, str) or not tap or tap == LOGITS:
        raise UsageError(f"`{name}` must be a stage name such as 'stage2' (not 'logits'). Received: {name}={tap!r}")


def same_spatial(a, b):
    """Whether two ``(B, H, W, C)`` shapes have the same ``H, W`` (unknown sizes match anything)."""
    return all(x is None or y is None or x == y for x, y in zip(tuple(a)[1:3], tuple(b)[1:3]))


def check_number(name, value, minimum=0.0, strict=False):
    """A one-line error unless ``value`` is a number ``>= minimum`` (``> minimum`` if ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < minimum or \
            (strict and value == minimum):
        raise UsageError(f"`{name}` must be a number {'>' if strict else '>='} {minimum:g}. "
                         f"Received: {name}={value!r}")


# ------------------------------------------------------------------ the interface
class Method(keras.distillation.DistillationLoss, keras.layers.Layer):
    """Base class of kdkeras's distillation methods.

    A method is a ``keras.layers.Layer`` only to own variables (adapters,
    projection heads, memory banks, a learnable temperature) that the
    distiller holding it trains, checkpoints and restores; it is never called
    as a layer, and none of it goes into the exported student ``.keras``.

    Subclasses set the class attributes below, implement
    :meth:`per_example_loss` and ``get_config``, and set ``self.taps`` (the
    entries of the output dicts they read besides the logits: stage taps such
    as ``"stage2"``, or ``"embedding"``).

    A method with per-example state (CRD's memory banks) sets
    ``needs_indices``: its ``per_example_loss`` then also takes ``indices=``,
    each example's int64 position in the run's training split (``None`` in
    evaluation, where it must update no state), and the run trains it on
    ``((images, indices), labels)`` batches. ``needs_data_size``: the run
    calls ``set_data_size(n)`` with the number of training examples before
    the model is compiled.
    """

    #: The ``--method`` name (``name`` is the layer's own).
    method = ""
    #: The paper the method is defined from (docs/methods.md's table).
    paper = ""
    #: What the method reads, for the docs table: "logits", "stage taps", "embedding", ...
    reads = "logits"
    #: The trainable parts the method adds, for the docs table ("" for none).
    parts = ""
    #: The settings dataclass (fields declared with :func:`setting`).
    Settings = NoSettings
    #: Whether the method uses the run's shared ``temperature`` (``--temperature``).
    uses_temperature = False
    #: The method's weight and the cross-entropy's in its published CIFAR recipe.
    default_weight = 1.0
    default_ce_weight = 1.0
    #: Whether ``per_example_loss`` needs the labels.
    needs_labels = False
    #: Epochs of linear warm-up of the method's weight (0: none).
    warmup_epochs = 0
    #: Whether ``per_example_loss`` takes ``indices=`` (the examples' positions in the training split).
    needs_indices = False
    #: Whether the method needs ``set_data_size(n)`` (the number of training examples) before training.
    needs_data_size = False
    #: Keras's own ``keras.distillation.Distiller`` reads these (``None``: the final outputs).
    teacher_layer_name = None
    student_layer_name = None

    def __init__(self, name=None):
        keras.layers.Layer.__init__(self, name=name)
        self.taps = ()

    @classmethod
    def from_settings(cls, settings, temperature=None):
        """The method built from its settings dataclass (and the run's temperature when it uses one)."""
        kwargs = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
        if cls.uses_temperature:
            kwargs["temperature"] = temperature
        return cls(**kwargs)

    # ----------------------------------------------------------- per example
    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        """The method's loss for each example, a float32 ``(B,)`` tensor.

        Args:
            teacher_outputs: dict ``{"logits": (B, C), "<tap>": ...}`` (or a
                bare tensor where the method reads exactly one entry).
            student_outputs: the same for the student.
            labels: integer ``(B,)`` or ``(B, 1)``; given to methods with ``needs_labels``.
            training: passed to the method's parts (BatchNormalization mode).
        """
        raise NotImplementedError

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Batch mean of :meth:`per_example_loss` (the ``keras.distillation`` API)."""
        return ops.mean(self.per_example_loss(teacher_outputs, student_outputs, labels=kwargs.get("labels"),
                                              training=kwargs.get("training")))

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Checks that both sides have every entry the method reads."""
        self.read(teacher_outputs, "teacher")
        self.read(student_outputs, "student")

    # ----------------------------------------------------------- parts and epochs
    def bind(self, student, teacher):
        """Receives the student and the frozen teacher before the distiller reads ``taps``; nothing by default.

        A method that runs part of a network itself builds it here, from the
        networks' functional graphs (RD runs the teacher's later stages on the
        student's stage maps); it may set ``taps`` from the networks.
        """

    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates the method's trainable parts from ``{tap: shape}`` of both models (``logits`` included)."""
        self.built = True

    @property
    def adapters(self):
        """The method's trainable layers (trained with the student, kept out of its ``.keras``)."""
        return ()

    def warmup_factor(self, epoch):
        """Factor of the method's weight in the 0-based ``epoch``: ``min((epoch + 1) / warmup_epochs, 1)``.

        (mdistiller counts epochs from 1 and uses ``min(epoch / warmup, 1)``: the same factors.)
        """
        if not self.warmup_epochs:
            return 1.0
        return min((int(epoch) + 1) / self.warmup_epochs, 1.0)

    def on_epoch_begin(self, epoch):
        """Sets per-epoch state (a schedule) before the 0-based ``epoch``; nothing by default."""

    def set_data_size(self, num_examples):
        """Receives the number of training examples (methods with ``needs_data_size``); nothing by default."""

    #: Whether :meth:`on_epoch_begin` does something (the distiller then calls it every epoch).
    has_epoch_state = False

    # ----------------------------------------------------------- internals
    def keys(self):
        """The entries of the output dicts this method reads."""
        return tuple(self.taps) or (LOGITS,)

    def read(self, outputs, side):
        """``outputs`` as a dict holding at least the method's entries."""
        keys = self.keys()
        if not isinstance(outputs, Mapping):
            if len(keys) != 1:
                raise ValueError(f"{type(self).__name__} reads {keys!r}: pass the {side} outputs as a dict, "
                                 "not a single tensor.")
            return {keys[0]: outputs}
        missing = [k for k in keys if k not in outputs]
        if missing:
            raise ValueError(f"{type(self).__name__} needs the {side} outputs {missing!r}. "
                             f"Received the keys {sorted(outputs)!r}.")
        return outputs

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def check_layer_names(teacher_layer_name, student_layer_name, taps):
    """Both layer names (Keras's own ``Distiller``, one tap) or neither."""
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


class FeatureMethod(Method):
    """A method over feature taps; optional layer names for Keras's own ``keras.distillation.Distiller``."""

    def init_feature_taps(self, taps, teacher_layer_name, student_layer_name):
        check_layer_names(teacher_layer_name, student_layer_name, taps)
        self.taps = tuple(taps)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def check_maps(self, tap, s_shape, t_shape):
        """A one-line error unless both are ``(B, H, W, C)`` maps of the same spatial size at ``tap``."""
        if len(s_shape) != 4 or len(t_shape) != 4 or not same_spatial(s_shape, t_shape):
            raise UsageError(f"{type(self).__name__} needs (B, H, W, C) maps of the same spatial size at {tap!r}. "
                             f"Received: student {tuple(s_shape)}, teacher {tuple(t_shape)}")

    def keras_tap_shapes(self, teacher, student):
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


#: The old name of :class:`Method`.
DistillationTerm = Method
