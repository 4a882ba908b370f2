"""Opening a run folder for analysis: its settings, model and data.

A run folder (see :mod:`kdkeras.training`) holds ``config.yaml`` and, once
finished, ``model.keras`` and ``results.json``; ``initial.weights.h5`` holds
the student's weights before its first step (for the 1-D landscape path).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from kdkeras import config as config_lib

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"
RESULTS_FILE = "results.json"
INITIAL_WEIGHTS_FILE = "initial.weights.h5"


@dataclasses.dataclass(frozen=True)
class Run:
    """A run folder and its resolved settings.

    Attributes:
        directory: the run folder.
        config: its :class:`kdkeras.config.RunConfig` (from ``config.yaml``).
        results: its ``results.json`` (``None`` while unfinished).
    """

    directory: str
    config: config_lib.RunConfig
    results: dict | None

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.directory))

    @property
    def kind(self) -> str:
        """``"distilled"``, ``"R"`` or ``"NR"`` (for labels and panel titles)."""
        if self.config.distill:
            return "distilled"
        from kdkeras.models.registry import parse_model_name

        return "R" if parse_model_name(self.config.model).residual else "NR"

    @property
    def label(self) -> str:
        """A short title: ``wrn22x2_NR_g16 (from wrn22x2_R_G4)``."""
        if self.config.distill:
            teacher = self.config.teacher
            if teacher.endswith(MODEL_FILE) and os.path.sep in teacher:  # <teacher run>/model.keras
                teacher = os.path.dirname(os.path.normpath(teacher))
            teacher = os.path.basename(teacher)
            return f"{self.config.model} (from {teacher})"
        return self.config.model

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)


def load_run(directory: str, *, need_model: bool = True) -> Run:
    """Opens a run folder.

    Args:
        directory: a run folder, ``<logdir>/<dataset>/<run name>``.
        need_model: fail unless the run's ``model.keras`` exists (finished run).

    Raises:
        FileNotFoundError: one line, when the folder, its ``config.yaml`` or
            (with ``need_model``) its ``model.keras`` is missing.
    """
    import json

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Run folder '{directory}' does not exist "
                                f"(expected <logdir>/<dataset>/<run name>, e.g. logs/cifar100/wrn22x2_R_g2-s0).")
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"'{directory}' is not a run folder: it has no {CONFIG_FILE}.")
    config = config_lib.resolve(config_lib.load_yaml(config_path))
    if need_model and not os.path.exists(os.path.join(directory, MODEL_FILE)):
        raise FileNotFoundError(f"Run '{directory}' has no {MODEL_FILE} yet: it is not finished "
                                f"(repeat its training command to resume it).")
    results = None
    results_path = os.path.join(directory, RESULTS_FILE)
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    return Run(directory=directory, config=config, results=results)


def load_run_model(run: Run):
    """The run's trained model (``model.keras``, safe mode, kdkeras fast layers)."""
    from kdkeras.training import load_model_file

    return load_model_file(run.path(MODEL_FILE), "model")


def load_initial_model(run: Run):
    """The run's model with the weights it had before its first training step.

    Raises:
        FileNotFoundError: the run has no ``initial.weights.h5`` (trained by a
            kdkeras version that did not save it).
    """
    path = run.path(INITIAL_WEIGHTS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Run '{run.directory}' has no {INITIAL_WEIGHTS_FILE} "
                                f"(initial weights), so its initial-to-final path cannot be drawn; "
                                f"retrain it, or use --mode=2d.")
    model = load_run_model(run)
    model.load_weights(path)
    return model


def split_arrays(config, split: str = "test", size: int | None = None, seed: int = 0):
    """A fixed, normalised subset of one split of the run's dataset.

    The run's own data source, subsets (``train_size`` / ``test_size``) and
    validation split (``val_size``: ``"train"`` never holds a validation
    image, ``"val"`` is that split) are used first; ``size`` then keeps a
    class-balanced subset of that, chosen from ``seed`` (the same examples
    every call).

    Returns:
        ``(images, labels, class_names)``: ``float32`` ``(N, 32, 32, 3)``
        normalised as in training (no augmentation), ``int64`` ``(N,)``, and
        the dataset's class names indexed by label.
    """
    from kdkeras import data as data_lib

    sizes = {"train": config.train_size, "test": config.test_size}
    arrays, names = data_lib.load_splits(config.dataset, (split,), data_dir=config.data_dir,
                                         archive=config.archive, sizes=sizes, seed=config.seed,
                                         val_size=config.val_size)
    images, labels = arrays[split]
    if size is not None and size < len(labels):
        keep = data_lib._subset_indices(labels, int(size), int(seed))
        images, labels = images[keep], labels[keep]
    info = data_lib.dataset_info(config.dataset, names)
    x = data_lib.normalize(images, info.mean, info.std).numpy()
    return x, np.asarray(labels, dtype=np.int64), tuple(info.class_names)
