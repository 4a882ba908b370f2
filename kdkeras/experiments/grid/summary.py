"""A suite's summary across its grids: mean ± std over seeds per cell."""

from __future__ import annotations

import csv
import io
import os

from kdkeras.experiments.grid.expand import table_configs
from kdkeras.experiments.grid.table import MEASURES, token_label
from kdkeras.training.run_folder import run_dir


def _per_seed(run_dirs_by_seed: dict, key: str) -> dict:
    """``{seed: accuracy in percent}`` of the finished runs reporting ``key``."""
    from kdkeras.training import is_finished, load_results

    out = {}
    for seed, directory in run_dirs_by_seed.items():
        if is_finished(directory):
            value = load_results(directory).get(key)
            if value is not None:
                out[seed] = 100.0 * value
    return out


def _stats(values) -> str:
    from kdkeras import tables

    values = list(values)
    stats = tables.summarize(values)
    if stats is None:
        return tables.MISSING
    mean, std = stats
    n = len(values)
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _paired(a: dict, b: dict) -> list[float]:
    """Per-seed differences ``a - b`` over the seeds both have."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def _method_label(cfg) -> str:
    """How a student was distilled: ``kd``, ``fitnets``, ``kd, init=dirac``, ``kd, plain=repvgg``."""
    plain = getattr(cfg, "plain", "none")
    return (cfg.method + (f", init={cfg.init}" if cfg.init != "he" else "")
            + (f", plain={plain}" if plain != "none" else ""))


def summary_rows(specs, logdir: str) -> list[dict]:
    """One row per (grid, half, student, measure): R baseline, NR baseline, best KD, drop, gains.

    Differences (``acc_drop`` = R - NR, ``kd_gain_over_nr`` = KD - NR,
    ``distil_gain`` = KD - R) are taken per seed and then averaged, so their
    ``±`` is the spread over seeds of the difference itself. The KD column
    uses the teacher with the best mean over seeds (by the final-epoch
    accuracy, as the paper's tables).
    """
    rows = []
    for spec in specs:
        dirs = {}
        for name, role, student, teacher, cfg in table_configs(spec):
            key = (name, student)
            slot = dirs.setdefault(key, {"baseline": {}, "nr_baseline": {}, "kd": {}, "method": None})
            run = run_dir(cfg, logdir)
            if role == "kd":
                slot["kd"].setdefault(teacher, {})[cfg.seed] = run
                slot["method"] = _method_label(cfg)
            else:
                slot[role][cfg.seed] = run
        for (half, student), slot in dirs.items():
            finals = {t: _per_seed(d, "test_accuracy") for t, d in slot["kd"].items()}
            means = {t: sum(v.values()) / len(v) for t, v in finals.items() if v}
            teacher = max(means, key=means.get) if means else None
            for measure, key, what in MEASURES:
                r = _per_seed(slot["baseline"], key)
                nr = _per_seed(slot["nr_baseline"], key)
                kd = _per_seed(slot["kd"][teacher], key) if teacher else {}
                if not (r or nr or kd):
                    continue
                rows.append({
                    "grid": spec.name, "net": spec.net, "half": half, "student": token_label(student),
                    "teacher": token_label(teacher) if teacher else None, "method": slot["method"],
                    "measure": measure, "title": what,
                    "r_baseline": r, "nr_baseline": nr, "kd": kd,
                    "acc_drop": _paired(r, nr), "kd_gain_over_nr": _paired(kd, nr),
                    "distil_gain": _paired(kd, r),
                })
    return rows


def validation_candidates(specs, logdir: str) -> list[dict]:
    """Every KD setting of ``specs`` as a candidate for :func:`chosen_on_validation`.

    One candidate per grid, half (axis combination), student and teacher:
    ``{"dataset", "grid", "net", "half", "student", "teacher", "method", "val",
    "test"}``, where ``val`` and ``test`` map each finished seed to its
    final-epoch validation and test accuracy (percent).
    """
    candidates = {}
    for spec in specs:
        for half, role, student, teacher, cfg in table_configs(spec):
            if role != "kd":
                continue
            candidate = candidates.setdefault((spec.name, half, student, teacher), {
                "dataset": spec.dataset, "grid": spec.name, "net": spec.net, "half": half,
                "student": token_label(student), "teacher": token_label(teacher), "method": _method_label(cfg),
                "runs": {}})
            candidate["runs"][cfg.seed] = run_dir(cfg, logdir)
    out = []
    for candidate in candidates.values():
        runs = candidate.pop("runs")
        out.append({**candidate, "val": _per_seed(runs, "val_accuracy"), "test": _per_seed(runs, "test_accuracy")})
    return out


def chosen_on_validation(candidates) -> list[dict]:
    """Per dataset, student and teacher, the KD setting whose final-epoch validation accuracy is highest.

    Among the :func:`validation_candidates` that distil the same student
    (network and token) from the same teacher on the same dataset, with at
    least two methods or settings that report a validation accuracy
    (``--val_size``), the one with the highest mean ``val`` over its seeds;
    the first in order on a tie. The test accuracy plays no part in the
    choice, nor in which candidates compete: it is what the chosen one reports.

    Returns:
        The chosen candidates, each with ``"of"``: how many it was chosen from.
    """
    groups = {}
    for candidate in candidates:
        if candidate["val"]:
            key = (candidate["dataset"], candidate["net"], candidate["student"], candidate["teacher"])
            groups.setdefault(key, []).append(candidate)
    chosen = []
    for group in groups.values():
        if len(group) > 1:
            best = max(group, key=lambda c: sum(c["val"].values()) / len(c["val"]))
            chosen.append({**best, "of": len(group)})
    return chosen


def write_summary(name: str, specs, logdir: str, log=print) -> str:
    """Writes ``<logdir>/<name>/summary.md`` and ``summary.csv``: every grid of a suite in one table per measure.

    Columns: the distillation method (and a non-default init), R baseline,
    NR baseline, the NR student distilled from its best teacher, ``Acc. drop``
    (R - NR), ``distilled - NR`` (what distillation recovers) and ``Distil.
    gain`` (distilled - R, as the paper's tables), mean ± std over seeds.
    Where several methods distil one student from one teacher and the runs
    hold out a validation split, a last section names the method chosen on
    it (:func:`chosen_on_validation`); summary.csv gives its validation and
    test accuracies as the ``column`` values ``chosen_on_validation_val`` and
    ``chosen_on_validation``.
    """
    from kdkeras.io_utils import atomic_write_text

    rows = summary_rows(specs, logdir)
    folder = os.path.join(logdir, name)
    os.makedirs(folder, exist_ok=True)
    md = [f"# {name}: {len(specs)} grid(s), mean ± std over seeds (n per cell in summary.csv)\n"]
    for measure, _, what in MEASURES:
        chosen = [r for r in rows if r["measure"] == measure]
        if not chosen:
            continue
        md.append(f"## {what} (%)\n")
        md.append("| grid | student | teacher | method | R baseline | NR baseline | NR distilled "
                  "| Acc. drop (R - NR) | distilled - NR | Distil. gain (distilled - R) |")
        md.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in chosen:
            md.append(f"| {r['grid']} | {r['student']} | {r['teacher'] or '—'} | {r['method'] or '—'} | "
                      f"{_stats(r['r_baseline'].values())} | {_stats(r['nr_baseline'].values())} | "
                      f"{_stats(r['kd'].values())} | {_stats(r['acc_drop'])} | {_stats(r['kd_gain_over_nr'])} | "
                      f"{_stats(r['distil_gain'])} |")
        md.append("")
    chosen = chosen_on_validation(validation_candidates(specs, logdir))
    if chosen:
        md.append("## Chosen on the validation split\n")
        md.append("Per dataset, student and teacher, the distillation method or setting with the highest "
                  "final-epoch validation accuracy (mean over its seeds, n of them); the test accuracy is what it "
                  "reports, not what chose it.\n")
        md.append("| student | teacher | chosen (grid, half: method) | of | validation accuracy | "
                  "final-epoch test accuracy | n |")
        md.append("| --- | --- | --- | --- | --- | --- | --- |")
        for c in chosen:
            md.append(f"| {c['net']} {c['student']} | {c['teacher']} | {c['grid']}, {c['half']}: {c['method']} | "
                      f"{c['of']} | {_stats(c['val'].values())} | {_stats(c['test'].values())} | {len(c['test'])} |")
        md.append("")
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ("r_baseline", "nr_baseline", "kd", "acc_drop", "kd_gain_over_nr", "distil_gain")
    writer.writerow(["grid", "net", "half", "student", "teacher", "method", "measure", "column", "mean", "std",
                     "n", "values"])
    from kdkeras import tables

    def write_row(r, measure, column, values):
        stats = tables.summarize(values)
        writer.writerow([r["grid"], r["net"], r["half"], r["student"], r["teacher"] or "", r["method"] or "",
                         measure, column, "" if stats is None else f"{stats[0]:.4f}",
                         "" if stats is None else f"{stats[1]:.4f}", len(values),
                         " ".join(f"{v:.2f}" for v in values)])

    for r in rows:
        for column in columns:
            write_row(r, r["measure"], column, list(r[column].values()) if isinstance(r[column], dict) else r[column])
    for c in chosen:  # the chosen setting's validation accuracy (what chose it) and test accuracy (what it reports)
        write_row(c, "final", "chosen_on_validation_val", list(c["val"].values()))
        write_row(c, "final", "chosen_on_validation", list(c["test"].values()))
    atomic_write_text(os.path.join(folder, "summary.md"), "\n".join(md) + "\n")
    atomic_write_text(os.path.join(folder, "summary.csv"), out.getvalue())
    log(f"Summary written to {folder}")
    return folder
