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

One job per module: :mod:`~kdkeras.experiments.tuning.space` (what is
tuned), :mod:`~kdkeras.experiments.tuning.folder` (where a search lives),
:mod:`~kdkeras.experiments.tuning.hypermodel` (one trial, through the run
pipeline), :mod:`~kdkeras.experiments.tuning.tuners` (the tuners and the
roles of a distributed search), :mod:`~kdkeras.experiments.tuning.results`
(the trials table, the best trial, ``best.json``) and
:mod:`~kdkeras.experiments.tuning.search` (:func:`tune`).
"""
from kdkeras.experiments.tuning.folder import (OBJECTIVE, DEFAULT_VAL_FRACTION, TUNE_DIR, BEST_FILE,
                                               TENSORBOARD_DIR, with_validation, search_config, tune_name,
                                               tune_dir, teacher_location)
from kdkeras.experiments.tuning.hypermodel import KDHyperModel
from kdkeras.experiments.tuning.results import (trial_rows, format_table, distill_command, best_trial_row,
                                                measure_test_accuracy, stored_test_accuracy, write_results)
from kdkeras.experiments.tuning.search import tune
from kdkeras.experiments.tuning.space import (TUNERS, TUNED, DEFAULT_RANGES, SAMPLING, LABELS, SearchSpace,
                                              parse_range, check_search_settings)
from kdkeras.experiments.tuning.tuners import (print_message, KDTunerMixin, KDBayesianOptimization, KDHyperband,
                                               distributed_role, make_tuner)


__all__ = ['BEST_FILE', 'DEFAULT_RANGES', 'DEFAULT_VAL_FRACTION', 'KDBayesianOptimization', 'KDHyperModel', 'KDHyperband', 'KDTunerMixin', 'LABELS', 'OBJECTIVE', 'SAMPLING', 'SearchSpace', 'TENSORBOARD_DIR', 'TUNED', 'TUNERS', 'TUNE_DIR', 'best_trial_row', 'check_search_settings', 'distill_command', 'distributed_role', 'format_table', 'make_tuner', 'measure_test_accuracy', 'parse_range', 'print_message', 'search_config', 'stored_test_accuracy', 'teacher_location', 'trial_rows', 'tune', 'tune_dir', 'tune_name', 'with_validation', 'write_results']
