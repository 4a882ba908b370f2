"""``--plain`` in runs: its settings and their one-line errors, run names, the exported model, a resumed anneal."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import Interrupt, checkout_env, error_lines, run_script, script_env, stop_after

from kdkeras import config as config_lib
from kdkeras.callbacks import read_history
from kdkeras.errors import UsageError
from kdkeras.models import build_model
from kdkeras.models.convert import load_model
from kdkeras.profiling import count_params
from kdkeras.training import train_and_evaluate

TINY = {"dataset": "synthetic", "epochs": 3, "train_size": 64, "test_size": 32, "batch_size": 32}


def test_plain_none_leaves_run_names_and_identities_as_they_were():
    base = config_lib.resolve({"model": "wrn10x1_NR_g2", **TINY})
    none = config_lib.resolve({"model": "wrn10x1_NR_g2", "plain": "none", **TINY})
    assert base.plain == "none" and base.anneal_fraction is None
    assert config_lib.run_name(none) == config_lib.run_name(base)
    assert not set(config_lib.identity(base)) & set(config_lib.PLAIN_FIELDS)
    rep = config_lib.resolve({"model": "wrn10x1_NR_g2", "plain": "repvgg", **TINY})
    assert config_lib.identity(rep) == {**config_lib.identity(base), "plain": "repvgg"}
    assert config_lib.run_name(rep) != config_lib.run_name(base)
    # anneal: the default fraction is filled in, so spelling it out names the same run.
    anneal = config_lib.resolve({"model": "wrn10x1_NR_g2", "plain": "anneal", **TINY})
    spelled = config_lib.resolve({"model": "wrn10x1_NR_g2", "plain": "anneal", "anneal_fraction": 0.5, **TINY})
    other = config_lib.resolve({"model": "wrn10x1_NR_g2", "plain": "anneal", "anneal_fraction": 0.25, **TINY})
    assert anneal.anneal_fraction == 0.5 and config_lib.run_name(anneal) == config_lib.run_name(spelled)
    assert config_lib.run_name(other) != config_lib.run_name(anneal)


def test_a_plain_students_teacher_is_the_plain_baseline():
    kd = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", "plain": "anneal", **TINY})
    plain_kd = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", **TINY})
    teacher = config_lib.teacher_config(kd)
    assert teacher.plain == "none" and teacher.anneal_fraction is None
    assert config_lib.run_name(teacher) == config_lib.run_name(config_lib.teacher_config(plain_kd))


@pytest.mark.parametrize("settings,fragment", [
    ({"plain": "bogus"}, "Unknown plain 'bogus'. Valid choices: none, repvgg, diracnet, anneal."),
    ({"model": "vgg8_NR", "plain": "repvgg"}, "plain=repvgg is not available for vgg8_NR (family vgg)"),
    ({"model": "wrn10x1_R_g2", "plain": "repvgg"}, "plain=repvgg takes the NR model name: --model=wrn10x1_NR_g2"),
    ({"anneal_fraction": 0.3}, "anneal_fraction is a setting of plain=anneal. Received: plain=none"),
    ({"plain": "anneal", "anneal_fraction": 1.5}, "anneal_fraction must be a number in (0, 1]"),
    ({"plain": "anneal", "anneal_fraction": 0}, "anneal_fraction must be a number in (0, 1]"),
    ({"plain": "diracnet", "init": "dirac"}, "init=dirac re-initialises the 3x3 convolutions that plain=diracnet"),
])
def test_bad_plain_settings_are_one_line_errors(settings, fragment):
    with pytest.raises(UsageError) as err:
        config_lib.resolve({"model": "wrn10x1_NR_g2", **TINY, **settings})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_plain_errors_from_the_command_line_exit_2_in_one_line():
    result = run_script("train.py", "--model=wrn10x1_R_g2", "--plain=repvgg", "--dataset=synthetic",
                        env=script_env(**checkout_env()))
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert "plain=repvgg takes the NR model name: --model=wrn10x1_NR_g2" in line


def _weights(path):
    return load_model(path).get_weights()


@pytest.mark.slow
def test_an_anneal_killed_mid_way_resumes_where_it_was(tmp_path):
    """Killed after epoch 1 of 2 (skip weight 2/3 then), resumed: the uninterrupted run's history and model."""
    config = config_lib.resolve({"model": "resnet8_NR", "plain": "anneal", "anneal_fraction": 1.0, **TINY,
                                 "epochs": 2})
    started = []
    whole = train_and_evaluate(config, str(tmp_path / "whole"), verbose=0, log=started.append)
    killed = str(tmp_path / "killed")
    with pytest.raises(Interrupt):
        train_and_evaluate(config, killed, callbacks=[stop_after(0)], verbose=0, log=lambda m: None)
    messages = []
    resumed = train_and_evaluate(config, killed, verbose=0, log=messages.append)
    assert any("Resuming" in m and "epoch 2/2" in m for m in messages), messages

    # 2 steps per epoch, 4 in all: lambda = 1 - t / 3 at step t, logged at each epoch's last step.
    histories = [read_history(os.path.join(run["run_dir"], "history.csv")) for run in (whole, resumed)]
    for history in histories:
        assert [row["skip_scale"] for row in history] == pytest.approx([2 / 3, 0.0])
    assert [row["loss"] for row in histories[1]] == pytest.approx([row["loss"] for row in histories[0]], rel=1e-5)
    for a, b in zip(_weights(os.path.join(resumed["run_dir"], "model.keras")),
                    _weights(os.path.join(whole["run_dir"], "model.keras"))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # model.keras is the NR network: no Add layer, the NR build's parameters, which results.json reports.
    network = load_model(os.path.join(resumed["run_dir"], "model.keras"))
    nr = build_model("resnet8_NR", num_classes=network.output_shape[-1], input_shape=network.input_shape[1:])
    assert not any(isinstance(layer, keras.layers.Add) for layer in network.layers)
    assert count_params(network) == count_params(nr) == resumed["params"]
    # The start line gives both counts: the R structure it trains (its projection shortcuts too) and the NR network.
    r = count_params(build_model("resnet8", num_classes=network.output_shape[-1], input_shape=network.input_shape[1:]))
    assert r > resumed["params"]
    assert f"2 epochs on synthetic (64 train / 32 test images), {r:,} params while training as anneal, " \
           f"{resumed['params']:,} deployed -> " in started[0], started[:2]
    assert [layer.name for layer in network.layers] == [layer.name for layer in nr.layers]
    stored = json.load(open(os.path.join(resumed["run_dir"], "results.json")))
    assert stored["test_accuracy"] == pytest.approx(whole["test_accuracy"])
    # initial.weights.h5 holds the folded network's initial weights (it loads into model.keras).
    network.load_weights(os.path.join(resumed["run_dir"], "initial.weights.h5"))


def test_a_grid_trains_its_nr_runs_plain_and_keeps_its_r_baselines(tmp_path):
    """A ``plain`` axis (or --plain): NR baselines and KD students train plain, R baselines and teachers do not."""
    from kdkeras import grid

    _, [spec] = grid.load_grids("configs/smoke_grid.yaml")
    spec.axes = {"plain": ["none", "repvgg"]}
    cells = grid.plan(spec, str(tmp_path))
    plain = {cell.config.model: set() for cell in cells}
    for cell in cells:
        plain[cell.config.model].add((cell.kind, cell.config.plain))
    assert plain["wrn10x1_R_g2"] == {("baseline", "none")}  # the R baseline, shared by both axis values
    assert plain["wrn10x1_R_G4"] == {("baseline", "none")}  # a teacher
    assert plain["wrn10x1_NR_g2"] == {("baseline", "none"), ("baseline", "repvgg"), ("kd", "none"), ("kd", "repvgg")}


PLAIN_PAIRS = """
name: plain_pairs
dataset: synthetic
seeds: 1
settings: {epochs: 1, train_size: 16, test_size: 16, batch_size: 16, plain: repvgg}
axes:
  method: [kd]
pairs:
  - {teacher: resnet56, student: resnet20}
  - {teacher: vgg13, student: vgg8}
"""


def test_a_pair_grid_with_plain_trains_each_student_as_its_plain_nr_network(tmp_path):
    """A pair grid's students are R names; ``plain`` trains the NR network of each, and a pair without one is n/a."""
    from kdkeras import grid

    path = tmp_path / "pairs.yaml"
    path.write_text(PLAIN_PAIRS)
    spec = grid.load_grid(str(path))
    cells = grid.plan(spec, str(tmp_path))
    runs = sorted((c.kind, c.config.model, c.config.teacher, c.config.plain) for c in cells)
    # The teacher as it is; the student and the KD run on resnet20_NR, trained as RepVGG; nothing of vgg13 -> vgg8.
    assert runs == [("baseline", "resnet20_NR", None, "repvgg"), ("baseline", "resnet56", None, "none"),
                    ("kd", "resnet20_NR", "resnet56", "repvgg")]
    reasons = {(pair, role): reason for pair, role, _, reason in grid.pair_configs(spec) if reason}
    assert set(reasons) == {("vgg13 -> vgg8", role) for role in ("teacher", "student", "kd")}
    assert reasons[("vgg13 -> vgg8", "kd")].startswith("plain=repvgg is not available for vgg8 (family vgg)")
    # The table step shows the pair as not applicable, with the reason.
    folder = grid.write_tables(spec, str(tmp_path), log=lambda *a: None)
    table = open(os.path.join(folder, "table.md")).read()
    assert "n/a [1]" in table and "plain=repvgg is not available for vgg8" in table


def test_a_pair_grid_refuses_a_plain_axis(tmp_path):
    """Its Teacher and Student rows would mix both values' students: --plain (one value) instead, in one line."""
    from kdkeras import grid

    path = tmp_path / "pairs.yaml"
    path.write_text(PLAIN_PAIRS.replace(", plain: repvgg}", "}")
                    .replace("  method: [kd]", "  method: [kd]\n  plain: [none, repvgg]"))
    with pytest.raises(UsageError) as err:
        grid.load_grid(str(path))
    assert str(err.value).startswith("A pair grid has no 'plain' axis") and "--plain=repvgg|diracnet|anneal" in \
        str(err.value) and "\n" not in str(err.value)
