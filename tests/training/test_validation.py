"""The validation protocol: held-out split, validation-selected results and tables, precise BN in runs."""

import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
import yaml
import helpers

from kdkeras import config as config_lib
from kdkeras import data as data_lib
from kdkeras import grid
from kdkeras.callbacks import read_history
from kdkeras.training.run_folder import run_dir

pytestmark = pytest.mark.slow  # a suite of tiny runs

STUDENT, TEACHER = "wrn10x1_NR_g2", "wrn10x1_R_g2"
SETTINGS = {"epochs": 2, "train_size": 128, "test_size": 64, "batch_size": 64, "val_size": 48, "precise_bn": 2}


# --------------------------------------------------------------------------- the split


def test_validation_split_is_held_out_balanced_seeded_and_independent_of_train_size(tmp_path):
    from cifar_archives import CIFAR10, write_cifar

    archive, _, _ = write_cifar(str(tmp_path), CIFAR10, n_train=300, n_test=50)
    arrays, _ = data_lib.load_splits("cifar10", ("train", "val", "test"), archive=archive, val_size=50)
    (xt, _), (xv, yv) = arrays["train"], arrays["val"]
    assert xt.shape[0] == 250 and xv.shape[0] == 50 and np.bincount(yv).tolist() == [5] * 10
    every = data_lib.load_splits("cifar10", ("train",), archive=archive)[0]["train"][0]
    keys = lambda x: {a.tobytes() for a in x}  # noqa: E731
    assert keys(xt) | keys(xv) == keys(every) and not keys(xt) & keys(xv)  # a partition
    smaller, _ = data_lib.load_splits("cifar10", ("train", "val"), archive=archive, val_size=50,
                                      sizes={"train": 100})
    assert np.array_equal(smaller["val"][0], xv) and smaller["train"][0].shape[0] == 100
    assert not keys(smaller["train"][0]) & keys(xv)
    other_seed, _ = data_lib.load_splits("cifar10", ("val",), archive=archive, val_size=50, seed=1)
    assert not np.array_equal(other_seed["val"][0], xv)
    with pytest.raises(data_lib.DataError, match="val_size=300 leaves no training images"):
        data_lib.load_splits("cifar10", ("train", "val"), archive=archive, val_size=300)
    with pytest.raises(data_lib.DataError, match="needs val_size"):
        data_lib.load_splits("cifar10", ("val",), archive=archive)


def test_a_teacher_inherits_the_validation_split():
    kd = config_lib.resolve({"model": STUDENT, "teacher": TEACHER, "dataset": "synthetic", **SETTINGS})
    teacher = config_lib.teacher_config(kd)
    assert (teacher.val_size, teacher.precise_bn) == (48, 2)  # never trained on the student's validation images
    assert config_lib.run_name(teacher) != config_lib.run_name(
        config_lib.resolve({"model": TEACHER, "dataset": "synthetic", **{**SETTINGS, "val_size": None}}))


