"""LS: Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge Distillation" (CVPR 2024).

Hinton KD computed on z-score-standardised logits (see :class:`LS`), and
:func:`standardize`, the pre-process itself, which other logit methods call
(:class:`~kdkeras.methods.dkd.DKD` with ``logit_standardization=True``).
The authors' code (sunshangquan/logit-standardization-KD, built on
mdistiller) gives the definition and the CIFAR-100 defaults used here.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from kdkeras.losses import check_temperature, soft_target_term
from kdkeras.methods.base import LOGITS, Method, as_float32, setting

#: Added to the standard deviation before dividing (the authors' ``1e-7 + stdv``).
EPSILON = 1e-7
#: The authors' CIFAR-100 base temperature and KD weight for KD+LS (``--base-temp 2 --kd-weight 9``).
BASE_TEMPERATURE = 2.0
KD_WEIGHT = 9.0
#: The cross-entropy weight of their KD config (``CFG.KD.LOSS.CE_WEIGHT``).
CE_WEIGHT = 0.1
SOURCE = "Sun et al. 2024, CIFAR-100 KD+LS (the authors' code: --base-temp 2)"


def standardize(logits):
    """The z-score of each example's logits: float32, same shape as ``logits`` (``(B, C)``).

        Z(z) = (z - mean(z)) / (std(z) + 1e-7)

    over the last axis, with the sample standard deviation
    ``std(z) = sqrt(sum_k (z_k - mean(z))^2 / (C - 1))``: the authors'
    ``normalize`` (``logit.std()``, PyTorch's unbiased default, and ``1e-7``
    added to it). Each row of the result has mean 0 and sample standard
    deviation ~1; it is unchanged by adding a constant to a row or by
    multiplying it by a positive number.

    Where a row's logits are all equal (``std = 0``) the value is 0, as in the
    authors' code, and the gradient goes through ``z - mean(z)`` only (the
    square root's gradient at 0 is replaced by 0): PyTorch gives NaN there.
    """
    z = as_float32(logits)
    classes = int(z.shape[-1])
    centred = z - ops.mean(z, axis=-1, keepdims=True)
    variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / float(max(classes - 1, 1))
    positive = variance > 0.0
    std = ops.where(positive, ops.sqrt(ops.where(positive, variance, 1.0)), 0.0)
    return centred / (std + EPSILON)


@dataclasses.dataclass(frozen=True)
class LSSettings:
    temperature: float = setting(BASE_TEMPERATURE, "base temperature applied to the standardised logits "
                                 "(not --temperature: standardised logits have unit spread)", minimum=0.0,
                                 exclusive_minimum=True, source=SOURCE)


@keras.saving.register_keras_serializable(package="kdkeras")
class LS(Method):
    """Hinton KD on standardised logits (Sun et al., CVPR 2024), per example.

    With :func:`standardize` ``Z`` (per example: minus the mean of the
    logits, divided by their sample standard deviation plus 1e-7) and the
    base temperature ``T``:

        ls = T^2 * KL(softmax(Z(t) / T) || softmax(Z(s) / T))

    for teacher and student logits ``t`` and ``s``: the paper's Algorithm 1
    (its temperature is ``T * std`` of each side's own logits, so teacher and
    student no longer have to match the logits' range, only their
    relations), computed as the authors' ``kd_loss`` with ``logit_stand``.
    Its batch mean is their loss. ``ls`` is unchanged by adding a constant to
    an example's logits or multiplying them by a positive number (up to the
    1e-7), and is 0 when the student's logits are a positive affine
    transform of the teacher's.

    Defaults (the authors' CIFAR-100 KD+LS recipe, ``tools/train.py
    --logit-stand --base-temp 2 --kd-weight 9`` with their KD config's
    ``CE_WEIGHT = 0.1``): T = 2, weight 9, cross-entropy weight 0.1. They
    use T = 3 and other weights for some pairs (their README's logs).

    The temperature is the method's own setting (``--ls_temperature``), not
    the run's ``--temperature``: the authors' default is 2, not KD's 4, and
    it divides standardised logits (spread 1), so a raw-logit temperature
    chosen for KD does not carry over.

    Deviations from the authors' code: none in the value; where an example's
    logits are all equal the gradient is finite (see :func:`standardize`).

    Args:
        temperature: base temperature ``T``, a positive number. Defaults to 2.
        name: layer name.
    """

    method = "ls"
    paper = "Sun, Ren, Li, Wang and Cao, Logit Standardization in Knowledge Distillation, CVPR 2024"
    reads = "logits"
    Settings = LSSettings
    uses_temperature = False
    default_weight = KD_WEIGHT
    default_ce_weight = CE_WEIGHT

    def __init__(self, temperature=BASE_TEMPERATURE, name=None):
        check_temperature(temperature)
        super().__init__(name=name)
        self.temperature = float(temperature)
        self.built = True

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[LOGITS]))
        s = as_float32(self.read(student_outputs, "student")[LOGITS])
        return soft_target_term(standardize(s), standardize(t), self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
