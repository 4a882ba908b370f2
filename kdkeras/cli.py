"""Shared plumbing of the command-line scripts in ``scripts/``.

Importing this module first keeps TensorFlow's start-up logging quiet: it
sets ``TF_CPP_MIN_LOG_LEVEL`` and mutes the native stderr while TensorFlow
is first imported, wherever a command first needs it (its flags, ``--help``
and a mistake in them are answered without TensorFlow). :func:`run` wraps
``absl.app.run`` so that user mistakes
(:class:`kdkeras.errors.UsageError`: bad names, bad settings, missing files
or data) end with one line on stderr and exit code 2, not a traceback. Any
other exception is an internal error: it ends with a short traceback, its
message cut short (never a tensor's contents) and a line asking to report
it, with exit code 1. Set ``KDKERAS_DEBUG=1`` to see the full traceback of
either.

Every flag of the commands that more than one of them takes is defined here,
once: a run's settings from the fields of :class:`kdkeras.config.RunConfig`
(:func:`define_run_flags`, :func:`define_run_flag`), the others by one
``define_<flag>_flag`` function each.
"""

from __future__ import annotations

import errno
import functools
import importlib.abc
import logging
import os
import re
import sys

from kdkeras.errors import UsageError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's Python INFO lines (one per collective all-reduce in multi-worker runs) are not for users.
logging.getLogger("tensorflow").setLevel(logging.WARNING)


class _MutedStderr:
    """Points file descriptor 2 at /dev/null until the block ends (nothing when there is no descriptor 2)."""

    def __enter__(self):
        self.saved = None
        try:
            sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):  # nothing to point it at
            return self
        try:
            self.saved = os.dup(2)
        except OSError:  # no file descriptor 2 to mute
            os.close(devnull)
            return self
        self.devnull = devnull
        os.dup2(devnull, 2)
        return self

    def __exit__(self, *_):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
            os.close(self.devnull)


