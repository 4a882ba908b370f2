"""Accuracy tables in the layout of the paper's Tables 1-6.

Each of Tables 1-6 (one per network) has two halves of the same shape:

* left: non-residual students ``NR-g2 NR-g4 NR-g8 NR-g16`` (columns), each
  distilled from every residual teacher ``R-G1 R-G2 R-G4 R-G8 R-G16`` (rows);
* right: students ``NR-G2 NR-G4 NR-G8 NR-G16`` with teachers
  ``R-g2 R-g4 R-g8 R-g16``.

Below the teacher rows (``I_t \\ S_s``: teacher ``I_t``, student ``S_s``), each
half has four per-student rows:

* ``Baseline``: the residual version of the student (``NR-g8`` -> ``R-g8``)
  trained on hard targets;
* ``NR-baseline``: the non-residual student trained on hard targets;
* ``Acc. drop (↓)`` = mean(Baseline) - mean(NR-baseline): the accuracy lost by
  removing every residual connection;
* ``Distil. gain (↑)`` = max over teachers of mean(KD accuracy of the student
  distilled from that teacher) - mean(Baseline): how far the best distilled
  non-residual student ends above (positive) or below (negative) the residual
  baseline. A gain >= 0 means KD fully recovered the drop.

Both definitions reproduce every printed ``Acc. drop`` and ``Distil. gain``
cell of the paper's Tables 1-6 to the printed rounding (Table 1 left, NR-g16:
max(73.17, 73.61, 73.79, 73.33, 73.55) - 71.53 = 2.26).

A cell holds one accuracy (percent) per seed; :func:`summarize` turns it into
``(mean, std)``. Cells not run yet are absent or empty and show as ``—``;
summary rows are ``None`` when their inputs are missing, and the gain uses only
the teachers that have results.

This module is pure Python; matplotlib is imported only by
:func:`render_heatmap`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


#: Shown for a missing cell.
MISSING = "—"
#: Row labels of the four summary rows, as printed by :func:`render_markdown`.
BASELINE_LABEL = "Baseline"
NR_BASELINE_LABEL = "NR-baseline"
ACC_DROP_LABEL = "Acc. drop (↓)"
DISTIL_GAIN_LABEL = "Distil. gain (↑)"
#: The same rows in :func:`render_csv` (plain ASCII labels).
CSV_SUMMARY_LABELS = ("Baseline", "NR-baseline", "Acc. drop", "Distil. gain")
#: Corner cell of the header: teachers ``I_t`` down, students ``S_s`` across.
CORNER = "I_t \\ S_s"


def summarize(values: Iterable[float] | None) -> tuple[float, float] | None:
    """``(mean, std)`` of the per-seed accuracies of one cell.

    ``std`` is the sample standard deviation (``ddof=1``) when there are two or
    more values and ``0.0`` for a single value. Returns ``None`` for ``None``
    or an empty sequence (a cell not run yet).
    """
    if values is None:
        return None
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return None
    mean = math.fsum(vals) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean, math.sqrt(var)


@dataclass
class TableHalf:
    """One half of a Table 1-6: per-seed accuracies (percent) for each cell.

    ``students`` and ``teachers`` are paper labels (``"NR-g8"``, ``"R-G1"``) in
    column / row order. ``kd[(teacher, student)]`` holds the accuracies of that
    distilled student, one per seed. ``baseline[student]`` holds the residual
    version of the student (``"NR-g8"`` -> the ``R-g8`` model) trained on hard
    targets; ``nr_baseline[student]`` the non-residual student trained on hard
    targets. Any cell may be missing or empty.
    """

    students: tuple
    teachers: tuple
    kd: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    nr_baseline: dict = field(default_factory=dict)

    def __post_init__(self):
        self.students = tuple(self.students)
        self.teachers = tuple(self.teachers)

    def kd_stats(self, teacher: str, student: str) -> tuple[float, float] | None:
        """``(mean, std)`` of a KD cell, ``None`` when missing."""
        return summarize(self.kd.get((teacher, student)))

    def baseline_stats(self, student: str) -> tuple[float, float] | None:
        """``(mean, std)`` of the student's residual baseline, ``None`` when missing."""
        return summarize(self.baseline.get(student))

    def nr_baseline_stats(self, student: str) -> tuple[float, float] | None:
        """``(mean, std)`` of the student's non-residual baseline, ``None`` when missing."""
        return summarize(self.nr_baseline.get(student))

    def count(self, row: str, student: str) -> int:
        """Number of seeds behind a cell.

        ``row`` is a teacher label, ``"Baseline"`` or ``"NR-baseline"``.
        """
        if row == BASELINE_LABEL:
            values = self.baseline.get(student)
        elif row == NR_BASELINE_LABEL:
            values = self.nr_baseline.get(student)
        else:
            values = self.kd.get((row, student))
        return 0 if values is None else len(values)