# --------------------------------------------------------------------------- a suite with validation


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    grid_config = {"name": "tiny_val", "net": "wrn10x1", "halves": {"left": {"students": ["NR_g2"],
                                                                               "teachers": ["R_g2"]}}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(grid_config))
    (root / "tiny_nodrop.yaml").write_text(yaml.safe_dump({**grid_config, "name": "tiny_val_nodrop",
                                                           "settings": {"dropout": 0.0}}))
    (root / "suite.yaml").write_text(yaml.safe_dump({"name": "tiny_suite", "dataset": "synthetic", "seeds": 2,
                                                     "settings": SETTINGS, "grids": ["tiny.yaml", "tiny_nodrop.yaml"]}))
    logdir = str(root / "logs")
    result = helpers.run_script("grid.py", f"--config={root / 'suite.yaml'}", f"--logdir={logdir}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    name, specs = grid.load_grids(str(root / "suite.yaml"))
    return name, specs, logdir, result.stdout


def _results(specs, logdir):
    out = {}
    for spec in specs:
        for half, role, student, teacher, cfg in grid.table_configs(spec):
            directory = run_dir(cfg, logdir)
            out[(spec.name, role, cfg.seed)] = (directory, json.load(open(os.path.join(directory, "results.json"))))
    return out


def test_runs_report_validation_selected_and_batchnorm_numbers(suite):
    name, specs, logdir, stdout = suite
    assert name == "tiny_suite" and [s.name for s in specs] == ["tiny_val", "tiny_val_nodrop"]
    assert specs[1].settings["dropout"] == 0.0 and specs[1].settings["val_size"] == 48
    runs = _results(specs, logdir)
    assert len(runs) == 2 * 3 * 2  # grids x (R, NR, KD) x seeds
    for (grid_name, role, seed), (directory, results) in runs.items():
        history = read_history(os.path.join(directory, "history.csv"))
        assert [row["epoch"] for row in history] == [0, 1]
        val = [row["val_accuracy"] for row in history]
        best = int(np.argmax(val))
        assert results["best_val_epoch"] == best + 1
        assert results["best_val_accuracy"] == pytest.approx(val[best])
        assert results["test_accuracy_at_best_val"] == pytest.approx(history[best]["test_accuracy"])
        assert results["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"])
        assert results["val_accuracy"] == pytest.approx(history[-1]["val_accuracy"])
        assert (results["train_examples"], results["val_examples"], results["test_examples"]) == (128, 48, 64)
        for key in ("test_accuracy_precise_bn", "val_accuracy_precise_bn", "test_accuracy_batch_stats"):
            assert 0 <= results[key] <= 1
        assert results["batch_stats_gap"] == pytest.approx(results["test_accuracy_batch_stats"]
                                                           - results["test_accuracy"])
        assert results["lr_milestones"] == [1, 2]  # 30/60/90 of 120 scaled to 2 epochs (0.5 -> 1, 1 -> 1, 1.5 -> 2)
        saved = yaml.safe_load(open(os.path.join(directory, "config.yaml")))
        assert saved["lr_milestones"] == [1, 2] and saved["val_size"] == 48


def test_model_file_keeps_the_precise_statistics(suite):
    from kdkeras import batchnorm
    from kdkeras.training import load_model_file, make_run_data

    _, specs, logdir, _ = suite
    directory, results = _results(specs, logdir)[("tiny_val", "nr_baseline", 0)]
    config = config_lib.resolve(config_lib.load_yaml(os.path.join(directory, "config.yaml")))
    model = load_model_file(os.path.join(directory, "model.keras"))
    data = make_run_data(config)
    expected = batchnorm.population_statistics(model, data.train_plain, config.precise_bn)
    # The run measured them with the same code, layers and batches in another process with the same settings:
    # the same kernels, bit-identical in practice. 1e-4 relative, and 1e-5 absolute (of BN inputs of size
    # ~1) for a channel whose mean is near 0; the same count for the accuracy (abs 1e-6).
    for (mean, var), bn in zip(expected, batchnorm.batchnorm_layers(model)):
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    accuracy = model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(results["test_accuracy_precise_bn"], abs=1e-6)


