"""TensorBoard HParams: every run's settings and results, every grid's experiment.

A finished run (:func:`log_run`) writes one event file into its
``tensorboard/`` folder holding

* its settings (:func:`run_settings`: the settings that make up its identity,
  as in :func:`kdkeras.config.run_name`) as the hparams plugin's session
  start, with the session name ``<dataset>/<run name>``;
* its final and best results (:func:`run_metrics`: the numbers of
  ``results.json``) as scalars ``hparams/<key>``, e.g.
  ``hparams/test_accuracy``, at the step of its last epoch;
* a session end with status "success".

A grid (:func:`write_experiment`) writes the experiment at the root of its
``--logdir``: one HParam per setting, with the values of every planned cell
and every finished run found there as its domain, and one Metric per
``hparams/<key>`` tag. TensorBoard started on the logdir then lists every run
in its HParams tab, sortable and filterable. Without an experiment (runs of
``train.py`` / ``distill.py`` alone), TensorBoard infers it from the runs'
own sessions. A run that finishes in a logdir holding an experiment updates
it, so its values stay inside the domains (TensorBoard's filters hide runs
whose values lie outside them).

Both files end in :data:`FILE_SUFFIX` and are replaced, not added to, when
written again.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os

from kdkeras import config as config_lib

#: The suffix of the event files written here (``events.out.tfevents.<...>.hparams``).
FILE_SUFFIX = ".hparams"
#: The prefix of the metric tags: ``hparams/test_accuracy``, ...
TAG_PREFIX = "hparams/"

#: The ``results.json`` numbers logged as metrics: ``(key, description)``.
METRICS = (
    ("test_accuracy", "Test accuracy after the last epoch (the paper's protocol)."),
    ("test_loss", "Test loss after the last epoch."),
    ("best_test_accuracy", "Best test accuracy of any epoch (optimistic: selected on the test split)."),
    ("best_test_epoch", "The epoch (1-based) of the best test accuracy."),
    ("val_accuracy", "Validation accuracy after the last epoch (runs with val_size)."),
    ("val_loss", "Validation loss after the last epoch (runs with val_size)."),
    ("best_val_accuracy", "Best validation accuracy of any epoch (runs with val_size)."),
    ("best_val_epoch", "The epoch (1-based) of the best validation accuracy (runs with val_size)."),
    ("test_accuracy_at_best_val", "Test accuracy at the best validation epoch (runs with val_size)."),
    ("test_accuracy_batch_stats", "Final test accuracy with BatchNorm batch statistics."),
    ("val_accuracy_batch_stats", "Final validation accuracy with BatchNorm batch statistics."),
    ("batch_stats_gap", "test_accuracy_batch_stats - test_accuracy."),
    ("test_accuracy_precise_bn", "Final test accuracy with precise BN statistics (runs with precise_bn)."),
    ("val_accuracy_precise_bn", "Final validation accuracy with precise BN statistics."),
    ("params", "Trainable parameters of the (student) network."),
    ("macs", "Multiply-accumulates of one forward pass of the (student) network."),
    ("wall_time_s", "Training time in seconds (sum of the epochs' times)."),
)
_VAL_METRICS = ("val_accuracy", "val_loss", "best_val_accuracy", "best_val_epoch", "test_accuracy_at_best_val",
                "val_accuracy_batch_stats")
_PRECISE_BN_METRICS = ("test_accuracy_precise_bn", "val_accuracy_precise_bn")


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------


def _field_types() -> dict:
    """``{setting: annotation text}`` of :class:`kdkeras.config.RunConfig` (``Optional[X]``: ``X``'s)."""
    import typing

    def text(kind):
        if isinstance(kind, str):
            return kind
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return text(args[0]) if len(args) == 1 else getattr(kind, "__name__", str(kind))

    return {f.name: text(f.type) for f in dataclasses.fields(config_lib.RunConfig)}


def run_settings(config) -> dict:
    """The HParams of a run: ``kind`` (``baseline`` / ``kd``) and its identity-defining settings.

    These are the settings of :class:`kdkeras.config.RunConfig` except where
    the data come from and how the run is spread over devices
    (:data:`kdkeras.config.NON_IDENTITY_FIELDS`); the KD settings only for a
    KD run. Unset settings (``None``) are left out; ``lr_milestones``
    becomes text (``"30,60,90"``), and every number of a setting has one type
    (floats stay floats), so the values of many runs form one domain.
    """
    types = _field_types()
    skip = set(config_lib.NON_IDENTITY_FIELDS)
    if not config.distill:
        skip |= set(config_lib.KD_FIELDS)
    values = {"kind": "kd" if config.distill else "baseline"}
    for name, value in config.to_dict().items():
        if name in skip or value is None:
            continue
        kind = types[name]
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            pass
        elif kind.startswith("float"):
            value = float(value)
        elif kind.startswith("int"):
            value = int(value)
        values[name] = value
    return values


def run_metrics(results: dict) -> dict:
    """``{key: value}`` of the :data:`METRICS` that ``results`` reports as finite numbers."""
    out = {}
    for key, _ in METRICS:
        value = results.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = value
    return out


def expected_metrics(config) -> set:
    """The :data:`METRICS` keys a finished run of ``config`` reports."""
    keys = {key for key, _ in METRICS if key not in _VAL_METRICS + _PRECISE_BN_METRICS}
    if config.val_size:
        keys |= set(_VAL_METRICS)
    if config.precise_bn:
        keys |= {"test_accuracy_precise_bn", "val_accuracy_precise_bn"} if config.val_size else \
            {"test_accuracy_precise_bn"}
    return keys


def session_name(config, folder) -> str:
    """The session (trial) name of a run in the HParams tab: ``<dataset>/<run name>``."""
    return f"{config.dataset}/{folder.name}"


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def own_event_files(directory: str) -> list[str]:
    """The event files written here (:data:`FILE_SUFFIX`) directly in ``directory``."""
    return sorted(glob.glob(os.path.join(glob.escape(directory), f"events.out.tfevents.*{FILE_SUFFIX}")))


def _replace_event_file(directory: str, write) -> str:
    """Writes a new event file into ``directory`` with ``write()`` and removes the older ones of this module."""
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    old = own_event_files(directory)
    writer = tf.summary.create_file_writer(directory, filename_suffix=FILE_SUFFIX)
    try:
        with writer.as_default():
            write()
    finally:
        writer.close()
    new = [path for path in own_event_files(directory) if path not in old]
    for path in old:
        try:
            os.remove(path)
        except FileNotFoundError:  # removed by another process writing the same file
            pass
    return new[-1] if new else directory


def _scalar(tag: str, value: float, step: int, description: str = "") -> None:
    """A float32 scalar summary: TensorBoard's default data server skips scalars of other dtypes.

    results.json keeps the exact values; float32 keeps 7 significant digits.
    """
    import tensorflow as tf

    tf.summary.scalar(tag, tf.constant(float(value), dtype=tf.float32), step=step, description=description)


def _guarded(what: str, function, on_error):
    """``function()``; with ``on_error``, a failure is reported through it (one line) instead of raised."""
    if on_error is None:
        return function()
    try:
        return function()
    except Exception as err:  # TensorBoard files are a view: never fail a run or a grid for them
        on_error(f"TensorBoard HParams {what} not written: {type(err).__name__}: {err}")
        return None


def log_run(folder, config, results: dict, on_error=None) -> str | None:
    """Writes a finished run's HParams session into ``folder.tensorboard_dir``.

    Also refreshes the experiment of the run's logdir (:func:`write_experiment`)
    when a grid wrote one there, so the run's values stay inside its domains.

    Args:
        folder: the run's :class:`kdkeras.training.run_folder.RunFolder`.
        config: its :class:`kdkeras.config.RunConfig`.
        results: its ``results.json``.
        on_error: ``None``: raise on failure; else a function given a one-line
            message instead (a finished run must not fail for its TensorBoard files).

    Returns:
        The event file written (``None`` when it failed and ``on_error`` was given).
    """
    def write():
        path = _write_session(folder, config, results)
        logdir = os.path.dirname(os.path.dirname(os.path.abspath(folder.path)))
        if own_event_files(logdir):
            write_experiment(logdir, backfill=False, keep=True)
        return path

    return _guarded(f"of {folder.name}", write, on_error)


def _write_session(folder, config, results: dict) -> str:
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hp_summary

    descriptions = dict(METRICS)
    step = int(results.get("epochs") or config.epochs)

    def write():
        import tensorflow as tf

        hp.hparams(run_settings(config), trial_id=session_name(config, folder))
        for key, value in run_metrics(results).items():
            _scalar(TAG_PREFIX + key, value, step, descriptions[key])
        end = hp_summary.session_end_pb(api_pb2.STATUS_SUCCESS)
        tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=step)

    return _replace_event_file(folder.tensorboard_dir, write)


