"""Training and distillation runs: ``train_and_evaluate(config, logdir)`` and its steps.

* :mod:`~kdkeras.training.pipeline`: the run as named steps (data, model,
  callbacks, fit, results), shared with tuning and benchmarks;
* :mod:`~kdkeras.training.run_folder`: :class:`RunFolder`, the one owner of a
  run folder's file names;
* :mod:`~kdkeras.training.resume`: repairing a backup torn by a kill;
* :mod:`~kdkeras.training.teachers`: loading and checking teacher models;
* :mod:`~kdkeras.training.distribute`: the ``tf.distribute`` strategy.

See docs/training.md.
"""

from kdkeras.training.distribute import is_chief, make_strategy
from kdkeras.training.pipeline import (
    build_run_model,
    build_student,
    ensure_teacher_run,
    final_measurements,
    fit_run,
    needs_indices,
    fit_verbosity,
    format_results,
    make_optimizer,
    make_run_data,
    record_callbacks,
    resolve_teacher,
    train_and_evaluate,
    training_callbacks,
)
from kdkeras.training.resume import backup_epoch, repair_backup
from kdkeras.training.run_folder import (
    BACKUP_DIR,
    CONFIG_FILE,
    HISTORY_FILE,
    INITIAL_WEIGHTS_FILE,
    MIN_FREE_MB,
    MODEL_FILE,
    RESULTS_FILE,
    TENSORBOARD_DIR,
    RunFolder,
    check_logdir,
    is_finished,
    load_results,
)
from kdkeras.training.teachers import check_teacher, load_model_file

__all__ = [
    "BACKUP_DIR", "CONFIG_FILE", "HISTORY_FILE", "INITIAL_WEIGHTS_FILE", "MIN_FREE_MB", "MODEL_FILE",
    "RESULTS_FILE", "TENSORBOARD_DIR", "RunFolder", "backup_epoch", "build_run_model", "build_student",
    "check_logdir", "check_teacher", "ensure_teacher_run", "final_measurements", "fit_run", "fit_verbosity", "needs_indices",
    "format_results", "is_chief", "is_finished", "load_model_file", "load_results", "make_optimizer",
    "make_run_data", "make_strategy", "record_callbacks", "repair_backup", "resolve_teacher",
    "train_and_evaluate", "training_callbacks",
]