def _table_rows(folder):
    with open(os.path.join(folder, "table.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_tables_show_the_validation_selected_numbers(suite):
    _, specs, logdir, _ = suite
    runs = _results(specs, logdir)
    folder = os.path.join(logdir, "tiny_val")
    text = open(os.path.join(folder, "table.md")).read()
    assert "test accuracy at the best validation epoch" in text and "OPTIMISTIC" in text
    assert "with precise BN" in text and "with batch statistics" in text
    rows = {(r["measure"], r["row"]): r for r in _table_rows(folder)}
    for measure, key, _ in grid.MEASURES:
        for row, role in (("Baseline", "baseline"), ("NR-baseline", "nr_baseline"), ("R-g2", "kd")):
            values = [100 * runs[("tiny_val", role, seed)][1][key] for seed in (0, 1)]
            assert float(rows[(measure, row)]["mean"]) == pytest.approx(np.mean(values), abs=0.01), (measure, row)
            assert float(rows[(measure, row)]["std"]) == pytest.approx(np.std(values, ddof=1), abs=0.01)
            assert rows[(measure, row)]["n"] == "2"


def test_suite_summary_pairs_seeds(suite):
    name, specs, logdir, stdout = suite
    assert f"Summary written to {os.path.join(logdir, name)}" in stdout
    runs = _results(specs, logdir)
    with open(os.path.join(logdir, name, "summary.csv"), newline="") as f:
        rows = {(r["grid"], r["measure"], r["column"]): r for r in csv.DictReader(f)}
    for spec in specs:
        for measure, key, _ in grid.MEASURES:
            get = lambda role: np.array([100 * runs[(spec.name, role, s)][1][key] for s in (0, 1)])  # noqa: E731
            expected = {"r_baseline": get("baseline"), "nr_baseline": get("nr_baseline"), "kd": get("kd"),
                        "acc_drop": get("baseline") - get("nr_baseline"),
                        "kd_gain_over_nr": get("kd") - get("nr_baseline"),
                        "distil_gain": get("kd") - get("baseline")}
            for column, values in expected.items():
                row = rows[(spec.name, measure, column)]
                assert float(row["mean"]) == pytest.approx(values.mean(), abs=1e-3), (spec.name, measure, column)
                assert float(row["std"]) == pytest.approx(values.std(ddof=1), abs=1e-3)
    md = open(os.path.join(logdir, name, "summary.md")).read()
    assert "| tiny_val_nodrop | NR-g2 | R-g2 | kd |" in md and "OPTIMISTIC" in md


def test_suite_summary_names_the_setting_chosen_on_validation(suite):
    """Both grids distil the same student from the same teacher (with and without dropout): the summary
    chooses between them by the KD runs' mean final-epoch validation accuracy, and reports the test accuracy."""
    name, specs, logdir, _ = suite
    runs = _results(specs, logdir)
    val = {spec.name: np.mean([runs[(spec.name, "kd", s)][1]["val_accuracy"] for s in (0, 1)]) for spec in specs}
    winner = max(val, key=val.get)
    test = [100 * runs[(winner, "kd", s)][1]["test_accuracy"] for s in (0, 1)]
    with open(os.path.join(logdir, name, "summary.csv"), newline="") as f:
        rows = {r["column"]: r for r in csv.DictReader(f) if r["column"].startswith("chosen_on_validation")}
    assert set(rows) == {"chosen_on_validation", "chosen_on_validation_val"}
    for column, values in (("chosen_on_validation", test),
                           ("chosen_on_validation_val", [100 * runs[(winner, "kd", s)][1]["val_accuracy"]
                                                         for s in (0, 1)])):
        row = rows[column]
        assert row["grid"] == winner and row["measure"] == "final" and row["n"] == "2"
        assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-3)
        assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-3)
    md = open(os.path.join(logdir, name, "summary.md")).read()
    section = md.split("## Chosen on the validation split")[1]
    assert f"| {winner}, left: kd | 2 | {100 * val[winner]:.2f} ± " in section, section


def test_reduced_protocol_suite_plans_both_depths_and_the_dropout_ablation(tmp_path):
    name, specs = grid.load_grids(os.path.join(helpers.ROOT, "configs", "reduced", "cifar10_wrn.yaml"))
    cells = grid.plan_all(specs, str(tmp_path))
    nets = {c.config.model.split("_")[0] for c in cells}
    assert len(nets) == 2
    for cell in cells:
        assert cell.config.dataset == "cifar10" and cell.config.val_size and cell.config.precise_bn
    per_seed = len(cells) // specs[0].seeds
    assert specs[0].seeds >= 2 and per_seed == 2 * 2 * 3  # depths x dropout (0.3, 0) x (R, NR, KD)
    assert {c.config.dropout for c in cells} == {None, 0.0}


