"""TensorBoard HParams of runs and grids, read back through TensorBoard's own hparams plugin."""

import os

import numpy as np
import pytest

from kdkeras import config as config_lib
from kdkeras import grid, hparams
from kdkeras.training import train_and_evaluate
from kdkeras.training.run_folder import RunFolder
from kdkeras.training.run_folder import run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke_grid.yaml")
#: One tiny run that reports every kind of metric: validation split, precise BN, batch statistics.
TINY = {"model": "wrn10x1_R_g2", "dataset": "synthetic", "epochs": 1, "train_size": 64, "val_size": 64,
        "test_size": 64, "batch_size": 64, "precise_bn": 1}


def seen_by_tensorboard(logdir):
    """``(experiment, {session name: SessionGroup})`` as TensorBoard's HParams tab gets them for ``logdir``."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    backend = backend_context.Context(base_plugin.TBContext(logdir=logdir, data_provider=provider))
    ctx = context.RequestContext()
    found = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=1000,
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE,
                          api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(ctx, backend, "", request).run().session_groups
    return found, {group.sessions[0].name: group for group in groups}


def values_of(group):
    """``({hparam: value}, {metric tag: value})`` of a session group."""
    from google.protobuf import json_format

    settings = {name: json_format.MessageToDict(value) for name, value in group.hparams.items()}
    metrics = {value.name.tag: value.value for value in group.metric_values}
    return settings, metrics


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("logs"))
    config = config_lib.resolve(TINY)
    results = train_and_evaluate(config, logdir, log=lambda message: None, verbose=0)
    return logdir, config, results


def test_a_run_logs_its_settings_and_results(tiny_run):
    from tensorboard.plugins.hparams import api_pb2

    logdir, config, results = tiny_run
    folder = RunFolder(results["run_dir"])
    assert hparams.has_session(folder)
    experiment, sessions = seen_by_tensorboard(logdir)
    # No grid: TensorBoard infers the experiment from the run's own session.
    name = os.path.relpath(folder.tensorboard_dir, logdir)
    assert list(sessions) == [name]
    group = sessions[name]
    assert group.name == f"synthetic/{folder.name}"
    assert api_pb2.Status.Name(group.sessions[0].status) == "STATUS_SUCCESS"
    settings, metrics = values_of(group)
    assert settings == hparams.run_settings(config)
    assert settings["kind"] == "baseline" and "teacher" not in settings and "temperature" not in settings
    assert (settings["model"], settings["epochs"], settings["val_size"], settings["precise_bn"]) == \
        ("wrn10x1_R_g2", 1, 64, 1)
    assert isinstance(settings["lr"], float) and settings["lr_milestones"] == ",".join(
        str(m) for m in config.lr_milestones)
    assert set(hparams.run_metrics(results)) == hparams.expected_metrics(config)
    expected = {hparams.TAG_PREFIX + key: float(np.float32(value)) for key, value in hparams.run_metrics(results).items()}
    assert {"hparams/test_accuracy", "hparams/best_val_accuracy", "hparams/test_accuracy_at_best_val",
            "hparams/test_accuracy_batch_stats", "hparams/test_accuracy_precise_bn", "hparams/params"} <= set(expected)
    # Every results.json number comes back (as float32, the scalars TensorBoard's default data server
    # reads: it skips float64 ones), next to the epoch curves.
    assert {tag: metrics[tag] for tag in expected} == expected
    from tensorboard.backend.event_processing import event_file_loader

    dtypes = {value.tensor.dtype for path in hparams.own_event_files(folder.tensorboard_dir)
              for event in event_file_loader.EventFileLoader(path).Load() for value in event.summary.value
              if value.metadata.plugin_data.plugin_name == "scalars"}
    assert dtypes == {1}  # DT_FLOAT
    assert ("epoch_accuracy", "test") in {(m.name.tag, m.name.group) for m in experiment.metric_infos}
    # Written again (e.g. by a grid's backfill): replaced, not added to.
    first = hparams.own_event_files(folder.tensorboard_dir)
    hparams.log_run(folder, config, folder.load_results())
    assert len(hparams.own_event_files(folder.tensorboard_dir)) == len(first) == 1


def _fake_finished(cell, accuracy):
    """A finished run folder of ``cell`` without training: its config and a results.json."""
    folder = RunFolder(cell.run_dir)
    os.makedirs(folder.path)
    folder.write_config(cell.config)
    results = {"model": cell.config.model, "epochs": cell.config.epochs, "test_accuracy": accuracy,
               "best_test_accuracy": accuracy, "best_test_epoch": 1, "test_accuracy_batch_stats": None,
               "params": 1234, "macs": 56789}
    folder.write_results(results)
    return folder, results


def test_a_grid_writes_its_experiment_at_the_logdir_root(tmp_path):
    logdir = str(tmp_path)
    spec = grid.load_grid(SMOKE)
    cells = grid.plan(spec, logdir)
    first, last = cells[0], cells[-1]
    done = {first.run_dir: _fake_finished(first, 0.25),  # finished before runs logged HParams
            last.run_dir: _fake_finished(last, 0.5)}
    hparams.log_run(done[last.run_dir][0], last.config, done[last.run_dir][1])  # as a finishing run does
    messages = []
    assert grid.run(spec, [first, last], logdir, log=messages.append) == {"done": 2}
    assert len(hparams.own_event_files(logdir)) == 1
    experiment, _ = seen_by_tensorboard(logdir)
    infos = {info.name: info for info in experiment.hparam_infos}
    assert sorted(v.string_value for v in infos["model"].domain_discrete.values) == \
        sorted({first.config.model, last.config.model})

    grid.write_tables(spec, logdir, log=messages.append)  # every cell of the table
    assert not any("not written" in m for m in messages)
    [path] = hparams.own_event_files(logdir)
    experiment, sessions = seen_by_tensorboard(logdir)
    infos = {info.name: info for info in experiment.hparam_infos}
    assert sorted(v.string_value for v in infos["model"].domain_discrete.values) == \
        sorted({c.config.model for c in cells})
    assert sorted(v.string_value for v in infos["teacher"].domain_discrete.values) == \
        sorted({c.config.teacher for c in cells if c.kind == "kd"})
    assert sorted(v.string_value for v in infos["kind"].domain_discrete.values) == ["baseline", "kd"]
    assert [v.number_value for v in infos["epochs"].domain_discrete.values] == [1]
    tags = [m.name.tag for m in experiment.metric_infos]
    assert tags[0] == "hparams/test_accuracy" and "hparams/params" in tags
    assert not any("val" in tag or "precise_bn" in tag for tag in tags)  # the smoke grid has neither

    # Both finished runs are listed (the first one's session backfilled), with their values.
    assert sorted(group.name for group in sessions.values()) == sorted(
        f"synthetic/{os.path.basename(d)}" for d in done)
    for cell in (first, last):
        folder, results = done[cell.run_dir]
        settings, metrics = values_of(sessions[os.path.relpath(folder.tensorboard_dir, logdir)])
        assert settings == hparams.run_settings(cell.config)
        assert metrics == {"hparams/test_accuracy": results["test_accuracy"],
                           "hparams/best_test_accuracy": results["test_accuracy"],
                           "hparams/best_test_epoch": 1, "hparams/params": 1234, "hparams/macs": 56789}

    # Written again (a second shard, the tables): one experiment file, still the same.
    again = hparams.write_experiment(logdir, [c.config for c in cells])
    assert hparams.own_event_files(logdir) == [again] != [path]
    assert seen_by_tensorboard(logdir)[0].hparam_infos == experiment.hparam_infos


def test_a_run_finishing_later_stays_inside_the_domains(tmp_path):
    logdir = str(tmp_path)
    cells = grid.plan(grid.load_grid(SMOKE), logdir)
    hparams.write_experiment(logdir, [cells[0].config])
    other = config_lib.resolve({**cells[0].config.to_dict(), "seed": 7})
    folder, results = _fake_finished(grid.Cell("baseline", other, run_dir(other, logdir)), 0.75)
    hparams.log_run(folder, other, results)
    experiment, sessions = seen_by_tensorboard(logdir)
    seeds = {info.name: info for info in experiment.hparam_infos}["seed"].domain_discrete.values
    assert [v.number_value for v in seeds] == [0, 7]
    assert len(sessions) == 1


def test_writing_failures_do_not_stop_a_run(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the run's folder should be")
    config = config_lib.resolve(TINY)
    messages = []
    assert hparams.log_run(RunFolder(str(blocked / "run")), config, {"test_accuracy": 0.5},
                           on_error=messages.append) is None
    assert len(messages) == 1 and messages[0].startswith("TensorBoard HParams of run not written")
    with pytest.raises(OSError):
        hparams.log_run(RunFolder(str(blocked / "run")), config, {"test_accuracy": 0.5})
