"""Where a search lives: its folder name (the run identity plus the search), its validation split."""

from __future__ import annotations

import dataclasses
import os


from kdkeras import config as config_lib
from kdkeras import recipes
from kdkeras.errors import UsageError
from kdkeras.experiments.tuning.space import SearchSpace, TUNED, TUNERS
from kdkeras.training.run_folder import run_dir


OBJECTIVE = "val_accuracy"


#: Validation split of a search without ``--val_size``: this fraction of the training images.
DEFAULT_VAL_FRACTION = 0.1


TUNE_DIR = "tune"


BEST_FILE = "best.json"


TENSORBOARD_DIR = "tensorboard"


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
    return run_dir(config_lib.teacher_config(search_config(config)), logdir)
