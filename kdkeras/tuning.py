"""Hyper-parameter search of KD runs (temperature, alpha, learning rate) with KerasTuner.

One search tunes the KD settings of one student/teacher pair under one
recipe (the same settings as :func:`kdkeras.training.train_and_evaluate`).
Every trial is built and trained by the run pipeline's own steps
(:func:`kdkeras.training.make_run_data`, :func:`~kdkeras.training.build_run_model`,
:func:`~kdkeras.training.training_callbacks`), with the trial's temperature
``T``, ``alpha`` and learning rate, so every data and training setting
(``--noaugment``, ``--kd_epochs``, ``--dropout``, ...) applies to trials
exactly as to a run. A trial is scored by its best ``val_accuracy`` on a
**validation split** held out of the training images (``--val_size``;
default 10% of them). The search never evaluates the test split: the best
trial's test accuracy is measured once, after the search, on its
validation-selected checkpoint, and reported separately in ``best.json``::

    <logdir>/<dataset>/tune/<student>_from_<teacher>-s<seed>[-<hash>]/
        oracle.json, tuner0.json   KerasTuner's search state
        trial_<id>/trial.json      one trial: values, status, score
        trial_<id>/history.csv     its epochs (history-<i>.csv: execution i > 0)
        trial_<id>/checkpoint.weights.h5  its best epoch (distiller weights)
        tensorboard/<id>/          TensorBoard logs with the HParams dashboard
        best.json                  best values, score and the trials table

The ``-<hash>`` covers the recipe settings that differ from the paper's (as
:func:`kdkeras.config.run_name`) plus a non-default search space, tuner or
``executions_per_trial``, so a different search never reuses another's
trials. The search is resumable: repeating the command reloads the folder,
never repeats a finished trial, reruns an interrupted one from its start, and
a larger ``max_trials`` adds trials.

Each execution ``i`` of a trial is the run with seed ``seed + i``: its
datasets and the student's initial weights come from that seed, so the
trials of a search share them and differ only in the tuned values, and a
trial's first epoch equals the first epoch of ``distill.py`` with the same
settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import numbers
import os
import shlex

import keras
import keras_tuner

from kdkeras import config as config_lib
from kdkeras import recipes
from kdkeras.errors import UsageError

#: Search algorithms: KerasTuner's ``BayesianOptimization`` and ``Hyperband``.
TUNERS = ("bayesian", "hyperband")
#: The tuned settings (names of :class:`kdkeras.config.RunConfig` fields).
TUNED = ("temperature", "alpha", "lr")
#: Default ranges: ``T`` around the paper's 4, all of ``alpha``, lr around 0.1.
DEFAULT_RANGES = {"temperature": (1.0, 20.0), "alpha": (0.0, 1.0), "lr": (0.02, 0.5)}
#: How each range is sampled.
SAMPLING = {"temperature": "log", "alpha": "linear", "lr": "log"}
OBJECTIVE = "val_accuracy"
#: Validation split of a search without ``--val_size``: this fraction of the training images.
DEFAULT_VAL_FRACTION = 0.1
TUNE_DIR = "tune"
BEST_FILE = "best.json"
TENSORBOARD_DIR = "tensorboard"
_LABELS = {"temperature": "T", "alpha": "alpha", "lr": "lr"}


def _print(message):
    print(message, flush=True)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The values a search may give ``temperature``, ``alpha`` and ``lr``.

    Each attribute is either a ``(min, max)`` range, which is tuned (``T``
    and ``lr`` sampled on a log scale, ``alpha`` linearly), or one number,
    which fixes that setting for every trial.

    Attributes:
        temperature: range or value of the KD temperature (> 0).
        alpha: range or value of the KD weight, within ``[0, 1]``.
        lr: range or value of the initial learning rate (> 0).

    Raises:
        ValueError: on a bad range (``min >= max``, out of bounds, not two
            numbers) or when every setting is fixed.
    """

    temperature: float | tuple[float, float] = DEFAULT_RANGES["temperature"]
    alpha: float | tuple[float, float] = DEFAULT_RANGES["alpha"]
    lr: float | tuple[float, float] = DEFAULT_RANGES["lr"]

    def __post_init__(self):
        for name in TUNED:
            object.__setattr__(self, name, _check_space_entry(name, getattr(self, name)))
        if not self.tuned:
            raise UsageError("Nothing to tune: temperature, alpha and lr are all fixed; give at least "
                             "one of them a MIN,MAX range.")

    @property
    def tuned(self) -> tuple[str, ...]:
        """Names of the settings that the search varies."""
        return tuple(name for name in TUNED if isinstance(getattr(self, name), tuple))

    def to_dict(self) -> dict:
        """``{name: {"min", "max", "sampling"}}`` for ranges, ``{name: {"fixed": v}}`` otherwise."""
        out = {}
        for name in TUNED:
            value = getattr(self, name)
            if isinstance(value, tuple):
                out[name] = {"min": value[0], "max": value[1], "sampling": SAMPLING[name]}
            else:
                out[name] = {"fixed": value}
        return out


