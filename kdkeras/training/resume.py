"""Resuming an interrupted run: repair a backup torn by a kill, and find the epoch to resume from.

``keras.callbacks.BackupAndRestore(double_checkpoint=True)`` keeps the last
two epochs' weights and metadata in ``<run>/backup/``. A process killed while
writing them can leave the newest pair unreadable or inconsistent;
:func:`repair_backup` falls back to the previous pair. Every case is listed
in docs/reliability.md.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import shutil


def _print(message):
    print(message, flush=True)


def _readable(path: str, kind: str) -> bool:
    try:
        if kind == "h5":
            import h5py

            with h5py.File(path, "r"):
                return True
        with open(path) as f:
            return "epoch" in json.load(f)
    except (OSError, ValueError):
        return False


def _torn(weights: str, meta: str) -> bool:
    """Whether the latest weights are newer than the metadata beside them."""
    pairs = ((weights, "h5"), (meta, "json"), (weights + ".bkp", "h5"), (meta + ".bkp", "json"))
    if not all(_readable(path, kind) for path, kind in pairs):
        return False
    with open(meta) as f, open(meta + ".bkp") as g:
        same_epoch = json.load(f).get("epoch") == json.load(g).get("epoch")
    return same_epoch and not filecmp.cmp(weights, weights + ".bkp", shallow=False)


def repair_backup(backup_dir: str, log=_print) -> bool:
    """Makes a backup folder loadable after a kill during its writing.

    ``BackupAndRestore(double_checkpoint=True)`` keeps the previous epoch's
    files as ``*.bkp``. When the latest weights or metadata cannot be read
    (the process died while writing them), the previous pair replaces them;
    when neither pair is readable the backup is dropped and the run starts
    over. Returns whether it said so.
    """
    weights = os.path.join(backup_dir, "latest.weights.h5")
    meta = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isdir(backup_dir):
        return False
    if _torn(weights, meta):
        # Killed after the new weights were written but before their metadata:
        # the metadata still names the previous epoch, whose weights are the copy.
        log(f"The latest backup in {backup_dir} is incomplete (interrupted while saving): "
            f"using the one before it.")
        shutil.copyfile(weights + ".bkp", weights)
        return False
    if os.path.exists(weights) and _readable(weights, "h5") and _readable(meta, "json"):
        return False
    if _readable(weights + ".bkp", "h5") and _readable(meta + ".bkp", "json"):
        log(f"The latest backup in {backup_dir} is incomplete (interrupted while saving): "
            f"using the one before it.")
        shutil.copyfile(weights + ".bkp", weights)
        shutil.copyfile(meta + ".bkp", meta)
        return False
    said = bool(os.listdir(backup_dir))
    if said:
        log(f"The backup in {backup_dir} is unreadable (interrupted while saving): starting over.")
    shutil.rmtree(backup_dir, ignore_errors=True)
    return said


def backup_epoch(backup_dir: str) -> int:
    """The epoch a ``BackupAndRestore`` folder will resume from (0 if none)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                return int(json.load(f)["epoch"])
        except (ValueError, KeyError, OSError):
            pass
    return 0


def _history_rows(history_path: str) -> int:
    """How many epoch rows a ``history.csv`` holds (0 if it is missing or unreadable)."""
    try:
        with open(history_path, newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return 0


def prepare(backup_dir: str, log=_print, history_path: str | None = None) -> int:
    """Repairs the backup of an interrupted run; returns the epoch it resumes from (0: a new run).

    With ``history_path``, a run that recorded finished epochs but has no
    backup to resume from (killed after its first epoch's history row, before
    that epoch's backup was complete) says that it starts over.
    """
    said_starting_over = repair_backup(backup_dir, log=log)
    epoch = backup_epoch(backup_dir)
    rows = _history_rows(history_path) if history_path and not epoch and not said_starting_over else 0
    if rows:
        log(f"{history_path} records {rows} finished epoch{'s' if rows != 1 else ''} but no backup of "
            f"{'them' if rows != 1 else 'it'} was completed (interrupted while saving): starting over.")
    return epoch
