"""docs/results.md's every-method table, recomputed by hand from the committed result files of its runs.

The table marked ``<!-- table: methods_wrn16x1 -->`` in docs/results.md is
recomputed here from ``docs/results/methods_wrn16x1/cifar10/*/`` (``config.yaml``
and ``results.json`` of each run), without kdkeras's table code: per row, the
final-epoch test accuracy of each seed and, in brackets, the test accuracy at
the epoch the validation split selects; one seed shows its value, several
their mean ± sample standard deviation and their number; beside it, the
difference from NR + KD, taken per seed and then averaged (± its sample
standard deviation over the seeds). Every committed run has its row, and
every row its runs.
"""

import os

from helpers import METHOD_LABELS, committed_runs, marked_table, paired_difference, seed_cell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "docs", "results", "methods_wrn16x1", "cifar10")
PAGE = os.path.join(ROOT, "docs", "results.md")
MARKER = "<!-- table: methods_wrn16x1 -->"


def _label(config):
    if config["teacher"] is None:
        return "R baseline" if config["model"] == "wrn16x1_R_g2" else "NR baseline"
    label = f"NR + {METHOD_LABELS[config['method']]}"
    if config["method"] == "dist" and config["temperature"] != 4.0:
        label += f" (T = {config['temperature']:g})"
    return label


def _runs():
    """``{row label: {seed: (final test accuracy, test accuracy at the best validation epoch)}}`` in %."""
    rows = {}
    for name, config, results in committed_runs(RUNS):
        assert results["epochs"] == 15 and results["val_examples"] == 2000, name  # the protocol of the page
        seeds = rows.setdefault(_label(config), {})
        assert config["seed"] not in seeds, (name, "two runs of one row and seed")
        seeds[config["seed"]] = (100.0 * results["test_accuracy"], 100.0 * results["test_accuracy_at_best_val"])
    return rows


def _row(label, runs):
    """The marked table's cells of one row: test accuracy, and the difference from NR + KD."""
    return [seed_cell(runs[label]), "—" if label == "NR + KD" else paired_difference(runs[label], runs["NR + KD"])]


def _table():
    """``{row label: [cell texts]}`` of the marked table."""
    header, rows = marked_table(PAGE, MARKER)
    assert header == ["run", "test accuracy", "minus NR + KD, per seed"], header
    return {label: cells for label, *cells in rows}


def test_the_every_method_table_is_recomputed_from_its_runs():
    runs, table = _runs(), _table()
    assert set(table) == set(runs), (sorted(set(runs) - set(table)), sorted(set(table) - set(runs)))
    for label in runs:
        assert table[label] == _row(label, runs), label
