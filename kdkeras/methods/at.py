"""AT: Zagoruyko and Komodakis, "Paying More Attention to Attention" (ICLR 2017).

Normalised spatial attention maps compared at several stages (see :class:`AT`).
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.methods.base import FeatureMethod, as_float32, check_number, check_tap, same_spatial, setting

#: ``F.normalize``'s floor on the norm of an attention map.
NORM_EPSILON = 1e-12
SOURCE = "Zagoruyko and Komodakis 2017 (the authors' code: every group output of a WRN)"


@dataclasses.dataclass(frozen=True)
class ATSettings:
    taps: tuple[str, ...] = setting(("stage1", "stage2", "stage3"), "the stages whose attention maps are "
                                    "matched", source=SOURCE)
    p: float = setting(2.0, "the exponent of the attention map", minimum=0.0, exclusive_minimum=True,
                       source=SOURCE)


@keras.saving.register_keras_serializable(package="kdkeras")
class AT(FeatureMethod):
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
    paper = ("Zagoruyko and Komodakis, Paying More Attention to Attention: Improving the Performance of "
             "Convolutional Neural Networks via Attention Transfer, ICLR 2017")
    reads = "stage taps"
    Settings = ATSettings
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
            check_tap("taps", tap)
        if len(set(taps)) != len(taps):
            raise UsageError(f"`taps` has a repeated stage. Received: taps={taps!r}")
        check_number("p", p, strict=True)
        super().__init__(name=name)
        self.init_feature_taps(tuple(taps), teacher_layer_name, student_layer_name)
        self.p = float(p)
        self.built = True

    def attention_map(self, features):
        """``q(A)``: float32 ``(B, H * W)``, unit L2 norm per example."""
        a = as_float32(features)
        q = ops.mean(ops.power(ops.abs(a), self.p), axis=-1)  # (B, H, W)
        q = ops.reshape(q, (ops.shape(q)[0], -1))
        norm = ops.sqrt(ops.sum(ops.square(q), axis=-1, keepdims=True))
        return q / ops.maximum(norm, NORM_EPSILON)

    def validate_model_compatibility(self, teacher, student):
        """With layer names (Keras's ``Distiller``): checks them and their sizes."""
        if self.teacher_layer_name is not None:
            student_shapes, teacher_shapes = self.keras_tap_shapes(teacher, student)
            tap = self.taps[0]
            self.check_maps(tap, student_shapes[tap], teacher_shapes[tap])

    def per_example_loss(
        self, teacher_outputs, student_outputs, labels=None, training=None
    ):
        teacher_outputs = self.read(teacher_outputs, "teacher")
        student_outputs = self.read(student_outputs, "student")
        total = 0.0
        for tap in self.taps:
            t = ops.stop_gradient(as_float32(teacher_outputs[tap]))
            s = as_float32(student_outputs[tap])
            self.check_maps(tap, tuple(s.shape), tuple(t.shape))
            diff = self.attention_map(s) - self.attention_map(t)
            total = total + ops.mean(ops.square(diff), axis=-1)
        return total

    def get_config(self):
        return {**super().get_config(), "taps": list(self.taps), "p": self.p}