def _check_space_entry(name, value):
    """A validated range (tuple of two floats) or fixed value (float)."""
    positive = name != "alpha"
    bounds = "> 0" if positive else "in [0, 1]"

    def ok(v):
        return v > 0 if positive else 0 <= v <= 1

    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(_is_number(v) for v in value):
            raise UsageError(f"{name} range must be two numbers MIN,MAX. Received: {name}={value!r}.")
        low, high = float(value[0]), float(value[1])
        if not (ok(low) and ok(high)):
            raise UsageError(f"{name} range must lie {bounds}. Received: {name}={low:g},{high:g}.")
        if low >= high:
            raise UsageError(f"{name} range needs MIN < MAX (give one value to fix it). "
                             f"Received: {name}={low:g},{high:g}.")
        return (low, high)
    if not _is_number(value):
        raise UsageError(f"{name} must be a number or a MIN,MAX range. Received: {name}={value!r}.")
    if not ok(value):
        raise UsageError(f"{name} must be {bounds}. Received: {name}={value!r}.")
    return float(value)


def parse_range(text: str | None, name: str):
    """Parses a ``--<name>_range`` flag: ``"MIN,MAX"`` (tuned) or ``"VALUE"`` (fixed).

    Args:
        text: the flag's text; ``None`` gives the default range.
        name: ``temperature``, ``alpha`` or ``lr``.

    Returns:
        A ``(min, max)`` tuple or a float, validated as in :class:`SearchSpace`.

    Raises:
        ValueError: one line naming the flag.
    """
    if name not in TUNED:
        raise UsageError(f"Unknown tuned setting '{name}'. Valid choices: {', '.join(TUNED)}.")
    if text is None:
        return DEFAULT_RANGES[name]
    parts = [p.strip() for p in str(text).split(",")]
    try:
        numbers_ = [float(p) for p in parts]
    except ValueError:
        numbers_ = None
    if numbers_ is None or len(numbers_) not in (1, 2) or not all(math.isfinite(v) for v in numbers_):
        raise UsageError(f"--{name}_range must be MIN,MAX (or one value to fix it). Received: '{text}'.")
    try:
        return _check_space_entry(name, tuple(numbers_) if len(numbers_) == 2 else numbers_[0])
    except ValueError as err:
        raise UsageError(f"--{name}_range: {err}")


