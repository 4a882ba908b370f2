"""Opening a run folder for analysis: its settings, model and data.

A run folder (:class:`kdkeras.training.run_folder.RunFolder`) holds
``config.yaml`` and, once finished, ``model.keras`` and ``results.json``;
``initial.weights.h5`` holds the student's weights before its first step
(for the 1-D landscape path). This module also owns what every instrument
shares: the splits an instrument may read (:data:`SPLITS`) and where a
comparison of several runs is written (:func:`compare_output_path`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from kdkeras.errors import MissingFileError, UsageError
from kdkeras.training.run_folder import CONFIG_FILE, INITIAL_WEIGHTS_FILE, MODEL_FILE, RunFolder

#: The splits an instrument can read: the test split, the training images,
#: and the run's validation split (runs trained with ``--val_size``).
SPLITS = ("test", "train", "val")


@dataclasses.dataclass(frozen=True)
class Run:
    """A run folder and its resolved settings.

    Attributes:
        directory: the run folder.
        config: its :class:`kdkeras.config.RunConfig` (from ``config.yaml``).
        results: its ``results.json`` (``None`` while unfinished).
    """

    directory: str
    config: object  # kdkeras.config.RunConfig
    results: dict | None

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.directory)

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
    if not os.path.isdir(directory):
        raise MissingFileError(f"Run folder '{directory}' does not exist "
                               f"(expected <logdir>/<dataset>/<run name>, e.g. logs/cifar100/wrn22x2_R_g2-s0).")
    folder = RunFolder(directory)
    if not os.path.exists(folder.config_path):
        raise MissingFileError(f"'{directory}' is not a run folder: it has no {CONFIG_FILE}.")
    config = folder.load_config()
    if need_model and not os.path.exists(folder.model_path):
        raise MissingFileError(f"Run '{directory}' has no {MODEL_FILE} yet: it is not finished "
                               f"(repeat its training command to resume it).")
    results = folder.load_results() if folder.is_finished() else None
    return Run(directory=directory, config=config, results=results)


def data_line(run: Run, check: bool = True) -> str:
    """One line naming the data the run read, checked against what its data settings read now.

    ``check=False`` (an instrument that reads no images): the recorded data only.

    Raises:
        UsageError: the run's data source now holds other data than it
            trained on (an analysis would read other images).
    """
    from kdkeras import config as config_lib
    from kdkeras.training.teachers import recorded_data

    recorded = recorded_data(run.directory)
    if not check and recorded is not None:
        where = f" ({recorded.get('source')} {recorded.get('where')})" if recorded.get("where") else ""
        return f"{run.name}: {recorded.get('dataset')} data {recorded.get('id')}{where}"
    current = config_lib.data_fingerprint(run.config)
    if recorded is None:
        return f"{run.name}: {current.describe()} (the run did not record its data; not checked)"
    if recorded.get("id") != current.id:
        where = f" ({recorded.get('source')} {recorded.get('where')})" if recorded.get("where") else ""
        raise UsageError(
            f"Run '{run.directory}' read {recorded.get('dataset')} data {recorded.get('id')}{where}, but its data "
            f"settings now read {current.describe()}: an analysis would use other images. Put the run's data "
            f"back where it was read from."
        )
    return f"{run.name}: {current.describe()}"


def load_run_model(run: Run):
    """The run's trained model (``model.keras``, safe mode, kdkeras fast layers)."""
    from kdkeras.training.teachers import load_model_file

    return load_model_file(run.folder.model_path, "model")


def load_initial_model(run: Run):
    """The run's model with the weights it had before its first training step.

    Raises:
        FileNotFoundError: the run has no ``initial.weights.h5`` (trained by a
            kdkeras version that did not save it).
    """
    path = run.folder.initial_weights_path
    if not os.path.exists(path):
        raise MissingFileError(f"Run '{run.directory}' has no {INITIAL_WEIGHTS_FILE} "
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
                                         val_size=config.val_size, download=config.download,
                                         mirror=config.data_mirror)
    images, labels = arrays[split]
    if size is not None and size < len(labels):
        keep = data_lib.subset_indices(labels, int(size), int(seed))
        images, labels = images[keep], labels[keep]
    info = data_lib.dataset_info(config.dataset, names, data_dir=config.data_dir)
    x = data_lib.normalize(images, info.mean, info.std).numpy()
    return x, np.asarray(labels, dtype=np.int64), tuple(info.class_names)


def check_split(split: str, config=None) -> str:
    """``split`` if an instrument can read it for a run of ``config``; else a one-line ``ValueError``."""
    if split not in SPLITS:
        raise UsageError(f"Unknown split '{split}'. Valid choices: {', '.join(SPLITS)}.")
    if split == "val" and config is not None and config.val_size is None:
        raise UsageError("The run has no validation split (it was trained without --val_size); "
                         "use --split=test or --split=train.")
    return split


def compare_output_path(runs, prefix: str) -> str:
    """Where a comparison of several runs goes: ``<dataset folder of the first run>/<prefix>_<A>_vs_<B>....png``.

    The dataset folder is the first run's parent (``<logdir>/<dataset>``); a
    name longer than 200 characters is shortened with a hash.
    """
    import hashlib

    names = [run.name for run in runs]
    stem = "_vs_".join(names)
    if len(stem) > 200:
        digest = hashlib.sha1(stem.encode()).hexdigest()[:8]
        stem = f"{names[0]}_vs_{len(names) - 1}_runs-{digest}"
    folder = os.path.dirname(os.path.normpath(runs[0].directory))
    return os.path.join(folder, f"{prefix}_{stem}.png")