def test_bnstats_script_diagnoses_runs(suite, tmp_path):
    _, specs, logdir, _ = suite
    runs = _results(specs, logdir)
    chosen = [runs[("tiny_val", role, 0)] for role in ("baseline", "nr_baseline")]
    output = str(tmp_path / "bn_variance.png")
    result = helpers.run_script("bnstats.py", f"--runs={','.join(d for d, _ in chosen)}", "--batches=2",
                                f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.getsize(output) > 0 and "precise+drop" in result.stdout
    for directory, results in chosen:
        diagnosis = json.load(open(os.path.join(directory, "bnstats.json")))
        # bnstats.py evaluates the saved model with the run's own layers, statistics and batches, in another
        # process with the same settings: the same kernels, the same counts.
        assert diagnosis["moving"] == pytest.approx(results["test_accuracy"])
        # The same population statistics as the run's own precise BN: the same accuracy.
        assert diagnosis["precise"] == pytest.approx(results["test_accuracy_precise_bn"], abs=1e-6)
        assert diagnosis["batch"] == pytest.approx(results["test_accuracy_batch_stats"], abs=1e-6)
        ratios = [layer["variance_ratio"] for layer in diagnosis["layers"]]
        assert ratios[0] == pytest.approx(1.0, abs=1e-5)  # the first BatchNorm comes before any dropout
        assert max(ratios) > 1.0  # layers after a dropout see a larger variance with it on
    bad = helpers.run_script("bnstats.py", "--runs=/nonexistent/run")
    assert bad.returncode == 2 and len(helpers.error_lines(bad.stderr)) == 1


def test_export_copies_the_small_files_and_a_copy_reads_as_finished(suite, tmp_path):
    name, specs, logdir, _ = suite
    destination = str(tmp_path / "published")
    result = helpers.run_script("grid.py", f"--config={_suite_path(logdir)}", f"--logdir={logdir}",
                                f"--export={destination}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _results(specs, logdir)
    for directory, results in runs.values():
        copy = os.path.join(destination, os.path.relpath(directory, logdir))
        assert json.load(open(os.path.join(copy, "results.json"))) == results
        assert os.path.exists(os.path.join(copy, "history.csv")) and os.path.exists(os.path.join(copy, "config.yaml"))
        assert not os.path.exists(os.path.join(copy, "model.keras"))
    assert os.path.exists(os.path.join(destination, name, "summary.md"))
    assert os.path.exists(os.path.join(destination, "tiny_val", "table.md"))
    dry = helpers.run_script("grid.py", f"--config={_suite_path(logdir)}", f"--logdir={destination}", "--dry_run")
    assert f"{len(runs)} done" in dry.stdout, dry.stdout[-2000:]


def test_export_of_a_partial_suite_writes_its_tables_and_skips_unfinished_runs(suite, tmp_path):
    name, specs, logdir, _ = suite
    partial = str(tmp_path / "logs")
    shutil.copytree(logdir, partial)
    for config in ("suite.yaml", "tiny.yaml", "tiny_nodrop.yaml"):
        shutil.copy(os.path.join(os.path.dirname(logdir), config), str(tmp_path / config))
    runs = _results(specs, partial)
    unfinished, _ = runs[("tiny_val", "kd", 1)]
    os.remove(os.path.join(unfinished, "results.json"))
    os.remove(os.path.join(partial, name, "summary.md"))
    destination = str(tmp_path / "published")
    result = helpers.run_script("grid.py", f"--config={_suite_path(partial)}", f"--logdir={partial}",
                                f"--export={destination}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not os.path.exists(os.path.join(destination, os.path.relpath(unfinished, partial)))
    finished = [d for key, (d, _) in runs.items() if d != unfinished]
    assert all(os.path.exists(os.path.join(destination, os.path.relpath(d, partial), "results.json"))
               for d in finished)
    with open(os.path.join(destination, name, "summary.csv"), newline="") as f:
        kd = [r for r in csv.DictReader(f) if r["grid"] == "tiny_val" and r["column"] == "kd"]
    assert kd and all(r["n"] == "1" for r in kd)  # the tables count the finished seed only


def test_export_again_removes_what_the_config_no_longer_writes_and_nothing_else(suite, tmp_path):
    name, specs, logdir, _ = suite
    destination = tmp_path / "published"
    first = [os.path.relpath(p, destination) for p in grid.export(name, specs, logdir, str(destination),
                                                                  log=lambda *_: None)]
    other = destination / "other_suite" / "summary.md"  # another config's export into the same folder
    other.parent.mkdir()
    other.write_text("another config's table")
    runs = _results(specs, logdir)
    dropped = {os.path.relpath(d, logdir) for (g, _, _), (d, _) in runs.items() if g == "tiny_val_nodrop"}
    kept = {os.path.relpath(d, logdir) for (g, _, _), (d, _) in runs.items() if g == "tiny_val"}
    assert dropped and kept and all((destination / path / "results.json").exists() for path in dropped | kept)

    # The same config without its dropout-0 grid, exported again into the same folder.
    messages = []
    copied = grid.export(name, specs[:1], logdir, str(destination), log=messages.append)
    assert all(not (destination / path).exists() for path in dropped)  # the run folders go, emptied
    assert not (destination / "tiny_val_nodrop").exists()
    assert all((destination / path / "results.json").exists() for path in kept)
    assert (destination / "tiny_val" / "table.md").exists() and other.read_text() == "another config's table"
    gone = [p for p in first if p.split(os.sep)[0] == "tiny_val_nodrop" or os.path.dirname(p) in dropped]
    assert len(gone) > 3 * len(dropped)  # each run's files and the grid's tables
    assert "tiny_val_nodrop" in messages[-1] and f"removed {len(gone)} files" in messages[-1], messages
    listed = (destination / name / "exported.txt").read_text().split()
    assert sorted(listed) == sorted(os.path.relpath(p, destination) for p in copied)
    assert os.path.exists(os.path.join(logdir, next(iter(dropped)), "results.json"))  # the log folder keeps all

    # A manifest never reaches outside the destination.
    (destination / name / "exported.txt").write_text("../outside.txt\n" + "\n".join(listed) + "\n")
    (tmp_path / "outside.txt").write_text("not the export's")
    grid.export(name, specs[:1], logdir, str(destination), log=lambda *_: None)
    assert (tmp_path / "outside.txt").exists()


def _suite_path(logdir):
    return os.path.join(os.path.dirname(logdir), "suite.yaml")


def test_export_teachers_keeps_the_teachers_models_so_that_a_copy_still_distils(suite, tmp_path):
    import filecmp

    name, specs, logdir, _ = suite
    runs = _results(specs, logdir)
    copies = {"results only": tmp_path / "results_only", "with teachers": tmp_path / "with_teachers"}
    for what, destination in copies.items():
        extra = ("--export_teachers",) if what == "with teachers" else ()
        result = helpers.run_script("grid.py", f"--config={_suite_path(logdir)}", f"--logdir={logdir}",
                                    f"--export={destination}", *extra)
        assert result.returncode == 0, result.stderr[-3000:]
    relative = {os.path.relpath(directory, logdir): role for (_, role, _), (directory, _) in runs.items()}
    teachers = {path for path, role in relative.items() if role == "baseline"}  # the R runs teach the KD runs
    models = {os.path.relpath(os.path.dirname(path), copies["with teachers"])
              for path in map(str, copies["with teachers"].rglob("model.keras"))}
    assert models == teachers  # every teacher's model, and no other run's
    for path in teachers:
        assert filecmp.cmp(os.path.join(logdir, path, "model.keras"),
                           os.path.join(copies["with teachers"], path, "model.keras"), shallow=False)
    assert not list(copies["results only"].rglob("model.keras"))

    # Each copy as a log folder with one KD run left to train: only the copy with the teachers can train it.
    kd_run, _ = runs[("tiny_val", "kd", 1)]
    for destination in copies.values():
        shutil.rmtree(os.path.join(destination, os.path.relpath(kd_run, logdir)))
    missing = helpers.run_script("grid.py", f"--config={_suite_path(logdir)}", f"--logdir={copies['results only']}")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    (line,) = helpers.error_lines(missing.stderr)
    assert "is finished but has no model.keras" in line and "--export_teachers" in line, line
    resumed = helpers.run_script("grid.py", f"--config={_suite_path(logdir)}", f"--logdir={copies['with teachers']}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert os.path.exists(os.path.join(copies["with teachers"], os.path.relpath(kd_run, logdir), "results.json"))
