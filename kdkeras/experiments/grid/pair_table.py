"""A pair grid's tables: every method on every teacher-student pair, beside the published numbers.

Rows are the pair's hard-target runs (``Teacher``, ``Student``) and one row
per distillation method (per axis combination); columns are the pairs
(``teacher -> student``). A cell holds the finished seeds' mean ± std and
their number, ``—`` when no seed has finished, and ``n/a`` (with its reason)
for a run that the grid's ``not_applicable`` excludes, or under ``--plain``
for every run of a pair whose student has no plain form: nothing is filled in.
"""

from __future__ import annotations

import csv
import io
import os

from kdkeras import hparams
from kdkeras.experiments.grid.expand import pair_configs, plan, select_pairs
from kdkeras.experiments.grid.published import STUDENT_ROW, TEACHER_ROW, load_published
from kdkeras.experiments.grid.spec import GridSpec
from kdkeras.experiments.grid.measures import MEASURES
from kdkeras.experiments.grid.measures import accuracies as _accuracies
from kdkeras.training.run_folder import run_dir

#: The measures that ``comparison.md`` shows (of :data:`~kdkeras.experiments.grid.table.MEASURES`).
COMPARED = ("final", "at_best_val", "best_on_test")
#: Titles of a pair grid's measures where they differ from a paper table's (no "paper's protocol" here).
_TITLES = {
    "final": "final-epoch test accuracy",
    "best_on_test": "best-epoch test accuracy (OPTIMISTIC: the epoch is selected on the test split itself; "
                    "what the published tables' reference code prints)",
}


def row_label(spec: GridSpec, config) -> str:
    """A KD run's row: its method, plus the grid's other axes (``kd``, ``kd, init=dirac``)."""
    return config.method + "".join(f", {k}={getattr(config, k)}" for k in spec.axes if k != "method")


def pair_cells(spec: GridSpec, logdir: str, students=None, teachers=None):
    """The layout of a pair grid's tables and the runs behind each cell.

    Returns:
        ``(pairs, rows, dirs, reasons)``: ``pairs`` ``[(label, teacher,
        student)]`` in config order; ``rows`` the row labels in order
        (``Teacher``, ``Student``, then the methods in axis order); ``dirs``
        ``{(pair, row): [run folder per seed]}``; ``reasons`` ``{(pair, row):
        reason}`` of the cells marked not applicable.
    """
    pairs = [(f"{p['teacher']} -> {p['student']}", p["teacher"], p["student"])
             for p in select_pairs(spec, None, students, teachers)]
    rows, dirs, reasons = [TEACHER_ROW, STUDENT_ROW], {}, {}
    for pair, role, cfg, reason in pair_configs(spec, None, students, teachers):
        row = {"teacher": TEACHER_ROW, "student": STUDENT_ROW}.get(role) or row_label(spec, cfg)
        if row not in rows:
            rows.append(row)
        if reason is not None:
            reasons[(pair, row)] = reason
            continue
        folders = dirs.setdefault((pair, row), [])
        folder = run_dir(cfg, logdir)
        if folder not in folders:  # a baseline is the same run for every method
            folders.append(folder)
    return pairs, rows, dirs, reasons


def _stats(values, digits=2) -> str:
    from kdkeras import tables

    stats = tables.summarize(values)
    if stats is None:
        return tables.MISSING
    mean, std = stats
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={len(values)})" if len(values) > 1 else \
        f"{mean:.{digits}f} (n=1)"


def _published_text(values) -> str:
    """``74.92 [crd, dkd]``, or ``74.92 [crd] · 74.90 [dkd]`` where the sources differ; ``—`` if none."""
    from kdkeras import tables

    if not values:
        return tables.MISSING
    by_value = {}
    for value, source in values:
        by_value.setdefault(f"{value:.2f}", []).append(source)
    return " · ".join(f"{v} [{', '.join(s)}]" for v, s in by_value.items())


def _footnotes(reasons) -> dict:
    """``{reason: number}`` in order of first appearance."""
    numbers = {}
    for reason in reasons.values():
        numbers.setdefault(reason, len(numbers) + 1)
    return numbers


