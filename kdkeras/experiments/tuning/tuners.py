"""The KD tuners (Bayesian optimisation, Hyperband) and the roles of a distributed search."""

from __future__ import annotations

import os

import keras_tuner

from kdkeras import config as config_lib
from kdkeras.errors import UsageError
from kdkeras.experiments.tuning.folder import OBJECTIVE, search_config, tune_dir
from kdkeras.experiments.tuning.hypermodel import KDHyperModel
from kdkeras.experiments.tuning.space import LABELS, SearchSpace, TUNED, check_search_settings
from kdkeras.training.run_folder import HISTORY_FILE


def print_message(message):
    print(message, flush=True)


class KDTunerMixin:
    """What the KD tuners add to KerasTuner's: no build to declare the space, seeded executions."""

    #: Prints progress messages (a worker names each trial it runs); set by :func:`make_tuner`.
    log = staticmethod(print_message)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if self._is_worker():  # the chief's display numbers the trials, without saying where they run
            values = trial.hyperparameters.values
            self.log(f"Worker {self.tuner_id} runs trial {trial.trial_id}: "
                     + ", ".join(f"{LABELS[n]}={values[n]:.4g}" for n in TUNED if n in values))

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
            self.get_trial_dir(trial.trial_id), HISTORY_FILE if not execution else HISTORY_FILE.replace(".csv", f"-{execution}.csv"))
        self._execution += 1
        try:
            return super()._build_and_fit_model(trial, *args, **kwargs)
        finally:
            self.hypermodel.execution = 0
            self.hypermodel.history_path = None


class KDBayesianOptimization(KDTunerMixin, keras_tuner.BayesianOptimization):
    """``keras_tuner.BayesianOptimization`` for a :class:`KDHyperModel`."""


class KDHyperband(KDTunerMixin, keras_tuner.Hyperband):
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
               executions_per_trial: int = 1, log=print_message, verbose="auto"):
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
