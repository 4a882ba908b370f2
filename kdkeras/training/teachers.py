"""Teacher models: loading a ``.keras`` file safely, and checking that a teacher fits the data."""

from __future__ import annotations

import os
import zipfile

from kdkeras.errors import MissingFileError, UsageError


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
