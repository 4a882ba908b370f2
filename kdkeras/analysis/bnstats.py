"""Why a network evaluates worse than it trains: its BatchNorm statistics, layer by layer.

For a finished run, :func:`diagnose` measures the accuracy of the trained
weights under four sources of BatchNorm statistics:

* ``moving``: the moving averages the run tracked while training (its
  ``test_accuracy``);
* ``precise``: population statistics over N training batches with dropout
  off, as at inference (``--precise_bn``);
* ``precise_dropout_on``: the same, with dropout on during the passes. These
  are up to date (computed on the final weights) but describe the
  dropped-out activations that training sees;
* ``batch``: every batch normalised with its own statistics.

If ``precise_dropout_on`` is as bad as ``moving`` while ``precise`` recovers,
the gap is dropout's variance shift (Li et al., CVPR 2019), not stale
averages. The per-layer ratio ``var(dropout on) / var(dropout off)`` of every
BatchNorm layer's input shows where the shift enters and how it compounds
with depth. See docs/results.md for the measurements on real data.
"""

from __future__ import annotations

import json
import os

import numpy as np

from kdkeras import batchnorm
from kdkeras.errors import UsageError
from kdkeras.training.run_folder import BNSTATS_FILE



def _accuracy(model, dataset) -> float:
    correct = total = 0
    for images, labels in dataset:
        logits = np.asarray(model(images, training=False))
        correct += int(np.sum(np.argmax(logits, axis=-1) == np.asarray(labels)))
        total += int(np.asarray(labels).shape[0])
    return correct / max(total, 1)


def diagnose(run, *, split: str = "test", num_batches: int = 64) -> dict:
    """The BatchNorm-statistics diagnosis of a finished run (see the module docstring).

    Args:
        run: a :class:`kdkeras.analysis.runs.Run`.
        split: ``"test"`` or ``"val"`` (the run's validation split).
        num_batches: training batches per population estimate.

    Returns:
        A dict with ``run``, ``kind``, ``split``, ``num_batches``, the
        accuracies ``moving``, ``precise``, ``precise_dropout_on``, ``batch``,
        and ``layers``: per BatchNorm layer ``{"name", "variance_ratio"}``
        (geometric mean over channels of var(dropout on) / var(dropout off)).
    """
    from kdkeras.analysis.runs import load_run_model
    from kdkeras.training import make_run_data

    if split not in ("test", "val"):
        raise UsageError(f"Unknown split '{split}'. Valid choices: test, val.")
    data = make_run_data(run.config)
    dataset = data.test if split == "test" else data.val
    if dataset is None:
        raise UsageError(f"Run '{run.directory}' has no validation split (trained without --val_size).")
    model = load_run_model(run)
    off = batchnorm.population_statistics(model, data.train_plain, num_batches)
    on = batchnorm.population_statistics(model, data.train_plain, num_batches, dropout=True)
    results = run.results or {}
    moving = results.get(f"{split}_accuracy")
    if not run.config.precise_bn:  # model.keras holds the moving averages: measure them directly
        moving = _accuracy(model, dataset)
    label = run.label if run.config.dropout is None else f"{run.label}, dropout {run.config.dropout:g}"
    out = {"run": run.name, "kind": run.kind, "label": label, "seed": run.config.seed, "split": split,
           "num_batches": num_batches, "moving": moving}
    with batchnorm.swapped_statistics(model, off):
        out["precise"] = _accuracy(model, dataset)
    with batchnorm.swapped_statistics(model, on):
        out["precise_dropout_on"] = _accuracy(model, dataset)
    out["batch"] = batchnorm.batch_statistics_accuracy(model, dataset)
    layers = batchnorm.batchnorm_layers(model)
    out["layers"] = [{"name": bn.name,
                      "variance_ratio": float(np.exp(np.mean(np.log((v_on + 1e-12) / (v_off + 1e-12)))))}
                     for bn, (_, v_on), (_, v_off) in zip(layers, on, off)]
    return out


def write_diagnosis(run, diagnosis: dict) -> str:
    """Writes ``<run>/bnstats.json`` (atomically); returns its path."""
    from kdkeras.io_utils import atomic_write_json

    path = os.path.join(run.directory, BNSTATS_FILE)
    atomic_write_json(path, diagnosis)
    return path


def load_diagnosis(run_directory: str) -> dict | None:
    """A run's stored ``bnstats.json`` (``None`` when missing)."""
    path = os.path.join(run_directory, BNSTATS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def plot_variance_ratios(diagnoses, path: str, title: str = "") -> str:
    """One line per run: var(dropout on) / var(dropout off) of each BatchNorm layer's input, by depth.

    A colour per kind of run (R, NR, distilled), a line style per seed.
    """
    from kdkeras.plotting import new_figure, save_png

    fig = new_figure(11, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    colors = {"R": "tab:blue", "NR": "tab:red", "distilled": "tab:green"}
    seeds = sorted({d.get("seed", 0) for d in diagnoses})
    styles = ["-", "--", ":", "-."]
    for d in diagnoses:
        ratios = [layer["variance_ratio"] for layer in d["layers"]]
        depth = np.linspace(0, 1, len(ratios))
        seed = d.get("seed", 0)
        label = f"{d['label']} [{d['kind']}]" + (f", seed {seed}" if len(seeds) > 1 else "")
        ax.plot(depth, ratios, styles[seeds.index(seed) % len(styles)], color=colors.get(d["kind"]), lw=1.4,
                label=label)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("BatchNorm layer (relative depth: input -> head)")
    ax.set_ylabel("var(dropout on) / var(dropout off)")
    ax.set_title(title or "Variance shift of each BatchNorm layer's input")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path, bbox_inches="tight")


def format_table(diagnoses) -> str:
    """The accuracies of several diagnoses as a text table."""
    lines = [f"{'run':<44} {'kind':<9} {'moving':>7} {'precise':>8} {'precise+drop':>13} {'batch':>7}"]
    for d in diagnoses:
        def pct(key):
            return "-" if d.get(key) is None else f"{100 * d[key]:.2f}"

        lines.append(f"{d['run'][:44]:<44} {d['kind']:<9} {pct('moving'):>7} {pct('precise'):>8} "
                     f"{pct('precise_dropout_on'):>13} {pct('batch'):>7}")
    return "\n".join(lines)
