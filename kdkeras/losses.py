"""Knowledge-distillation loss of Hinton et al. (2015), written with `keras.ops`.

The paper reproduced by this package ("On the Demystification of Knowledge
Distillation: A Residual Network Perspective", Jha, Saini and Mittal, section 5)
trains every KD student with the loss of Hinton, Vinyals and Dean, "Distilling
the Knowledge in a Neural Network" (2015), with temperature T = 4 and
alpha = 0.9. Per example, with student logits `s`, teacher logits `t` and the
integer label `y`:

    loss = (1 - alpha) * CE(y, softmax(s))
           + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

    CE(y, softmax(s)) = -log softmax(s)[y]
    KL(p || q)        = sum_k p_k * (log p_k - log q_k)

The teacher distribution `softmax(t / T)` is the target of the KL divergence:
the divergence is measured from the teacher to the student, not the reverse.
The T^2 factor keeps the gradient of the soft term comparable in size to the
hard-target term when T changes (the gradient of the KL term with respect to
`s` scales as 1/T; see Hinton et al., section 2).

Everything is computed in float32, whatever the dtype of the logits (float16 and
bfloat16 logits from mixed-precision models are cast first), and every log
probability comes from `log_softmax`, so no `log(0)` is ever evaluated.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from kdkeras.errors import UsageError

#: Section 5 of the paper: T = 4, alpha = 0.9.
PAPER_TEMPERATURE = 4.0
PAPER_ALPHA = 0.9


def check_temperature(temperature):
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not temperature > 0
    ):
        raise UsageError(
            "`temperature` must be a positive number. "
            f"Received: temperature={temperature!r}"
        )


def _check_alpha(alpha):
    """Validates `alpha` when it is a Python number (tensors pass unchecked)."""
    if isinstance(alpha, bool) or (
        isinstance(alpha, numbers.Real) and not 0.0 <= alpha <= 1.0
    ):
        raise UsageError(
            f"`alpha` must be a number in [0, 1]. Received: alpha={alpha!r}"
        )


def _as_float32_logits(values, from_logits):
    """Casts to float32; turns probabilities into log-probabilities if asked."""
    values = ops.cast(ops.convert_to_tensor(values), "float32")
    if not from_logits:
        # log(p) is a valid logit vector: softmax(log(p)) == p. Clipping only
        # guards against exact zeros in the given probabilities.
        values = ops.log(ops.clip(values, keras.config.epsilon(), 1.0))
    return values


def kd_loss_terms(
    y_true,
    student_logits,
    teacher_logits,
    temperature=PAPER_TEMPERATURE,
    from_logits=True,
):
    """The two per-example terms of the KD loss, before weighting by alpha.

    With student logits `s`, teacher logits `t`, label `y` and temperature `T`:

        ce = -log softmax(s)[y]                                  # hard target
        kd = T^2 * KL(softmax(t / T) || softmax(s / T))          # soft target
           = T^2 * sum_k softmax(t / T)_k
                   * (log_softmax(t / T)_k - log_softmax(s / T)_k)

    `kd` already contains the T^2 factor, so the KD loss of Hinton et al.
    (2015), used with T = 4 in section 5 of "On the Demystification of
    Knowledge Distillation: A Residual Network Perspective", is
    `(1 - alpha) * ce + alpha * kd` (see `kd_loss`). The teacher logits are
    a constant target: no gradient flows back through them.

    Args:
        y_true: integer tensor `(batch,)` or `(batch, 1)`, class labels.
        student_logits: float tensor `(batch, num_classes)`, any float dtype.
        teacher_logits: float tensor `(batch, num_classes)`, any float dtype.
        temperature: positive Python number `T`. Defaults to 4 (the paper).
        from_logits: if `False`, `student_logits` and `teacher_logits` are
            probabilities; their logs are used as logits.

    Returns:
        `(ce, kd)`: two float32 tensors of shape `(batch,)`.

    Raises:
        ValueError: if `temperature` is not a positive number.
    """
    check_temperature(temperature)
    temperature = float(temperature)
    s = _as_float32_logits(student_logits, from_logits)  # (batch, num_classes)
    t = ops.stop_gradient(_as_float32_logits(teacher_logits, from_logits))

    y = ops.convert_to_tensor(y_true)
    if len(y.shape) == len(s.shape):
        y = ops.squeeze(y, axis=-1)  # (batch, 1) -> (batch,)
    y = ops.cast(y, "int32")
    log_p_s = ops.log_softmax(s, axis=-1)  # (batch, num_classes)
    ce = -ops.take_along_axis(log_p_s, ops.expand_dims(y, -1), axis=-1)[:, 0]

    return ce, soft_target_term(s, t, temperature)


def soft_target_term(s, t, temperature: float):
    """``T^2 * KL(softmax(t / T) || softmax(s / T))`` per example, from float32 logits."""
    log_q_s = ops.log_softmax(s / temperature, axis=-1)  # (batch, num_classes)
    log_q_t = ops.log_softmax(t / temperature, axis=-1)  # (batch, num_classes)
    kl = ops.sum(ops.exp(log_q_t) * (log_q_t - log_q_s), axis=-1)  # (batch,)
    return (temperature**2) * kl


def kd_loss(
    y_true,
    student_logits,
    teacher_logits,
    temperature=PAPER_TEMPERATURE,
    alpha=PAPER_ALPHA,
    from_logits=True,
):
    """Per-example knowledge-distillation loss of Hinton et al. (2015).

        loss = (1 - alpha) * CE(y, softmax(s))
               + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

    with student logits `s`, teacher logits `t`, integer label `y` and
    temperature `T`; that is `(1 - alpha) * ce + alpha * kd` with the terms of
    `kd_loss_terms` (where `kd` includes T^2). Section 5 of "On the
    Demystification of Knowledge Distillation: A Residual Network Perspective"
    uses T = 4 and alpha = 0.9, the defaults. `alpha = 0` is plain
    hard-target cross-entropy, `alpha = 1` pure distillation.

    Args:
        y_true: integer tensor `(batch,)` or `(batch, 1)`, class labels.
        student_logits: float tensor `(batch, num_classes)`, any float dtype.
        teacher_logits: float tensor `(batch, num_classes)`, any float dtype.
        temperature: positive Python number `T`.
        alpha: weight of the soft-target term, a number in `[0, 1]` or a
            scalar tensor / `keras.Variable` (not range-checked).
        from_logits: if `False`, the two prediction tensors are probabilities
            and their logs are used as logits.

    Returns:
        float32 tensor `(batch,)`: the loss of each example. Average it over
        the batch for the usual training objective.

    Raises:
        ValueError: if `temperature` is not positive or a numeric `alpha` lies
            outside `[0, 1]`.
    """
    _check_alpha(alpha)
    ce, kd = kd_loss_terms(
        y_true, student_logits, teacher_logits, temperature, from_logits
    )
    alpha = ops.cast(alpha, "float32")
    return (1.0 - alpha) * ce + alpha * kd


if hasattr(keras, "distillation"):  # Keras >= 3.12

    class HintonKD(keras.distillation.DistillationLoss):
        """The paper's soft-target term as a ``keras.distillation.DistillationLoss``.

        ``compute_loss`` returns the batch mean of
        ``T^2 * KL(softmax(t / T) || softmax(s / T))``, the ``kd`` term of
        :func:`kd_loss_terms`. With Keras's own
        ``keras.distillation.Distiller(..., distillation_losses=HintonKD(T),
        student_loss_weight=1 - alpha)`` compiled with
        ``SparseCategoricalCrossentropy(from_logits=True)``, the objective is
        the paper's, :func:`kd_loss` averaged over the batch (T = 4,
        alpha = 0.9 in the paper).

        Keras's ``LogitsDistillation`` with its default ``loss="kl_divergence"``
        is a different objective: it applies the KL function to the
        temperature-scaled logits themselves (no softmax) and has no T^2
        factor.
        """

        def __init__(self, temperature=PAPER_TEMPERATURE):
            check_temperature(temperature)
            self.temperature = float(temperature)

        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            s = _as_float32_logits(student_outputs, True)
            t = ops.stop_gradient(_as_float32_logits(teacher_outputs, True))
            return ops.mean(soft_target_term(s, t, self.temperature))
