"""Embedding figures: one panel per run, PCA and t-SNE rows."""

from __future__ import annotations

import dataclasses

import numpy as np

from kdkeras.analysis.embeddings.compute import METHODS, project_2d

_METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE"}


@dataclasses.dataclass(frozen=True)
class Panel:
    """One column of the figure: a model's embeddings of the chosen examples.

    Attributes:
        title: the column title (e.g. ``"NR: wrn22x2_NR_g16"``).
        embeddings: ``(N, D)`` vectors.
        labels: ``(N,)`` labels.
        score: its :func:`separation_score` (shown under the title).
    """

    title: str
    embeddings: np.ndarray
    labels: np.ndarray
    score: float | None = None


def _class_colors(n):
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / max(n - 1, 1)) for i in range(n)]


def plot_embeddings(path, panels, class_names, *, classes=None, methods=METHODS, seed: int = 0,
                    title: str | None = None, log=None) -> str:
    """Draws the panels side by side: one column per panel, one row per method.

    Every point is coloured by its class (one legend of class names for the
    figure); each column is titled with its panel's title and separation
    score. The figure is drawn with the Agg canvas and written atomically.

    Args:
        path: the PNG file.
        panels: :class:`Panel` list (the same examples, for comparisons).
        class_names: names indexed by label.
        classes: the labels in legend order (default: the labels present).
        methods: rows, from :data:`METHODS`.
        seed: t-SNE seed.
        title: optional figure title.
        log: optional function printing progress (one line per projection).

    Returns:
        ``path``.
    """
    from matplotlib.lines import Line2D

    from kdkeras.plotting import new_figure, save_png

    if not panels:
        raise ValueError("plot_embeddings needs at least one panel.")
    if classes is None:
        classes = sorted({int(c) for p in panels for c in np.unique(p.labels)})
    colors = dict(zip(classes, _class_colors(len(classes))))
    fig = new_figure(4.2 * len(panels), 4.0 * len(methods) + 0.8)
    axes = fig.subplots(len(methods), len(panels), squeeze=False)
    for col, panel in enumerate(panels):
        for row, method in enumerate(methods):
            if log:
                log(f"  {_METHOD_TITLES[method]} of {panel.title} ({len(panel.labels)} points)")
            view = project_2d(panel.embeddings, method, seed)
            ax = axes[row, col]
            for c in classes:
                mask = np.asarray(panel.labels) == c
                ax.scatter(view[mask, 0], view[mask, 1], s=9, alpha=0.75, color=colors[c],
                           linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                score = "" if panel.score is None else f"\nsilhouette {panel.score:.3f}"
                ax.set_title(f"{panel.title}{score}", fontsize=9)
            if col == 0:
                ax.set_ylabel(_METHOD_TITLES[method])
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[c], label=str(class_names[c]))
               for c in classes]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 6), frameon=False,
               fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if len(methods) > 1 else 0.1, 1, 0.97 if title else 1))
    return save_png(fig, path)
