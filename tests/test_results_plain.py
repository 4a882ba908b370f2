"""docs/results.md's residual-free rivals table, recomputed by hand from the committed result files of its runs.

The table marked ``<!-- table: plain_wrn -->`` in docs/results.md is recomputed
here, without kdkeras's table code, from ``docs/results/plain_wrn/cifar10/*/``
(``config.yaml`` and ``results.json`` of each run of
``configs/reduced/plain_wrn.yaml``) and, for the row of the registry's best
method, from the every-method grid of the same network and protocol
(``docs/results/methods_wrn16x1`` for WRN-16x1, ``docs/results/methods_reduced``
for WRN-40x1). That method is chosen here too, independently of the grid's
summary: among the distilled NR students of that grid, the cell (run name
without its seed) with the highest mean final-epoch validation accuracy over
its seeds; test accuracy plays no part.

Per row: the final-epoch test accuracy of each seed and, in brackets, the test
accuracy at the epoch the validation split selects; one seed shows its value,
several their mean ± sample standard deviation and their number; beside it, the
differences from the NR baseline and from NR + KD, taken per seed and then
averaged (± their sample standard deviation over the seeds).
"""

import os
import re

import numpy as np
from helpers import METHOD_LABELS, committed_runs, marked_table, paired_difference, seed_cell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")
RUNS = os.path.join(RESULTS, "plain_wrn", "cifar10")
#: The every-method grid of each network's protocol, where its best registry method comes from.
METHOD_GRIDS = {"wrn16x1": os.path.join(RESULTS, "methods_wrn16x1", "cifar10"),
                "wrn40x1": os.path.join(RESULTS, "methods_reduced", "cifar10")}
#: Each network's protocol: epochs and validation images.
PROTOCOL = {"wrn16x1": (15, 2000), "wrn40x1": (6, 1000)}
NETWORKS = {"wrn16x1": "WRN-16x1", "wrn40x1": "WRN-40x1"}
PAGE = os.path.join(ROOT, "docs", "results.md")
MARKER = "<!-- table: plain_wrn -->"
PLAIN = {"none": "NR", "repvgg": "RepVGG", "diracnet": "DiracNet", "anneal": "Annealed skips"}
#: The rows of each network, in the page's order (the registry's best method comes last).
ORDER = ["R baseline", "NR baseline", "NR + KD", "RepVGG", "RepVGG + KD", "DiracNet", "DiracNet + KD",
         "Annealed skips", "Annealed skips + KD", "Residual Distillation"]


def _net(config):
    return config["model"].split("_")[0]


def _label(config):
    plain = config.get("plain", "none")
    if config["teacher"] is None:
        if config["model"].endswith("_R_g2"):
            return "R baseline"
        return "NR baseline" if plain == "none" else PLAIN[plain]
    if config["method"] == "rd":
        return "Residual Distillation"
    return f"{PLAIN[plain]} + {METHOD_LABELS[config['method']]}"


def _accuracies(results):
    return 100.0 * results["test_accuracy"], 100.0 * results["test_accuracy_at_best_val"]


def _check_protocol(name, config, results):
    epochs, val = PROTOCOL[_net(config)]
    assert results["epochs"] == epochs and results["val_examples"] == val, name  # the protocol of the page
    assert config.get("dropout", 0.0) == 0.0, name


def best_registry_method(net):
    """``(cell, label, {seed: accuracies})`` of the every-method grid's distilled NR cell with the highest mean
    final-epoch validation accuracy; ``cell`` is the run name without its seed."""
    cells = {}
    for name, config, results in committed_runs(METHOD_GRIDS[net]):
        if config["teacher"] is None or _net(config) != net:
            continue
        _check_protocol(name, config, results)
        cell = re.sub(r"-s\d+-", "-", name)
        cells.setdefault(cell, {})[config["seed"]] = (config, results)
    cell = max(cells, key=lambda c: np.mean([r["val_accuracy"] for _, r in cells[c].values()]))
    config = next(iter(cells[cell].values()))[0]
    label = f"NR + {METHOD_LABELS[config['method']]}"
    if config.get("init", "he") != "he":
        label += f" ({config['init']} init)"
    return cell, label, {seed: _accuracies(results) for seed, (_, results) in cells[cell].items()}


def _runs():
    """``{network: {row label: {seed: (final test accuracy, test accuracy at the best validation epoch)}}}``
    in %, the registry's best method included."""
    nets = {}
    for name, config, results in committed_runs(RUNS):
        _check_protocol(name, config, results)
        seeds = nets.setdefault(_net(config), {}).setdefault(_label(config), {})
        assert config["seed"] not in seeds, (name, "two runs of one row and seed")
        seeds[config["seed"]] = _accuracies(results)
    for net, rows in nets.items():
        _, label, seeds = best_registry_method(net)
        rows[label + ", chosen on validation"] = seeds
    return nets


def _row(rows, label):
    """The marked table's cells of one row: test accuracy, minus NR, minus NR + KD."""
    cells = [seed_cell(rows[label])]
    for reference in ("NR baseline", "NR + KD"):
        cells.append("—" if label in ("R baseline", reference) or reference not in rows
                     else paired_difference(rows[label], rows[reference]))
    return cells


def _order(rows):
    return sorted(rows, key=lambda label: ORDER.index(label) if label in ORDER else len(ORDER))


def markdown():
    """The marked table as docs/results.md holds it."""
    lines = ["| network | run | test accuracy [at the best validation epoch] | minus NR, per seed"
             " | minus NR + KD, per seed |", "|---|---|---|---|---|"]
    for net, rows in sorted(_runs().items()):
        for label in _order(rows):
            lines.append("| " + " | ".join([NETWORKS[net], label, *_row(rows, label)]) + " |")
    return "\n".join(lines)


def test_the_residual_free_table_is_recomputed_from_its_runs():
    header, table = marked_table(PAGE, MARKER)
    assert header == ["network", "run", "test accuracy [at the best validation epoch]", "minus NR, per seed",
                      "minus NR + KD, per seed"], header
    expected = [[NETWORKS[net], label, *_row(rows, label)]
                for net, rows in sorted(_runs().items()) for label in _order(rows)]
    assert table == expected


def test_the_best_registry_method_is_the_one_the_page_names():
    """The registry's best method per network, chosen on validation accuracy only (ReviewKD for WRN-16x1,
    FitNets for WRN-40x1, as the page says)."""
    assert best_registry_method("wrn16x1")[1] == "NR + ReviewKD"
    assert best_registry_method("wrn40x1")[1] == "NR + FitNets"
