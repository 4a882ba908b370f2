"""RKD: Park, Kim, Lu and Cho, "Relational Knowledge Distillation" (CVPR 2019).

The student's embeddings are trained to keep the teacher's relations between
the examples of a batch: the distances of pairs (normalised by their mean)
and the angles of triplets, each compared with the Huber loss (see
:class:`RKD`). The defaults are those of the CIFAR-100 recipes of
RepDistiller and mdistiller.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.methods.base import EMBEDDING, FeatureMethod, as_float32, check_number, setting

#: The floor of a squared distance before its square root (the reference code's ``pdist`` eps).
DISTANCE_EPSILON = 1e-12
#: The floor of the norm of a difference before it is normalised (``F.normalize``'s eps).
NORM_EPSILON = 1e-12
SOURCE = "Park et al. 2019, CIFAR-100 (RepDistiller's RKDLoss and mdistiller's CFG.RKD)"


@dataclasses.dataclass(frozen=True)
class RKDSettings:
    distance_weight: float = setting(25.0, "weight of the distance-wise term (the paper's lambda_D)", minimum=0.0,
                                     source=SOURCE)
    angle_weight: float = setting(50.0, "weight of the angle-wise term (the paper's lambda_A)", minimum=0.0,
                                  source=SOURCE)
    squared: bool = setting(False, "compare squared distances instead of distances", source=SOURCE)


def huber(x):
    """The Huber loss with delta 1 of a difference ``x``, elementwise (PyTorch's ``smooth_l1_loss``)."""
    a = ops.abs(x)
    return ops.where(a < 1.0, 0.5 * ops.square(x), a - 0.5)


@keras.saving.register_keras_serializable(package="kdkeras")
class RKD(FeatureMethod):
    """Relational Knowledge Distillation (Park, Kim, Lu and Cho, CVPR 2019), per example.

    For the embeddings ``e_1 .. e_B`` of a batch (one model; flattened to
    vectors), with ``u_ij = (e_j - e_i) / max(||e_j - e_i||, 1e-12)``:

        d_ij  = sqrt(max(||e_i - e_j||^2, eps))   for i != j,   d_ii = 0
                (``squared=True``: max(||e_i - e_j||^2, eps); eps = 1e-12)
        mu    = sum_ij d_ij / (B (B - 1))          (the mean over distinct pairs)
        psi_D(i, j)    = d_ij / mu
        psi_A(i, j, k) = <u_ij, u_ik>              (cosine of the angle at e_i)

    and, with the Huber loss ``h(x) = x^2 / 2`` if ``|x| < 1`` else
    ``|x| - 1/2`` of the student's potential minus the teacher's,

        rkd_i = distance_weight * (1 / B)   * sum_j   h(psi_D^S(i, j)    - psi_D^T(i, j))
              + angle_weight    * (1 / B^2) * sum_j,k h(psi_A^S(i, j, k) - psi_A^T(i, j, k))

    RKD is a loss of the whole batch: ``rkd_i`` is example ``i``'s share
    (its row of the pairs, the triplets whose vertex it is), and the mean of
    ``rkd_i`` over the batch is exactly the reference code's batch loss
    (RepDistiller's ``RKDLoss``, mdistiller's ``rkd_loss``):
    ``distance_weight * mean over the B^2 pairs + angle_weight * mean over
    the B^3 triplets``. Under several replicas, each replica's relations are
    those of its own part of the batch (as in the reference code under
    data-parallel training). The student's ``mu`` depends on the student and
    is differentiated through, as in the reference code; the teacher side is
    under ``stop_gradient``.

    Defaults: ``distance_weight = 25``, ``angle_weight = 50`` (the paper's
    ratio lambda_A = 2 lambda_D), distances not squared, the method weight 1
    and cross-entropy weight 1: RepDistiller's CIFAR-100 script
    (``--distill rkd -a 0 -b 1``) and mdistiller's ``CFG.RKD``. The
    embedding is the pooled feature vector the classifier reads (mdistiller's
    ``pooled_feat``, RepDistiller's last feature), the ``"embedding"`` tap.

    Deviations: from the paper, the reference code (and this method) takes
    means over all ``B^2`` pairs and ``B^3`` triplets, whose degenerate
    members contribute exactly 0, where the paper sums over the distinct
    ones: the paper's two terms divided by ``B^2`` and ``B^3``, which the
    default weights assume. From the reference code, only in rounding: the
    squared distances are computed from the differences ``e_i - e_j`` (which
    the angle term needs anyway) rather than from
    ``||e_i||^2 + ||e_j||^2 - 2 <e_i, e_j>``, which loses digits for close
    points. A batch of one example has no pairs: its loss is 0 (the
    reference code's is NaN).

    Cost: ``O(B^2 D + B^3)`` time and memory per model for a batch of ``B``
    embeddings of size ``D``; no trainable parts. The student's and the
    teacher's embeddings may differ in size.

    Args:
        distance_weight: weight of the distance-wise term, a number >= 0.
            Defaults to 25.
        angle_weight: weight of the angle-wise term, a number >= 0.
            Defaults to 50.
        squared: whether the distance potential uses squared distances.
            Defaults to False.
        eps: positive floor of a squared distance. Defaults to 1e-12.
        teacher_layer_name, student_layer_name: for Keras's own
            ``keras.distillation.Distiller`` only: the layers whose outputs
            are the embeddings.
        name: layer name.
    """

    method = "rkd"
    paper = "Park, Kim, Lu and Cho, Relational Knowledge Distillation, CVPR 2019"
    reads = "embedding"
    Settings = RKDSettings
    default_weight = 1.0
    default_ce_weight = 1.0

    def __init__(
        self,
        distance_weight=25.0,
        angle_weight=50.0,
        squared=False,
        eps=DISTANCE_EPSILON,
        teacher_layer_name=None,
        student_layer_name=None,
        name=None,
    ):
        check_number("distance_weight", distance_weight)
        check_number("angle_weight", angle_weight)
        if not isinstance(squared, bool):
            raise UsageError(f"`squared` must be True or False. Received: squared={squared!r}")
        check_number("eps", eps, strict=True)
        super().__init__(name=name)
        self.init_feature_taps((EMBEDDING,), teacher_layer_name, student_layer_name)
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        self.squared = squared
        self.eps = float(eps)
        self.built = True

    def potentials(self, embeddings):
        """``(psi_D, psi_A)`` of one model's embeddings: float32 ``(B, B)`` and ``(B, B, B)``."""
        e = as_float32(embeddings)
        n = ops.shape(e)[0]
        e = ops.reshape(e, (n, -1))
        diff = e[None, :, :] - e[:, None, :]  # [i, j] = e_j - e_i
        squared_norm = ops.sum(ops.square(diff), axis=-1)  # (B, B), exactly 0 on the diagonal
        index = ops.arange(n)
        off_diagonal = ops.not_equal(index[:, None], index[None, :])
        floored = ops.maximum(squared_norm, self.eps)
        d = ops.where(off_diagonal, floored if self.squared else ops.sqrt(floored), 0.0)
        pairs = ops.cast(n * (n - 1), "float32")
        mu = ops.divide_no_nan(ops.sum(d), pairs)
        psi_d = ops.divide_no_nan(d, mu)
        # x / max(||x||, c) as x / sqrt(max(||x||^2, c^2)): the same values, and no 0 * inf gradient on the diagonal.
        unit = diff / ops.sqrt(ops.maximum(squared_norm, NORM_EPSILON**2))[..., None]
        psi_a = ops.matmul(unit, ops.transpose(unit, (0, 2, 1)))  # [i, j, k] = <u_ij, u_ik>
        return psi_d, psi_a

    def per_example_terms(self, teacher_outputs, student_outputs):
        """``(distance, angle)``: float32 ``(B,)`` each, unweighted; their batch means are the reference code's."""
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[EMBEDDING]))
        s = as_float32(self.read(student_outputs, "student")[EMBEDDING])
        t_d, t_a = self.potentials(t)
        t_d, t_a = ops.stop_gradient(t_d), ops.stop_gradient(t_a)
        s_d, s_a = self.potentials(s)
        n = ops.cast(ops.shape(s_d)[0], "float32")
        distance = ops.sum(huber(s_d - t_d), axis=-1) / n
        angle = ops.sum(huber(s_a - t_a), axis=(1, 2)) / ops.square(n)
        return distance, angle

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        distance, angle = self.per_example_terms(teacher_outputs, student_outputs)
        return self.distance_weight * distance + self.angle_weight * angle

    def get_config(self):
        return {
            **super().get_config(),
            "distance_weight": self.distance_weight,
            "angle_weight": self.angle_weight,
            "squared": self.squared,
            "eps": self.eps,
        }