def has_session(folder) -> bool:
    """Whether the run in ``folder`` has its HParams session (:func:`log_run`)."""
    return bool(own_event_files(folder.tensorboard_dir))


def finished_runs(logdir: str) -> list:
    """``[(folder, config, results)]`` of the finished runs ``<logdir>/<dataset>/<run>`` that can be read."""
    from kdkeras.training.run_folder import RESULTS_FILE, RunFolder

    runs = []
    for path in sorted(glob.glob(os.path.join(glob.escape(logdir), "*", "*", RESULTS_FILE))):
        folder = RunFolder(os.path.dirname(path))
        try:
            runs.append((folder, folder.load_config(), folder.load_results()))
        except Exception:  # an unreadable or outdated run folder is no part of the experiment
            continue
    return runs


def read_experiment(logdir: str):
    """The experiment (``api_pb2.Experiment``) written at the root of ``logdir``, or ``None``."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.plugins.hparams import metadata

    for path in reversed(own_event_files(logdir)):
        try:
            for event in event_file_loader.EventFileLoader(path).Load():
                for value in event.summary.value:
                    if value.tag == metadata.EXPERIMENT_TAG:
                        return metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
        except Exception:  # a file being replaced by another process: as if absent
            continue
    return None


def _declared(experiment_pb) -> tuple[dict, set]:
    """``({hparam: set of values}, metric keys)`` declared by an experiment, in :func:`run_settings`' types."""
    types = _field_types()
    values = {}
    for info in experiment_pb.hparam_infos:
        for value in info.domain_discrete.values:
            kind = value.WhichOneof("kind")
            item = getattr(value, kind) if kind in ("string_value", "bool_value", "number_value") else None
            if kind == "number_value" and types.get(info.name, "").startswith("int"):
                item = int(item)
            if item is not None:
                values.setdefault(info.name, set()).add(item)
    keys = {info.name.tag[len(TAG_PREFIX):] for info in experiment_pb.metric_infos
            if info.name.tag.startswith(TAG_PREFIX)}
    return values, keys