def _mean(stats) -> float | None:
    return None if stats is None else stats[0]


def acc_drop(half: TableHalf) -> dict:
    """``{student: mean(Baseline) - mean(NR-baseline)}``; ``None`` where either is missing."""
    out = {}
    for s in half.students:
        b, nr = _mean(half.baseline_stats(s)), _mean(half.nr_baseline_stats(s))
        out[s] = None if b is None or nr is None else b - nr
    return out


def best_teacher(half: TableHalf) -> dict:
    """``{student: teacher}`` with the highest mean KD accuracy (``None`` without results).

    Ties go to the first teacher in row order.
    """
    out = {}
    for s in half.students:
        best, best_mean = None, None
        for t in half.teachers:
            m = _mean(half.kd_stats(t, s))
            if m is not None and (best_mean is None or m > best_mean):
                best, best_mean = t, m
        out[s] = best
    return out


def distil_gain(half: TableHalf) -> dict:
    """``{student: max_t mean(KD[t, student]) - mean(Baseline)}``.

    Only teachers with results take part; ``None`` where no teacher has a
    result for the student or its Baseline is missing.
    """
    best = best_teacher(half)
    out = {}
    for s in half.students:
        b = _mean(half.baseline_stats(s))
        t = best[s]
        out[s] = None if b is None or t is None else half.kd_stats(t, s)[0] - b
    return out


def half_from_printed(printed_half: Mapping) -> TableHalf:
    """A :class:`TableHalf` holding a printed half (from ``paper.ACCURACY_TABLES``) as one seed."""
    students = tuple(printed_half["students"])
    teachers = tuple(printed_half["teachers"])
    kd = {
        (t, s): [float(printed_half["kd"][t][s])]
        for t in teachers
        for s in students
        if s in printed_half["kd"].get(t, {})
    }
    baseline = {s: [float(v)] for s, v in printed_half["baseline"].items()}
    nr_baseline = {s: [float(v)] for s, v in printed_half["nr_baseline"].items()}
    return TableHalf(students, teachers, kd, baseline, nr_baseline)


# --------------------------------------------------------------------------- rendering


def _fmt_value(value: float | None, digits: int, sign: str = "") -> str:
    """``value`` to ``digits`` decimals (never ``-0.00``); ``sign="+"`` forces a sign."""
    if value is None:
        return MISSING
    value = round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{value:{sign}.{digits}f}"


def _fmt_stats(stats, n: int, digits: int) -> str:
    if stats is None:
        return MISSING
    mean, std = stats
    if n > 1:
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def _md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_header(students, corner: str = CORNER) -> list[str]:
    return [_md_row([corner, *students]), "|" + "---|" + "---:|" * len(students)]


def render_markdown(half: TableHalf, title: str = "", digits: int = 2) -> str:
    """The half as a GitHub markdown table in the paper's layout.

    One row per teacher, then ``Baseline``, ``NR-baseline``, ``Acc. drop (↓)``
    and ``Distil. gain (↑)``. Cells read ``mean ± std`` over seeds when there
    are several, ``mean`` for one seed and ``—`` when missing; the drop and
    gain rows show the difference of means only. ``title``, when given, is a
    bold caption line above the table.
    """
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines += _md_header(half.students)
    for t in half.teachers:
        lines.append(_md_row([t] + [
            _fmt_stats(half.kd_stats(t, s), half.count(t, s), digits) for s in half.students
        ]))
    lines.append(_md_row([BASELINE_LABEL] + [
        _fmt_stats(half.baseline_stats(s), half.count(BASELINE_LABEL, s), digits)
        for s in half.students
    ]))
    lines.append(_md_row([NR_BASELINE_LABEL] + [
        _fmt_stats(half.nr_baseline_stats(s), half.count(NR_BASELINE_LABEL, s), digits)
        for s in half.students
    ]))
    drop, gain = acc_drop(half), distil_gain(half)
    for label, values in ((ACC_DROP_LABEL, drop), (DISTIL_GAIN_LABEL, gain)):
        lines.append(_md_row([label] + [_fmt_value(values[s], digits) for s in half.students]))
    return "\n".join(lines) + "\n"


