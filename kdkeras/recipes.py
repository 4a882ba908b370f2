"""The paper's training recipe (section 5; SPEC section 4).

SGD (batch 128, lr 0.1, momentum 0.9, coupled weight decay 4e-4), 120
epochs for every baseline and KD run (MobileNetV2 KD students: 300), and
per-family learning-rate schedules:

* ResNet-18: lr / 10 at epochs 30, 60, 90.
* WRN: lr / 5 at epochs 30, 60, 90.
* MobileNetV2: lr x 0.98 after every epoch.

KD: temperature 4, alpha 0.9. Schedules are functions of the optimizer step,
so they resume exactly from a checkpoint.
"""

from __future__ import annotations

import keras

#: Learning-rate schedules: ``step`` (multiply by ``lr_gamma`` at each of
#: ``lr_milestones`` epochs) and ``exponential`` (multiply by ``lr_gamma``
#: after every epoch).
LR_SCHEDULES = ("step", "exponential", "constant")

_COMMON = {
    "epochs": 120,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 4e-4,
    "temperature": 4.0,
    "alpha": 0.9,
}
_FAMILY = {
    "wrn": {"lr_schedule": "step", "lr_milestones": (30, 60, 90), "lr_gamma": 0.2},
    "resnet18": {"lr_schedule": "step", "lr_milestones": (30, 60, 90), "lr_gamma": 0.1},
    "mobilenetv2": {"lr_schedule": "exponential", "lr_milestones": (), "lr_gamma": 0.98},
}


def family_of(model_name: str) -> str:
    """``"wrn"``, ``"resnet18"`` or ``"mobilenetv2"`` for a model name."""
    net = model_name.split("_")[0]
    return "wrn" if net.startswith("wrn") else net


def recipe_for(model_name: str, distill: bool = False) -> dict:
    """The paper's default settings for training ``model_name``.

    Args:
        model_name: e.g. ``"wrn22x10_NR_G4"`` (a path to a model file gets the
            common settings with the WRN schedule).
        distill: whether the model is a KD student (MobileNetV2 students
            train for 300 epochs).

    Returns:
        A dict with ``epochs, batch_size, lr, momentum, weight_decay,
        temperature, alpha, lr_schedule, lr_milestones, lr_gamma``.
    """
    family = family_of(model_name)
    recipe = {**_COMMON, **_FAMILY.get(family, _FAMILY["wrn"])}
    if distill and family == "mobilenetv2":
        recipe["epochs"] = 300
    return recipe


def make_lr_schedule(lr, schedule, milestones, gamma, steps_per_epoch):
    """A per-step Keras schedule implementing a per-epoch recipe.

    Args:
        lr: initial learning rate.
        schedule: one of :data:`LR_SCHEDULES`.
        milestones: epochs after which ``step`` multiplies the rate by ``gamma``.
        gamma: multiplicative factor.
        steps_per_epoch: optimizer steps in one epoch.

    Returns:
        A float (constant) or a ``keras.optimizers.schedules.LearningRateSchedule``.
    """
    if schedule == "constant":
        return float(lr)
    if schedule == "step":
        milestones = sorted(int(m) for m in milestones)
        if not milestones:
            return float(lr)
        # Keras uses values[i + 1] once step > boundaries[i]: the first step of
        # epoch m (step m * steps_per_epoch) must already see the new rate.
        boundaries = [m * steps_per_epoch - 1 for m in milestones]
        values = [float(lr) * gamma**i for i in range(len(milestones) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            float(lr), decay_steps=steps_per_epoch, decay_rate=gamma, staircase=True
        )
    raise ValueError(f"Unknown lr_schedule '{schedule}'. Valid choices: {', '.join(LR_SCHEDULES)}.")