def experiment(configs=(), runs=(), declared=None):
    """``(hparams, metrics)`` of an experiment covering ``configs`` and ``runs``.

    Args:
        configs: :class:`kdkeras.config.RunConfig` of planned runs.
        runs: ``(folder, config, results)`` of finished runs.
        declared: an earlier experiment (``api_pb2.Experiment``) whose
            values and metrics are kept.

    Returns:
        ``hp.HParam`` with a discrete domain of every value the runs take,
        and ``hp.Metric`` for every :data:`METRICS` key they report.
    """
    from tensorboard.plugins.hparams import api as hp

    all_configs = [*configs, *(config for _, config, _ in runs)]
    values, keys = _declared(declared) if declared is not None else ({}, set())
    for config in all_configs:
        for name, value in run_settings(config).items():
            values.setdefault(name, set()).add(value)
    hparams = [hp.HParam(name, hp.Discrete(sorted(v))) for name, v in values.items()]
    for config in all_configs:
        keys |= expected_metrics(config)
    for _, _, results in runs:
        keys |= set(run_metrics(results))
    metrics = [hp.Metric(TAG_PREFIX + key, display_name=key, description=text)
               for key, text in METRICS if key in keys]
    return hparams, metrics


def write_experiment(logdir: str, configs=(), backfill: bool = True, keep: bool = False,
                     on_error=None) -> str | None:
    """Writes the HParams experiment of ``logdir`` into its root folder.

    The experiment covers the ``configs`` (a grid's cells, finished or not)
    and every finished run found in ``<logdir>/<dataset>/<run>``. Any earlier
    experiment written here is replaced.

    Args:
        logdir: the root folder of the runs.
        configs: the :class:`kdkeras.config.RunConfig` of planned runs.
        backfill: first write the HParams session of finished runs that have
            none (finished before they were logged).
        keep: also keep the values and metrics of the experiment written
            there before (a run adding itself to a grid's experiment).
        on_error: as in :func:`log_run`.

    Returns:
        The event file written (``None`` when it failed and ``on_error`` was given).
    """
    def write():
        from tensorboard.plugins.hparams import api as hp

        runs = finished_runs(logdir)
        if backfill:
            for folder, config, results in runs:
                if not has_session(folder):
                    _write_session(folder, config, results)
        hparams, metrics = experiment(configs, runs, read_experiment(logdir) if keep else None)
        return _replace_event_file(logdir, lambda: hp.hparams_config(hparams=hparams, metrics=metrics))

    return _guarded(f"experiment of {logdir}", write, on_error)
