"""KD: the soft-target term of Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015).

    kd = T^2 * KL(softmax(t / T) || softmax(s / T))

per example, with teacher logits ``t`` and student logits ``s``: the ``kd``
term of :func:`kdkeras.losses.kd_loss_terms`, computed by the same code. The
paper kdkeras reproduces (section 5) and mdistiller's CIFAR config use T = 4
and weight it alpha = 0.9 against (1 - alpha) = 0.1 of cross-entropy: with
``--method=kd`` (the default) the weight is ``--alpha`` and the
cross-entropy's ``1 - alpha``.
"""

from __future__ import annotations

import keras
from keras import ops

from kdkeras.losses import PAPER_ALPHA, PAPER_TEMPERATURE, check_temperature, soft_target_term
from kdkeras.methods.base import LOGITS, Method, as_float32


@keras.saving.register_keras_serializable(package="kdkeras")
class KD(Method):
    """Soft-target KD of Hinton, Vinyals and Dean (2015), per example (see the module docstring).

    Args:
        temperature: positive number T. Defaults to 4.
        name: layer name.
    """

    method = "kd"
    paper = "Hinton, Vinyals and Dean, Distilling the Knowledge in a Neural Network, 2015"
    reads = "logits"
    uses_temperature = True
    default_weight = PAPER_ALPHA
    default_ce_weight = 1.0 - PAPER_ALPHA

    def __init__(self, temperature=PAPER_TEMPERATURE, name=None):
        check_temperature(temperature)
        super().__init__(name=name)
        self.temperature = float(temperature)
        self.built = True

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[LOGITS]))
        s = as_float32(self.read(student_outputs, "student")[LOGITS])
        return soft_target_term(s, t, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
