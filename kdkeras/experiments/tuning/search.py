""":func:`tune`: one search, end to end."""

from __future__ import annotations

import os

import keras
import keras_tuner

from kdkeras.experiments.tuning.folder import BEST_FILE, OBJECTIVE, TENSORBOARD_DIR, with_validation
from kdkeras.experiments.tuning.results import (best_trial_row, format_table, measure_test_accuracy,
                                                stored_test_accuracy, write_results)
from kdkeras.experiments.tuning.space import SearchSpace
from kdkeras.experiments.tuning.tuners import distributed_role, make_tuner, print_message


def tune(config, logdir: str = "logs", *, space=None, tuner: str = "bayesian", max_trials: int = 10,
         executions_per_trial: int = 1, callbacks=(), log=print_message, verbose="auto") -> dict:
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
    from kdkeras import runtime, training

    space = space or SearchSpace()
    config = with_validation(config)
    runtime.apply(config)  # the process-wide settings, once, before any trial
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
    with runtime.quiet_retracing():  # every trial is a new model
        search.search(epochs=config.epochs, callbacks=all_callbacks, verbose=training.fit_verbosity(verbose))
    if role == "worker":
        log(f"Worker {os.environ['KERASTUNER_TUNER_ID']} finished; the chief writes "
            f"{os.path.join(folder, BEST_FILE)}.")
        return {"tune_dir": folder, "role": role}

    best_row = best_trial_row(oracle)
    test_accuracy = None
    if best_row is not None:
        test_accuracy = stored_test_accuracy(folder, best_row["trial"])
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
