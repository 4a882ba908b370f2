"""``--export``: a commit-sized copy of the tables and of the finished runs' small result files."""

from __future__ import annotations

import os

from kdkeras import config as config_lib
from kdkeras.experiments.grid.expand import plan_all
from kdkeras.training.run_folder import MODEL_FILE, RESULT_FILES, run_dir


#: The small files of a run that :func:`export` copies (records, not models or checkpoints).
EXPORTED_RUN_FILES = RESULT_FILES


#: The files of a grid's or suite's folder that :func:`export` copies.
EXPORTED_TABLE_FILES = ("table.md", "table.csv", "table.png", "comparison.md", "summary.md", "summary.csv")


def teacher_run_dirs(cells, logdir: str) -> list[str]:
    """The run folders of the teachers of ``cells``' KD runs, in order, each once (a teacher file has none)."""
    dirs = (run_dir(config_lib.teacher_config(cell.config), logdir) for cell in cells
            if cell.kind == "kd" and not config_lib.is_model_file(cell.config.teacher))
    return list(dict.fromkeys(dirs))


def export(name: str, specs, logdir: str, destination: str, log=print, teachers: bool = False) -> list[str]:
    """Copies the small result files of every finished run, table and summary of ``specs`` into ``destination``.

    The layout below ``destination`` is the one below ``logdir``
    (``<dataset>/<run>/results.json``, ``<grid>/table.md``, ...), so the copy
    can be read like a log folder, committed, or copied back into one: a run
    whose ``results.json`` is there counts as finished. Models, backups and
    TensorBoard files stay behind, except with ``teachers``: then the
    ``model.keras`` of every finished teacher run comes too, so that a copy put
    back into a log folder (on another machine, say) still distils the
    students that are left to train from the same teachers.

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

    cells = plan_all(specs, logdir)
    for cell in cells:
        if is_finished(cell.run_dir):  # unfinished runs resume from their log folder, not from a copy
            copy(cell.run_dir, EXPORTED_RUN_FILES)
    if teachers:
        for directory in teacher_run_dirs(cells, logdir):
            if is_finished(directory):
                copy(directory, (MODEL_FILE,))
    for folder in {spec.name for spec in specs} | {name}:
        copy(os.path.join(logdir, folder), EXPORTED_TABLE_FILES)
    log(f"Exported {len(copied)} files to {destination}")
    return copied
