"""RD: Li, Zhang, Wang, Liu, Tan, Lin, Zhang, Feng and Zhang, "Residual Distillation: Towards Portable Deep
Neural Networks without Shortcuts" (NeurIPS 2020).

A plain student (no shortcuts) is trained with the help of its residual
counterpart: the student's map at the end of each early stage is also passed
through the teacher's later stages and head, and those logits are supervised
by the labels too, so that the student's early layers receive gradients that
travelled through the teacher's shortcuts (see :class:`RD`). The authors'
code (leoozy/JointRD_Neurips2020) defines the details followed here; its
files are named where they are used.

The file reads top to bottom: the settings, the loss of given logits
(:func:`rd_loss`) and the weight schedule, then the method: its taps and
the teacher's later stages (built once in :meth:`RD.bind`), then its loss.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.methods.base import LOGITS, Method, as_float32, int_labels, setting

SOURCE = "Li et al. 2020; the authors' code (process/multikd_train.py, model/distillerkd.py, README)"
#: ``taps`` meaning every stage of the student but its last: the authors' cut points.
ALL_STAGES = "all"
#: The authors' CIFAR value of the floor of the cross-network weight (their README runs
#: ``CIFAR_plaincnn.sh <layers> 0.5 TA``: ``--dc 0.5``).
AUTHORS_FLOOR = 0.5
#: Epochs over which the authors' cross-network weight falls to its floor (``Cosine(..., epoch_max=60)``).
AUTHORS_DECAY_EPOCHS = 60

_STAGE_RE = re.compile(r"^stage\d+$")


@dataclasses.dataclass(frozen=True)
class RDSettings:
    taps: tuple[str, ...] = setting((ALL_STAGES,), "the student stages whose maps also go through the teacher's "
                                    "later stages and head; all: every stage but the last (the authors' cut "
                                    "points)", source=SOURCE)
    floor: float = setting(AUTHORS_FLOOR, "the weight of the cross-network terms falls from 1 to this by a half "
                           "cosine", minimum=0.0, maximum=1.0, source=SOURCE)
    decay_epochs: int = setting(AUTHORS_DECAY_EPOCHS, "epochs over which that weight falls to the floor",
                                minimum=1, source=SOURCE)


# ------------------------------------------------------------------ helpers
def cross_entropy(logits, labels):
    """Hard-target cross-entropy per example, float32 ``(B,)``: ``-log softmax(logits)[y]``.

    Args:
        logits: tensor ``(B, C)``.
        labels: integer ``(B,)`` or ``(B, 1)``.
    """
    log_p = ops.log_softmax(as_float32(logits), axis=-1)  # (B, C)
    return -ops.take_along_axis(log_p, ops.expand_dims(int_labels(labels), -1), axis=-1)[:, 0]


def rd_loss(logits, cross_logits, labels, cross_weight):
    """The RD objective per example, float32 ``(B,)``, from the logits it reads.

        rd = ( CE(y, logits) + cross_weight * sum_i CE(y, cross_logits[i]) ) / (K + 1)

    Args:
        logits: the student's own logits ``(B, C)``.
        cross_logits: the ``K`` teacher's logits from the student's maps, each ``(B, C)``.
        labels: integer ``(B,)`` or ``(B, 1)``.
        cross_weight: ``m``, a number or a scalar tensor.
    """
    cross = 0.0
    for each in cross_logits:
        cross = cross + cross_entropy(each, labels)
    return (cross_entropy(logits, labels) + cross_weight * cross) / (len(cross_logits) + 1.0)


def cross_weight_at(epoch, floor=AUTHORS_FLOOR, decay_epochs=AUTHORS_DECAY_EPOCHS):
    """The weight ``m`` of the cross-network terms in the 0-based ``epoch``.

        m(e) = floor + (1 - floor) * (1 + cos(pi * min(e, E) / E)) / 2,     E = decay_epochs

    1 in the first epoch, ``floor`` from epoch ``E`` on: the authors'
    ``Cosine(min_v=dc, max_v=1.0, epoch, epoch_max=60)`` (process/multikd_train.py),
    whose training loop counts epochs from 0.
    """
    step = min(int(epoch), decay_epochs)
    return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * step / decay_epochs)) / 2.0


class _Tails:
    """The teacher's parts after each tap, hidden from Keras's tracking (their variables are the teacher's)."""

    def __init__(self, models):
        self.models = dict(models)


# ------------------------------------------------------------------ the method
@keras.saving.register_keras_serializable(package="kdkeras")
class RD(Method):
    """Residual Distillation (Li et al., NeurIPS 2020), per example.

    With the student's logits ``s``, its maps ``S_1 .. S_K`` at the cut taps
    (the ends of its early stages), ``T_{>i}`` the teacher's stages after tap
    ``i`` and its head (:func:`kdkeras.models.taps.tail_model`, run in
    inference mode), the label ``y`` and the 0-based epoch ``e``:

        rd = ( CE(y, s) + m(e) * sum_{i=1..K} CE(y, T_{>i}(S_i)) ) / (K + 1)
        m(e) = floor + (1 - floor) * (1 + cos(pi * min(e, E) / E)) / 2

    The term holds the student's own cross-entropy, so the distiller's
    cross-entropy weight defaults to 0 and ``rd`` is the whole objective
    (plus weight decay). Gradients reach the student's early layers through
    its own later stages and through the teacher's (the abstract's "mixture"
    of the two); the teacher's weights are constants: the distiller
    differentiates the student's variables only, and the teacher's BN uses
    its moving statistics. Defaults: every stage but the last is a cut
    (``taps=("all",)``; stage1 and stage2 of a WRN or a CIFAR ResNet, stage1
    to stage3 of ResNet-18, the authors' ``dis_point`` ``[1, 3, 5]``),
    ``floor`` 0.5 and ``E`` = 60 epochs, weight 1.

    What the authors' code defines, and where this follows it:

    * the cross outputs: model/distillerkd.py ``forward_ta1`` runs
      ``student.forward_to`` to the cut blocks, then ``teacher.forward_from``
      each cut feature through the teacher's remaining blocks, final ReLU,
      pooling and classifier, with the teacher in ``eval()`` mode;
    * the loss: process/multikd_train.py, branch ``JOINT``:
      ``criterion(cross, labels) * m * xishu`` per cut plus
      ``criterion(student, labels) * xishu`` with ``xishu = 1/4``, and
      ``m = Cosine(min_v=dc, max_v=1.0, epoch, epoch_max=60)``; their README
      runs CIFAR with ``dc = 0.5``.

    Deviations from the authors' code:

    1. The teacher is a trained, frozen network (kdkeras's distiller; their
       README trains or downloads the teacher first). Their ``JOINT`` branch
       trains the teacher from scratch alongside the student, on its own
       cross-entropy only; their frozen-teacher branch (``TA``) computes the
       cross outputs but leaves them out of its loss, so it is not the
       method.
    2. ``1 / (K + 1)`` where the authors write the constant ``xishu = 1/4``:
       the same for their four-stage ResNets (K = 3 cuts); for a three-stage
       WRN (K = 2) the terms are averaged over the three outputs, 1/3 each.
    3. The optional feature term of their code (a margin-based feature
       distance on the final features through a 1x1 conv + BN connector,
       ``--dis_weight``) is left out: every CIFAR script sets ``--dis_weight 0.``.
    4. No re-parameterisation of the student: the authors' ``*_dirac``
       students use convolutions ``alpha * delta + beta * W`` (model/diraconv.py),
       but their CIFAR script (script/CIFAR_plaincnn.sh) trains the ordinary
       one. ``--plain=diracnet`` (DiracNets' normalised form) or
       ``--init=dirac`` combine with RD where wanted.
    5. The student is the NR network, without any shortcut; the authors' plain
       ResNets keep the projection shortcut of each downsampling block
       (train_dirac.py, ``student_bc`` ``[[0,0],[1,0],[1,0],[1,0]]``,
       "keepdownsampling").

    The cut is the same in both codes: the authors' blocks apply the ReLU at
    their input, so their teacher block computes ``f(relu(h))`` from the
    student's sum ``h``; kdkeras's post-activation stage tap is ``relu(h)``,
    which the teacher's next block reads directly. On a pre-activation WRN
    the tap is the block output before the next block's BN-ReLU, which the
    teacher's block then applies with its own statistics.

    Student and teacher must have the same map shape ``(H, W, C)`` at every
    cut (equal stage widths and strides), otherwise a one-line ``UsageError``.
    The method has no trainable parts; its one variable is ``m``
    (non-trainable, set every epoch, so a resumed run continues the
    schedule). It needs the labels, and kdkeras's distiller: Keras's own
    ``keras.distillation.Distiller`` passes no stage maps.

    Args:
        taps: the cut taps, stage names of the student (``"stage1"``, ...),
            none its last stage; or ``("all",)`` (default): every stage but
            the last.
        floor: the final weight of the cross-network terms, in ``[0, 1]``.
            Defaults to 0.5.
        decay_epochs: epochs of the half-cosine fall from 1 to ``floor``, an
            integer >= 1. Defaults to 60.
        name: layer name.
    """

    method = "rd"
    paper = ("Li, Zhang, Wang, Liu, Tan, Lin, Zhang, Feng and Zhang, Residual Distillation: Towards Portable Deep "
             "Neural Networks without Shortcuts, NeurIPS 2020")
    reads = "student stage taps, labels (through the teacher's later stages)"
    parts = ""
    Settings = RDSettings
    default_weight = 1.0
    default_ce_weight = 0.0  # the term holds the student's own cross-entropy
    needs_labels = True
    has_epoch_state = True

    def __init__(self, taps=(ALL_STAGES,), floor=AUTHORS_FLOOR, decay_epochs=AUTHORS_DECAY_EPOCHS, name=None):
        if isinstance(taps, str) or not isinstance(taps, (list, tuple)) or not taps:
            raise UsageError(f"`taps` must be a non-empty list of stage names, or ['{ALL_STAGES}']. "
                             f"Received: taps={taps!r}")
        taps = tuple(taps)
        if ALL_STAGES in taps and len(taps) > 1:
            raise UsageError(f"`taps` is either ['{ALL_STAGES}'] or a list of stage names. Received: taps={taps!r}")
        if taps != (ALL_STAGES,):
            bad = [tap for tap in taps if not isinstance(tap, str) or not _STAGE_RE.match(tap)]
            if bad:
                raise UsageError(f"`taps` must name stages such as 'stage1' (RD cuts between stages). "
                                 f"Received: taps={taps!r}")
            if len(set(taps)) != len(taps):
                raise UsageError(f"`taps` has a repeated tap. Received: taps={taps!r}")
        if isinstance(floor, bool) or not isinstance(floor, numbers.Real) or not 0.0 <= floor <= 1.0:
            raise UsageError(f"`floor` must be a number in [0, 1]. Received: floor={floor!r}")
        if isinstance(decay_epochs, bool) or not isinstance(decay_epochs, numbers.Integral) or decay_epochs < 1:
            raise UsageError(f"`decay_epochs` must be an integer >= 1. Received: decay_epochs={decay_epochs!r}")
        super().__init__(name=name)
        self.requested_taps = taps
        self.floor = float(floor)
        self.decay_epochs = int(decay_epochs)
        self.cross_weight = None
        self._tails = None

    # ----------------------------------------------------------- the taps and the teacher's later stages
    def bind(self, student, teacher):
        """Chooses the cut taps and builds the teacher's part after each, once.

        Raises:
            UsageError: a tap is not a stage of both networks, is the
                student's last stage, or the two maps differ in shape there.
        """
        from kdkeras.models.convert import has_preprocessing, strip_preprocessing
        from kdkeras.models.taps import feature_taps, tail_model

        def network(model):
            return strip_preprocessing(model) if has_preprocessing(model) else model

        student_maps, teacher_maps = feature_taps(network(student)), feature_taps(network(teacher))
        stages = [tap for tap in student_maps if _STAGE_RE.match(tap)]
        taps = stages[:-1] if self.requested_taps == (ALL_STAGES,) else self.requested_taps
        if not taps:
            raise UsageError(f"RD cuts the student after an early stage, and '{student.name}' has only "
                             f"{len(stages)} stage(s).")
        for tap in taps:
            if tap not in stages or tap == stages[-1]:
                raise UsageError(f"RD's taps must be stages of the student before its last ({', '.join(stages[:-1])})"
                                 f". Received: taps={list(taps)!r}")
            if tap not in teacher_maps:
                raise UsageError(f"RD cuts at {tap!r}, which the teacher '{teacher.name}' lacks "
                                 f"(its taps: {', '.join(teacher_maps)}).")
            s_shape, t_shape = tuple(student_maps[tap].shape[1:]), tuple(teacher_maps[tap].shape[1:])
            if s_shape != t_shape:
                raise UsageError(f"RD feeds the student's {tap} to the teacher's later stages, so both maps must "
                                 f"have one shape. Received: student {s_shape}, teacher {t_shape}.")
        self.taps = tuple(taps)
        self._tails = _Tails({tap: tail_model(teacher, tap) for tap in taps})

    def validate_model_compatibility(self, teacher, student):
        """Keras's own ``keras.distillation.Distiller`` passes no stage maps: a one-line error."""
        raise UsageError("RD reads the student's stage maps, which Keras's keras.distillation.Distiller does not "
                         "pass: use kdkeras.distiller.Distiller.")

    # ----------------------------------------------------------- the schedule
    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates ``m``, the cross-network terms' weight (non-trainable); nothing depends on the shapes."""
        if self.cross_weight is None:
            self.cross_weight = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(self.cross_weight_at(0)), dtype="float32",
                trainable=False, autocast=False, name="cross_weight")
        self.built = True

    def cross_weight_at(self, epoch):
        """``m`` in the 0-based ``epoch`` (:func:`cross_weight_at`)."""
        return cross_weight_at(epoch, self.floor, self.decay_epochs)

    def on_epoch_begin(self, epoch):
        self.build_adapters({}, {})
        self.cross_weight.assign(self.cross_weight_at(epoch))

    # ----------------------------------------------------------- the loss
    def cross_logits(self, student_outputs):
        """``{tap: T_{>tap}(S_tap)}``: the teacher's logits ``(B, C)`` from the student's map at each cut."""
        if self._tails is None:
            raise UsageError("RD runs the teacher's later stages: call bind(student, teacher) first "
                             "(kdkeras's Distiller does).")
        outputs = self.read(student_outputs, "student")
        return {tap: self._tails.models[tap](outputs[tap], training=False) for tap in self.taps}

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        if labels is None:
            raise ValueError("RD needs the labels: its terms are cross-entropies. Keras's own "
                             "keras.distillation.Distiller cannot pass them; use kdkeras's distiller.")
        self.build_adapters({}, {})
        cross = list(self.cross_logits(student_outputs).values())
        return rd_loss(student_outputs[LOGITS], cross, labels, ops.convert_to_tensor(self.cross_weight))

    def get_config(self):
        return {**super().get_config(), "taps": list(self.requested_taps), "floor": self.floor,
                "decay_epochs": self.decay_epochs}
