"""PKT: Passalis and Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer" (ECCV 2018).

The student's embeddings are trained to give the same conditional
probabilities of one example's neighbours in the batch as the teacher's,
from a cosine-similarity kernel (see :class:`PKT`). The defaults are those of
the CIFAR-100 recipes of RepDistiller and mdistiller.
"""

from __future__ import annotations

import keras
from keras import ops

from kdkeras.methods.base import EMBEDDING, FeatureMethod, as_float32, check_number

#: The authors' eps: added to each norm and to both probabilities inside the logarithm.
EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="kdkeras")
class PKT(FeatureMethod):
    """Probabilistic Knowledge Transfer (Passalis and Tefas, ECCV 2018), per example.

    For the embeddings ``x_1 .. x_B`` of a batch (one model; flattened to
    vectors), with ``eps = 1e-7``:

        x_hat_i = x_i / (||x_i||_2 + eps)
        K_ij    = (<x_hat_i, x_hat_j> + 1) / 2         (the paper's cosine kernel, in [0, 1])
        p_ij    = K_ij / sum_k K_ik                      (row i: a distribution over j)

    for the teacher (``p``) and the student (``q``), and

        pkt_i = (1 / B) * sum_j p_ij * log((p_ij + eps) / (q_ij + eps))

    PKT is a loss of the whole batch: ``pkt_i`` is example ``i``'s row, and
    the mean of ``pkt_i`` over the batch is exactly the authors' batch loss
    (``cosine_similarity_loss`` of their code, copied by RepDistiller and
    mdistiller): the mean over the ``B^2`` entries of
    ``p * log((p + eps) / (q + eps))``, a KL divergence of the teacher's
    distributions from the student's. Under several replicas, each replica's
    relations are those of its own part of the batch. The teacher side is
    under ``stop_gradient``.

    Defaults: weight 30000 and cross-entropy weight 1, RepDistiller's
    CIFAR-100 script (``--distill pkt -a 0 -b 30000``) and mdistiller's
    ``CFG.PKT.LOSS.FEAT_WEIGHT``; the embedding is the pooled feature vector
    the classifier reads (mdistiller's ``pooled_feat``, RepDistiller's last
    feature), the ``"embedding"`` tap.

    Deviations: the paper leaves ``j = i`` out of the normalisation and of the
    KL sum, and sums over the pairs; the authors' code keeps the diagonal
    (``K_ii = 1``) and takes the mean over ``B^2`` entries, which the weight
    30000 assumes: this method follows the code. The code sets NaN entries of
    the normalised embeddings to 0; those only arise from non-finite inputs,
    which this method does not mask. The norm's square root has a zero
    gradient at a zero embedding (the code's gives NaN).

    Cost: ``O(B^2 D)`` time, ``O(B^2)`` memory per model for a batch of ``B``
    embeddings of size ``D``; no trainable parts. The student's and the
    teacher's embeddings may differ in size.

    Args:
        eps: positive number added to the norms and the probabilities.
            Defaults to 1e-7 (the authors').
        teacher_layer_name, student_layer_name: for Keras's own
            ``keras.distillation.Distiller`` only: the layers whose outputs
            are the embeddings.
        name: layer name.
    """

    method = "pkt"
    paper = ("Passalis and Tefas, Learning Deep Representations with Probabilistic Knowledge Transfer, "
             "ECCV 2018")
    reads = "embedding"
    default_weight = 30000.0
    default_ce_weight = 1.0

    def __init__(self, eps=EPSILON, teacher_layer_name=None, student_layer_name=None, name=None):
        check_number("eps", eps, strict=True)
        super().__init__(name=name)
        self.init_feature_taps((EMBEDDING,), teacher_layer_name, student_layer_name)
        self.eps = float(eps)
        self.built = True

    def probabilities(self, embeddings):
        """``p``: float32 ``(B, B)``, each row a distribution over the batch."""
        x = as_float32(embeddings)
        x = ops.reshape(x, (ops.shape(x)[0], -1))
        squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
        positive = squared_norm > 0.0
        norm = ops.where(positive, ops.sqrt(ops.where(positive, squared_norm, 1.0)), 0.0)
        x = x / (norm + self.eps)
        kernel = (ops.matmul(x, ops.transpose(x)) + 1.0) / 2.0
        return kernel / ops.sum(kernel, axis=-1, keepdims=True)

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[EMBEDDING]))
        s = as_float32(self.read(student_outputs, "student")[EMBEDDING])
        p = ops.stop_gradient(self.probabilities(t))
        q = self.probabilities(s)
        n = ops.cast(ops.shape(q)[0], "float32")
        return ops.sum(p * (ops.log(p + self.eps) - ops.log(q + self.eps)), axis=-1) / n

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
