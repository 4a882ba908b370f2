"""SP: Tung and Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

The student's feature maps are trained to give the same row-normalised
similarity (Gram) matrix of the examples of a batch as the teacher's (see
:class:`SP`). The defaults are those of the paper and of the CIFAR-100
recipes of RepDistiller and mdistiller.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.methods.base import FeatureMethod, as_float32, check_tap, setting

#: ``F.normalize``'s floor on the norm of a row of the similarity matrix.
NORM_EPSILON = 1e-12
SOURCE = "Tung and Mori 2019 (the last group of a WRN); RepDistiller's and mdistiller's CIFAR-100 SP"


@dataclasses.dataclass(frozen=True)
class SPSettings:
    taps: tuple[str, ...] = setting(("stage3",), "the stages whose similarity matrices are matched (summed)",
                                    source=SOURCE)


@keras.saving.register_keras_serializable(package="kdkeras")
class SP(FeatureMethod):
    """Similarity-preserving KD (Tung and Mori, ICCV 2019), per example.

    For the feature maps of a batch at a tap, flattened to ``Q`` of shape
    ``(B, H * W * C)`` (one model):

        G~ = Q Q^T                                         (B, B)
        G_i = G~_i / max(||G~_i||_2, 1e-12)                (each row to unit L2 norm)

    for the teacher (``G^T``) and the student (``G^S``), and

        sp_i = sum over taps of (1 / B) * sum_j (G^T_ij - G^S_ij)^2

    SP is a loss of the whole batch: ``sp_i`` is example ``i``'s row, and the
    mean of ``sp_i`` over the batch is exactly the paper's
    ``L_SP = 1 / B^2 * sum over taps of ||G^T - G^S||_F^2`` (eq. 4), which
    is also the reference code's (RepDistiller's ``Similarity``, "verified
    by original author", and mdistiller's ``sp_loss``). Under several
    replicas, each replica's relations are those of its own part of the
    batch. The teacher side is under ``stop_gradient``.

    The student's and the teacher's maps may differ in every dimension but
    the batch: ``G`` is ``B x B`` whatever their shapes. ``G`` (so the loss)
    is unchanged by scaling a model's maps by a positive constant, and the
    loss is 0 for identical maps.

    Defaults: the tap ``"stage3"`` (the output of the last group of a WRN,
    where the paper applies SP on CIFAR; RepDistiller's ``feat[-2]`` and
    mdistiller's ``feats[-1]``, both the last stage output before the final
    BN-ReLU; for ResNet-18 and MobileNetV2, whose last stage is ``"stage4"``,
    name that tap), weight 3000 and cross-entropy weight 1 (the paper's
    gamma = 3000, RepDistiller's CIFAR-100 script ``--distill similarity -a 0
    -b 3000``, mdistiller's ``CFG.SP.LOSS.FEAT_WEIGHT``). With several taps
    the terms are summed, as the paper's sum over layer pairs and the
    reference code's list of maps.

    Cost: ``O(B^2 H W C)`` time, ``O(B^2)`` memory per tap and model; no
    trainable parts.

    Args:
        taps: the stages, by default ``("stage3",)``.
        teacher_layer_name, student_layer_name: for Keras's own
            ``keras.distillation.Distiller`` only (one layer per term, so one
            tap).
        name: layer name.
    """

    method = "sp"
    paper = "Tung and Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019"
    reads = "stage taps"
    Settings = SPSettings
    default_weight = 3000.0
    default_ce_weight = 1.0

    def __init__(self, taps=("stage3",), teacher_layer_name=None, student_layer_name=None, name=None):
        if isinstance(taps, str) or not isinstance(taps, (list, tuple)) or not taps:
            raise UsageError(f"`taps` must be a non-empty list of stage names. Received: taps={taps!r}")
        for tap in taps:
            check_tap("taps", tap)
        if len(set(taps)) != len(taps):
            raise UsageError(f"`taps` has a repeated stage. Received: taps={taps!r}")
        super().__init__(name=name)
        self.init_feature_taps(tuple(taps), teacher_layer_name, student_layer_name)
        self.built = True

    @staticmethod
    def similarity(features):
        """``G``: float32 ``(B, B)``, the row-normalised Gram matrix of the flattened maps."""
        q = as_float32(features)
        q = ops.reshape(q, (ops.shape(q)[0], -1))
        gram = ops.matmul(q, ops.transpose(q))
        # G~ / max(||G~_i||, c) as G~ / sqrt(max(||G~_i||^2, c^2)): the same values, no 0 * inf gradient.
        return gram / ops.sqrt(ops.maximum(ops.sum(ops.square(gram), axis=-1, keepdims=True), NORM_EPSILON**2))

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        teacher_outputs = self.read(teacher_outputs, "teacher")
        student_outputs = self.read(student_outputs, "student")
        total = 0.0
        for tap in self.taps:
            t = ops.stop_gradient(self.similarity(teacher_outputs[tap]))
            s = self.similarity(student_outputs[tap])
            n = ops.cast(ops.shape(s)[0], "float32")
            total = total + ops.sum(ops.square(t - s), axis=-1) / n
        return total

    def get_config(self):
        return {**super().get_config(), "taps": list(self.taps)}
