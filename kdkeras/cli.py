"""Shared plumbing of the command-line scripts in ``scripts/``.

Importing this module first keeps TensorFlow's start-up logging quiet.
:func:`run` wraps ``absl.app.run`` so that user mistakes
(:class:`kdkeras.errors.UsageError`: bad names, bad settings, missing files
or data) end with one line on stderr and exit code 2, not a traceback. Any
other exception is an internal error: it ends with a short traceback, its
message cut short (never a tensor's contents) and a line asking to report
it, with exit code 1. Set ``KDKERAS_DEBUG=1`` to see the full traceback of
either.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

from kdkeras.errors import UsageError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's Python INFO lines (one per collective all-reduce in multi-worker runs) are not for users.
logging.getLogger("tensorflow").setLevel(logging.WARNING)


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with the native stderr muted (set ``KDKERAS_DEBUG=1`` to see it).

    Importing TensorFlow writes a dozen native log lines to stderr before its
    logging is set up, whatever ``TF_CPP_MIN_LOG_LEVEL`` says (CPU features,
    oneDNN, "could not find cuda drivers", a failed ``cuInit`` on machines
    without a GPU). A failed import still raises, and its traceback is shown.
    """
    if os.environ.get("KDKERAS_DEBUG") or "tensorflow" in sys.modules:
        return
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 2 to mute
        return
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # the driver probe, which logs its failure
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

#: Exit code of a user mistake (as argparse / absl use for bad flags).
USAGE_EXIT_CODE = 2
#: Exit code of an internal error (a bug, or a failure inside TensorFlow / Keras).
INTERNAL_EXIT_CODE = 1
#: Longest message of a one-line user error; a longer one loses its middle (" … "), so that both what
#: went wrong (its start) and what to do (its end, the usual place of the advice) stay on the line.
MAX_ERROR_CHARS = 800
#: Frames shown of an internal error's traceback (the innermost ones).
TRACEBACK_FRAMES = 5
#: Longest line of that traceback, and longest message shown of the internal error.
MAX_TRACEBACK_LINE_CHARS = 200
MAX_INTERNAL_MESSAGE_CHARS = 300

_DEBUG_VARIABLE = "KDKERAS_DEBUG"


def _prog() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv else "kdkeras"


def _cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and "…" when it is longer."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _cut_middle(text: str, limit: int) -> str:
    """``text``, or its first two thirds of ``limit``, " … " and its end, ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    head = 2 * limit // 3
    return text[:head] + " … " + text[len(text) - (limit - head - 3):]


def fail(message: str, exit_code: int = USAGE_EXIT_CODE) -> None:
    """Prints ``<script>: error: <message>`` on one line and exits (code 2 by default).

    A message longer than :data:`MAX_ERROR_CHARS` keeps its start and its end around " … ".
    """
    first_line = " ".join(str(message).split("\n")).strip()
    print(f"{_prog()}: error: {_cut_middle(first_line, MAX_ERROR_CHARS)}", file=sys.stderr)
    sys.exit(exit_code)


def _short_message(err: BaseException) -> str:
    """The first non-empty line of ``err``'s message, cut to :data:`MAX_INTERNAL_MESSAGE_CHARS`."""
    try:
        text = str(err)
    except Exception:  # a broken __str__ must not hide the error itself
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if len(lines) > 1 and len(first) < MAX_INTERNAL_MESSAGE_CHARS:
        first += " …"  # more lines follow
    return _cut(first, MAX_INTERNAL_MESSAGE_CHARS)


def internal_error_report(err: BaseException) -> str:
    """What :func:`run` prints for an internal error: a short traceback, the cut message, a hint.

    Only the last :data:`TRACEBACK_FRAMES` frames are shown, each line cut to
    :data:`MAX_TRACEBACK_LINE_CHARS`, and only the first line of the message,
    cut to :data:`MAX_INTERNAL_MESSAGE_CHARS`: an exception whose message holds
    a whole tensor prints a few lines, not its contents.
    """
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    shown = frames[-TRACEBACK_FRAMES:]
    lines = [f"Traceback (most recent call last; the last {len(shown)} of {len(frames)} frames):"]
    for entry in traceback.StackSummary.from_list(shown).format():
        lines += [_cut(line, MAX_TRACEBACK_LINE_CHARS) for line in entry.rstrip("\n").split("\n")]
    kind = type(err)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    message = _short_message(err)
    lines.append(f"{name}: {message}" if message else name)
    lines.append(f"{_prog()}: internal error (not a mistake in your command). Run again with "
                 f"{_DEBUG_VARIABLE}=1 for the full traceback, and report it with that output.")
    return "\n".join(lines)


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that flushing it at exit raises no second ``BrokenPipeError``."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _list_flags_in_help(main) -> None:
    """Makes ``--help`` list the flags of the command (its module's and those it defines through this one).

    absl's ``--help`` lists the flags of the module named by ``sys.argv[0]``;
    kdkeras's flags are defined in ``kdkeras.commands.*`` and here.
    """
    from absl import flags

    owners = {getattr(main, "__module__", None), __name__}
    for module_name, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if module_name in owners:
            for flag in module_flags:
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


#: absl's help flags: each prints the flags and exits.
_HELP_FLAGS = frozenset({"--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"})