def _header(pairs) -> list[str]:
    labels = [p[0] for p in pairs]
    return ["| method | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]


def write_pair_tables(spec: GridSpec, logdir: str, students=None, teachers=None, log=print) -> str:
    """Writes ``<logdir>/<grid>/table.md``, ``table.csv`` and (with ``published``) ``comparison.md``.

    ``table.md``: per measure of :data:`~kdkeras.experiments.grid.table.MEASURES`
    that the runs report (the final epoch always), methods x pairs, each cell
    ``mean ± std (n=seeds finished)``. ``table.csv``: the same as long rows
    ``pair,teacher,student,measure,row,mean,std,n,not_applicable,published``.
    ``comparison.md``: the final epoch, the best validation epoch (runs with
    ``val_size``) and the best epoch on the test split (what the reference
    codes of the published tables print), each cell beside the published
    number(s) with their source, then the published-only methods, the
    citations and the reasons of the ``n/a`` cells. Runs on another dataset
    than the published numbers' get a warning line. The TensorBoard HParams
    experiment at the root of ``logdir`` is rewritten too.
    """
    from kdkeras import tables
    from kdkeras.io_utils import atomic_write_text

    folder = os.path.join(logdir, spec.name)
    os.makedirs(folder, exist_ok=True)
    hparams.write_experiment(logdir, [c.config for c in plan(spec, logdir, None, students, teachers)],
                             on_error=log)
    pairs, rows, dirs, reasons = pair_cells(spec, logdir, students, teachers)
    measured = {}
    for name, key, what in MEASURES:
        values = {cell: _accuracies(d, key) for cell, d in dirs.items()}
        if name == "final" or any(values.values()):
            measured[name] = (_TITLES.get(name, what), values)
    notes = _footnotes(reasons)
    published = load_published(spec.published) if spec.published else None

    def ours(values, pair, row):
        if (pair, row) in reasons:
            return f"n/a [{notes[reasons[(pair, row)]]}]"
        return _stats(values.get((pair, row), []))

    title = f"{spec.name}: {len(pairs)} teacher-student pair(s) on {spec.dataset}, {spec.seeds} seed(s)"
    md = [f"# {title}\n", "Cells: mean ± std over the finished seeds (n = seeds finished); — : not run yet; "
          "n/a: not applicable (reasons at the end).\n"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["pair", "teacher", "student", "measure", "row", "mean", "std", "n", "not_applicable",
                     "published"])
    for measure, (what, values) in measured.items():
        md += [f"## {what} (%)\n", *_header(pairs)]
        for row in rows:
            md.append(tables._md_row([row, *(ours(values, p[0], row) for p in pairs)]))
        md.append("")
        for pair, teacher, student in pairs:
            for row in rows:
                cell = values.get((pair, row), [])
                stats = tables.summarize(cell)
                shown = published.values(teacher, student, row) if published and measure == "final" else []
                writer.writerow([pair, teacher, student, measure, row,
                                 "" if stats is None else f"{stats[0]:.4f}",
                                 "" if stats is None else f"{stats[1]:.4f}", len(cell),
                                 reasons.get((pair, row), ""),
                                 " ".join(f"{v:.2f}:{s}" for v, s in shown)])
    md += _reason_lines(notes, reasons)
    atomic_write_text(os.path.join(folder, "table.md"), "\n".join(md) + "\n")
    atomic_write_text(os.path.join(folder, "table.csv"), out.getvalue())
    if published is not None:
        text = _comparison(spec, pairs, rows, measured, reasons, notes, published, ours)
        atomic_write_text(os.path.join(folder, "comparison.md"), text)
    log(f"Tables written to {folder}")
    return folder


def _reason_lines(notes, reasons) -> list[str]:
    if not notes:
        return []
    lines = ["## Not applicable\n"]
    for reason, number in notes.items():
        cells = sorted({f"{pair}: {row}" for (pair, row), r in reasons.items() if r == reason})
        lines.append(f"{number}. {reason} ({'; '.join(cells)})")
    return lines + [""]


def _comparison(spec, pairs, rows, measured, reasons, notes, published, ours) -> str:
    """The text of ``comparison.md``."""
    from kdkeras import tables

    name = os.path.basename(published.path)
    md = [f"# {spec.name}: kdkeras beside the published numbers\n",
          f"{len(pairs)} teacher-student pair(s) on {spec.dataset}, {spec.seeds} seed(s) per cell. Published: "
          f"{published.metric} on {published.dataset}, from `{name}`:\n"]
    for key, source in published.sources.items():
        line = f"- [{key}] {' '.join(source['citation'].split())}"
        if source.get("url"):
            line += f" {source['url']}"
        if source.get("transcribed_from"):
            line += f". Transcribed from {' '.join(source['transcribed_from'].split())}"
        md.append(line + ".")
        if source.get("measure"):
            md.append(f"  Measure: {' '.join(source['measure'].split())}")
    md.append("")
    if spec.dataset != published.dataset:
        md += [f"**These runs are on {spec.dataset}, the published numbers on {published.dataset}: the two sides "
               f"are not comparable.**\n"]
    missing = [p[0] for p in pairs if not published.has_pair(p[1], p[2])]
    if missing:
        md += [f"No published numbers for: {', '.join(missing)}.\n"]
    md += ["Cells: kdkeras (mean ± std over the finished seeds, n = seeds finished) / published [source] "
           "(kdkeras − published, from the first published value). — : no finished run, or no published number; "
           "n/a: not applicable in kdkeras (reasons at the end).\n"]
    extra = [m for m in published.methods() if m in published.published_only]
    for measure in COMPARED:
        if measure not in measured:
            continue
        what, values = measured[measure]
        md += [f"## kdkeras: {what} (%)\n", *_header(pairs)]
        for row in rows + extra:
            cells = []
            for pair, teacher, student in pairs:
                shown = published.values(teacher, student, row)
                if row in extra:
                    text = "not in kdkeras"
                else:
                    text = ours(values, pair, row)
                    stats = tables.summarize(values.get((pair, row), []))
                    if stats is not None and shown and (pair, row) not in reasons:
                        diff = stats[0] - shown[0][0]
                        text += f" / {_published_text(shown)} ({round(diff, 2) + 0.0:+.2f})"
                        cells.append(text)
                        continue
                cells.append(f"{text} / {_published_text(shown)}")
            md.append(tables._md_row([f"{row} (published only)" if row in extra else row, *cells]))
        md.append("")
    if extra:
        md += ["Published-only rows, methods that kdkeras does not implement: "
               + "; ".join(f"{m}: {published.published_only[m]}" for m in extra) + ".\n"]
    md += _reason_lines(notes, reasons)
    return "\n".join(md) + "\n"
