"""Teacher models: loading a ``.keras`` file safely, and checking that a teacher fits the data."""

from __future__ import annotations

import os
import zipfile

from kdkeras.errors import MissingFileError, UsageError
from kdkeras.training.run_folder import RunFolder


def load_model_file(path: str, what: str = "model"):
    """Loads a ``.keras`` file in safe mode (with kdkeras's fast layers), or fails in one line.

    Returns the network, which takes normalised images as kdkeras's data
    pipelines feed them: the raw-image front of a run's ``model.keras`` is
    removed, and files saved before that front existed are the network
    itself (:func:`kdkeras.models.convert.load_model`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not a loadable ``.keras`` archive.
    """
    from kdkeras.models.convert import load_model

    if not os.path.exists(path):
        raise MissingFileError(f"{what} file '{path}' does not exist.")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"Cannot load {what} file '{path}': not a .keras archive (corrupt, truncated "
                         f"or another format).")
    try:
        return load_model(path)
    except Exception as err:  # corrupt zip, wrong format, unknown layer ...
        detail = " ".join(str(err).split())[:200]
        raise UsageError(f"Cannot load {what} file '{path}': {type(err).__name__}: {detail}")


def check_teacher(teacher, config, info) -> None:
    """Fails (one line) when ``teacher`` does not fit the dataset of ``config`` (a :class:`~kdkeras.data.DatasetInfo`)."""
    if tuple(teacher.input_shape[1:]) != tuple(info.image_shape):
        raise UsageError(
            f"Teacher '{config.teacher}' takes inputs of shape {tuple(teacher.input_shape[1:])}, "
            f"but dataset {config.dataset} has images of shape {tuple(info.image_shape)}."
        )
    if teacher.output_shape[-1] != info.num_classes:
        raise UsageError(
            f"Teacher '{config.teacher}' has {teacher.output_shape[-1]} outputs, but dataset "
            f"{config.dataset} has {info.num_classes} classes."
        )


def recorded_data(run_directory: str):
    """The data a finished or started run read, from its ``config.yaml``: a fingerprint dict, or ``None``.

    A run folder written before runs recorded their data gets the
    fingerprint of its recorded source now, when that source is still there.
    """
    import yaml

    from kdkeras.data.fingerprint import fingerprint

    try:
        with open(RunFolder(run_directory).config_path) as f:
            recorded = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(recorded, dict):
        return None
    if isinstance(recorded.get("data"), dict):
        return recorded["data"]
    archive, data_dir = recorded.get("archive"), recorded.get("data_dir")
    source = archive if archive is not None else data_dir
    if source is not None and not os.path.exists(os.path.expanduser(str(source))):
        return None
    try:
        return fingerprint(recorded.get("dataset", "cifar100"), archive=archive, data_dir=data_dir).to_dict()
    except Exception:  # noqa: BLE001  (a source that cannot be read now: unknown)
        return None


def check_teacher_data(config, teacher_path: str, check: bool = True, log=print) -> None:
    """Refuses a teacher file trained on other data than ``config`` reads (one line naming both).

    The teacher's data comes from the run folder holding the file (its
    ``config.yaml``); a file outside a run folder carries no record and is
    not checked (one line says so). ``check=False`` (``--noteacher_data_check``)
    allows distilling across datasets on purpose.
    """
    from kdkeras import config as config_lib

    folder = os.path.dirname(os.path.abspath(teacher_path))
    theirs = recorded_data(folder) if os.path.isfile(RunFolder(folder).config_path) else None
    if theirs is None:
        log(f"Teacher file '{teacher_path}' has no record of the data it was trained on (no run folder "
            f"config.yaml beside it): not checked.")
        return
    ours = config_lib.data_fingerprint(config)
    if theirs.get("id") == ours.id or not check:
        return
    where = f" ({theirs.get('source')} {theirs.get('where')})" if theirs.get("where") else ""
    raise UsageError(
        f"Teacher '{teacher_path}' was trained on {theirs.get('dataset')} data {theirs.get('id')}{where}, "
        f"but this run reads {ours.describe()}. Distil from a teacher of the same data, or pass "
        f"--noteacher_data_check to distil across them on purpose."
    )
