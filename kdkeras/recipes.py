"""The paper's training recipe (section 5 of the paper; docs/training.md).

SGD (batch 128, lr 0.1, momentum 0.9, coupled weight decay 4e-4), 120
epochs for every baseline and KD run (MobileNetV2 KD students: 300), and
per-family learning-rate schedules:

* ResNet-18: lr / 10 at epochs 30, 60, 90.
* WRN: lr / 5 at epochs 30, 60, 90.
* MobileNetV2: lr x 0.98 after every epoch.

KD: temperature 4, alpha 0.9. Schedules are functions of the optimizer step,
so they resume exactly from a checkpoint.

The ``crd`` recipe is the CIFAR-100 recipe of the KD literature since CRD
(Tian et al., "Contrastive Representation Distillation", ICLR 2020, and its
RepDistiller code; also mdistiller's): 240 epochs, batch 64, SGD momentum
0.9, lr 0.05 (0.01 for MobileNetV2 and the ShuffleNets), coupled weight
decay 5e-4, lr x 0.1 at epochs 150, 180 and 210, random 32x32 crops of the
image zero-padded by 4 pixels and horizontal flips; KD with T = 4 and 0.9 /
0.1 weights on KD / cross-entropy. It is the default of the standard CIFAR
zoo (``resnet56``, ``wrn_40_2``, ...); ``--recipe=crd`` applies it to any
network, ``--recipe=paper`` is the paper's recipe (the default of the
paper's zoo, which alone defines its per-family schedules).

A run shorter (or longer) than the recipe gets the recipe's schedule scaled
to its length (:func:`scale_schedule`): step milestones keep their place as
a fraction of the run (WRN: 25/50/75%), an exponential decay keeps the
recipe's ratio of final to initial learning rate.
"""

from __future__ import annotations

import math

from kdkeras.errors import UsageError

#: Learning-rate schedules: ``step`` (multiply by ``lr_gamma`` at each of
#: ``lr_milestones`` epochs) and ``exponential`` (multiply by ``lr_gamma``
#: after every epoch).
LR_SCHEDULES = ("step", "exponential", "constant")

#: The training recipes: ``paper`` (section 5 of the paper) and ``crd`` (CRD / RepDistiller).
RECIPES = ("paper", "crd")
#: Padding of the random-crop augmentation: ``reflect`` (the paper's) or ``zeros`` (torchvision's RandomCrop).
PAD_MODES = ("reflect", "zeros")

_COMMON = {
    "epochs": 120,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 4e-4,
    "temperature": 4.0,
    "alpha": 0.9,
    "pad_mode": "reflect",
}

#: The CRD recipe (Tian et al., 2020, section 4 and their RepDistiller code); ``lr``: a family's ``crd_lr``.
_CRD = {
    "epochs": 240,
    "batch_size": 64,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "lr_schedule": "step",
    "lr_milestones": (150, 180, 210),
    "lr_gamma": 0.1,
    "temperature": 4.0,
    "alpha": 0.9,
    "pad_mode": "zeros",
}


