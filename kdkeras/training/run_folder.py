"""The run folder: where every file of a run lives, and what those files say about it.

One run, one folder, ``<logdir>/<dataset>/<run name>`` (the name comes from
:func:`kdkeras.config.run_name`)::

    config.yaml         resolved settings (usable again with --config)
    history.csv         one row per finished epoch (atomic rewrite)
    results.json        the final record, written last: its presence means "finished"
    model.keras         the trained model (the student of a KD run): plain Keras layers, no
                        optimizer, takes raw images (see :meth:`RunFolder.save_model`)
    initial.weights.h5  the (student) weights before the first step
    tensorboard/        TensorBoard event files (tensorboard/gradient_flow, tensorboard/projector: the instruments')
    backup/             resume state while the run is unfinished
    bnstats.json, gradient_flow.csv   what the instruments measured (kdkeras.analysis)

:class:`RunFolder` is the one owner of these names: training, grids, tuning
and the analysis instruments all go through it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import yaml

from kdkeras import config as config_lib
from kdkeras.errors import NotWritableError, UsageError

CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"
RESULTS_FILE = "results.json"
MODEL_FILE = "model.keras"
INITIAL_WEIGHTS_FILE = "initial.weights.h5"
TENSORBOARD_DIR = "tensorboard"
BACKUP_DIR = "backup"
#: What the instruments write into a finished run's folder (kdkeras.analysis).
BNSTATS_FILE = "bnstats.json"
GRADIENT_FLOW_FILE = "gradient_flow.csv"
GRADIENT_FLOW_TENSORBOARD_DIR = os.path.join(TENSORBOARD_DIR, "gradient_flow")
PROJECTOR_TENSORBOARD_DIR = os.path.join(TENSORBOARD_DIR, "projector")
#: The small result files of a run (what ``kdkeras grid --export`` copies, e.g. to commit them).
RESULT_FILES = (CONFIG_FILE, HISTORY_FILE, RESULTS_FILE, BNSTATS_FILE, GRADIENT_FLOW_FILE)
#: Non-chief workers of a multi-worker run write here, below the run folder.
WORKERS_DIR = ".workers"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """The files of one run.

    Attributes:
        path: the run folder, ``<logdir>/<dataset>/<run name>``.
    """

    path: str

    @classmethod
    def of(cls, config, logdir: str) -> "RunFolder":
        """The folder of the run of ``config`` in ``logdir``."""
        return cls(run_dir(config, logdir))

    @property
    def name(self) -> str:
        """The run name (the folder's base name)."""
        return os.path.basename(os.path.normpath(self.path))

    def file(self, name: str) -> str:
        """``<path>/<name>``."""
        return os.path.join(self.path, name)

    config_path = property(lambda self: self.file(CONFIG_FILE))
    history_path = property(lambda self: self.file(HISTORY_FILE))
    results_path = property(lambda self: self.file(RESULTS_FILE))
    model_path = property(lambda self: self.file(MODEL_FILE))
    initial_weights_path = property(lambda self: self.file(INITIAL_WEIGHTS_FILE))
    tensorboard_dir = property(lambda self: self.file(TENSORBOARD_DIR))
    backup_dir = property(lambda self: self.file(BACKUP_DIR))

    def worker(self, name: str) -> "RunFolder":
        """The scratch folder of a non-chief worker (``worker-1``, ...), removed when the run finishes."""
        return RunFolder(os.path.join(self.path, WORKERS_DIR, str(name)))

    def is_finished(self) -> bool:
        """Whether the run finished (its ``results.json`` exists)."""
        return os.path.exists(self.results_path)

    def is_interrupted(self) -> bool:
        """Whether an unfinished run left a backup to resume from."""
        return not self.is_finished() and os.path.isdir(self.backup_dir)

    def load_results(self) -> dict:
        """The ``results.json`` of a finished run."""
        with open(self.results_path) as f:
            return json.load(f)

    def load_config(self):
        """The run's :class:`kdkeras.config.RunConfig`, from its ``config.yaml``."""
        from kdkeras import config as config_lib

        return config_lib.resolve(config_lib.load_yaml(self.config_path))

    def write_config(self, config) -> None:
        """Writes ``config.yaml`` (atomically), with the run name as its first key."""
        from kdkeras import config as config_lib
        from kdkeras.io_utils import atomic_write_text

        data = config_lib.data_fingerprint(config)
        atomic_write_text(self.config_path, config_lib.to_yaml(config, {"run": self.name, "data": data.to_dict()}))

    def write_results(self, results: dict) -> None:
        """Writes ``results.json`` (atomically): from then on the run is finished."""
        from kdkeras.io_utils import atomic_write_json

        atomic_write_json(self.results_path, results)

    def save_model(self, model, info=None) -> None:
        """Writes ``model.keras`` (atomically): self-contained, it takes raw images.

        The file holds plain Keras layers and no optimizer, so
        ``keras.saving.load_model(path, safe_mode=True)`` loads it without
        kdkeras, and the network sits behind a front of standard Keras layers
        normalising raw images (``uint8`` or float 0..255) with the dataset's
        per-channel mean and standard deviation
        (:func:`kdkeras.models.convert.add_preprocessing`). kdkeras's own
        loader returns the network alone (:func:`kdkeras.models.convert.load_model`).

        Args:
            model: the trained network (it takes normalised images).
            info: the run's :class:`kdkeras.data.DatasetInfo` (or a dataset
                name); default: the dataset of the folder's ``config.yaml``.
        """
        from kdkeras.models.convert import add_preprocessing, save_model, to_plain_keras

        if info is None:
            info = self.load_config().dataset
        tmp_path = self.file(f".{MODEL_FILE}.tmp.keras")
        save_model(add_preprocessing(to_plain_keras(model), info), tmp_path)
        os.replace(tmp_path, self.model_path)

    def save_initial_weights(self, model) -> None:
        """Writes ``initial.weights.h5`` (atomically) unless it exists."""
        if os.path.exists(self.initial_weights_path):
            return
        tmp_path = self.file(f".tmp-{os.getpid()}.{INITIAL_WEIGHTS_FILE}")
        model.save_weights(tmp_path)
        os.replace(tmp_path, self.initial_weights_path)

    def remove_backup(self) -> None:
        """Deletes the resume state of a finished run."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def is_finished(run_directory: str) -> bool:
    """Whether ``run_directory`` holds a finished run (:meth:`RunFolder.is_finished`)."""
    return RunFolder(run_directory).is_finished()


def load_results(run_directory: str) -> dict:
    """The ``results.json`` of a finished run (:meth:`RunFolder.load_results`)."""
    return RunFolder(run_directory).load_results()


#: Free space (MiB) that :func:`check_logdir` requires on the disk of ``--logdir``
#: before a run starts; ``KDKERAS_MIN_FREE_MB`` overrides it (0: no check).
MIN_FREE_MB = 256


def check_logdir(logdir: str, min_free_mb: float | None = None) -> None:
    """Fails early (one line) when ``logdir`` cannot be created or written, or its disk is nearly full.

    The free space is checked first, on the nearest existing folder of
    ``logdir``, so a nearly full disk is reported before anything is created.

    Args:
        logdir: the root folder of all runs (created when missing).
        min_free_mb: free space (MiB) required on its disk. Default: the
            environment variable ``KDKERAS_MIN_FREE_MB``, else
            :data:`MIN_FREE_MB`; 0 turns the check off.

    Raises:
        PermissionError: ``logdir`` cannot be created or written, or its disk
            has less free space than required.
        ValueError: ``KDKERAS_MIN_FREE_MB`` is not a number.
    """
    if min_free_mb is None:
        text = os.environ.get("KDKERAS_MIN_FREE_MB", "").strip()
        try:
            min_free_mb = float(text) if text else MIN_FREE_MB
        except ValueError:
            raise UsageError(f"KDKERAS_MIN_FREE_MB must be a number of MiB (0: no check). Received: {text!r}.")
    if min_free_mb > 0:
        existing = os.path.abspath(logdir)
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        try:
            free_mb = shutil.disk_usage(existing).free / 2**20
        except OSError:
            free_mb = None  # unknown here: the write test below still runs
        if free_mb is not None and free_mb < min_free_mb:
            raise NotWritableError(
                f"--logdir '{logdir}' is on a nearly full disk: {free_mb:.0f} MiB free, a run needs at "
                f"least {min_free_mb:g} MiB. Free some space or choose another --logdir "
                f"(KDKERAS_MIN_FREE_MB sets the limit).")
    try:
        os.makedirs(logdir, exist_ok=True)
    except OSError as err:
        raise NotWritableError(f"Cannot create --logdir '{logdir}': {err.strerror}.")
    probe = os.path.join(logdir, f".write-test-{os.getpid()}")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise NotWritableError(f"--logdir '{logdir}' is not writable: {err.strerror}.")


#: Plain-named folders already reported in this process (each is reported once).
_reported: set = set()


def recorded_data_id(folder: str) -> tuple[str | None, str]:
    """``(data id, "")`` of the data a run folder read, or ``(None, why it cannot be told)``.

    ``("", why)`` when the folder has no ``config.yaml`` at all (no record).

    A folder written since runs record their data has it in ``config.yaml``;
    an older one names its source there (``archive``, ``data_dir``), whose
    fingerprint is taken now when the source is still there.
    """
    from kdkeras.data.fingerprint import fingerprint

    try:
        with open(RunFolder(folder).config_path) as f:
            recorded = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        recorded = None
    if recorded is None and not os.path.exists(RunFolder(folder).config_path):
        return "", "it has no config.yaml"  # no record at all (a run writes it first): "" = nothing known
    if not isinstance(recorded, dict):
        return None, "its config.yaml cannot be read"
    if isinstance(recorded.get("data"), dict) and recorded["data"].get("id"):
        return str(recorded["data"]["id"]), ""
    archive, data_dir = recorded.get("archive"), recorded.get("data_dir")
    source = archive if archive is not None else data_dir
    if source is not None and not os.path.exists(os.path.expanduser(str(source))):
        return None, f"the data it recorded ({'archive' if archive is not None else 'data_dir'} '{source}') is gone"
    try:
        return fingerprint(recorded.get("dataset") or "cifar100", archive=archive, data_dir=data_dir).id, ""
    except Exception as err:  # noqa: BLE001  (an unreadable source: cannot be told)
        return None, f"its data cannot be read now ({type(err).__name__})"


def run_dir(config, logdir: str) -> str:
    """The run's folder: ``<logdir>/<dataset>/<run name>``, checked against the data it holds.

    Two names can hold a run: the plain name (:func:`plain_run_name`: runs on
    canonical data, and every run written before runs recorded their data)
    and the name whose hash includes the data's id. The plain folder is the
    run's only when the data it recorded is this run's data (its source's
    fingerprint now, for an older folder); a plain folder of other data, or of
    data that cannot be checked any more (one line says which), is left alone
    and the run takes the data-named folder. So different data is never
    reused, and an older run on the same data resumes where it is
    (docs/reliability.md, "Data identity").
    """
    import sys

    data = config_lib.data_fingerprint(config)
    base = os.path.join(logdir, config.dataset)
    named = os.path.join(base, config_lib.data_run_name(config, None, data))
    plain = os.path.join(base, config_lib.plain_run_name(config))
    if os.path.exists(named):
        return named
    if os.path.isdir(plain):
        recorded, why = recorded_data_id(plain)
        if recorded == data.id or (recorded == "" and data.canonical):
            return plain  # (a plain folder with no record at all is canonical data's, as new ones are)
        if not recorded and plain not in _reported:
            _reported.add(plain)
            print(f"kdkeras: warning: run folder {plain} has this run's settings, but {why}: it is not reused; "
                  f"this run goes to {named}.", file=sys.stderr, flush=True)
        return named
    return plain if data.canonical else named
