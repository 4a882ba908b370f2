"""docs/results.md's standard-zoo tables, recomputed by hand from the committed result files of their runs.

Each table marked ``<!-- table: NAME -->`` in docs/results.md is recomputed
here, without kdkeras's table code, from ``docs/results/NAME/cifar10/*/``
(``config.yaml`` and ``results.json`` of each run of its config, see
:data:`TABLES`). Per pair (teacher -> student) it
has the teacher, the student trained on hard targets and the student distilled
by each method: the final-epoch test accuracy of each seed and, in brackets,
the test accuracy at the epoch the validation split selects (one seed: its
value; several: mean ± sample standard deviation and their number), the test
accuracy with the precise BatchNorm statistics that ``model.keras`` keeps (what
a student distils from), and the difference from the student trained on hard
targets, per seed then averaged.
"""

import os

import pytest

from helpers import METHOD_LABELS, committed_runs, marked_table, paired_difference, seed_cell, seed_stat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "results.md")
#: Table name (its marker and folder) -> (config, teacher epochs, precise BN over augmented batches).
TABLES = {"crd_zoo": ("crd_zoo_cifar10.yaml", 20, True),
          "crd_zoo_equal_epochs": ("crd_zoo_cifar10_equal_epochs.yaml", 10, False)}
#: The grid's pairs, teacher -> student, in the page's order.
PAIRS = [("resnet56", "resnet20"), ("wrn_40_2", "wrn_16_2")]
HEADER = ["pair", "run", "test accuracy [at the best validation epoch]", "with precise BN (model.keras)",
          "minus the student on hard targets, per seed"]


def _check_protocol(table, name, config, results, teacher):
    """The protocol the page states: the crd recipe, students 10 epochs, 10,000 training and 1,000 validation
    images, precise BN over 64 batches (augmented or not, as the table's config says)."""
    _, teacher_epochs, augmented = TABLES[table]
    assert config["recipe"] == "crd" and config["train_size"] == 10000 and config["precise_bn"] == 64, name
    assert results["epochs"] == (teacher_epochs if teacher else 10) and results["val_examples"] == 1000, name
    assert config.get("precise_bn_augment", False) is augmented, name


def _runs(table):
    """``{(teacher, student): {row label: {seed: (final test accuracy, test accuracy at the best validation
    epoch, test accuracy with precise BN)}}}`` in %; a teacher's run is its pair's ``teacher`` row."""
    teachers = dict(PAIRS)
    rows = {pair: {} for pair in PAIRS}
    for name, config, results in committed_runs(os.path.join(ROOT, "docs", "results", table, "cifar10")):
        model, teacher = config["model"], config["teacher"]
        _check_protocol(table, name, config, results, teacher is None and model in teachers)
        if teacher is None and model in teachers:
            pair, label = (model, teachers[model]), "teacher"
        elif teacher is None:
            pair, label = next(p for p in PAIRS if p[1] == model), "student, hard targets"
        else:
            pair, label = (teacher, model), f"student + {METHOD_LABELS[config['method']]}"
        seeds = rows[pair].setdefault(label, {})
        assert config["seed"] not in seeds, (name, "two runs of one row and seed")
        seeds[config["seed"]] = (100.0 * results["test_accuracy"], 100.0 * results["test_accuracy_at_best_val"],
                                 100.0 * results["test_accuracy_precise_bn"])
    return rows


def _order(labels):
    fixed = ["teacher", "student, hard targets"]
    return [label for label in fixed if label in labels] + sorted(set(labels) - set(fixed))


def _table(name):
    table = []
    for pair, rows in _runs(name).items():
        baseline = rows.get("student, hard targets", {})
        for label in _order(rows):
            difference = ("—" if label in ("teacher", "student, hard targets")
                          else paired_difference(rows[label], baseline))
            seeds = rows[label]
            precise = seed_stat(seeds[s][2] for s in sorted(seeds))
            table.append([f"{pair[0]} -> {pair[1]}", label, seed_cell({s: v[:2] for s, v in seeds.items()}), precise,
                          difference])
    return table


def markdown(name="crd_zoo"):
    """The table marked ``name`` as docs/results.md holds it."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _table(name)]
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_standard_zoo_tables_are_recomputed_from_their_runs(name):
    marker = f"<!-- table: {name} -->"
    with open(PAGE) as f:
        page = f.read()
    if marker not in page:
        pytest.skip(f"docs/results.md has no table of {TABLES[name][0]} yet")
    header, table = marked_table(PAGE, marker)
    assert header == HEADER, header
    assert table == _table(name)
