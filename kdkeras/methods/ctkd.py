"""CTKD: Li, Li, Yang, Zhao, Song, Luo, Li and Yang, "Curriculum Temperature for Knowledge Distillation" (AAAI 2023).

Hinton KD at a learned temperature: one scalar parameter sets the
temperature, and it is trained through a gradient-reversal layer to
*maximise* the KD loss while the student minimises it; the reversal's scale
lambda follows an easy-to-hard curriculum over the first epochs (see
:class:`CTKD`). The authors' code (github zhengli97/CTKD) is the reference
for every default.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.losses import soft_target_term
from kdkeras.methods.base import LOGITS, Method, as_float32, check_number, setting

SOURCE = "Li et al. 2023, the authors' code (zhengli97/CTKD, train_student.py and scripts/run_cifar_distill.sh)"
#: The authors' temperature map ``T = t_start + t_end * sigmoid(theta)``: ``t_start = 1``, ``t_end = 20``.
AUTHORS_MIN_TEMPERATURE = 1.0
AUTHORS_TEMPERATURE_RANGE = 20.0
#: Their ``Global_T`` parameter starts at ``theta = 1`` (``torch.ones(1)``): ``T = 1 + 20 * sigmoid(1)``.
AUTHORS_INITIAL_TEMPERATURE = AUTHORS_MIN_TEMPERATURE + AUTHORS_TEMPERATURE_RANGE / (1.0 + math.exp(-1.0))


@dataclasses.dataclass(frozen=True)
class CTKDSettings:
    initial_temperature: float = setting(
        AUTHORS_INITIAL_TEMPERATURE, "the learned temperature's start, strictly between min_temperature and "
        "min_temperature + temperature_range (default 1 + 20 * sigmoid(1): the authors' parameter starts at 1)",
        minimum=0.0, exclusive_minimum=True, source=SOURCE)
    min_temperature: float = setting(AUTHORS_MIN_TEMPERATURE, "the temperature's lower bound "
                                     "(T = min + range * sigmoid(theta); the authors' t_start)",
                                     minimum=0.0, exclusive_minimum=True, source=SOURCE)
    temperature_range: float = setting(AUTHORS_TEMPERATURE_RANGE, "the width of the temperature's range "
                                       "(the authors' t_end)", minimum=0.0, exclusive_minimum=True,
                                       source=SOURCE)
    lambda_min: float = setting(0.0, "the gradient-reversal scale lambda at the curriculum's start",
                                minimum=0.0, source=SOURCE)
    lambda_max: float = setting(1.0, "lambda at the curriculum's end and after it", minimum=0.0, source=SOURCE)
    lambda_epochs: int = setting(10, "epochs of the cosine increase of lambda from lambda_min to lambda_max",
                                 minimum=1, source=SOURCE)


@keras.saving.register_keras_serializable(package="kdkeras")
class CTKD(Method):
    """Curriculum Temperature for Knowledge Distillation (Li et al., AAAI 2023), global temperature, per example.

    One trainable scalar ``theta`` (a variable of this method, trained by the
    distiller's optimizer with the student and saved in its checkpoints)
    gives the temperature

        T = min_temperature + temperature_range * sigmoid(theta)

    (the authors' ``t_start + t_end * sigmoid(global_T)``, with 1 and 20:
    T stays in (1, 21)), and per example, with teacher logits ``t`` and
    student logits ``s``,

        ctkd = T^2 * KL(softmax(t / T) || softmax(s / T))

    whose batch mean is the authors' ``DistillKL`` (``KLDivLoss(batchmean)
    * T * T``). Its value is Hinton KD at the current T; only the gradient
    differs: between ``theta`` and the loss sits a gradient-reversal layer,
    identity forward and ``-lambda`` times the gradient backward, so the
    optimizer's descent step moves ``theta`` up the KD loss (the temperature
    is trained to make distillation harder) while the student still
    descends it. The student's gradient is plain KD's at T; the teacher's
    logits are under ``stop_gradient`` (T itself is not: the teacher's soft
    targets depend on it).

    Curriculum: lambda is a non-trainable variable set at the start of
    every (0-based) epoch ``e`` by :meth:`on_epoch_begin`:

        lambda(e) = lambda_min + (lambda_max - lambda_min) * (1 - cos(pi * min(e + 1, N) / N)) / 2

    with ``N = lambda_epochs``: the paper's cosine schedule and the authors'
    ``CosineDecay(max_value=0, min_value=-1, num_loops=10)`` evaluated at
    their 1-based epoch ``e + 1`` (their reversal layer multiplies by that
    negative value; here lambda is the positive scale and the sign is in the
    layer). It is checkpointed, so a resumed run continues the schedule.

    Defaults (the authors' code, ``train_student.py`` and
    ``scripts/run_cifar_distill.sh``, CIFAR-100): ``theta`` starts at 1
    (T ~= 15.62), T in (1, 21), lambda from 0 to 1 over 10 epochs, weight 0.9
    and cross-entropy weight 0.1 (``-a 0.9 -r 0.1``). The authors' SGD
    decays every trainable parameter, ``theta`` included; kdkeras's
    :class:`~kdkeras.optimizers.PyTorchSGD` does too (the decay acts on
    ``theta`` directly, not through the reversal, as in their code).

    Not implemented: the instance-wise temperature (a small network that
    predicts a temperature per example, the paper's other variant), and
    feeding the learned temperature to other methods (the authors combine it
    with DKD and others); CTKD here is KD with its own learned temperature.

    Args:
        initial_temperature: T at the start, strictly inside
            ``(min_temperature, min_temperature + temperature_range)``.
            Defaults to ``1 + 20 * sigmoid(1)``.
        min_temperature: positive lower bound of T. Defaults to 1.
        temperature_range: positive width of T's range. Defaults to 20.
        lambda_min, lambda_max: the reversal's scale at the curriculum's
            start and end, numbers with ``0 <= lambda_min <= lambda_max``.
            Default to 0 and 1.
        lambda_epochs: epochs of the cosine increase, an integer >= 1.
            Defaults to 10.
        name: layer name.
    """

    method = "ctkd"
    paper = ("Li, Li, Yang, Zhao, Song, Luo, Li and Yang, Curriculum Temperature for Knowledge Distillation, "
             "AAAI 2023")
    reads = "logits"
    parts = "learned temperature (one scalar, gradient-reversed)"
    Settings = CTKDSettings
    default_weight = 0.9
    default_ce_weight = 0.1
    has_epoch_state = True

    def __init__(
        self,
        initial_temperature=AUTHORS_INITIAL_TEMPERATURE,
        min_temperature=AUTHORS_MIN_TEMPERATURE,
        temperature_range=AUTHORS_TEMPERATURE_RANGE,
        lambda_min=0.0,
        lambda_max=1.0,
        lambda_epochs=10,
        name=None,
    ):
        check_number("min_temperature", min_temperature, strict=True)
        check_number("temperature_range", temperature_range, strict=True)
        check_number("initial_temperature", initial_temperature, strict=True)
        if not min_temperature < initial_temperature < min_temperature + temperature_range:
            raise UsageError(
                "`initial_temperature` must lie strictly between min_temperature and min_temperature + "
                f"temperature_range. Received: initial_temperature={initial_temperature!r}, "
                f"min_temperature={min_temperature!r}, temperature_range={temperature_range!r}")
        check_number("lambda_min", lambda_min)
        check_number("lambda_max", lambda_max)
        if lambda_max < lambda_min:
            raise UsageError(f"`lambda_max` must be >= lambda_min. Received: lambda_min={lambda_min!r}, "
                             f"lambda_max={lambda_max!r}")
        if isinstance(lambda_epochs, bool) or not isinstance(lambda_epochs, numbers.Integral) or lambda_epochs < 1:
            raise UsageError(f"`lambda_epochs` must be an integer >= 1. Received: lambda_epochs={lambda_epochs!r}")
        super().__init__(name=name)
        self.initial_temperature = float(initial_temperature)
        self.min_temperature = float(min_temperature)
        self.temperature_range = float(temperature_range)
        self.lambda_min = float(lambda_min)
        self.lambda_max = float(lambda_max)
        self.lambda_epochs = int(lambda_epochs)
        self.theta = None
        self.grl_lambda = None

    # ----------------------------------------------------------- variables
    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates ``theta`` (trainable) and lambda (non-trainable); nothing depends on the shapes."""
        if self.theta is None:
            p = (self.initial_temperature - self.min_temperature) / self.temperature_range
            self.theta = self.add_weight(shape=(), initializer=keras.initializers.Constant(math.log(p / (1.0 - p))),
                                         dtype="float32", trainable=True, autocast=False, name="temperature_logit")
            self.grl_lambda = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.lambda_at(0)),
                                              dtype="float32", trainable=False, autocast=False, name="grl_lambda")
        self.built = True

    def _ensure_variables(self):
        if self.theta is None:
            self.build_adapters({}, {})

    def lambda_at(self, epoch):
        """The reversal's scale in the 0-based ``epoch`` (see the class docstring)."""
        step = min(int(epoch) + 1, self.lambda_epochs)
        rise = (1.0 - math.cos(math.pi * step / self.lambda_epochs)) / 2.0
        return self.lambda_min + (self.lambda_max - self.lambda_min) * rise

    def on_epoch_begin(self, epoch):
        self._ensure_variables()
        self.grl_lambda.assign(self.lambda_at(epoch))

    def temperature_tensor(self, reverse=False):
        """The current T, a float32 scalar tensor; ``reverse``: through the gradient-reversal layer."""
        self._ensure_variables()
        theta = ops.convert_to_tensor(self.theta)
        if reverse:
            # Value: exactly theta (theta - frozen is 0). Gradient: -lambda (lambda is a constant here).
            frozen = ops.stop_gradient(theta)
            lam = ops.stop_gradient(ops.convert_to_tensor(self.grl_lambda))
            theta = frozen - lam * (theta - frozen)
        return self.min_temperature + self.temperature_range * ops.sigmoid(theta)

    @property
    def current_temperature(self):
        """The current T as a Python float."""
        return float(ops.convert_to_numpy(self.temperature_tensor()))

    @property
    def current_lambda(self):
        """The current lambda as a Python float."""
        self._ensure_variables()
        return float(ops.convert_to_numpy(self.grl_lambda))

    # ----------------------------------------------------------- loss
    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[LOGITS]))
        s = as_float32(self.read(student_outputs, "student")[LOGITS])
        return soft_target_term(s, t, self.temperature_tensor(reverse=True))

    def get_config(self):
        return {
            **super().get_config(),
            "initial_temperature": self.initial_temperature,
            "min_temperature": self.min_temperature,
            "temperature_range": self.temperature_range,
            "lambda_min": self.lambda_min,
            "lambda_max": self.lambda_max,
            "lambda_epochs": self.lambda_epochs,
        }
