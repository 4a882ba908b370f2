"""Shared plumbing of the command-line scripts in ``scripts/``.

Importing this module first keeps TensorFlow's start-up logging quiet.
:func:`run` wraps ``absl.app.run`` so that user mistakes (bad names, bad
settings, missing data) end with one line on stderr and exit code 2, not a
traceback. Set ``KDKERAS_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import errno
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Exit code of a user mistake (as argparse / absl use for bad flags).
USAGE_EXIT_CODE = 2


def fail(message: str, exit_code: int = USAGE_EXIT_CODE) -> None:
    """Prints ``<script>: error: <message>`` on one line and exits (code 2 by default)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv else "kdkeras"
    first_line = " ".join(str(message).split("\n")).strip()
    print(f"{prog}: error: {first_line}", file=sys.stderr)
    sys.exit(exit_code)


def run(main) -> None:
    """``absl.app.run(main)``, turning user errors into one-line messages."""
    from absl import app

    def guarded(argv):
        if len(argv) > 1:
            fail(f"unexpected positional arguments: {' '.join(argv[1:])}; use --flags.")
        try:
            return main(argv)
        except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
            if os.environ.get("KDKERAS_DEBUG"):
                raise
            fail(str(err))
        except FloatingPointError as err:  # a diverged run: not a usage error
            if os.environ.get("KDKERAS_DEBUG"):
                raise
            fail(str(err), exit_code=1)
        except OSError as err:  # a disk that filled up during the run
            if err.errno != errno.ENOSPC or os.environ.get("KDKERAS_DEBUG"):
                raise
            where = f" while writing '{err.filename}'" if err.filename else ""
            fail(f"No space left on device{where}. Free some space, then repeat the same command: "
                 f"the run resumes from its last finished epoch.", exit_code=1)

    app.run(guarded)


def define_run_flags(distill: bool) -> None:
    """Defines the flags shared by ``train.py`` and ``distill.py`` (all default to None).

    ``None`` means "not set": the paper's recipe (or ``--config``) decides.
    """
    from absl import flags

    if distill:
        flags.DEFINE_string("student", None, "Student model name, e.g. wrn22x10_NR_G4.")
        flags.DEFINE_string("teacher", None, "Teacher: a model name (its finished run in --logdir is "
                            "used, or trained first) or a path to a .keras file.")
        flags.DEFINE_float("temperature", None, "KD temperature T (paper: 4).")
        flags.DEFINE_float("alpha", None, "Weight of the KD term (paper: 0.9).")
        flags.DEFINE_integer("kd_epochs", None, "KD only in the first N epochs, then hard targets "
                             "only (early-hint ablation; default: KD in every epoch).")
        flags.DEFINE_bool("train_teacher", True, "Train a teacher given by name first when --logdir has "
                          "no finished run of it (--notrain_teacher: fail instead).")
    else:
        flags.DEFINE_string("model", None, "Model name, e.g. wrn22x2_R_g2.")
    flags.DEFINE_string("config", None, "YAML file of settings (flags override it).")
    flags.DEFINE_string("dataset", None, "cifar100 (default), cifar10 or synthetic.")
    flags.DEFINE_string("data_dir", None, "Prepared TFDS data folder.")
    flags.DEFINE_string("archive", None, "Original cifar-100-python.tar.gz / cifar-10-python.tar.gz or its folder.")
    flags.DEFINE_integer("epochs", None, "Training epochs (paper: 120; MobileNetV2 KD students 300).")
    flags.DEFINE_integer("batch_size", None, "Global batch size (paper: 128).")
    flags.DEFINE_float("lr", None, "Initial learning rate (paper: 0.1).")
    flags.DEFINE_float("momentum", None, "SGD momentum (paper: 0.9).")
    flags.DEFINE_float("weight_decay", None, "Coupled (PyTorch-style) weight decay (paper: 4e-4).")
    flags.DEFINE_string("lr_schedule", None, "step, exponential or constant (paper: per family).")
    flags.DEFINE_list("lr_milestones", None, "Epochs at which a step schedule multiplies lr by lr_gamma.")
    flags.DEFINE_float("lr_gamma", None, "Learning-rate factor (WRN 0.2, ResNet-18 0.1, MobileNetV2 0.98/epoch).")
    flags.DEFINE_float("dropout", None, "WRN dropout rate (paper: 0.3).")
    flags.DEFINE_bool("augment", None, "Pad/crop/flip training images (default; --noaugment: off).")
    flags.DEFINE_integer("seed", None, "Random seed (default 0).")
    flags.DEFINE_integer("train_size", None, "Use this many training images (a seeded class-balanced subset).")
    flags.DEFINE_integer("test_size", None, "Use this many test images.")
    flags.DEFINE_integer("val_size", None, "Hold out this many training images as a validation split "
                         "(class-balanced, seeded; never trained on): val_* columns, best-validation-epoch "
                         "results. Default: none, the paper's protocol.")
    flags.DEFINE_integer("precise_bn", None, "Recompute the BatchNorm statistics over N training batches after "
                         "training (augmentation and dropout off) and report the accuracy with them too.")
    flags.DEFINE_bool("precise_bn_every_epoch", None, "With --precise_bn: also measure the precise-BN accuracy "
                      "after every epoch (training is unchanged).")
    flags.DEFINE_string("strategy", None, "auto, mirrored, multiworker or none (default auto).")
    flags.DEFINE_integer("steps_per_execution", None, "Training steps per compiled call (default 1).")
    flags.DEFINE_bool("mixed_precision", None, "mixed_float16 compute, for GPUs (KD loss stays float32).")
    flags.DEFINE_bool("jit_compile", None, "Compile the train step with XLA (GPU; slow on CPU).")
    define_instrument_flags()
    flags.DEFINE_string("logdir", "logs", "Root folder of all runs.")