def run(main) -> None:
    """``absl.app.run(main)``: user errors as one line (exit 2), internal errors in short (exit 1)."""
    from absl import app

    _list_flags_in_help(main)

    def guarded(argv):
        if len(argv) > 1:
            fail(f"unexpected positional arguments: {' '.join(argv[1:])}; use --flags.")
        try:
            return main(argv)
        except UsageError as err:  # a user mistake: one line, exit code 2
            if os.environ.get(_DEBUG_VARIABLE):
                raise
            fail(str(err))
        except FloatingPointError as err:  # a diverged run: not a usage error
            if os.environ.get(_DEBUG_VARIABLE):
                raise
            fail(str(err), exit_code=1)
        except app.UsageError:  # absl's own: absl prints the usage
            raise
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as `ls | head` does
            _silence_stdout()
            sys.exit(INTERNAL_EXIT_CODE)
        except Exception as err:  # anything else is an internal error: a short report, exit code 1
            if os.environ.get(_DEBUG_VARIABLE):
                raise
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:  # a disk that filled up
                where = f" while writing '{err.filename}'" if err.filename else ""
                fail(f"No space left on device{where}. Free some space, then repeat the same command: "
                     f"the run resumes from its last finished epoch.", exit_code=1)
            print(internal_error_report(err), file=sys.stderr)
            sys.exit(INTERNAL_EXIT_CODE)

    try:
        app.run(guarded)
    except SystemExit as err:
        # absl exits with 1 after printing the help it was asked for; asking for help is no failure.
        if err.code == 1 and _HELP_FLAGS.intersection(sys.argv[1:]):
            sys.exit(0)
        raise


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
        define_method_flags()
        flags.DEFINE_bool("train_teacher", True, "Train a teacher given by name first when --logdir has "
                          "no finished run of it (--notrain_teacher: fail instead).")
        flags.DEFINE_bool("teacher_data_check", True, "Refuse a --teacher=PATH.keras whose run read other data "
                          "than this run (--noteacher_data_check: distil across data on purpose).")
    else:
        flags.DEFINE_string("model", None, "Model name, e.g. wrn22x2_R_g2.")
    flags.DEFINE_string("config", None, "YAML file of settings (flags override it).")
    flags.DEFINE_string("dataset", None, "cifar100 (default), cifar10, synthetic or folder (your own images "
                        "in --data_dir).")
    flags.DEFINE_string("data_dir", None, "Prepared TFDS data folder; with --dataset=folder, the image folder "
                        "(train/<class>/..., test/<class>/... or val/<class>/...).")
    flags.DEFINE_string("archive", None, "Original cifar-100-python.tar.gz / cifar-10-python.tar.gz or its folder.")
    define_download_flags()
    flags.DEFINE_integer("epochs", None, "Training epochs (paper: 120; MobileNetV2 KD students 300).")
    flags.DEFINE_integer("batch_size", None, "Global batch size (paper: 128).")
    flags.DEFINE_float("lr", None, "Initial learning rate (paper: 0.1).")
    flags.DEFINE_float("momentum", None, "SGD momentum (paper: 0.9).")
    flags.DEFINE_float("weight_decay", None, "Coupled (PyTorch-style) weight decay (paper: 4e-4).")
    flags.DEFINE_string("lr_schedule", None, "step, exponential or constant (paper: per family).")
    flags.DEFINE_list("lr_milestones", None, "Epochs at which a step schedule multiplies lr by lr_gamma.")
    flags.DEFINE_float("lr_gamma", None, "Learning-rate factor (WRN 0.2, ResNet-18 0.1, MobileNetV2 0.98/epoch).")
    flags.DEFINE_float("dropout", None, "WRN dropout rate (paper: 0.3).")
    flags.DEFINE_string("init", None, "Kernel initialisation of the model: he (default: he_normal) or dirac "
                        "(every 3x3 convolution starts at the identity; a teacher trained on the way keeps he).")
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
    flags.DEFINE_bool("deterministic", None, "Deterministic TensorFlow ops: the same command gives the same "
                      "weights, bit for bit, on the same machine (slower; see docs/training.md).")
    flags.DEFINE_string("data_tuning", None, "How tf.data spreads its work: auto (default: autotune with a GPU "
                        "or 8+ cores, else fixed), fixed (best on small CPUs) or autotune.")
    define_instrument_flags()
    flags.DEFINE_string("logdir", "logs", "Root folder of all runs.")


def define_method_flags() -> None:
    """Defines ``--method``, ``--method_weight`` and every method's own flags, from the methods' declarations."""
    from absl import flags

    from kdkeras import methods

    flags.DEFINE_string("method", None, f"Distillation method: {', '.join(methods.list_methods())}, or several "
                        "joined by + (e.g. kd+at); default kd, the paper's Hinton KD (docs/methods.md).")
    flags.DEFINE_float("method_weight", None, "Weight of a single method other than kd (default: the method's "
                       "own); the same as its --<method>_weight. kd's weight is --alpha.")
    define = {float: flags.DEFINE_float, int: flags.DEFINE_integer, str: flags.DEFINE_string,
              bool: flags.DEFINE_bool, tuple: flags.DEFINE_list}
    for item in methods.all_settings():
        default = ",".join(item.default) if isinstance(item.default, tuple) else item.default
        define[item.type](item.flag, None, f"{item.method}: {item.help} (default {default}).")


def define_download_flags() -> None:
    """Defines ``--download`` / ``--nodownload`` and ``--data_mirror`` (both default to None: not set)."""
    from absl import flags

    flags.DEFINE_bool("download", None, "Download CIFAR into Keras's cache (~/.keras/datasets) when neither "
                      "--archive nor a prepared TFDS folder has it (default; --nodownload: fail instead).")
    flags.DEFINE_string("data_mirror", None, "Base URL to download the CIFAR archive from instead of "
                        "https://www.cs.toronto.edu/~kriz/ (default: $KDKERAS_DATA_MIRROR); same checksum.")


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
        raise UsageError(f"--gradient_flow_epochs must be >= 0. Received: {values.gradient_flow_epochs}.")
    if values.gradient_flow_every < 1:
        raise UsageError(f"--gradient_flow_every must be a positive integer. Received: {values.gradient_flow_every}.")


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