def recipe_for(model_name: str, distill: bool = False, recipe: str | None = None) -> dict:
    """The default settings for training ``model_name`` under a recipe.

    ``paper``: the settings common to every network (section 5 of the paper)
    plus the learning-rate schedule its family registered
    (:func:`kdkeras.models.registry.family_recipe`: WRN, ResNet-18 and
    MobileNetV2 each own theirs). ``crd``: the CRD recipe, with the family's
    ``crd_lr`` where it has one.

    Args:
        model_name: e.g. ``"wrn22x10_NR_G4"`` or ``"resnet56"``.
        distill: whether the model is a KD student (a family may train its
            students longer under the paper's recipe: MobileNetV2 300 epochs).
        recipe: ``paper``, ``crd`` or ``None`` (the family's own: ``crd`` for
            the standard CIFAR zoo, else ``paper``).

    Returns:
        A dict with ``recipe, epochs, batch_size, lr, momentum, weight_decay,
        temperature, alpha, lr_schedule, lr_milestones, lr_gamma, pad_mode``.

    Raises:
        UsageError: the network of ``model_name`` is unknown, the recipe is
            not one of :data:`RECIPES`, or the family has no paper recipe.
    """
    from kdkeras.models import family_recipe, parse_model_name

    net = parse_model_name(model_name).net
    family = family_recipe(net)
    own = family.pop("recipe", "paper")
    crd_lr = family.pop("crd_lr", None)
    distill_epochs = family.pop("distill_epochs", None)
    recipe = own if recipe is None else recipe
    if recipe not in RECIPES:
        raise UsageError(f"Unknown recipe '{recipe}'. Valid choices: {', '.join(RECIPES)}.")
    if recipe == "crd":
        return {"recipe": "crd", **_CRD, **({"lr": crd_lr} if crd_lr is not None else {})}
    if own != "paper":
        raise UsageError(f"'{model_name}' is a network of the standard CIFAR zoo: the paper's recipe has no "
                         f"schedule for it. Valid recipes for it: crd.")
    settings = {"recipe": "paper", **_COMMON, **family}
    if distill and distill_epochs:
        settings["epochs"] = distill_epochs
    return settings


def scale_schedule(recipe: dict, epochs: int) -> dict:
    """The recipe's learning-rate schedule fitted to a run of ``epochs`` epochs.

    * ``step``: each milestone ``m`` of the recipe's ``E`` epochs becomes
      ``round(m * epochs / E)`` (halves round up), at least 1, without
      repeats; ``lr_gamma`` (the factor per milestone) is unchanged. WRN's
      30/60/90 of 120 becomes 25/50/75% of the run, e.g. 5/10/15 of 20.
    * ``exponential``: ``lr_gamma ** (E / epochs)`` per epoch, so the run
      ends at the recipe's final/initial ratio ``lr_gamma ** E``.
    * ``constant``: unchanged.

    Args:
        recipe: a dict from :func:`recipe_for` (``epochs``, ``lr_schedule``,
            ``lr_milestones``, ``lr_gamma``).
        epochs: the run's number of epochs.

    Returns:
        ``{"lr_milestones": tuple, "lr_gamma": float}`` for the run.
    """
    base = int(recipe["epochs"])
    milestones = tuple(int(m) for m in recipe["lr_milestones"])
    gamma = float(recipe["lr_gamma"])
    if epochs == base:
        return {"lr_milestones": milestones, "lr_gamma": gamma}
    if recipe["lr_schedule"] == "step":
        scaled = []
        for m in milestones:
            value = max(1, math.floor(m * epochs / base + 0.5))
            if value not in scaled:
                scaled.append(value)
        return {"lr_milestones": tuple(scaled), "lr_gamma": gamma}
    if recipe["lr_schedule"] == "exponential":
        return {"lr_milestones": milestones, "lr_gamma": gamma ** (base / epochs)}
    return {"lr_milestones": milestones, "lr_gamma": gamma}


def describe_schedule(lr, schedule, milestones, gamma, epochs) -> str:
    """One line describing a run's learning-rate schedule, e.g. for the start of a run.

    Example: ``"step: lr 0.1, x0.2 at epochs 5, 10, 15 of 20 (final 0.0008)"``.
    """
    if schedule == "step":
        active = [m for m in milestones if m < epochs]
        final = lr * gamma ** len(active)
        at = ", ".join(str(m) for m in milestones) or "none"
        return f"step: lr {lr:g}, x{gamma:g} at epochs {at} of {epochs} (final {final:.3g})"
    if schedule == "exponential":
        return (f"exponential: lr {lr:g}, x{gamma:.5g} per epoch over {epochs} epochs "
                f"(final {lr * gamma ** (epochs - 1):.3g})")
    return f"constant: lr {lr:g} for {epochs} epochs"


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
    import keras  # here, not at the top: configs and flags read this module without Keras

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
    raise UsageError(f"Unknown lr_schedule '{schedule}'. Valid choices: {', '.join(LR_SCHEDULES)}.")