class _QuietTensorFlowLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with the native stderr muted, then the GPU driver probe, muted too."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # the real loader, for whoever reads it later
        with _MutedStderr():
            self.loader.exec_module(module)
            try:
                module.config.list_physical_devices("GPU")  # the driver probe, which logs its failure
            except Exception:  # noqa: BLE001  (a probe that fails must not fail the import; the run will say)
                pass


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Mutes TensorFlow's native start-up lines wherever a command first imports it (set ``KDKERAS_DEBUG=1`` to
    see them).

    Importing TensorFlow writes a dozen native log lines to stderr before its
    logging is set up, whatever ``TF_CPP_MIN_LOG_LEVEL`` says (CPU features,
    oneDNN, "could not find cuda drivers", a failed ``cuInit`` on machines
    without a GPU). A failed import still raises, and its traceback is shown.
    """

    #: Set at the first import of TensorFlow: the finder stays in ``sys.meta_path`` (removing it while another
    #: thread walks that list could make that thread miss a finder) and answers nothing from then on.
    done = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.done or os.environ.get(_DEBUG_VARIABLE):
            return None
        self.done = True
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietTensorFlowLoader(spec.loader)
                return spec
        return None


# TensorFlow is imported where a command first needs it, not here: a command's flags, its --help and a mistake
# in them need no TensorFlow, and are answered at once. Wherever it is imported first, it is quiet.
if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())

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


def flag_error_message(err: Exception) -> str:
    """One line for a flag that did not parse: an unknown name (with absl's suggestions) or a bad value."""
    from absl import flags

    if isinstance(err, flags.UnrecognizedFlagError):
        message = f"unknown flag --{err.flagname}"
        suggestions = re.search(r"Did you mean: (.+) \?$", str(err))
        if suggestions:
            names = [name.strip() for name in suggestions.group(1).split(",")]
            message += f"; did you mean {' or '.join('--' + name for name in names)}?"
    else:
        message = " ".join(str(err).split())
        boolean = re.match(r"flag --(\w+)=(.*?): \('Non-boolean argument to boolean flag'", message)
        negated = re.match(r"--no(\w+)=(.*) does not take an argument$", message)
        number = re.match(r"flag --(\w+)=(.*?): (invalid literal for int\(\)|could not convert string to float)",
                          message)
        if boolean:  # absl words this one as a tuple
            name, value = boolean.groups()
            message = (f"flag --{name}={value}: not a boolean; pass --{name} or --no{name} "
                       f"(or --{name}=true / false)")
        elif negated:
            name, value = negated.groups()
            message = f"flag --no{name}={value}: --no{name} takes no value; pass --no{name} or --{name}=false"
        elif number:
            name, value, kind = number.groups()
            message = f"flag --{name}={value}: not {'an integer' if 'int' in kind else 'a number'}"
    return f"{message} (--helpshort lists this command's flags)."


def _parse_flags(argv):
    """absl's flag parsing, with a flag that does not parse reported as a user mistake (one line, exit 2)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except (flags.Error, ValueError) as err:  # absl raises a ValueError for --noFLAG=value
        fail(flag_error_message(err))


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
        app.run(guarded, flags_parser=_parse_flags)
    except SystemExit as err:
        # absl exits with 1 after printing the help it was asked for; asking for help is no failure.
        if err.code == 1 and _HELP_FLAGS.intersection(sys.argv[1:]):
            sys.exit(0)
        raise


# ------------------------------------------------------------------ flags
# A run's settings get their flags from the fields of kdkeras.config.RunConfig (type, help: declared there);
# the other flags that several commands share, from one function each below. A command passes its own
# default or help text where its flag means something of its own; it defines only the flags no other takes.

#: absl's ``DEFINE_*`` of each setting type (a RunConfig field's annotation without its ``| None``).
_DEFINE_OF_TYPE = {float: "DEFINE_float", int: "DEFINE_integer", str: "DEFINE_string", bool: "DEFINE_bool",
                   tuple: "DEFINE_list"}
#: The help of ``--student``, distill.py's name of the ``model`` setting (``--model`` in train.py).
_STUDENT_HELP = "Student model name, e.g. wrn22x10_NR_G4."


def _run_flag_name(field: str, distill: bool) -> str:
    """The flag of a run setting: its name, but ``--student`` for distill.py's ``model``."""
    return "student" if distill and field == "model" else field


@functools.cache
def run_flag_declarations() -> dict:
    """``{field: (type, help)}`` of every :class:`kdkeras.config.RunConfig` field, as its flag defines it.

    The type (``float``, ``int``, ``str``, ``bool`` or ``tuple``: a list flag) is the field's annotation, as a
    method setting's (:func:`kdkeras.methods.declared_settings`); the help is its metadata's.
    """
    import dataclasses
    import typing

    from kdkeras import config as config_lib

    hints = typing.get_type_hints(config_lib.RunConfig)
    out = {}
    for field in dataclasses.fields(config_lib.RunConfig):
        hint = hints[field.name]
        if type(None) in typing.get_args(hint):  # X | None: X
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        kind = tuple if hint is tuple or typing.get_origin(hint) is tuple else hint
        out[field.name] = (kind, field.metadata.get("help", ""))
    return out


def define_run_flag(name: str, *, default=None, help: str | None = None, choices=None,
                    flag: str | None = None) -> None:
    """Defines the flag of the :class:`kdkeras.config.RunConfig` field ``name``, of the field's type and help.

    Args:
        name: the field.
        default: the flag's default; ``None`` (as in train.py and distill.py): not set, the recipe or
            ``--config`` decides.
        help: the command's own help text (default: the field's).
        choices: a string setting's valid values, for a command that takes them as an enum flag.
        flag: the flag's name when it is not the field's (``--student``).
    """
    kind, declared = run_flag_declarations()[name]
    _define(flag or name, kind, default, declared if help is None else help, choices)


def _define(name: str, kind: type, default, help: str, choices=None) -> None:
    """Defines the flag ``name`` of a setting of type ``kind`` (a string one with ``choices``: an enum flag)."""
    from absl import flags

    if choices is not None:
        flags.DEFINE_enum(name, default, list(choices), help)
    else:
        getattr(flags, _DEFINE_OF_TYPE[kind])(name, default, help)


def define_run_flags(distill: bool = False, *, only=None, help: dict | None = None) -> None:
    """Defines the flags of a run: ``train.py`` (``distill=False``), ``distill.py`` and ``tune.py``.

    One flag per :class:`kdkeras.config.RunConfig` field, each defaulting to ``None``: "not set", the paper's
    recipe (or ``--config``) decides. The KD settings (:data:`kdkeras.config.KD_FIELDS`: ``--teacher``,
    ``--method``, every method's settings, ...) are distill.py's only, and its model is ``--student``
    (``--model`` in train.py). Then ``--train_teacher`` and ``--teacher_data_check`` (distill.py),
    ``--config``, ``--logdir`` and the instrument flags.

    Args:
        distill: the flags of distill.py.
        only: define the flags of these fields alone (under their own names), for a command that takes some
            of a run's settings (grid.py).
        help: ``{field: the command's own help text}``.
    """
    from absl import flags

    from kdkeras import config as config_lib

    help = help or {}
    if only is not None:
        for name in only:
            define_run_flag(name, help=help.get(name))
        return
    for name in config_lib.FIELDS:
        if name in config_lib.KD_FIELDS and not distill:
            continue
        flag = _run_flag_name(name, distill)
        define_run_flag(name, flag=flag, help=help.get(name, _STUDENT_HELP if flag == "student" else None))
    if distill:
        flags.DEFINE_bool("train_teacher", True, "Train a teacher given by name first when --logdir has "
                          "no finished run of it (--notrain_teacher: fail instead).")
        flags.DEFINE_bool("teacher_data_check", True, "Refuse a --teacher=PATH.keras whose run read other data "
                          "than this run (--noteacher_data_check: distil across data on purpose).")
    define_config_flag("YAML file of settings (flags override it).")
    define_instrument_flags()
    define_logdir_flag("Root folder of all runs.")


def define_config_flag(help: str) -> None:
    """Defines ``--config``, a YAML file (train, distill, tune: a run's settings; grid: a grid)."""
    from absl import flags

    flags.DEFINE_string("config", None, help)


def define_logdir_flag(help: str) -> None:
    """Defines ``--logdir``, the root folder of all runs (default ``logs``)."""
    from absl import flags

    flags.DEFINE_string("logdir", "logs", help)


def define_table_flag(help: str, *, switch: bool = False) -> None:
    """Defines ``--table``: a paper table's number (grid), or with ``switch`` an on/off flag (profile)."""
    _define("table", bool if switch else int, False if switch else None, help)


def define_mode_flag(default: str, help: str, choices=None) -> None:
    """Defines ``--mode``, what a command measures or draws (an enum flag when ``choices`` are given)."""
    _define("mode", str, default, help, choices)


def define_split_flag(default: str, help: str, choices=None) -> None:
    """Defines ``--split``, the data split an analysis reads (an enum flag when ``choices`` are given)."""
    _define("split", str, default, help, choices)


def define_run_folder_flag(help: str) -> None:
    """Defines ``--run``, one finished run folder to analyse."""
    from absl import flags

    flags.DEFINE_string("run", None, help)


def define_run_folders_flag(help: str) -> None:
    """Defines ``--runs``, run folders to analyse together (a list)."""
    from absl import flags

    flags.DEFINE_list("runs", None, help)


def define_compare_flag(help: str) -> None:
    """Defines ``--compare``, run folders to draw side by side (a list)."""
    from absl import flags

    flags.DEFINE_list("compare", None, help)


def define_output_flag(help: str) -> None:
    """Defines ``--output``, the file an analysis writes (default ``None``: its own place)."""
    from absl import flags

    flags.DEFINE_string("output", None, help)


def define_num_classes_flag(help: str) -> None:
    """Defines ``--num_classes`` (default 100, CIFAR-100), the classes of a model a tool builds."""
    from absl import flags

    flags.DEFINE_integer("num_classes", 100, help, lower_bound=1)


def run_config_from_flags(distill: bool):
    """Resolves the :class:`kdkeras.config.RunConfig` of the defined flags."""
    from absl import flags

    from kdkeras import config as config_lib

    values = flags.FLAGS
    settings = config_lib.load_yaml(values.config) if values.config else {}
    for name in config_lib.FIELDS:
        flag = _run_flag_name(name, distill)
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

    from kdkeras.training.run_folder import run_dir

    return instrument_callbacks(config, run_dir(config, flags.FLAGS.logdir))
