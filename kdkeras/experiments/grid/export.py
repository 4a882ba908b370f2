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

#: The list of what an export of a config wrote, in ``<destination>/<config name>/``, one path per line.
MANIFEST_FILE = "exported.txt"


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

    ``<destination>/<name>/exported.txt`` lists what the export wrote. Exported
    again, the config removes the files its earlier export wrote that it no
    longer writes (a grid or a run the config dropped, say), so that a
    committed copy holds no stale table; the files other configs exported into
    the same destination stay, and so does everything in ``logdir``.

    Returns:
        The copied paths.
    """
    import shutil

    from kdkeras.io_utils import atomic_write_text

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
    manifest = os.path.join(destination, name, MANIFEST_FILE)
    written = sorted({os.path.relpath(path, destination) for path in copied})
    stale = sorted(set(_read_manifest(manifest)) - set(written))
    for relative in stale:
        _remove_with_empty_folders(os.path.join(destination, relative), destination)
    os.makedirs(os.path.dirname(manifest), exist_ok=True)
    atomic_write_text(manifest, "".join(f"{path}\n" for path in written))
    log(f"Exported {len(copied)} files to {destination}"
        + (f"; removed {len(stale)} files that its earlier export wrote and {name} no longer writes"
           f" ({', '.join(sorted({os.path.dirname(p) for p in stale}))})" if stale else ""))
    return copied


def _read_manifest(path: str) -> list[str]:
    """The relative paths an earlier export listed in ``path`` (none when it has no manifest)."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        paths = [line.strip() for line in f if line.strip()]
    # Only paths below the destination: a hand-edited manifest never removes anything outside it.
    return [p for p in paths if not os.path.isabs(p) and os.pardir not in p.split(os.sep)]


def _remove_with_empty_folders(path: str, root: str) -> None:
    """Removes the file ``path``, then every folder above it, up to ``root``, that it leaves empty."""
    if os.path.isfile(path):
        os.remove(path)
    folder = os.path.dirname(path)
    while os.path.abspath(folder) != os.path.abspath(root) and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
        folder = os.path.dirname(folder)