def run_config_from_flags(distill: bool):
    """Resolves the :class:`kdkeras.config.RunConfig` of the defined flags."""
    from absl import flags

    from kdkeras import config as config_lib

    values = flags.FLAGS
    settings = config_lib.load_yaml(values.config) if values.config else {}
    for name in config_lib.FIELDS:
        flag = "student" if (distill and name == "model") else name
        if flag in values and values[flag].value is not None:
            settings[name] = values[flag].value
    if settings.get("lr_milestones") is not None:
        try:
            settings["lr_milestones"] = [int(m) for m in settings["lr_milestones"]]
        except (TypeError, ValueError):
            fail(f"lr_milestones must be integers (epochs). Received: {settings['lr_milestones']!r}.")
    if distill and not settings.get("teacher"):
        fail("No teacher given: pass --teacher=NAME (e.g. wrn22x10_R_g2) or --teacher=PATH.keras.")
    if not settings.get("model"):
        fail(f"No model given: pass --{'student' if distill else 'model'}=NAME, e.g. wrn22x2_NR_g16.")
    return config_lib.resolve(settings)


def define_instrument_flags() -> None:
    """Defines ``--gradient_flow_epochs`` and ``--gradient_flow_every`` (train, distill, grid)."""
    from absl import flags

    flags.DEFINE_integer("gradient_flow_epochs", 0, "Log per-layer gradient norms and the loss to "
                         "TensorBoard during the first N epochs (see docs/analysis.md; 0: off).")
    flags.DEFINE_integer("gradient_flow_every", 10, "Steps between two gradient-flow measurements.")


def check_instrument_flags() -> None:
    """Raises a one-line ``ValueError`` for bad ``--gradient_flow_*`` values."""
    from absl import flags

    values = flags.FLAGS
    if values.gradient_flow_epochs < 0:
        raise ValueError(f"--gradient_flow_epochs must be >= 0. Received: {values.gradient_flow_epochs}.")
    if values.gradient_flow_every < 1:
        raise ValueError(f"--gradient_flow_every must be a positive integer. Received: {values.gradient_flow_every}.")


def instrument_callbacks(config, run_directory: str) -> list:
    """The instrument callbacks the flags ask for (``--gradient_flow_epochs``) for one run."""
    from absl import flags

    check_instrument_flags()
    values = flags.FLAGS
    epochs = values.gradient_flow_epochs
    if not epochs:
        return []
    from kdkeras.analysis.gradients import GradientFlow

    return [GradientFlow.for_run(config, run_directory, epochs=epochs, every=values.gradient_flow_every)]


def analysis_callbacks(config) -> list:
    """:func:`instrument_callbacks` for the run of ``config`` in ``--logdir``."""
    from absl import flags

    from kdkeras import config as config_lib

    return instrument_callbacks(config, config_lib.run_dir(config, flags.FLAGS.logdir))
