"""docs/results.md's CIFAR-100 table, recomputed by hand from the committed result files of its runs.

Every number of the table (marked ``<!-- table: reduced_cifar100 -->`` in
docs/results.md) is recomputed here from ``docs/results/reduced_cifar100/cifar100/*/``
(``config.yaml`` and ``results.json`` of each run), without kdkeras's table
code: per-seed final-epoch test accuracies, their mean and sample standard
deviation, and the per-seed differences (R - NR, KD - NR, KD - R) averaged
over the seeds both runs of a difference have. A cell shown as ``—`` has no
finished run yet; a cell with one seed shows its value alone.
"""

import os
import re

from helpers import committed_runs, marked_table, seed_stat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "docs", "results", "reduced_cifar100", "cifar100")
PAGE = os.path.join(ROOT, "docs", "results.md")
MARKER = "<!-- table: reduced_cifar100 -->"
#: Row label -> (network, dropout of every run of the row).
ROWS = {
    "WRN-16x1 (shallow)": ("wrn16x1", 0.3),
    "WRN-40x1 (deep)": ("wrn40x1", 0.3),
    "WRN-16x1, dropout 0": ("wrn16x1", 0.0),
    "WRN-40x1, dropout 0": ("wrn40x1", 0.0),
}
COLUMNS = ["R baseline", "NR baseline", "NR + KD (from R)", "WRN-16x2 teacher", "NR + KD (from WRN-16x2)",
           "Acc. drop (R - NR)", "KD - NR", "Distil. gain (KD - R)", "KD from WRN-16x2 - NR"]


def _runs():
    """``{(net, role, dropout): {seed: final test accuracy in %}}`` of the committed runs."""
    cells = {}
    for name, config, results in committed_runs(RUNS):
        assert config["epochs"] == results["epochs"] == 30 and config["val_size"] == 2500, name
        net, residual, grouping = config["model"].split("_")
        assert grouping == "g2", name
        dropout = 0.3 if config["dropout"] is None else config["dropout"]  # None: the paper's WRN dropout
        if config["teacher"] is None:
            role = "R" if residual == "R" else "NR"
            if net == "wrn16x2":
                net, role = "wrn16x1", "teacher16x2"  # the stronger teacher of the shallow student's arm
        else:
            role = "KD16x2" if config["teacher"].startswith("wrn16x2") else "KD"
        cells.setdefault((net, role, dropout), {})[config["seed"]] = 100.0 * results["test_accuracy"]
    return cells


def _stat(values):
    """The table's text for per-seed values: ``m ± s`` (sample std), ``m`` alone for one seed, ``—`` for none."""
    values = list(values)
    return seed_stat(values, unit="") if values else "—"


def _paired(a, b):
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def _table():
    """``{row label: {column: text}}`` of the marked table in docs/results.md."""
    header, rows = marked_table(PAGE, MARKER)
    assert header[1:] == COLUMNS, header
    return {cells[0]: dict(zip(COLUMNS, cells[1:])) for cells in rows}


def test_the_cifar100_table_is_recomputed_from_its_runs():
    runs = _runs()
    table = _table()
    assert set(table) <= set(ROWS) and table, table.keys()
    for label, row in table.items():
        net, dropout = ROWS[label]
        r, nr, kd, teacher, kd16 = (runs.get((net, role, dropout), {})
                                    for role in ("R", "NR", "KD", "teacher16x2", "KD16x2"))
        expected = {
            "R baseline": _stat(r.values()), "NR baseline": _stat(nr.values()), "NR + KD (from R)": _stat(kd.values()),
            "WRN-16x2 teacher": _stat(teacher.values()) if net == "wrn16x1" else "n/a",
            "NR + KD (from WRN-16x2)": _stat(kd16.values()) if net == "wrn16x1" else "n/a",
            "Acc. drop (R - NR)": _stat(_paired(r, nr)), "KD - NR": _stat(_paired(kd, nr)),
            "Distil. gain (KD - R)": _stat(_paired(kd, r)),
            "KD from WRN-16x2 - NR": _stat(_paired(kd16, nr)) if net == "wrn16x1" else "n/a",
        }
        for column in COLUMNS:
            assert re.sub(r"\*", "", row[column]) == expected[column], (label, column)


def test_every_committed_run_is_in_the_table():
    """No finished run is left out of the table (a row missing would hide it)."""
    table = _table()
    shown = {ROWS[label] for label in table}
    for net, role, dropout in _runs():
        assert (net, dropout) in shown, (net, role, dropout)
