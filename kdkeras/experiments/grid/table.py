"""A grid's tables in the paper's layout, from the finished runs' results."""

from __future__ import annotations

import csv
import io
import os

from kdkeras import hparams
from kdkeras.experiments.grid.expand import (axis_combinations, half_label, plan, select, select_pairs,
                                             table_configs)
from kdkeras.experiments.grid.measures import MEASURES  # noqa: F401  (also importable from here, as before)
from kdkeras.experiments.grid.measures import accuracies as _accuracies
from kdkeras.experiments.grid.spec import GridSpec
from kdkeras.training.run_folder import run_dir


def token_label(token: str) -> str:
    return token.replace("_", "-")  # "NR_g8" -> "NR-g8", the paper's labels


def collect(spec: GridSpec, logdir: str, key="test_accuracy", half=None, students=None, teachers=None):
    """``{half: kdkeras.tables.TableHalf}`` of the finished runs (accuracy in percent).

    With axes, one half per half and axis combination (:func:`half_label`).

    Args:
        key: a ``results.json`` key of :data:`MEASURES`, e.g.
            ``"test_accuracy"`` (final epoch).
    """
    from kdkeras.tables import TableHalf

    selected = select(spec, half, students, teachers)
    halves = {half_label(name, c): h for c in axis_combinations(spec) for name, h in selected.items()}
    dirs = {name: {"baseline": {}, "nr_baseline": {}, "kd": {}} for name in halves}
    for name, role, student, teacher, cfg in table_configs(spec, half, students, teachers):
        key_ = (token_label(teacher), token_label(student)) if role == "kd" else token_label(student)
        dirs[name][role].setdefault(key_, []).append(run_dir(cfg, logdir))
    out = {}
    for name, h in halves.items():
        accuracies = {role: {k: _accuracies(d, key) for k, d in cells.items()}
                      for role, cells in dirs[name].items()}
        out[name] = TableHalf(
            students=[token_label(s) for s in h["students"]],
            teachers=[token_label(t) for t in h["teachers"]],
            kd=accuracies["kd"], baseline=accuracies["baseline"], nr_baseline=accuracies["nr_baseline"],
        )
    return out


def _combine_pngs(paths, out_path):
    import matplotlib.image as mpimg

    from kdkeras.plotting import new_figure, save_png

    images = [mpimg.imread(p) for p in paths]
    fig = new_figure(7 * len(images), 6)
    axes = fig.subplots(1, len(images), squeeze=False)
    for ax, image in zip(axes[0], images):
        ax.imshow(image)
        ax.axis("off")
    fig.tight_layout()
    save_png(fig, out_path, dpi=100)


def _long_rows(half_name, measure, half, wide_csv):
    """The paper-layout CSV of one half as long rows (half, measure, row, student, mean, std, n)."""
    rows = []
    for record in csv.DictReader(io.StringIO(wide_csv)):
        for student in half.students:
            rows.append([half_name, measure, record["row"], student, record[student],
                         record.get(f"{student}_std", ""), record.get(f"{student}_n", "")])
    return rows


def _present(halves) -> bool:
    """Whether any cell of ``{half: TableHalf}`` has a value."""
    return any(v for h in halves.values() for cells in (h.kd, h.baseline, h.nr_baseline)
               for v in cells.values())


def write_tables(spec: GridSpec, logdir: str, half=None, students=None, teachers=None, log=print) -> str:
    """Writes ``<logdir>/<grid>/table.md``, ``table.csv``, ``table.png`` and ``comparison.md``.

    ``table.md`` has the paper's layout (teachers x students, then Baseline,
    NR-baseline, Acc. drop, Distil. gain), mean +- std over seeds, once per
    measure of :data:`MEASURES` that the runs report: the final epoch (the
    paper's protocol), the best validation epoch (runs with ``val_size``),
    precise BN, batch statistics, and the best epoch on the test split,
    labelled optimistic. ``table.csv`` holds the same numbers as long rows
    ``half,measure,row,student,mean,std,n``; ``table.png`` is a heatmap of
    the final epoch; ``comparison.md`` (CIFAR-100 paper tables only) puts
    every final-epoch cell beside the paper's printed value. The TensorBoard
    HParams experiment at the root of ``logdir`` is rewritten too
    (:func:`kdkeras.hparams.write_experiment`). A pair grid's tables have
    their own layout (:func:`kdkeras.experiments.grid.pair_table.write_pair_tables`).
    """
    import tempfile

    if spec.pairs:
        from kdkeras.experiments.grid.pair_table import write_pair_tables

        select_pairs(spec, half)  # a pair grid has no halves: one-line error for --half
        return write_pair_tables(spec, logdir, students, teachers, log=log)

    from kdkeras import tables
    from kdkeras.io_utils import atomic_write_text
    from kdkeras.paper import ACCURACY_TABLES

    folder = os.path.join(logdir, spec.name)
    os.makedirs(folder, exist_ok=True)
    hparams.write_experiment(logdir, [c.config for c in plan(spec, logdir, half, students, teachers)],
                             on_error=log)  # TensorBoard's HParams tab: every run of the table
    measured = {}
    for name, key, what in MEASURES:
        halves = collect(spec, logdir, key, half, students, teachers)
        if name == "final" or _present(halves):
            measured[name] = (what, halves)
    final = measured["final"][1]
    title = f"{spec.name}: {spec.net} on {spec.dataset}, {spec.seeds} seed(s)"
    md, csv_parts, comparison, pngs = [f"# {title}\n"], [], [f"# {title}: ours / paper\n"], []
    for name in final:
        for measure, (what, halves) in measured.items():
            md.append(tables.render_markdown(halves[name], f"{name} half, {what} (%)"))
            csv_parts += _long_rows(name, measure, halves[name], tables.render_csv(halves[name]))
        png = os.path.join(tempfile.mkdtemp(), f"{name}.png")
        tables.render_heatmap(final[name], png, f"{spec.net} {name} half (final epoch)")
        pngs.append(png)
        if spec.table in ACCURACY_TABLES and spec.dataset == "cifar100" and name in ACCURACY_TABLES[spec.table]:
            printed = ACCURACY_TABLES[spec.table][name]
            comparison.append(tables.render_comparison(final[name], printed, f"{name} half, final epoch"))
    atomic_write_text(os.path.join(folder, "table.md"), "\n\n".join(md) + "\n")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["half", "measure", "row", "student", "mean", "std", "n"])
    writer.writerows(csv_parts)
    atomic_write_text(os.path.join(folder, "table.csv"), out.getvalue())
    if pngs:
        _combine_pngs(pngs, os.path.join(folder, "table.png"))
    if len(comparison) > 1:
        atomic_write_text(os.path.join(folder, "comparison.md"), "\n\n".join(comparison) + "\n")
    log(f"Tables written to {folder}")
    return folder
