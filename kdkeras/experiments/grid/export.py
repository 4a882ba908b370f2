"""``--export``: a commit-sized copy of the tables and of the finished runs' small result files."""

from __future__ import annotations

import os

from kdkeras.experiments.grid.expand import plan_all
from kdkeras.training.run_folder import RESULT_FILES


#: The small files of a run that :func:`export` copies (records, not models or checkpoints).
EXPORTED_RUN_FILES = RESULT_FILES


#: The files of a grid's or suite's folder that :func:`export` copies.
EXPORTED_TABLE_FILES = ("table.md", "table.csv", "table.png", "comparison.md", "summary.md", "summary.csv")


def export(name: str, specs, logdir: str, destination: str, log=print) -> list[str]:
    """Copies the small result files of every finished run, table and summary of ``specs`` into ``destination``.

    The layout below ``destination`` is the one below ``logdir``
    (``<dataset>/<run>/results.json``, ``<grid>/table.md``, ...), so the copy
    can be read like a log folder, committed, or copied back into one: a run
    whose ``results.json`` is there counts as finished. Models, backups and
    TensorBoard files stay behind.

    Returns:
        The copied paths.
    """
    import shutil

    from kdkeras.training import is_finished

    copied = []

    def copy(source_dir, names):
        relative = os.path.relpath(source_dir, logdir)
        for file_name in names:
            source = os.path.join(source_dir, file_name)
            if os.path.isfile(source):
                target = os.path.join(destination, relative, file_name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(source, target)
                copied.append(target)

    for cell in plan_all(specs, logdir):
        if is_finished(cell.run_dir):  # unfinished runs resume from their log folder, not from a copy
            copy(cell.run_dir, EXPORTED_RUN_FILES)
    for folder in {spec.name for spec in specs} | {name}:
        copy(os.path.join(logdir, folder), EXPORTED_TABLE_FILES)
    log(f"Exported {len(copied)} files to {destination}")
    return copied
