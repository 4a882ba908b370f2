"""MLKD: Jin, Wang and Lin, "Multi-Level Logit Distillation" (CVPR 2023).

The predictions of both models softened at several temperatures
("prediction augmentation") and aligned at three levels: each example's
distribution (instance level, KD), the B x B similarities between the
examples of the batch (batch level) and the C x C correlations between the
classes (class level), with the confidence masking of the authors' code (see
:class:`MLKD`). The authors' code (Jin-Ying/Multi-Level-Logit-Distillation,
``mdistiller/distillers/KD_ours.py``; the same loss is ``MLKD.py`` in
sunshangquan/logit-standardization-KD) and its CIFAR-100 config give the
definition and the defaults here.

The authors add the same losses on a strongly augmented second view;
kdkeras's MLKD uses the run's one view, so it is the method's loss without
that augmentation.

Logit standardisation (Sun et al., CVPR 2024) is a modifier of MLKD here
(``--mlkd_ls``), as ``--dkd_ls`` is of DKD: see :class:`MLKD`.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.losses import PAPER_TEMPERATURE, check_temperature, soft_target_term
from kdkeras.methods.base import LOGITS, Method, as_float32, setting
from kdkeras.methods.ls import standardize

#: The temperatures the authors' code adds to the base temperature (their ``3.0, 5.0, 2.0, 6.0``).
EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)
#: The temperatures of the two unmasked instance-level terms of the authors' code: they sit in its
#: strong-view sum (``loss_kd_strong``) but read the weak view's logits, the run's one view here.
UNMASKED_TEMPERATURES = (2.0, 6.0)
#: The percentile of the confidence masks (``np.percentile(confidence, 50)``).
MASK_PERCENTILE = 50
SOURCE = ("Jin et al. 2023, the authors' code (KD_ours.py) and CIFAR-100 config: base temperature "
          "CFG.KD.TEMPERATURE = 4, KD_WEIGHT = 0.9, CE_WEIGHT = 0.1")
LS_SOURCE = ("Sun et al. 2024, Logit Standardization in Knowledge Distillation (MLKD+LS: --logit-stand "
             "--base-temp 2 --kd-weight 9, i.e. --temperature=2 --mlkd_weight=9)")


def fraction_at_or_below_median(values):
    """The fraction of ``values`` (a float32 ``(N,)`` tensor) that are ``<=`` their median: a float32 scalar.

    The median is NumPy's ``percentile(values, 50)`` (linear interpolation,
    as the authors' ``np.percentile``): with ``v`` sorted, the middle value
    for odd ``N``, and ``b - (b - a) / 2`` of the two middle values ``a <= b``
    for even ``N``. It is ``1/2`` for even ``N`` and ``(N + 1) / (2 N)`` for
    odd ``N`` when the values are distinct, more with ties. ``N`` may be
    unknown until run time.
    """
    values = as_float32(values)
    ordered = ops.sort(values)
    n = ops.shape(values)[0]
    low = ops.take(ordered, (n - 1) // 2)
    high = ops.take(ordered, n // 2)
    threshold = high - (high - low) * 0.5
    return ops.mean(ops.cast(values <= threshold, "float32"))


@dataclasses.dataclass(frozen=True)
class MLKDSettings:
    ls: bool = setting(False, "z-score-standardise both sides' logits before the temperatures of the "
                       "instance-level KD terms (logit standardisation; the authors use it with --temperature=2 "
                       "--mlkd_weight=9)", flag="mlkd_ls", source=LS_SOURCE)


@keras.saving.register_keras_serializable(package="kdkeras")
class MLKD(Method):
    """Multi-Level Logit Distillation (Jin, Wang and Lin, CVPR 2023), one view, per example.

    With teacher and student logits ``t`` and ``s`` (``B x C``), the base
    temperature ``T0`` (the run's ``--temperature``) and the authors'
    temperatures ``Ts = (T0, 3, 5, 2, 6)``, ``P(z, T) = softmax(z / T)`` row
    by row:

        kd_i(T)  = T^2 * KL(P(t, T)_i || P(s, T)_i)                     instance level
        G(z, T)  = P(z, T) P(z, T)^T                       (B x B)      batch level
        M(z, T)  = P(z, T)^T P(z, T)                       (C x C)      class level
        BC(T)    = sum_ij (G(t, T) - G(s, T))_ij^2 / B
        CC(T)    = sum_cd (M(t, T) - M(s, T))_cd^2 / C

    and the authors' batch loss on the one view is

        MLKD = sum_{T in Ts} [ f * mean_i kd_i(T) + f * BC(T) + g * CC(T) ]
               + mean_i kd_i(2) + mean_i kd_i(6)

    as their ``KD_ours.forward_train`` computes it for the weak view: every
    term's weight is ``KD_WEIGHT`` (the term's weight here, 0.9), kd has
    ``T^2`` (their ``kd_loss``), BC and CC have none (their ``bc_loss`` and
    ``cc_loss``). The two last terms are the unmasked ``T = 2`` and ``T = 6``
    KD terms that their code adds in its strong-view sum but computes on the
    weak view's logits; they are kept, so that MLKD here is exactly every
    term of the authors' distillation loss that reads the weak view.

    Confidence masks, as in the code: the teacher's predictions at T = 1,
    ``p = softmax(t)``; the instance mask keeps the examples whose confidence
    ``max_k p_ik`` is ``<=`` the batch's 50th percentile (``np.percentile``),
    the class mask the classes whose summed probability ``sum_i p_ic`` is
    ``<=`` the 50th percentile over the classes. The instance mask applies to
    the instance and the batch levels, the class mask to the class level.
    Their ``kd_loss``, ``bc_loss`` and ``cc_loss`` reduce to the batch value
    before the mask multiplies it (``(loss * mask).mean()``, with
    ``reduce=False`` commented out), so a mask enters only through its mean:
    ``f`` and ``g`` above are the fractions of examples and of classes at or
    below the median (:func:`fraction_at_or_below_median`, 1/2 for even
    counts of distinct values), the same for every example; they come from
    the teacher only and carry no gradient.

    Per example (the contract: a ``(B,)`` vector whose mean is the batch
    loss): example ``i`` gets ``f * kd_i(T)`` (and ``kd_i(2) + kd_i(6)``), its
    row of the batch level ``f * sum_j (G(t, T) - G(s, T))_ij^2``, and its
    share of the class level
    ``g * (B / C) * (q_i(t) - q_i(s))`` with ``q_i(z) = P_i^T D P_i``,
    ``P = P(z, T)`` and ``D = M(t, T) - M(s, T)`` (``sum_i`` of
    ``P_i P_i^T`` is ``M``, so the shares' mean is ``||D||^2 / C``). The mean
    over the batch is exactly the authors' loss and its gradient. The batch
    and class levels relate the examples of a batch, so they depend on its
    size and content; under several replicas each replica's relations (and
    masks) are those of its own part of the batch, as under the authors'
    ``DataParallel``, and the distiller's global mean weights each replica's
    loss by its share of the batch.

    MLKD is 0 when the student's logits equal the teacher's (every level
    is); permuting the examples of both sides permutes the per-example
    values, permuting the classes leaves them unchanged.

    Logit standardisation (``logit_standardization=True``, ``--mlkd_ls``):
    Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge
    Distillation" (CVPR 2024). Both sides' logits are replaced by
    :func:`kdkeras.methods.ls.standardize` in the instance-level KD terms
    (all seven) before the division by each temperature, as the authors'
    MLKD with ``logit_stand`` does (sunshangquan/logit-standardization-KD,
    ``MLKD.py``: only ``kd_loss`` takes ``logit_stand``); the batch and class
    levels and the masks keep the raw logits, as there. Their CIFAR-100
    MLKD+LS recipe (``--logit-stand --base-temp 2 --kd-weight 9``) sets the
    base temperature to 2 and every term's weight to 9 (6 for the VGG13
    teachers): here ``--temperature=2 --mlkd_weight=9``; the cross-entropy
    weight stays 0.1. The temperature list is then ``(2, 3, 5, 2, 6)``, T = 2
    twice, as in their code. Off (the default), MLKD is unchanged.

    Temperature: the base temperature of the authors' code is
    ``CFG.KD.TEMPERATURE``, the KD config's temperature (4, mdistiller's KD
    default), and the logit-standardisation code changes it through the same
    field; so MLKD uses the run's ``--temperature`` as its base, as KD and
    DKD do (default 4: ``Ts = (4, 3, 5, 2, 6)``). The other temperatures are
    fixed in the authors' code and here.

    Defaults: T0 = 4, weight 0.9, cross-entropy weight 0.1 (the authors'
    ``CFG.KD``: ``TEMPERATURE = 4``, ``KD_WEIGHT = 0.9``, ``CE_WEIGHT = 0.1``,
    used by all their CIFAR-100 configs, ``configs/cifar100/ours/``). No
    warm-up.

    Deviations from the authors' code: the authors add the same losses on a
    strongly augmented second view; kdkeras's MLKD uses the run's one view,
    so it is the method's loss without that augmentation (their strong view
    adds cross-entropy and instance-level KD at ``T0``, 3 and 5; their
    strong-view batch- and class-level sums are computed but not added to
    the loss). Their cross-entropy is ``0.1 * (CE_weak + CE_strong)``; here
    the run's ``0.1 * CE`` of the one view. The loss on the one view is
    theirs, split per example as above.

    MLKD needs no labels and has no trainable parts; it works in Keras's own
    ``keras.distillation.Distiller`` too (its ``compute_loss`` is the batch
    mean).

    Args:
        temperature: the base temperature ``T0``, a positive number.
            Defaults to 4.
        logit_standardization: whether to standardise both sides' logits in
            the instance-level terms (Sun et al. 2024). Defaults to False.
        name: layer name.
    """

    method = "mlkd"
    paper = "Jin, Wang and Lin, Multi-Level Logit Distillation, CVPR 2023"
    reads = "logits"
    Settings = MLKDSettings
    uses_temperature = True
    default_weight = 0.9
    default_ce_weight = 0.1

    def __init__(self, temperature=PAPER_TEMPERATURE, logit_standardization=False, name=None):
        check_temperature(temperature)
        if not isinstance(logit_standardization, bool):
            raise UsageError("`logit_standardization` must be True or False. "
                             f"Received: logit_standardization={logit_standardization!r}")
        super().__init__(name=name)
        self.temperature = float(temperature)
        self.logit_standardization = logit_standardization
        self.built = True

    @classmethod
    def from_settings(cls, settings, temperature=None):
        return cls(temperature=temperature, logit_standardization=settings.ls)

    @property
    def temperatures(self):
        """The temperatures of the masked terms: ``(T0, 3, 5, 2, 6)``."""
        return (self.temperature,) + EXTRA_TEMPERATURES

    def confidence_fractions(self, teacher_logits):
        """``(f, g)``: the fractions kept by the instance and class masks (float32 scalars, no gradient)."""
        p = ops.softmax(ops.stop_gradient(as_float32(teacher_logits)), axis=-1)
        f = fraction_at_or_below_median(ops.max(p, axis=-1))
        g = fraction_at_or_below_median(ops.sum(p, axis=0))
        return ops.stop_gradient(f), ops.stop_gradient(g)

    def per_example_terms(self, teacher_outputs, student_outputs):
        """``(instance, batch, class)``: three float32 ``(B,)`` tensors, masks applied; their sum is the loss."""
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[LOGITS]))
        s = as_float32(self.read(student_outputs, "student")[LOGITS])
        f, g = self.confidence_fractions(t)
        t_kd, s_kd = (standardize(t), standardize(s)) if self.logit_standardization else (t, s)
        batch_size = ops.cast(ops.shape(s)[0], "float32")
        classes = float(s.shape[-1])

        kd_masked, bc, cc = 0.0, 0.0, 0.0
        for temperature in self.temperatures:
            kd_masked = kd_masked + soft_target_term(s_kd, t_kd, temperature)
            p_t = ops.softmax(t / temperature, axis=-1)
            p_s = ops.softmax(s / temperature, axis=-1)
            # Batch level: example i's row of the B x B difference of similarities.
            gram = ops.matmul(p_t, ops.transpose(p_t)) - ops.matmul(p_s, ops.transpose(p_s))
            bc = bc + ops.sum(ops.square(gram), axis=-1)
            # Class level: example i's share P_i^T D P_i of ||D||^2, D the C x C difference of correlations.
            d = ops.matmul(ops.transpose(p_t), p_t) - ops.matmul(ops.transpose(p_s), p_s)
            share = ops.sum(ops.matmul(p_t, d) * p_t, axis=-1) - ops.sum(ops.matmul(p_s, d) * p_s, axis=-1)
            cc = cc + (batch_size / classes) * share
        kd_unmasked = 0.0
        for temperature in UNMASKED_TEMPERATURES:
            kd_unmasked = kd_unmasked + soft_target_term(s_kd, t_kd, temperature)
        return f * kd_masked + kd_unmasked, f * bc, g * cc

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        instance, batch, classes = self.per_example_terms(teacher_outputs, student_outputs)
        return instance + batch + classes

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "logit_standardization": self.logit_standardization}