def check_search_settings(tuner: str, max_trials, executions_per_trial) -> None:
    """Raises a one-line ``ValueError`` for an unknown tuner or a bad trial count."""
    if tuner not in TUNERS:
        raise UsageError(f"Unknown tuner '{tuner}'. Valid choices: {', '.join(TUNERS)}.")
    for name, value in (("max_trials", max_trials), ("executions_per_trial", executions_per_trial)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive integer. Received: {name}={value!r}.")


def with_validation(config: config_lib.RunConfig) -> config_lib.RunConfig:
    """``config`` with a validation split: its own ``val_size``, else 10% of its training images.

    Without ``train_size``, the size of the dataset's training split is read
    from the data (the archive or TFDS folder of ``config``).
    """
    if config.val_size is not None:
        return config
    total = config.train_size
    if total is None:
        from kdkeras.data import split_size

        total = split_size(config.dataset, "train", data_dir=config.data_dir, archive=config.archive,
                           download=config.download, mirror=config.data_mirror)
    return dataclasses.replace(config, val_size=max(1, round(total * DEFAULT_VAL_FRACTION)))


def search_config(config: config_lib.RunConfig) -> config_lib.RunConfig:
    """``config`` with a validation split (:func:`with_validation`) and the tuned settings at the recipe's values.

    The search folder's name and the teacher run (which inherits the
    student's non-recipe settings, ``lr`` and ``val_size`` included) must not
    depend on values that the search varies; the teacher never trains on the
    validation images.
    """
    recipe = recipes.recipe_for(config.model, distill=True)
    return dataclasses.replace(with_validation(config), **{name: recipe[name] for name in TUNED})


def tune_name(config: config_lib.RunConfig, space: SearchSpace | None = None, tuner: str = "bayesian",
              executions_per_trial: int = 1) -> str:
    """``<student>_from_<teacher>-s<seed>[-<hash>]`` of a search.

    The hash covers the recipe settings that differ from the paper's (as in
    :func:`kdkeras.config.run_name`, the tuned ones excluded) and the search
    settings that differ from the defaults (space, tuner, executions per
    trial); ``max_trials`` is not part of it, so raising it continues a search.
    """
    if not config.distill:
        raise UsageError("Tuning needs a teacher: pass --teacher=NAME or --teacher=PATH.keras.")
    space = space or SearchSpace()
    search = {}
    if space != SearchSpace():
        search["search_space"] = space.to_dict()
    if tuner != TUNERS[0]:
        search["tuner"] = tuner
    if executions_per_trial != 1:
        search["executions_per_trial"] = executions_per_trial
    return config_lib.run_name(search_config(config), extra=search)


def tune_dir(config: config_lib.RunConfig, logdir: str, space: SearchSpace | None = None,
             tuner: str = "bayesian", executions_per_trial: int = 1) -> str:
    """``<logdir>/<dataset>/tune/<tune name>``: the search's KerasTuner project folder."""
    return os.path.join(logdir, config.dataset, TUNE_DIR, tune_name(config, space, tuner, executions_per_trial))


def teacher_location(config: config_lib.RunConfig, logdir: str) -> str:
    """Where the search's teacher comes from: its ``.keras`` file or its baseline run folder."""
    if config_lib.is_model_file(config.teacher):
        return config.teacher
    return config_lib.run_dir(config_lib.teacher_config(search_config(config)), logdir)


class KDHyperModel(keras_tuner.HyperModel):
    """Builds and trains one KD trial with the run pipeline's own steps.

    ``build(hp)`` declares ``temperature``, ``alpha`` and ``lr`` (ranges as
    ``hp.Float``, fixed values as ``hp.Fixed``) and returns what
    :func:`kdkeras.training.build_run_model` builds for the run with the
    trial's values: a compiled :class:`kdkeras.distiller.Distiller` of a fresh
    student and the teacher. ``fit`` trains it on the run's training split
    (:func:`kdkeras.training.make_run_data`, every data setting applied) with
    the run's training callbacks (:func:`kdkeras.training.training_callbacks`,
    without the test split), validated on the run's validation split.

    Args:
        config: the run's resolved :class:`kdkeras.config.RunConfig`, with a
            ``val_size`` (see :func:`with_validation`); its ``temperature``,
            ``alpha`` and ``lr`` are ignored: ``space`` decides them.
        teacher: the teacher ``keras.Model``, or a function returning it
            (called on the first ``build``).
        space: the :class:`SearchSpace` (default: :data:`DEFAULT_RANGES`).
        name: the hypermodel's name.

    Attributes:
        execution: index of the trial's current execution; the data and the
            student's weights use ``config.seed + execution``.
        history_path: where ``fit`` writes the trial's ``history.csv``
            (``None``: nowhere).

    Raises:
        ValueError: ``config`` has no validation split.
    """

    def __init__(self, config, teacher, *, space=None, name="kd_distiller"):
        super().__init__(name=name)
        if config.val_size is None:
            raise UsageError("A tuning trial needs a validation split (config.val_size); the test split is "
                             "never used to select settings. See kdkeras.tuning.with_validation.")
        self.config = config
        self.space = space or SearchSpace()
        self._teacher = teacher
        self.execution = 0
        self.history_path = None
        self._data = None

    @property
    def teacher(self):
        """The teacher model (loaded on first access when given as a function)."""
        if callable(self._teacher) and not isinstance(self._teacher, keras.Model):
            self._teacher = self._teacher()
        return self._teacher

    @property
    def seed(self) -> int:
        """Seed of the current execution: ``config.seed + execution``."""
        return self.config.seed + self.execution

    def declare_hyperparameters(self, hp):
        """Registers the search space in ``hp``; returns ``{name: current value}``."""
        values = {}
        for name in TUNED:
            entry = getattr(self.space, name)
            if isinstance(entry, tuple):
                paper = recipes.recipe_for(self.config.model, distill=True)[name]
                default = paper if entry[0] <= paper <= entry[1] else entry[0]
                values[name] = hp.Float(name, entry[0], entry[1], sampling=SAMPLING[name], default=default)
            else:
                values[name] = hp.Fixed(name, entry)
        return values

    def trial_config(self, hp) -> config_lib.RunConfig:
        """The run that the current execution of the trial ``hp`` trains (its values, its seed)."""
        values = self.declare_hyperparameters(hp)
        return dataclasses.replace(self.config, seed=self.seed, **{k: float(v) for k, v in values.items()})

    def data(self, config=None):
        """The current execution's :class:`kdkeras.data.Splits` (built by ``build``, else now)."""
        from kdkeras.training import make_run_data

        config = config or dataclasses.replace(self.config, seed=self.seed)
        if self._data is None or self._data[0] != config.seed:
            self._data = (config.seed, make_run_data(config))
        return self._data[1]

    def build(self, hp):
        """The compiled model of the trial ``hp`` (:func:`kdkeras.training.build_run_model`)."""
        from kdkeras.training import build_run_model, make_run_data

        config = self.trial_config(hp)
        # Fresh pipelines for every build: a reused dataset would continue its
        # shuffle where the previous trial left it.
        self._data = (config.seed, make_run_data(config))
        model, student = build_run_model(config, self._data[1], self.teacher)
        # Built now, so that loading a checkpoint (Hyperband continuing a
        # trial) restores the momentum buffers too.
        model.optimizer.build(student.trainable_variables + list(getattr(model, "adapter_variables", None) or []))
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Trains ``model`` on the run's training split, validated on its validation split.

        Data arguments are refused: a trial trains on the run's own data and
        is scored on the validation split, never the test split. A Hyperband
        trial that continues an earlier one (``initial_epoch`` > 0) starts its
        lr schedule at that epoch's step, so the schedule's milestones stay
        where the recipe puts them.

        Raises:
            ValueError: data (``x``, ``y``, ``validation_data``) is passed.
        """
        from kdkeras.callbacks import HistoryCSV
        from kdkeras.training import training_callbacks

        given = [k for k in ("x", "y", "validation_data", "validation_split") if k in kwargs]
        if args or given:
            raise ValueError("KDHyperModel.fit trains on the run's own splits; do not pass data "
                             f"(received {', '.join(given) or 'positional data'}).")
        config = self.trial_config(hp)
        data = self.data(config)
        self._data = None  # consumed: the next build makes fresh pipelines
        initial_epoch = kwargs.get("initial_epoch") or 0
        if initial_epoch:
            model.optimizer.iterations.assign(initial_epoch * data.steps_per_epoch)
        callbacks = training_callbacks(config, data, evaluate_test=False)
        if self.history_path:
            callbacks.append(HistoryCSV(self.history_path, initial_epoch=initial_epoch))
        kwargs["callbacks"] = callbacks + list(kwargs.get("callbacks") or [])
        kwargs.setdefault("shuffle", False)  # the datasets shuffle themselves, seeded
        epochs = kwargs.pop("epochs", 1)
        kwargs["steps_per_epoch"] = data.steps_per_epoch  # epoch e's batches depend only on (seed, e)
        return model.fit(data.train_epochs(initial_epoch, epochs), validation_data=data.val, epochs=epochs,
                         **kwargs)


class _KDTunerMixin:
    """What the KD tuners add to KerasTuner's: no build to declare the space, seeded executions."""

    #: Prints progress messages (a worker names each trial it runs); set by :func:`make_tuner`.
    log = staticmethod(_print)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if self._is_worker():  # the chief's display numbers the trials, without saying where they run
            values = trial.hyperparameters.values
            self.log(f"Worker {self.tuner_id} runs trial {trial.trial_id}: "
                     + ", ".join(f"{_LABELS[n]}={values[n]:.4g}" for n in TUNED if n in values))

    def search(self, *fit_args, **fit_kwargs):
        super().search(*fit_args, **fit_kwargs)
        if distributed_role() == "chief":
            # The oracle last saved its state while ending the last trial, with
            # that trial still "ongoing": a restarted chief would run it again.
            self.save()

    def _populate_initial_space(self):
        # The space has no conditional parts: declaring it is enough, and the
        # chief of a distributed search then runs the search without the teacher.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        self._execution = 0
        return super().run_trial(trial, *args, **kwargs)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        execution = self._execution
        self.hypermodel.execution = execution
        self.hypermodel.history_path = os.path.join(
            self.get_trial_dir(trial.trial_id), "history.csv" if not execution else f"history-{execution}.csv")
        self._execution += 1
        try:
            return super()._build_and_fit_model(trial, *args, **kwargs)
        finally:
            self.hypermodel.execution = 0
            self.hypermodel.history_path = None


class KDBayesianOptimization(_KDTunerMixin, keras_tuner.BayesianOptimization):
    """``keras_tuner.BayesianOptimization`` for a :class:`KDHyperModel`."""


class KDHyperband(_KDTunerMixin, keras_tuner.Hyperband):
    """``keras_tuner.Hyperband`` for a :class:`KDHyperModel`."""


def distributed_role() -> str | None:
    """``"chief"``, ``"worker"`` or ``None`` from KerasTuner's environment variables.

    ``KERASTUNER_ORACLE_IP`` turns distributed tuning on; it then needs
    ``KERASTUNER_ORACLE_PORT`` and ``KERASTUNER_TUNER_ID`` (an ID containing
    ``chief`` runs the oracle, any other ID is a worker).
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)]
    if missing:
        raise UsageError(f"KERASTUNER_ORACLE_IP is set, but {' and '.join(missing)} is not: distributed "
                         f"tuning needs all three (see docs/analysis.md, 'Tuning').")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def make_tuner(config, logdir: str = "logs", *, space=None, tuner: str = "bayesian", max_trials: int = 10,
               executions_per_trial: int = 1, log=_print, verbose="auto"):
    """The KerasTuner tuner of a search, reloaded from its folder when it exists.

    The teacher comes from :func:`kdkeras.training.resolve_teacher` (a
    ``.keras`` file, or the teacher's baseline run, trained first when
    missing). It is not loaded when no trial is left to run, and the chief of a
    distributed search loads it (never trains it) only after the search, to
    measure the best trial's test accuracy. ``config`` without ``val_size``
    gets the default validation split (:func:`with_validation`).

    Args:
        config: a resolved KD :class:`kdkeras.config.RunConfig`.
        logdir: root folder of all runs.
        space: the :class:`SearchSpace` (default ranges when ``None``).
        tuner: ``"bayesian"`` (``BayesianOptimization``) or ``"hyperband"``
            (``Hyperband`` with ``max_epochs=config.epochs``, factor 3,
            brackets repeated until ``max_trials``).
        max_trials: total number of trials of the search.
        executions_per_trial: trainings per trial (seeds ``seed``,
            ``seed + 1``, ...); the score is their mean.
        log: function printing progress messages.
        verbose: verbosity of the teacher's training.

    Returns:
        A ``keras_tuner.Tuner`` (:class:`KDBayesianOptimization` or
        :class:`KDHyperband`) whose ``hypermodel`` is a :class:`KDHyperModel`
        and whose ``project_dir`` is :func:`tune_dir`.

    Raises:
        ValueError: one line, on bad settings or a teacher that does not fit
            the dataset.
    """
    from kdkeras import training

    config_lib.validate(config)
    space = space or SearchSpace()
    check_search_settings(tuner, max_trials, executions_per_trial)
    role = distributed_role()
    base = search_config(config)
    folder = tune_dir(base, logdir, space, tuner, executions_per_trial)
    directory, project_name = os.path.split(folder)
    strategy = None
    if role != "chief":
        import tensorflow as tf

        strategy = training.make_strategy(config.strategy)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise UsageError("Tuning trains each trial on one machine (strategy=multiworker is not "
                             "supported); spread the trials over machines with KerasTuner's distributed "
                             "mode (KERASTUNER_* variables) instead.")
        if not isinstance(strategy, tf.distribute.MirroredStrategy):
            strategy = None
    training.check_logdir(logdir)

    hypermodel = KDHyperModel(base, None, space=space)
    common = {
        "objective": keras_tuner.Objective(OBJECTIVE, direction="max"),
        "seed": config.seed + 1,  # KerasTuner draws a random seed for 0
        "executions_per_trial": executions_per_trial,
        "directory": directory,
        "project_name": project_name,
        "overwrite": False,  # reload: a repeated command continues the search
        "distribution_strategy": strategy,
    }
    if tuner == "bayesian":
        search = KDBayesianOptimization(hypermodel, max_trials=max_trials, **common)
    else:
        search = KDHyperband(hypermodel, max_epochs=config.epochs, factor=3, hyperband_iterations=None,
                             **common)
    if isinstance(search.oracle, keras_tuner.Oracle):  # not a worker's proxy of the chief's oracle
        search.oracle.max_trials = max_trials  # Hyperband stops there too

    search.log = log

    # Loaded now when trials are left (a missing teacher is trained first),
    # else only if the best trial's test accuracy is still to be measured.
    # The chief of a distributed search trains no trial: it loads the teacher,
    # which the workers trained or found, only for that measurement.
    def load_teacher():
        return training.resolve_teacher(base, logdir, log=log, verbose=verbose, train_teacher=role != "chief")[0]

    eager = role != "chief" and _trials_left(search, max_trials)
    hypermodel._teacher = load_teacher() if eager else load_teacher
    return search


def _trials_left(search, max_trials) -> bool:
    """Whether a search may still run a trial (workers always may: the chief decides)."""
    if not isinstance(search.oracle, keras_tuner.Oracle):
        return True
    trials = search.oracle.trials.values()
    return len(trials) < max_trials or any(t.status == "RUNNING" for t in trials)


def trial_rows(oracle) -> list[dict]:
    """One dict per trial of ``oracle`` in start order: id, status, values, score."""
    rows = []
    for trial in sorted(oracle.trials.values(), key=lambda t: int(t.trial_id)):
        values = trial.hyperparameters.values
        row = {"trial": trial.trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in TUNED})
        row[OBJECTIVE] = trial.score
        row["best_epoch"] = None if trial.best_step is None else int(trial.best_step) + 1
        if "tuner/epochs" in values:
            row["epochs"] = values["tuner/epochs"]
            row["continues_trial"] = values.get("tuner/trial_id")
        rows.append(row)
    return rows


def format_table(rows: list[dict], best: str | None = None) -> str:
    """The trials as a text table (trial, T, alpha, lr, val_accuracy, status); ``*`` marks ``best``."""
    lines = [f"{'trial':>7}  {'T':>8}  {'alpha':>7}  {'lr':>9}  {OBJECTIVE:>12}  status"]

    def number(value, spec):
        return format(value, spec) if value is not None else "-"

    for row in rows:
        mark = "*" if row["trial"] == best else " "
        lines.append(f"{row['trial']:>6}{mark}  {number(row['temperature'], '8.4g')}  "
                     f"{number(row['alpha'], '7.4f')}  {number(row['lr'], '9.4g')}  "
                     f"{number(row[OBJECTIVE], '12.4f')}  {row['status']}")
    return "\n".join(lines)


def _flag(name, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (list, tuple)):
        return f"--{name}={','.join(str(v) for v in value)}"
    return f"--{name}={value}"


def distill_command(config, values: dict, logdir: str = "logs") -> str:
    """The ``kdkeras distill`` command that trains the student with ``values``.

    It repeats every setting of ``config`` that differs from the paper's
    recipe. When the lr differs from the recipe's and the teacher is given by
    name, the teacher is passed as its model file: by name, ``distill.py``
    would look for a teacher trained with that lr.
    """
    base = search_config(config)
    defaults = config_lib.recipe_defaults(config.model, distill=True)
    # distill.py scales the recipe's schedule to --epochs itself.
    scaled = config_lib.recipe_defaults(config.model, distill=True, epochs=base.epochs)
    defaults.update({k: scaled[k] for k in ("lr_milestones", "lr_gamma")})
    teacher = config.teacher
    if not config_lib.is_model_file(teacher) and values["lr"] != defaults["lr"]:
        from kdkeras.training import MODEL_FILE

        teacher = os.path.join(teacher_location(config, logdir), MODEL_FILE)
    args = ["kdkeras", "distill", f"--student={config.model}", f"--teacher={teacher}"]
    current = base.to_dict()
    for name in config_lib.FIELDS:
        if name in ("model", "teacher", *TUNED) or current[name] == defaults[name]:
            continue
        args.append(_flag(name, current[name]))
    args += [f"--{name}={values[name]:.6g}" for name in TUNED]
    if os.path.normpath(logdir) != "logs":
        args.append(f"--logdir={logdir}")
    return " ".join(shlex.quote(a) for a in args)


def best_trial_row(oracle) -> dict | None:
    """The completed trial with the highest validation score (``None`` before one completes)."""
    completed = [r for r in trial_rows(oracle) if r["status"] == "COMPLETED" and r[OBJECTIVE] is not None]
    return max(completed, key=lambda r: r[OBJECTIVE]) if completed else None


def measure_test_accuracy(search, trial_id: str) -> float:
    """Test accuracy of a trial's checkpoint (its best validation epoch), measured once, after the search.

    The model is rebuilt by the hypermodel, the checkpoint KerasTuner kept
    for the trial (the epoch with the best ``val_accuracy``) is loaded, and
    the run's test split is evaluated. This is the only place a search reads
    the test split.
    """
    trial = search.oracle.get_trial(trial_id)
    model = search.load_model(trial)
    data = search.hypermodel.data()
    return float(model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"])


def _stored_test_accuracy(folder: str, trial_id: str):
    """The test accuracy ``best.json`` already holds for ``trial_id`` (``None``: not measured yet)."""
    path = os.path.join(folder, BEST_FILE)
    try:
        with open(path) as f:
            best = json.load(f).get("best") or {}
    except (OSError, ValueError):
        return None
    return best.get("test_accuracy") if best.get("trial") == trial_id else None


def write_results(search, config, logdir: str, space=None, tuner: str = "bayesian",
                  executions_per_trial: int = 1, test_accuracy: float | None = None) -> dict:
    """Writes ``best.json`` (atomically) into the search folder and returns it.

    Keys: ``name``, ``student``, ``teacher``, ``teacher_run``, ``dataset``,
    ``epochs``, ``seed``, ``tuner``, ``objective``, ``val_size``,
    ``max_trials``, ``executions_per_trial``, ``search_space``,
    ``completed_trials``, ``best`` (``trial``, ``temperature``, ``alpha``,
    ``lr``, ``val_accuracy`` (the selection score) and ``test_accuracy``
    (measured once after the search, see :func:`measure_test_accuracy`;
    ``None`` until then); ``best`` is ``None`` before a trial completes),
    ``distill_command``, ``trials`` (see :func:`trial_rows`), ``config`` and
    ``updated_at``.
    """
    from kdkeras.io_utils import atomic_write_json

    space = space or SearchSpace()
    rows = trial_rows(search.oracle)
    completed = [r for r in rows if r["status"] == "COMPLETED" and r[OBJECTIVE] is not None]
    best_row = best_trial_row(search.oracle)
    best = None
    command = None
    if best_row is not None:
        best = {"trial": best_row["trial"], **{n: best_row[n] for n in TUNED}, OBJECTIVE: best_row[OBJECTIVE],
                "test_accuracy": test_accuracy}
        command = distill_command(config, best, logdir)
    results = {
        "name": tune_name(config, space, tuner, executions_per_trial),
        "student": config.model,
        "teacher": config.teacher,
        "teacher_run": teacher_location(config, logdir),
        "dataset": config.dataset,
        "epochs": config.epochs,
        "seed": config.seed,
        "tuner": tuner,
        "objective": OBJECTIVE,
        "val_size": search_config(config).val_size,
        "max_trials": search.oracle.max_trials,
        "executions_per_trial": executions_per_trial,
        "search_space": space.to_dict(),
        "completed_trials": len(completed),
        "best": best,
        "distill_command": command,
        "trials": rows,
        "config": search_config(config).to_dict(),
        "updated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(os.path.join(search.project_dir, BEST_FILE), results)
    return results


class _DropRetracingWarnings(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warnings: every trial is a new model."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_retracing():
    logger = logging.getLogger("tensorflow")
    drop = _DropRetracingWarnings()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def tune(config, logdir: str = "logs", *, space=None, tuner: str = "bayesian", max_trials: int = 10,
         executions_per_trial: int = 1, callbacks=(), log=_print, verbose="auto") -> dict:
    """Runs (or continues) the search of a KD run's temperature, alpha and lr.

    Args:
        config: a resolved KD :class:`kdkeras.config.RunConfig`; its
            ``epochs`` are every trial's (Hyperband's maximum).
        logdir: root folder of all runs (the teacher's too).
        space: the :class:`SearchSpace` (default: :data:`DEFAULT_RANGES`).
        tuner: one of :data:`TUNERS`.
        max_trials: total trials of the search; finished ones count.
        executions_per_trial: trainings per trial, averaged.
        callbacks: extra Keras callbacks for every trial's ``fit`` (KerasTuner
            deep-copies them per execution).
        log: function printing progress messages and the summary.
        verbose: ``fit`` and KerasTuner verbosity.

    Returns:
        The ``best.json`` record (see :func:`write_results`) with
        ``tune_dir`` added; on a worker of a distributed search only
        ``{"tune_dir", "role"}`` (the chief writes ``best.json``).
    """
    from kdkeras import training

    space = space or SearchSpace()
    config = with_validation(config)
    search = make_tuner(config, logdir, space=space, tuner=tuner, max_trials=max_trials,
                        executions_per_trial=executions_per_trial, log=log, verbose=verbose)
    folder = search.project_dir
    role = distributed_role()
    oracle = search.oracle
    if isinstance(oracle, keras_tuner.Oracle):
        done = sum(t.status == "COMPLETED" for t in oracle.trials.values())
        epochs = f"{'at most ' if tuner == 'hyperband' else ''}{config.epochs} epochs per trial"
        log(f"Tuning {', '.join(space.tuned)} of {config.model} from teacher {config.teacher} "
            f"({tuner}, {epochs}): {done} of {max_trials} trials done -> {folder}")
    if role is not None:
        log(f"Distributed search: this process is the {role} "
            f"({os.environ['KERASTUNER_TUNER_ID']}, oracle at {os.environ['KERASTUNER_ORACLE_IP']}:"
            f"{os.environ['KERASTUNER_ORACLE_PORT']}).")
    all_callbacks = [keras.callbacks.TensorBoard(os.path.join(folder, TENSORBOARD_DIR)), *callbacks]
    with _quiet_retracing():
        search.search(epochs=config.epochs, callbacks=all_callbacks, verbose=training.fit_verbosity(verbose))
    if role == "worker":
        log(f"Worker {os.environ['KERASTUNER_TUNER_ID']} finished; the chief writes "
            f"{os.path.join(folder, BEST_FILE)}.")
        return {"tune_dir": folder, "role": role}

    best_row = best_trial_row(oracle)
    test_accuracy = None
    if best_row is not None:
        test_accuracy = _stored_test_accuracy(folder, best_row["trial"])
        if test_accuracy is None:
            test_accuracy = measure_test_accuracy(search, best_row["trial"])
    results = write_results(search, config, logdir, space, tuner, executions_per_trial, test_accuracy)
    best = results["best"]
    log(format_table(results["trials"], best["trial"] if best else None))
    if best is None:
        log(f"No trial completed yet; repeat the command to continue the search in {folder}.")
    else:
        log(f"Best trial {best['trial']}: T={best['temperature']:.4g}, alpha={best['alpha']:.4f}, "
            f"lr={best['lr']:.4g}, {OBJECTIVE}={best[OBJECTIVE]:.4f} on the validation split "
            f"({results['val_size']} images, {results['completed_trials']} trials); its test accuracy, "
            f"measured once after the search: {best['test_accuracy']:.4f} -> {os.path.join(folder, BEST_FILE)}")
        log(f"Train the student with these values:\n  {results['distill_command']}")
    return {**results, "tune_dir": folder}
