"""DKD: Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge Distillation" (CVPR 2022).

Target-class and non-target-class KD with their own weights, and a linear
warm-up of the whole term (see :class:`DKD`). mdistiller is the authors'
code; its CIFAR-100 defaults are the defaults here.
"""

from __future__ import annotations

import dataclasses
import numbers

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.losses import check_temperature
from kdkeras.methods.base import LOGITS, Method, as_float32, check_number, int_labels, setting
from kdkeras.methods.ls import standardize

#: Logit of a masked-out class: its probability underflows to exactly 0 in
#: float32 while every value stays finite (so no 0 * inf in a gradient).
MASKED_LOGIT = -1e9
SOURCE = "Zhao et al. 2022, CIFAR-100 (mdistiller's default config)"
LS_SOURCE = "Sun et al. 2024, Logit Standardization in Knowledge Distillation (DKD+LS: --temperature=2, --dkd_weight=9)"


@dataclasses.dataclass(frozen=True)
class DKDSettings:
    alpha: float = setting(1.0, "weight of TCKD, the target-class term", minimum=0.0, source=SOURCE)
    beta: float = setting(8.0, "weight of NCKD, the non-target-class term (mdistiller: 8 for ResNet32x4, "
                          "6 for WRN-40-2 students)", minimum=0.0, source=SOURCE)
    warmup: int = setting(20, "epochs of linear warm-up of the term's weight (0: none)", minimum=0, source=SOURCE)
    ls: bool = setting(False, "z-score-standardise both sides' logits before dividing them by the temperature "
                       "(logit standardisation; the authors use it with --temperature=2 --dkd_weight=9)",
                       flag="dkd_ls", source=LS_SOURCE)


@keras.saving.register_keras_serializable(package="kdkeras")
class DKD(Method):
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

    Logit standardisation (``logit_standardization=True``, ``--dkd_ls``):
    Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge
    Distillation" (CVPR 2024). Both sides' logits ``z`` are replaced by
    :func:`kdkeras.methods.ls.standardize` ``(z - mean(z)) / (std(z) + 1e-7)``
    (per example, sample std) before the division by T, as the authors'
    ``dkd_loss`` with ``logit_stand`` does. Their CIFAR-100 DKD+LS recipe
    multiplies alpha and beta by 9 and sets T = 2: here ``--temperature=2``
    and ``--dkd_weight=9`` (the weight multiplies the whole term, so alpha
    and beta keep their values); the cross-entropy weight stays 1. Off (the
    default), DKD is unchanged.

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
        logit_standardization: whether to standardise both sides' logits
            first (Sun et al. 2024). Defaults to False.
        name: layer name.
    """

    method = "dkd"
    paper = "Zhao, Cui, Song, Qiu and Liang, Decoupled Knowledge Distillation, CVPR 2022"
    reads = "logits, labels"
    Settings = DKDSettings
    uses_temperature = True
    default_weight = 1.0
    default_ce_weight = 1.0
    needs_labels = True

    def __init__(
        self,
        alpha=1.0,
        beta=8.0,
        temperature=4.0,
        warmup_epochs=20,
        logit_standardization=False,
        name=None,
    ):
        check_number("alpha", alpha)
        check_number("beta", beta)
        check_temperature(temperature)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, numbers.Integral) or warmup_epochs < 0:
            raise UsageError(
                "`warmup_epochs` must be an integer >= 0. "
                f"Received: warmup_epochs={warmup_epochs!r}"
            )
        if not isinstance(logit_standardization, bool):
            raise UsageError(
                "`logit_standardization` must be True or False. "
                f"Received: logit_standardization={logit_standardization!r}"
            )
        super().__init__(name=name)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.warmup_epochs = int(warmup_epochs)
        self.logit_standardization = logit_standardization
        self.built = True

    @classmethod
    def from_settings(cls, settings, temperature=None):
        return cls(alpha=settings.alpha, beta=settings.beta, temperature=temperature, warmup_epochs=settings.warmup,
                   logit_standardization=settings.ls)

    def per_example_terms(self, teacher_outputs, student_outputs, labels):
        """``(tckd, nckd)``, two float32 ``(B,)`` tensors, both with T^2."""
        if labels is None:
            raise ValueError(
                "DKD needs the labels (its target class): pass `labels=`. "
                "Keras's own keras.distillation.Distiller cannot pass them; "
                "use kdkeras's distiller."
            )
        temperature = self.temperature
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[LOGITS]))
        s = as_float32(self.read(student_outputs, "student")[LOGITS])
        if self.logit_standardization:
            t, s = standardize(t), standardize(s)
        t, s = t / temperature, s / temperature
        y = int_labels(labels)
        target = ops.cast(ops.one_hot(y, int(s.shape[-1])), "bool")  # (B, C)

        def binary_and_rest(z):
            log_p = ops.log_softmax(z, axis=-1)
            log_p_target = ops.sum(ops.where(target, log_p, 0.0), axis=-1)
            rest = ops.where(target, MASKED_LOGIT, z)
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
            "logit_standardization": self.logit_standardization,
        }
