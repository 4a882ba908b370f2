"""DIST: Huang, You, Wang, Qian and Xu, "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022).

Correlation between student and teacher class probabilities, per example
(inter-class relation) and per class across the batch (intra-class
relation): see :class:`DIST`. The authors' code (hunto/DIST_KD, its loss in
hunto/image_classification_sota ``lib/models/losses/dist_kd.py``) and its
CIFAR-100 config give the definition and the defaults here.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from kdkeras.losses import PAPER_TEMPERATURE, check_temperature
from kdkeras.methods.base import LOGITS, Method, as_float32, check_number, setting

#: Added to the product of the two norms in the correlation (the authors' ``cosine_similarity(..., eps=1e-8)``).
EPSILON = 1e-8
SOURCE = ("Huang et al. 2022, CIFAR-100 (the authors' dist_cifar.yaml: kd dist_t4 = DIST(beta=1, gamma=1, "
          "tau=4), kd_loss_weight 2, ori_loss_weight 1)")


def _centred(x, axis):
    return x - ops.mean(x, axis=axis, keepdims=True)


def _norm(x, axis):
    return ops.sqrt(ops.sum(ops.square(x), axis=axis))


@dataclasses.dataclass(frozen=True)
class DISTSettings:
    beta: float = setting(1.0, "weight of the inter-class relation (per example, across classes)", minimum=0.0,
                          source=SOURCE)
    gamma: float = setting(1.0, "weight of the intra-class relation (per class, across the batch)", minimum=0.0,
                           source=SOURCE)


@keras.saving.register_keras_serializable(package="kdkeras")
class DIST(Method):
    """DIST (Huang et al., NeurIPS 2022): relations of predictions instead of their exact match.

    With ``Y = softmax(z / T)`` row-wise for teacher and student logits
    ``z`` (``B x C``) and the Pearson correlation as the authors compute it,

        rho(u, v) = sum((u - mean u) * (v - mean v))
                    / (||u - mean u|| * ||v - mean v|| + 1e-8),

    the paper's (batch) loss is

        inter = 1 - (1/B) sum_i rho(Y_s[i, :], Y_t[i, :])     (each example, across classes)
        intra = 1 - (1/C) sum_c rho(Y_s[:, c], Y_t[:, c])     (each class, across the batch)
        DIST  = T^2 * (beta * inter + gamma * intra)

    The T^2 factor is the authors' code's (their ``tau**2``).

    Per example (the contract: a ``(B,)`` vector whose mean is the batch
    loss): example ``i`` gets ``1 - rho(Y_s[i], Y_t[i])`` of ``inter``, and of
    ``intra`` its own share of every class's correlation,

        intra_i = 1 - (B / C) sum_c a_ic * b_ic / (||a_c|| * ||b_c|| + 1e-8)

    with ``a = Y_s`` and ``b = Y_t`` centred over the batch (``a_c`` its
    column ``c``): the mean over ``i`` of ``intra_i`` is exactly ``intra``, so
    the batch mean of :meth:`per_example_loss` is the paper's loss and its
    gradient. ``intra`` relates the examples of a batch: it depends on the
    batch (size and content); with one example it is 1 and gives no gradient.
    Under several replicas each replica's intra-class relations are those of
    its own part of the batch (the authors' code runs per GPU likewise), and
    the distiller's global mean weights each replica's loss by its share of
    the batch.

    DIST is 0 (up to the 1e-8) when ``Y_s = a * Y_t + (1 - a) / C`` with
    ``0 < a <= 1`` (the teacher's predictions blended with the uniform: the
    same relations, where KD's KL is not 0), is unchanged by adding a
    constant to an example's logits, and permuting the examples (the
    classes) of both sides permutes the per-example values (leaves them).

    Defaults: beta = gamma = 1, T = 4, weight 2, cross-entropy weight 1: the
    authors' CIFAR-100 recipe (``dist_cifar.yaml``: ``kd: dist_t4``, i.e.
    ``DIST(beta=1, gamma=1, tau=4)``, ``kd_loss_weight: 2``,
    ``ori_loss_weight: 1``), that is beta = gamma = 2 on the paper's
    equation. The temperature is the run's ``--temperature``, as for KD and
    DKD: the authors' CIFAR value, 4, is its default. (On ImageNet they use
    T = 1, with the same weights.) The authors' code has no warm-up.

    Deviations from the authors' code: none in the loss; its batch value is
    split per example as above.

    Args:
        beta: weight of the inter-class relation, a number >= 0. Defaults to 1.
        gamma: weight of the intra-class relation, a number >= 0. Defaults to 1.
        temperature: positive number T. Defaults to 4.
        name: layer name.
    """

    method = "dist"
    paper = "Huang, You, Wang, Qian and Xu, Knowledge Distillation from A Stronger Teacher, NeurIPS 2022"
    reads = "logits"
    Settings = DISTSettings
    uses_temperature = True
    default_weight = 2.0
    default_ce_weight = 1.0

    def __init__(self, beta=1.0, gamma=1.0, temperature=PAPER_TEMPERATURE, name=None):
        check_number("beta", beta)
        check_number("gamma", gamma)
        check_temperature(temperature)
        super().__init__(name=name)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.temperature = float(temperature)
        self.built = True

    def per_example_terms(self, teacher_outputs, student_outputs):
        """``(inter, intra)``: two float32 ``(B,)`` tensors, without T^2, whose means are the paper's terms."""
        temperature = self.temperature
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[LOGITS]))
        s = as_float32(self.read(student_outputs, "student")[LOGITS])
        y_t = ops.softmax(t / temperature, axis=-1)
        y_s = ops.softmax(s / temperature, axis=-1)

        # Inter-class: each example's probability vectors, centred over the classes.
        a, b = _centred(y_s, -1), _centred(y_t, -1)
        inter = 1.0 - ops.sum(a * b, axis=-1) / (_norm(a, -1) * _norm(b, -1) + EPSILON)

        # Intra-class: each class's column, centred over the batch; example i's share of every correlation.
        a, b = _centred(y_s, 0), _centred(y_t, 0)
        denominator = _norm(a, 0) * _norm(b, 0) + EPSILON  # (C,)
        batch = ops.cast(ops.shape(s)[0], "float32")
        classes = float(s.shape[-1])
        intra = 1.0 - (batch / classes) * ops.sum(a * b / denominator, axis=-1)
        return inter, intra

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        inter, intra = self.per_example_terms(teacher_outputs, student_outputs)
        return (self.temperature**2) * (self.beta * inter + self.gamma * intra)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "gamma": self.gamma, "temperature": self.temperature}
