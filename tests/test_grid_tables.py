"""A grid's tables hold the numbers of its runs: every cell of table.csv and table.md recomputed by hand.

The runs are finished run folders written directly (config.yaml and results.json, no training), so each
cell's inputs are known: a wrong run in a row, a population std, or a gain over the wrong baseline fails.
"""

import csv
import os
import statistics

import numpy as np
import pytest

from kdkeras import grid
from kdkeras.training.run_folder import RunFolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke_grid.yaml")
SEEDS = 3


def _accuracies(cell, rng_of):
    """Per-run accuracies (fractions), different for every run and measure."""
    rng = rng_of(cell)
    final, at_best_val = rng.uniform(0.05, 0.95, size=2)
    return {"test_accuracy": float(final), "test_accuracy_at_best_val": float(at_best_val),
            "val_accuracy": 0.5, "best_val_epoch": 1}


def _finished_grid(logdir):
    spec = grid.load_grid(SMOKE)
    spec.seeds = SEEDS
    cells = grid.plan(spec, logdir)
    stored = {}
    for i, cell in enumerate(cells):
        folder = RunFolder(cell.run_dir)
        os.makedirs(folder.path)
        folder.write_config(cell.config)
        results = {"model": cell.config.model, "teacher": cell.config.teacher, "seed": cell.config.seed,
                   "epochs": cell.config.epochs, "best_test_accuracy": 0.99,
                   **_accuracies(cell, lambda c: np.random.default_rng(1000 + i))}
        folder.write_results(results)
        stored[(cell.config.model, cell.config.teacher, cell.config.seed)] = results
    return spec, cells, stored


def _expected(spec, stored, key):
    """``{(half, row, student): (mean, std, n)}`` computed from the results, as the paper defines the rows."""
    def values(model, teacher=None):
        return [100.0 * stored[(model, teacher, seed)][key] for seed in range(SEEDS)]

    def stats(vals):
        return statistics.fmean(vals), statistics.stdev(vals), len(vals)

    out = {}
    for half, h in spec.halves.items():
        for s in h["students"]:
            student, residual = f"{spec.net}_{s}", f"{spec.net}_{s.replace('NR', 'R', 1)}"
            label = s.replace("_", "-")
            kd = {}
            for t in h["teachers"]:
                kd[t] = stats(values(student, f"{spec.net}_{t}"))
                out[(half, t.replace("_", "-"), label)] = kd[t]
            base, nr = stats(values(residual)), stats(values(student))
            out[(half, "Baseline", label)] = base
            out[(half, "NR-baseline", label)] = nr
            out[(half, "Acc. drop", label)] = (base[0] - nr[0], None, None)
            out[(half, "Distil. gain", label)] = (max(m for m, _, _ in kd.values()) - base[0], None, None)
    return out


def test_every_table_cell_is_computed_from_the_right_runs(tmp_path):
    logdir = str(tmp_path)
    spec, cells, stored = _finished_grid(logdir)
    folder = grid.write_tables(spec, logdir, log=lambda message: None)
    with open(os.path.join(folder, "table.csv")) as f:
        rows = list(csv.DictReader(f))
    for measure, key in (("final", "test_accuracy"), ("at_best_val", "test_accuracy_at_best_val")):
        expected = _expected(spec, stored, key)
        got = {(r["half"], r["row"], r["student"]): r for r in rows if r["measure"] == measure}
        assert set(got) == set(expected), measure
        for where, (mean, std, n) in expected.items():
            row = got[where]
            assert float(row["mean"]) == pytest.approx(mean, abs=1e-9), (measure, where)
            if std is None:  # the summary rows have no std or n
                assert (row["std"], row["n"]) == ("", ""), (measure, where)
            else:
                assert float(row["std"]) == pytest.approx(std, abs=1e-9), (measure, where)
                assert int(row["n"]) == n == SEEDS, (measure, where)

    # table.md prints the same numbers, rounded to 2 decimals, in the paper's layout.
    with open(os.path.join(folder, "table.md")) as f:
        text = f.read()
    expected = _expected(spec, stored, "test_accuracy")
    for half, h in spec.halves.items():
        title = f"**{half} half, final-epoch test accuracy (the paper's protocol) (%)**"
        block = text.split(title, 1)[1].split("**", 1)[0]
        lines = [line for line in block.splitlines() if line.startswith("|")]
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        students = header[1:]
        assert students == [s.replace("_", "-") for s in h["students"]]
        for line in lines[2:]:
            cells_ = [c.strip() for c in line.strip("|").split("|")]
            label = cells_[0].replace(" (↓)", "").replace(" (↑)", "")
            for student, shown in zip(students, cells_[1:]):
                mean, std, _ = expected[(half, label, student)]
                if std is None:
                    assert shown == f"{mean:.2f}" or shown == f"{mean:+.2f}", (half, label, student, shown)
                else:
                    assert shown.startswith(f"{mean:.2f}") and f"{std:.2f}" in shown, (half, label, student, shown)


def test_the_method_chosen_on_validation_is_chosen_by_validation_accuracy_alone():
    from kdkeras.experiments.grid.summary import chosen_on_validation

    def candidate(grid_name, method, val, test, student="NR-g2", teacher="R-g2", dataset="cifar10"):
        return {"dataset": dataset, "grid": grid_name, "net": "wrn16x1", "half": "left", "student": student,
                "teacher": teacher, "method": method, "val": dict(enumerate(val)), "test": dict(enumerate(test))}

    candidates = [
        candidate("a", "kd", [70.0, 72.0], [80.0, 80.0]),  # best on test, not on validation
        candidate("a", "fitnets", [73.0], [60.0]),  # best mean validation accuracy, one seed
        candidate("b", "at", [74.0, 70.0], [50.0, 50.0]),  # its first seed beats fitnets, its mean does not
        candidate("a", "kd", [90.0], [90.0], student="NR-g4"),  # alone for its student: nothing to choose
        candidate("a", "kd", [99.0], [99.0], dataset="cifar100"),  # another dataset: not a rival
        # Another teacher of the same student: chosen among its own, whatever the test split says.
        candidate("a", "kd", [60.0], [99.0], teacher="R-G4"), candidate("a", "at", [61.0], [10.0], teacher="R-G4"),
    ]
    chosen = {c["teacher"]: c for c in chosen_on_validation(candidates)}
    assert set(chosen) == {"R-g2", "R-G4"}
    assert (chosen["R-g2"]["grid"], chosen["R-g2"]["method"], chosen["R-g2"]["of"]) == ("a", "fitnets", 3)
    assert (chosen["R-G4"]["method"], chosen["R-G4"]["of"]) == ("at", 2)
    tie = [candidate("a", "kd", [70.0], [1.0]), candidate("a", "at", [70.0], [2.0])]
    assert chosen_on_validation(tie)[0]["method"] == "kd"  # the first in order
    assert chosen_on_validation([candidate("a", "kd", [], [1.0]), candidate("a", "at", [], [2.0])]) == []
