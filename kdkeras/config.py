"""Run configuration: one dataclass, resolved from the recipe, a YAML file and flags.

Resolution order (later wins): the paper's recipe for the model
(:func:`kdkeras.recipes.recipe_for`) -> a YAML config file -> command-line
flags. ``None`` means "not set" at every level, so recipe defaults survive.

Every run lives in ``<logdir>/<dataset>/<run name>``, where the run name is
``<model>`` (baseline) or ``<student>_from_<teacher>`` (KD), then ``-s<seed>``,
then ``-<hash>`` of the result-affecting settings that differ from the
paper's recipe and of the data the run reads (its fingerprint,
:mod:`kdkeras.data.fingerprint`: the same data under another path is the
same run, other data is another run). Repeating a command therefore finds
its run again, and a teacher trained by ``train.py`` is the same run a KD
command asks for. A run folder written before runs recorded their data is
found again when its recorded data source still holds the same data
(:func:`kdkeras.training.run_folder.run_dir`).

A run whose ``epochs`` differ from the recipe's gets the recipe's
learning-rate schedule scaled to its length unless ``lr_milestones`` /
``lr_gamma`` are given (:func:`kdkeras.recipes.scale_schedule`); the
resolved schedule is stored in the run's ``config.yaml`` and is part of its
name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing

import yaml

from kdkeras import recipes
from kdkeras.errors import MissingFileError, UsageError
from kdkeras.choices import DEFAULT_ANNEAL_FRACTION, PLAIN_MODES
from kdkeras.methods import list_methods, setting

STRATEGIES = ("auto", "mirrored", "multiworker", "none")


@dataclasses.dataclass
class _RunSettings:
    """Every setting of one training run (baseline or KD).

    Attributes:
        model: model name (the student for KD), e.g. ``"wrn22x10_NR_G4"``.
        teacher: teacher model name or path to a ``.keras`` file; ``None``
            for a hard-target baseline.
        dataset: ``cifar100``, ``cifar10``, ``synthetic`` or ``folder``.
        data_dir: prepared TFDS folder; for ``folder``, the image folder
            (``train/<class>/...``, ``test/`` or ``val/``), which is part of
            the run name (:func:`run_name`).
        archive: original CIFAR ``*-python.tar.gz`` archive or its folder.
        download: download the CIFAR archive into Keras's cache when no
            source has the data (``--nodownload``: fail instead; docs/data.md,
            "Downloads"). A process setting, not part of the run name.
        data_mirror: base URL to download the archive from instead of the
            original site (``None``: ``$KDKERAS_DATA_MIRROR``, else the site).
        recipe: ``paper`` or ``crd`` (:mod:`kdkeras.recipes`): where the
            defaults of the settings below come from (``None``: the model's
            family's own).
        epochs, batch_size, lr, momentum, weight_decay: SGD recipe.
        lr_schedule, lr_milestones, lr_gamma: learning-rate schedule.
        temperature, alpha: KD loss settings.
        kd_epochs: apply KD only in the first ``kd_epochs`` epochs, then train
            on hard targets only (alpha = 0; the "Trainee-Mentor" schedule
            that tests KD as an early hint). ``None``: KD in every epoch.
            With another ``method``, every term's weight is 0 after it.
        teacher_epochs: epochs of the teacher's run when the teacher is
            given by name (trained on the way, or a grid's teacher cell);
            ``None``: the run's ``epochs``. Its learning-rate milestones
            are its recipe's, scaled to its own epochs. For shortened runs in which a teacher
            trained as long as its student is no stronger than it.
        method: the distillation method of a KD run, one of
            :func:`kdkeras.list_methods` (docs/methods.md), or several joined
            by ``+`` (``kd+at``). ``kd`` (default) is the paper's Hinton KD
            with ``temperature`` and ``alpha``; the others use their paper's
            defaults and the cross-entropy weight of their recipe. With
            ``kd`` among several, KD is weighted by ``alpha`` and the
            cross-entropy by ``1 - alpha``.
        method_weight: the weight of a single method other than ``kd``
            (``None``: the method's default, e.g. DKD 1, FitNets 100, AT
            1000); the same as its ``<method>_weight``.
        <method>_<setting>: every method's own settings and weight
            (``dkd_beta``, ``hint_tap``, ``at_weight``, ...), declared by the
            method (:mod:`kdkeras.methods`) and added to this class from its
            declaration; ``None``: the method's default.
        seed: random seed (weights, data order, augmentation, subsets).
        train_size, test_size: use a subset of the data (class-balanced,
            seeded); ``train_size`` counts the images trained on.
        val_size: hold out this many images of the training split
            (class-balanced, seeded; the same images whatever ``train_size``)
            as a validation split: never trained on, never
            augmented, evaluated every epoch (``val_*`` in ``history.csv``)
            and used to select an epoch or a setting. ``None``: the paper's
            protocol (train on the whole training split, no selection).
        precise_bn: recompute every BatchNorm layer's moving statistics as
            the population statistics over this many training batches
            (dropout off; unaugmented unless ``precise_bn_augment``) after
            training ("precise BN");
            ``None``: off. The plain numbers are reported beside them.
        precise_bn_augment: with ``precise_bn``, recompute over augmented
            training batches instead (the run's crops and flips, one fixed
            seeded draw, the same whenever measured), as PreciseBN in pycls
            and detectron2 does; for recipes whose augmentation shifts the
            statistics (the crd recipe's zero-padded crops).
        precise_bn_every_epoch: also measure the precise-BN accuracy after
            every epoch (``*_precise_bn`` columns); training is unchanged.
        dropout: WRN dropout rate (``None``: the family default, 0.3 for
            the paper's ``wrn<d>x<k>``, 0 for the standard zoo's ``wrn_<d>_<k>``).
        init: the kernel initialisation of the model: ``he`` (the zoo's
            ``he_normal``) or ``dirac`` (every 3x3 convolution, grouped ones
            included, starts at the identity where channels allow it;
            :mod:`kdkeras.initializers`, docs/training.md, "Dirac
            initialisation"). A teacher trained on the way keeps ``he``.
        plain: ``none`` (default), or a residual-free way of training the
            NR model (:mod:`kdkeras.models.plain`, docs/models.md,
            "Residual-free rivals"): ``repvgg`` (RepVGG's branches),
            ``diracnet`` (DiracNets' parameterised convolutions) or
            ``anneal`` (its R structure, the skips' weight annealed from 1 to
            0); the run's ``model.keras`` is the folded NR network. Needs an
            NR model name of WRN, ResNet-18 or a CIFAR ResNet. A teacher
            trained on the way is never plain.
        anneal_fraction: with ``plain=anneal``, the part of the training
            steps over which the skips' weight falls linearly from 1 to 0
            (``None``: :data:`kdkeras.models.plain.DEFAULT_ANNEAL_FRACTION`,
            filled in by :func:`resolve`).
        augment: the paper's training augmentation (pad, crop, flip); off
            for ablations and for the ``synthetic`` data's fixed templates.
        pad_mode: the crop's padding, ``reflect`` (paper) or ``zeros`` (crd).
        strategy: ``auto|mirrored|multiworker|none``.
        steps_per_execution: training steps per compiled call (``None``: the
            default of :func:`kdkeras.runtime.steps_per_execution`).
        mixed_precision: ``mixed_float16`` compute (GPU); the KD loss stays float32.
        jit_compile: compile the train step with XLA (helps on GPU; on CPU
            XLA's grouped convolution is far slower).
        deterministic: TensorFlow's deterministic ops
            (``tf.config.experimental.enable_op_determinism``, for the whole
            process): the same command gives the same weights, bit for bit,
            on the same machine and software (docs/training.md, "Deterministic runs").
        data_tuning: how tf.data spreads its work: ``fixed`` (autotuner off,
            one parallel load per core: best on small CPUs), ``autotune``
            (tf.data decides: keeps an accelerator fed) or ``auto`` (autotune
            with a GPU or 8+ cores, else fixed); docs/data.md.
    """

    # Each field is declared as a method's setting is (:func:`kdkeras.methods.setting`): its default, the help
    # of its flag --<field> (:func:`kdkeras.cli.define_run_flags`; the flag's type is the annotation's) and,
    # where it is a simple range or choice, the check that :func:`validate` makes.
    model: str = setting(dataclasses.MISSING, "Model name, e.g. wrn22x2_R_g2.")
    teacher: str | None = setting(None, "Teacher: a model name (its finished run in --logdir is used, or trained "
                                  "first) or a path to a .keras file.")
    dataset: str = setting("cifar100", "cifar100 (default), cifar10, synthetic or folder (your own images in "
                           "--data_dir).")
    data_dir: str | None = setting(None, "Prepared TFDS data folder; with --dataset=folder, the image folder "
                                   "(train/<class>/..., test/<class>/... or val/<class>/...).")
    archive: str | None = setting(None, "Original cifar-100-python.tar.gz / cifar-10-python.tar.gz or its folder.")
    download: bool = setting(True, "Download CIFAR into Keras's cache (~/.keras/datasets) when neither --archive "
                             "nor a prepared TFDS folder has it (default; --nodownload: fail instead).")
    data_mirror: str | None = setting(None, "Base URL to download the CIFAR archive from instead of "
                                      "https://www.cs.toronto.edu/~kriz/ (default: $KDKERAS_DATA_MIRROR); same "
                                      "checksum.")
    recipe: str | None = setting(None, "Training recipe: paper (the paper's section 5; default of the paper's zoo) "
                                 "or crd (CRD / RepDistiller's CIFAR-100 recipe: 240 epochs, batch 64, lr 0.05, "
                                 "wd 5e-4; default of the standard zoo: resnet56, wrn_40_2, ...). Both follow "
                                 "--epochs; any setting given overrides the recipe's.",
                                 choices=recipes.RECIPES)
    epochs: int | None = setting(None, "Training epochs (paper: 120; MobileNetV2 KD students 300).", minimum=1)
    batch_size: int | None = setting(None, "Global batch size (paper: 128).", minimum=1)
    lr: float | None = setting(None, "Initial learning rate (paper: 0.1).", minimum=0, exclusive_minimum=True)
    momentum: float | None = setting(None, "SGD momentum (paper: 0.9).")
    weight_decay: float | None = setting(None, "Coupled (PyTorch-style) weight decay (paper: 4e-4).", minimum=0)
    lr_schedule: str | None = setting(None, "step, exponential or constant (paper: per family).",
                                      choices=recipes.LR_SCHEDULES)
    lr_milestones: tuple[int, ...] | None = setting(None, "Epochs at which a step schedule multiplies lr by "
                                                    "lr_gamma.")
    lr_gamma: float | None = setting(None, "Learning-rate factor (WRN 0.2, ResNet-18 0.1, MobileNetV2 0.98/epoch).",
                                     minimum=0, exclusive_minimum=True)
    temperature: float | None = setting(None, "KD temperature T (paper: 4).", minimum=0, exclusive_minimum=True)
    alpha: float | None = setting(None, "Weight of the KD term (paper: 0.9).", minimum=0, maximum=1)
    kd_epochs: int | None = setting(None, "KD only in the first N epochs, then hard targets only (early-hint "
                                    "ablation; default: KD in every epoch).", minimum=1)
    teacher_epochs: int | None = setting(None, "Epochs of a teacher given by name (trained on the way; default: "
                                         "the run's epochs), e.g. a teacher trained longer than its student.",
                                         minimum=1)
    method: str = setting("kd", f"Distillation method: {', '.join(list_methods())}, or several joined by + "
                          "(e.g. kd+at); default kd, the paper's Hinton KD (docs/methods.md).")
    method_weight: float | None = setting(None, "Weight of a single method other than kd (default: the method's "
                                          "own); the same as its --<method>_weight. kd's weight is --alpha.",
                                          minimum=0)
    seed: int = setting(0, "Random seed (default 0).", minimum=0)
    train_size: int | None = setting(None, "Use this many training images (a seeded class-balanced subset).",
                                     minimum=1)
    test_size: int | None = setting(None, "Use this many test images.", minimum=1)
    val_size: int | None = setting(None, "Hold out this many training images as a validation split "
                                   "(class-balanced, seeded; never trained on): val_* columns, "
                                   "best-validation-epoch results. Default: none, the paper's protocol.", minimum=1)
    precise_bn: int | None = setting(None, "Recompute the BatchNorm statistics over N training batches after "
                                     "training (dropout off; unaugmented unless --precise_bn_augment) and report "
                                     "the accuracy with them too.", minimum=1)
    precise_bn_augment: bool = setting(False, "With --precise_bn: recompute over augmented training batches "
                                       "(the run's crops and flips, one fixed seeded draw) instead of unaugmented "
                                       "ones, as pycls and detectron2 do.")
    precise_bn_every_epoch: bool = setting(False, "With --precise_bn: also measure the precise-BN accuracy after "
                                           "every epoch (training is unchanged).")
    dropout: float | None = setting(None, "WRN dropout rate (paper's wrn<d>x<k>: 0.3; standard zoo's "
                                    "wrn_<d>_<k>: 0).")
    init: str = setting("he", "Kernel initialisation of the model: he (default: he_normal) or dirac (every 3x3 "
                        "convolution starts at the identity; a teacher trained on the way keeps he).")
    plain: str = setting("none", "Residual-free training of an NR model: none (default), repvgg (RepVGG's 3x3/1x1/"
                         "identity branches), diracnet (DiracNets' W = diag(a) I + diag(b) W_norm) or anneal (the R "
                         "structure, skips scaled by a weight annealed from 1 to 0); model.keras is the folded NR "
                         "network (docs/models.md).", choices=PLAIN_MODES)
    anneal_fraction: float | None = setting(None, "With --plain=anneal: the skips' weight falls linearly from 1 to 0 "
                                            f"over this fraction of the training steps (default "
                                            f"{DEFAULT_ANNEAL_FRACTION}).", minimum=0, exclusive_minimum=True,
                                            maximum=1)
    augment: bool = setting(True, "Pad/crop/flip training images (default; --noaugment: off).")
    pad_mode: str | None = setting(None, "Padding of the random crop: reflect (paper recipe) or zeros (crd "
                                   "recipe, torchvision's RandomCrop).", choices=recipes.PAD_MODES)
    strategy: str = setting("auto", "auto, mirrored, multiworker or none (default auto).", choices=STRATEGIES)
    steps_per_execution: int | None = setting(None, "Training steps per compiled call; must divide the steps of an "
                                              "epoch (default: 1 on CPU; with a GPU the largest divisor of the "
                                              "epoch's steps up to 32, 23 for CIFAR).", minimum=1)
    mixed_precision: bool = setting(False, "mixed_float16 compute, for GPUs (KD loss stays float32).")
    jit_compile: bool = setting(False, "Compile the train step with XLA (GPU; slow on CPU).")
    deterministic: bool = setting(False, "Deterministic TensorFlow ops: the same command gives the same weights, "
                                  "bit for bit, on the same machine (slower; see docs/training.md).")
    data_tuning: str = setting("auto", "How tf.data spreads its work: auto (default: autotune with a GPU or 8+ "
                               "cores, else fixed), fixed (best on small CPUs) or autotune.")

    @property
    def distill(self) -> bool:
        return self.teacher is not None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _with_method_settings(base):
    """``base`` plus one field per method setting (:func:`kdkeras.methods.all_settings`), each ``None`` (not set).

    Each field carries its setting's declaration, its help that of the flag ``--<flag>``.
    """
    from kdkeras import methods

    def flag_help(item):
        default = ",".join(item.default) if isinstance(item.default, tuple) else item.default
        return f"{item.method}: {item.help} (default {default})."

    fields = [(s.flag, typing.Optional[s.type],
               setting(None, flag_help(s), minimum=s.minimum, maximum=s.maximum,
                       exclusive_minimum=s.exclusive_minimum, choices=s.choices, source=s.source))
              for s in methods.all_settings()]
    made = dataclasses.make_dataclass("RunConfig", fields, bases=(base,))
    made.__module__, made.__qualname__, made.__doc__ = __name__, "RunConfig", base.__doc__
    return made


RunConfig = _with_method_settings(_RunSettings)
FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
#: The fields of the methods' own settings (``dkd_beta``, ``at_weight``, ...).
METHOD_SETTING_FIELDS = FIELDS[len(dataclasses.fields(_RunSettings)):]
#: Settings that do not change what a run computes (where data comes from,
#: how it is spread over devices): left out of the run name's hash.
NON_IDENTITY_FIELDS = ("data_dir", "archive", "download", "data_mirror", "strategy", "steps_per_execution",
                       "jit_compile", "deterministic",
                       "data_tuning")
#: KD-only settings, which a teacher does not inherit from its student's command.
KD_FIELDS = ("teacher", "temperature", "alpha", "kd_epochs", "teacher_epochs", "method",
             "method_weight") + METHOD_SETTING_FIELDS
#: The settings of a residual-free rival (``--plain``): they apply to NR models only.
PLAIN_FIELDS = ("plain", "anneal_fraction")
#: Settings of the student's model alone, which a teacher trained on the way
#: does not inherit either (the teacher is a plain baseline, never a residual-free rival).
STUDENT_FIELDS = ("init",) + PLAIN_FIELDS
#: Settings that a teacher trained on the way inherits from the student's command.
INHERITED_FIELDS = tuple(f for f in FIELDS if f not in KD_FIELDS + STUDENT_FIELDS + ("model",))


def load_yaml(path: str) -> dict:
    """Reads a YAML config file into a dict of :class:`RunConfig` settings."""
    if not os.path.exists(path):
        raise MissingFileError(f"Config file '{path}' does not exist.")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise UsageError(f"Config file '{path}' is not valid YAML: {' '.join(str(err).split())}")
    if not isinstance(data, dict):
        raise UsageError(f"Config file '{path}' must hold a mapping of settings.")
    data.pop("run", None)  # informational keys of a run folder's config.yaml
    data.pop("data", None)
    unknown = sorted(set(data) - set(FIELDS) - {"student"})
    if unknown:
        raise UsageError(
            f"Unknown setting(s) {', '.join(unknown)} in '{path}'. Valid settings: {', '.join(FIELDS)}."
        )
    if "student" in data:
        data["model"] = data.pop("student")
    return data


def resolve(overrides: dict) -> RunConfig:
    """Builds a validated :class:`RunConfig` from explicit settings + the recipe.

    Args:
        overrides: settings given explicitly (YAML and flags); ``None`` values
            are ignored. Must contain ``model``.

    Raises:
        ValueError: one line naming the bad setting and the valid choices.
    """
    explicit = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(explicit) - set(FIELDS))
    if unknown:
        raise UsageError(f"Unknown setting(s): {', '.join(unknown)}. Valid settings: {', '.join(FIELDS)}.")
    if not explicit.get("model"):
        raise UsageError("No model given: pass --model=NAME (train.py) or --student=NAME (distill.py).")
    recipe = recipes.recipe_for(explicit["model"], distill=explicit.get("teacher") is not None,
                                recipe=explicit.get("recipe"))
    if isinstance(explicit.get("epochs"), int) and not isinstance(explicit["epochs"], bool) \
            and explicit["epochs"] > 0:
        recipe.update(recipes.scale_schedule(recipe, explicit["epochs"]))
    settings = _single_method_weight({**recipe, **explicit})
    if settings.get("plain") == "anneal" and settings.get("anneal_fraction") is None:
        settings["anneal_fraction"] = DEFAULT_ANNEAL_FRACTION  # one run name, whether the default was spelled out
    if settings.get("lr_milestones") is not None:
        try:
            settings["lr_milestones"] = tuple(int(m) for m in settings["lr_milestones"])
        except (TypeError, ValueError):
            raise UsageError(f"lr_milestones must be integers (epochs). "
                             f"Received: {settings['lr_milestones']!r}.") from None
    config = RunConfig(**settings)
    validate(config)
    if config.teacher_epochs is not None and config.distill:
        # A teacher_epochs that changes nothing (the teacher's own length) is no setting: one run, one name.
        plain = dataclasses.replace(config, teacher_epochs=None)
        if teacher_config(config) == teacher_config(plain):
            return plain
    return config


def _single_method_weight(settings: dict) -> dict:
    """A single method's ``<method>_weight`` as ``method_weight``: one run, one name, whichever flag set it."""
    method = settings.get("method")
    key = f"{method}_weight"
    if isinstance(method, str) and key in METHOD_SETTING_FIELDS and settings.get(key) is not None:
        if settings.get("method_weight") is not None:
            raise UsageError(f"method_weight and {key} both set the weight of method={method}: give one.")
        settings = {**settings, "method_weight": settings[key], key: None}
    return settings


def _check(condition, message):
    if not condition:
        raise UsageError(message)


def validate(config: RunConfig) -> None:
    """Checks every setting; raises ``ValueError`` naming the first bad one."""
    from kdkeras.data import DATASETS
    from kdkeras.models.registry import parse_model_name

    parse_model_name(config.model)
    if config.teacher is not None and not is_model_file(config.teacher):
        parse_model_name(config.teacher)
    _check(config.dataset in DATASETS,
           f"Unknown dataset '{config.dataset}'. Valid choices: {', '.join(DATASETS)}.")
    _check(config.dataset != "folder" or (isinstance(config.data_dir, str) and config.data_dir.strip()),
           "dataset=folder needs data_dir=PATH (--data_dir): a folder with train/<class>/<images> and "
           "test/<class>/<images> (or val/).")
    for name in ("epochs", "batch_size"):
        value = getattr(config, name)
        _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
               f"{name} must be a positive integer. Received: {name}={value!r}.")
    for name in ("train_size", "test_size", "val_size", "precise_bn", "steps_per_execution"):
        value = getattr(config, name)
        _check(value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0),
               f"{name} must be a positive integer. Received: {name}={value!r}.")
    _check(not config.precise_bn_every_epoch or config.precise_bn is not None,
           "precise_bn_every_epoch needs precise_bn=N (the number of training batches to recompute the "
           "BatchNorm statistics over).")
    _check(not config.precise_bn_augment or config.precise_bn is not None,
           "precise_bn_augment needs precise_bn=N (the number of training batches to recompute the "
           "BatchNorm statistics over).")
    _check(not config.precise_bn_augment or config.augment is not False,
           "precise_bn_augment recomputes over augmented batches, but this run trains without augmentation "
           "(augment=false): drop precise_bn_augment.")
    _check(isinstance(config.seed, int) and config.seed >= 0,
           f"seed must be a non-negative integer. Received: seed={config.seed!r}.")
    _check(config.lr > 0, f"lr must be > 0. Received: lr={config.lr!r}.")
    _check(0 <= config.momentum < 1, f"momentum must be in [0, 1). Received: momentum={config.momentum!r}.")
    _check(config.weight_decay >= 0, f"weight_decay must be >= 0. Received: weight_decay={config.weight_decay!r}.")
    _check(config.lr_schedule in recipes.LR_SCHEDULES,
           f"Unknown lr_schedule '{config.lr_schedule}'. Valid choices: {', '.join(recipes.LR_SCHEDULES)}.")
    _check(config.pad_mode in recipes.PAD_MODES,
           f"Unknown pad_mode '{config.pad_mode}'. Valid choices: {', '.join(recipes.PAD_MODES)}.")
    _check(config.lr_gamma > 0, f"lr_gamma must be > 0. Received: lr_gamma={config.lr_gamma!r}.")
    _check(config.temperature > 0, f"temperature must be > 0. Received: temperature={config.temperature!r}.")
    _check(0 <= config.alpha <= 1, f"alpha must be in [0, 1]. Received: alpha={config.alpha!r}.")
    _check(config.kd_epochs is None
           or (isinstance(config.kd_epochs, int) and not isinstance(config.kd_epochs, bool)
               and config.kd_epochs > 0),
           f"kd_epochs must be a positive integer (or unset: KD in every epoch). "
           f"Received: kd_epochs={config.kd_epochs!r}.")
    _check(config.teacher_epochs is None
           or (isinstance(config.teacher_epochs, int) and not isinstance(config.teacher_epochs, bool)
               and config.teacher_epochs > 0),
           f"teacher_epochs must be a positive integer (or unset: the run's epochs). "
           f"Received: teacher_epochs={config.teacher_epochs!r}.")
    _check(config.teacher_epochs is None or not (config.distill and is_model_file(config.teacher)),
           f"teacher_epochs applies to a teacher given by name (trained as a run of kdkeras); "
           f"{config.teacher} is a trained model file. Remove teacher_epochs.")
    if config.distill and config.kd_epochs is not None:
        _check(config.kd_epochs <= config.epochs,
               f"kd_epochs must be at most epochs ({config.epochs}). Received: kd_epochs={config.kd_epochs}.")
    _validate_method(config)
    _check(config.dropout is None or 0 <= config.dropout < 1,
           f"dropout must be in [0, 1). Received: dropout={config.dropout!r}.")
    from kdkeras.initializers import INITS

    _check(config.init in INITS, f"Unknown init '{config.init}'. Valid choices: {', '.join(INITS)}.")
    _validate_plain(config)
    for name in ("augment", "mixed_precision", "jit_compile", "precise_bn_augment", "precise_bn_every_epoch",
                 "deterministic", "download"):
        _check(isinstance(getattr(config, name), bool),
               f"{name} must be true or false. Received: {name}={getattr(config, name)!r}.")
    from kdkeras.data.specs import DATA_TUNINGS

    _check(config.data_tuning in DATA_TUNINGS,
           f"Unknown data_tuning '{config.data_tuning}'. Valid choices: {', '.join(DATA_TUNINGS)}.")
    if config.data_mirror is not None:
        from kdkeras.data.download import check_mirror

        _check(isinstance(config.data_mirror, str),
               f"data_mirror must be a URL. Received: data_mirror={config.data_mirror!r}.")
        check_mirror(config.data_mirror)
    _check(config.strategy in STRATEGIES,
           f"Unknown strategy '{config.strategy}'. Valid choices: {', '.join(STRATEGIES)}.")


def _validate_method(config: RunConfig) -> None:
    """Checks ``method``, ``method_weight`` and every method setting (:func:`kdkeras.methods.check_run_settings`)."""
    from kdkeras import methods

    methods.check_run_settings(config.method, {name: getattr(config, name) for name in METHOD_SETTING_FIELDS})
    names = methods.parse(config.method)
    _check(config.method_weight is None or config.method != "kd",
           "method_weight is not used by method=kd: its weight is alpha (--alpha).")
    _check(config.method_weight is None or len(names) == 1,
           f"method_weight is the weight of a single method; with method={config.method} give each its "
           f"<method>_weight (e.g. {names[-1]}_weight).")
    value = config.method_weight
    _check(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0),
           f"method_weight must be a number >= 0. Received: method_weight={value!r}.")
    for item in methods.all_settings():  # a list (YAML, flags) as the tuple the method reads
        if item.type is tuple and getattr(config, item.flag) is not None:
            setattr(config, item.flag, item.check(getattr(config, item.flag)))


def _validate_plain(config: RunConfig) -> None:
    """Checks ``plain`` (:func:`kdkeras.models.plain.check_plain`), ``anneal_fraction`` and their fit with ``init``."""
    from kdkeras.models.plain import check_plain

    check_plain(config.model, config.plain)
    value = config.anneal_fraction
    _check(value is None or config.plain == "anneal",
           f"anneal_fraction is a setting of plain=anneal. Received: plain={config.plain}, anneal_fraction={value!r}.")
    _check(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1),
           f"anneal_fraction must be a number in (0, 1]. Received: anneal_fraction={value!r}.")
    _check(config.init == "he" or config.plain in ("none", "anneal"),
           f"init={config.init} re-initialises the 3x3 convolutions that plain={config.plain} replaces (it starts "
           f"from its own initialisation); use init=he.")


def is_model_file(teacher: str) -> bool:
    return teacher.endswith(".keras") or os.path.sep in teacher


def recipe_defaults(model: str, distill: bool, epochs: int | None = None) -> dict:
    """What :func:`resolve` gives ``model`` when nothing (or only ``epochs``) is set.

    Args:
        model: the model name.
        distill: whether it is a KD student.
        epochs: the run's epochs: the schedule is scaled to them as
            :func:`resolve` does (``None``: the recipe's epochs).
    """
    recipe = recipes.recipe_for(model, distill=distill)
    if epochs is not None:
        recipe.update(recipes.scale_schedule(recipe, epochs), epochs=epochs)
    defaults = RunConfig(model=model, **recipe).to_dict()
    defaults["lr_milestones"] = list(defaults["lr_milestones"])
    return defaults


def teacher_config(config: RunConfig) -> RunConfig:
    """The baseline run of ``config.teacher``, with the KD run's recipe overrides.

    The teacher inherits the dataset, seed, data source, strategy and every
    shared setting that the KD run sets differently from the paper's recipe
    (e.g. ``--epochs=2``, ``--val_size``), so a smoke KD run trains a
    matching smoke teacher, and a teacher never trains on the student's
    validation images. A learning-rate schedule that only follows from the
    epochs (scaled from the recipe) is scaled again from the teacher's own
    recipe; explicit milestones or gamma are inherited. The student's own
    model settings (:data:`STUDENT_FIELDS`: ``init``) are not: the teacher
    is a plain baseline. With ``teacher_epochs`` the teacher trains that many
    epochs, on its recipe's schedule scaled to them (the student's explicit
    milestones are not inherited).
    """
    defaults = recipe_defaults(config.model, distill=True)
    scaled = recipe_defaults(config.model, distill=True, epochs=config.epochs)
    current = config.to_dict()
    always = set(NON_IDENTITY_FIELDS) | {"seed", "dataset"}
    schedule = {"lr_milestones", "lr_gamma"}
    inherited = {
        k: current[k] for k in INHERITED_FIELDS
        if k in always or (current[k] != (scaled if k in schedule else defaults)[k])
    }
    if config.teacher_epochs is not None:  # its own length: its recipe's milestones, scaled to it
        inherited["epochs"] = config.teacher_epochs
        inherited.pop("lr_milestones", None)
    return resolve({**inherited, "model": config.teacher})


def identity(config: RunConfig) -> dict:
    """Result-affecting settings that differ from the paper's recipe."""
    defaults = recipe_defaults(config.model, distill=config.distill)
    current = config.to_dict()
    skip = set(NON_IDENTITY_FIELDS) | {"model", "teacher", "seed", "dataset"}
    if not config.distill:
        skip |= set(KD_FIELDS)  # temperature/alpha do not affect a baseline
    return {k: current[k] for k in FIELDS if k not in skip and current[k] != defaults[k]}


def data_fingerprint(config: RunConfig):
    """The :class:`kdkeras.data.fingerprint.DataFingerprint` of the data ``config`` reads."""
    from kdkeras.data.fingerprint import of_config

    return of_config(config)


def _teacher_part(teacher: str) -> str:
    if is_model_file(teacher):
        stem = os.path.splitext(os.path.basename(teacher))[0]
        if stem == "model":  # <run>/model.keras: the run's name says more
            stem = os.path.basename(os.path.dirname(os.path.abspath(teacher))) or stem
        digest = hashlib.sha1(os.path.abspath(teacher).encode()).hexdigest()[:6]
        teacher = f"{stem}.{digest}"
    return f"_from_{teacher}"


def run_name(config: RunConfig, extra: dict | None = None, data=None) -> str:
    """``<model>[_from_<teacher>]-s<seed>[-<hash>]``: the name of a new run folder.

    The hash covers the result-affecting settings that differ from the
    paper's recipe (``extra``: more, e.g. a tuning search's space) and, unless
    the data is canonical (the official CIFAR archives, TFDS's build of them,
    the synthetic generator), the data's fingerprint id. ``data``: the run's
    :class:`~kdkeras.data.fingerprint.DataFingerprint` when already known
    (default: :func:`data_fingerprint`).
    """
    data = data or data_fingerprint(config)
    if data.canonical:
        return plain_run_name(config, extra)
    return data_run_name(config, extra, data)


def data_run_name(config: RunConfig, extra, data) -> str:
    """The name whose hash includes the data's id (:func:`run_name` of non-canonical data)."""
    name = config.model + (_teacher_part(config.teacher) if config.distill else "") + f"-s{config.seed}"
    fields = {**identity(config), **(extra or {}), "data": data.id}
    return f"{name}-{hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]}"


def plain_run_name(config: RunConfig, extra: dict | None = None) -> str:
    """The name without the data: canonical data's runs, and every run written before runs recorded their data.

    (A folder dataset's runs carried ``-<folder name>.<path digest>`` then.)
    """
    name = config.model + (_teacher_part(config.teacher) if config.distill else "")
    if config.dataset == "folder" and config.data_dir:
        from kdkeras.data.folder import folder_tag

        name += f"-{folder_tag(config.data_dir)}"
    name += f"-s{config.seed}"
    fields = {**identity(config), **(extra or {})}
    if fields:
        digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
        name += f"-{digest}"
    return name


def to_yaml(config: RunConfig, extra: dict | None = None) -> str:
    """YAML text of the resolved config (plus ``extra`` keys, e.g. the run name)."""
    data = config.to_dict()
    if extra:
        data = {**extra, **data}
    return yaml.safe_dump(data, sort_keys=False)