def render_csv(half: TableHalf) -> str:
    """The half as CSV (``csv`` module dialect ``excel``, ``\\n`` line ends).

    Columns: ``row``, then one mean column per student, then
    ``<student>_std`` (sample std over seeds, ``0.0`` for one seed) and
    ``<student>_n`` (number of seeds) for every student. Rows: the teachers,
    then ``Baseline``, ``NR-baseline``, ``Acc. drop`` and ``Distil. gain``.
    Missing values are empty fields; the drop and gain rows have empty std and
    n fields. Means are written with ``repr`` so they round-trip exactly.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    students = half.students
    writer.writerow(["row", *students, *(f"{s}_std" for s in students),
                     *(f"{s}_n" for s in students)])

    def stats_row(label, stats_of, count_label):
        stats = [stats_of(s) for s in students]
        means = ["" if st is None else repr(st[0]) for st in stats]
        stds = ["" if st is None else repr(st[1]) for st in stats]
        ns = [str(half.count(count_label, s)) for s in students]
        writer.writerow([label, *means, *stds, *ns])

    for t in half.teachers:
        stats_row(t, lambda s, t=t: half.kd_stats(t, s), t)
    stats_row(CSV_SUMMARY_LABELS[0], half.baseline_stats, BASELINE_LABEL)
    stats_row(CSV_SUMMARY_LABELS[1], half.nr_baseline_stats, NR_BASELINE_LABEL)
    blank = [""] * (2 * len(students))
    for label, values in ((CSV_SUMMARY_LABELS[2], acc_drop(half)),
                          (CSV_SUMMARY_LABELS[3], distil_gain(half))):
        writer.writerow([label, *("" if values[s] is None else repr(values[s])
                                  for s in students), *blank])
    return buf.getvalue()


def render_comparison(half: TableHalf, printed_half: Mapping, title: str = "",
                      digits: int = 2) -> str:
    """Markdown table placing each of our cells beside the paper's printed value.

    Cells read ``ours / paper (ours − paper)`` with means only, for the KD
    cells and the four summary rows (``—`` for whichever side is missing, and
    no difference then). Rows and columns follow ``half``; ``printed_half`` is a
    half of ``paper.ACCURACY_TABLES``. A last line gives the mean absolute
    difference over the KD cells present on both sides.
    """
    def printed(row: Mapping, s: str) -> float | None:
        v = row.get(s) if row else None
        return None if v is None else float(v)

    def cell(ours: float | None, paper: float | None) -> str:
        text = f"{_fmt_value(ours, digits)} / {_fmt_value(paper, digits)}"
        if ours is not None and paper is not None:
            text += f" ({_fmt_value(ours - paper, digits, sign='+')})"
        return text

    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines += ["Cells: ours / paper (ours − paper).", ""]
    lines += _md_header(half.students)
    kd_diffs = []
    for t in half.teachers:
        row = []
        for s in half.students:
            ours = _mean(half.kd_stats(t, s))
            paper = printed(printed_half["kd"].get(t), s)
            if ours is not None and paper is not None:
                kd_diffs.append(abs(ours - paper))
            row.append(cell(ours, paper))
        lines.append(_md_row([t, *row]))
    drop, gain = acc_drop(half), distil_gain(half)
    summary = (
        (BASELINE_LABEL, {s: _mean(half.baseline_stats(s)) for s in half.students}, "baseline"),
        (NR_BASELINE_LABEL, {s: _mean(half.nr_baseline_stats(s)) for s in half.students},
         "nr_baseline"),
        (ACC_DROP_LABEL, drop, "acc_drop"),
        (DISTIL_GAIN_LABEL, gain, "distil_gain"),
    )
    for label, ours_row, key in summary:
        lines.append(_md_row([label] + [
            cell(ours_row[s], printed(printed_half.get(key), s)) for s in half.students
        ]))
    lines.append("")
    if kd_diffs:
        lines.append(f"Mean |ours − paper| over {len(kd_diffs)} KD cells: "
                     f"{math.fsum(kd_diffs) / len(kd_diffs):.{digits}f}")
    else:
        lines.append("No KD cell present on both sides.")
    return "\n".join(lines) + "\n"


def render_heatmap(half: TableHalf, path: str, title: str = "") -> None:
    """Writes a PNG heatmap of the half to ``path`` (atomically).

    Top panel: the KD cells (teachers down, students across), annotated with
    the mean (and ``± std`` over several seeds); the best teacher of each
    column, which defines the Distil. gain, is in bold. Bottom panel, on the
    same colour scale: the ``Baseline`` and ``NR-baseline`` rows, with the
    Acc. drop and Distil. gain under the student labels. Missing cells are
    grey and read ``—``. The figure is drawn with the Agg canvas (no pyplot,
    so the process's matplotlib backend is left alone), saved to a temporary
    file in the destination folder and renamed onto ``path``.
    """
    import numpy as np
    from kdkeras.plotting import new_figure, save_png

    students, teachers = half.students, half.teachers
    summary_rows = (BASELINE_LABEL, NR_BASELINE_LABEL)

    def grid(rows, stats_of):
        means = np.full((len(rows), len(students)), np.nan)
        labels = []
        for i, r in enumerate(rows):
            row_labels = []
            for j, s in enumerate(students):
                st = stats_of(r, s)
                if st is not None:
                    means[i, j] = st[0]
                row_labels.append(_fmt_stats(st, half.count(r, s), 2).replace(" ± ", "\n± "))
            labels.append(row_labels)
        return means, labels

    kd_means, kd_labels = grid(teachers, half.kd_stats)
    base_means, base_labels = grid(summary_rows, lambda r, s: (
        half.baseline_stats(s) if r == BASELINE_LABEL else half.nr_baseline_stats(s)))
    finite = np.concatenate([kd_means.ravel(), base_means.ravel()])
    finite = finite[np.isfinite(finite)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    best = best_teacher(half)
    drop, gain = acc_drop(half), distil_gain(half)

    fig = new_figure(1.5 * len(students) + 2.6, 0.62 * (len(teachers) + 2) + 2.4)
    gs = fig.add_gridspec(2, 2, height_ratios=[max(len(teachers), 1), 2],
                          width_ratios=[30, 1], hspace=0.12, wspace=0.05)
    ax_kd, ax_base = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[1, 0])
    cax = fig.add_subplot(gs[:, 1])
    cmap = _viridis_with_grey()

    def draw(ax, means, labels, rows, bold):
        image = ax.imshow(np.ma.masked_invalid(means), cmap=cmap, vmin=vmin, vmax=vmax,
                          aspect="auto")
        for i in range(len(rows)):
            for j in range(len(students)):
                value = means[i, j]
                light = np.isfinite(value) and (value - vmin) / (vmax - vmin) > 0.6
                ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=8,
                        color="black" if (light or not np.isfinite(value)) else "white",
                        fontweight="bold" if bold(i, j) else "normal")
        ax.set_yticks(range(len(rows)), labels=list(rows))
        ax.set_xticks(range(len(students)), labels=list(students))
        ax.tick_params(length=0)
        return image

    image = draw(ax_kd, kd_means, kd_labels, teachers,
                 lambda i, j: best[students[j]] == teachers[i])
    ax_kd.set_ylabel("teacher $I_t$")
    ax_kd.xaxis.tick_top()
    ax_kd.set_title((title + "\n") if title else "", fontsize=10)
    draw(ax_base, base_means, base_labels, summary_rows, lambda i, j: False)
    ax_base.set_xticks(range(len(students)), labels=[
        f"{s}\ndrop {_fmt_value(drop[s], 2)}\ngain {_fmt_value(gain[s], 2)}" for s in students
    ], fontsize=8)
    fig.colorbar(image, cax=cax, label="top-1 accuracy (%)")

    save_png(fig, path, dpi=120, bbox_inches="tight")


def _viridis_with_grey():
    """The viridis colormap with light grey for masked (missing) cells."""
    import matplotlib

    return matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
