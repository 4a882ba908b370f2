"""SGD with PyTorch semantics: coupled weight decay and PyTorch's momentum form.

The paper's code lineage is PyTorch (``torch.optim.SGD(params, lr, momentum,
weight_decay)``), whose update is, per parameter ``w`` with gradient ``g``::

    g <- g + weight_decay * w        # coupled L2: flows through the momentum
    v <- momentum * v + g
    w <- w - lr * v

Keras's own ``SGD`` folds the learning rate into the velocity
(``v <- momentum * v - lr * g``), which differs from PyTorch as soon as the
learning rate changes, and its ``weight_decay`` argument is decoupled. This
optimizer reproduces PyTorch's update exactly, for every trainable variable
(PyTorch applies weight decay to BN and bias parameters too).
"""

from __future__ import annotations

import keras
from keras import ops

from kdkeras.errors import UsageError


@keras.saving.register_keras_serializable(package="kdkeras")
class PyTorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled weight decay, as ``torch.optim.SGD``.

    Args:
        learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``.
        momentum: momentum factor in [0, 1).
        weight_decay: coupled L2 factor added to the gradient (``g + wd * w``).
        nesterov: Nesterov momentum (``w <- w - lr * (g + momentum * v)``).
        **kwargs: other ``keras.optimizers.Optimizer`` arguments.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, nesterov=False,
                 name="pytorch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise UsageError(f"momentum must be in [0, 1). Received: momentum={momentum!r}.")
        if weight_decay is None or weight_decay < 0:
            raise UsageError(f"weight_decay must be >= 0. Received: weight_decay={weight_decay!r}.")
        self.momentum = float(momentum)
        self.coupled_weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = (
            self.add_optimizer_variables(variables, "momentum") if self.momentum else []
        )

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            g = ops.add(g, ops.multiply(ops.cast(self.coupled_weight_decay, variable.dtype), variable))
        if self.momentum:
            v = self.momentums[self._get_variable_index(variable)]
            momentum = ops.cast(self.momentum, variable.dtype)
            self.assign(v, ops.add(ops.multiply(v, momentum), g))
            g = ops.add(g, ops.multiply(v, momentum)) if self.nesterov else v
        self.assign_sub(variable, ops.multiply(g, lr))

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            weight_decay=self.coupled_weight_decay,
            nesterov=self.nesterov,
        )
        return config
