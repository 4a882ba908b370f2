"""Landscape figures: 1-D curves, 2-D contours, several runs overlaid."""

from __future__ import annotations

import numpy as np

_KIND_COLORS = {"R": "tab:blue", "NR": "tab:red", "distilled": "tab:green"}

_LINESTYLES = ("-", "--", ":", "-.")


def _figure(width, height, panels):
    from kdkeras.plotting import new_figure

    fig = new_figure(width, height)
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _save(fig, path):
    from kdkeras.plotting import save_png

    fig.tight_layout()
    save_png(fig, path)


def _positive(loss):
    """Loss for a log axis: non-finite and non-positive values become NaN (left blank)."""
    loss = np.asarray(loss, dtype=np.float64).copy()
    loss[~np.isfinite(loss) | (loss <= 0)] = np.nan
    return loss


def _axis_label(mode):
    if mode == "path":
        return "a  (0: initial weights, 1: trained weights)"
    return "a  (filter-normalised direction)"


def plot_1d(path: str, alphas, loss, accuracy, *, title: str = "", mode: str = "1d",
            log_loss: bool = True) -> None:
    """Writes a PNG of loss (left) and accuracy (right) against ``a`` to ``path``, atomically.

    Args:
        path: the PNG file.
        alphas: coefficients.
        loss: the loss at each coefficient.
        accuracy: the accuracy at each coefficient.
        title: figure title.
        mode: ``"1d"`` or ``"path"`` (axis label; the path marks ``a = 0``
            and ``a = 1``).
        log_loss: logarithmic loss axis (losses far from the minimum span
            orders of magnitude).
    """
    plot_compare(path, [(title or "model", None, alphas, loss, accuracy)], title=title, mode=mode,
                 log_loss=log_loss, legend=False)


def plot_2d(path: str, alphas, betas, loss, accuracy=None, *, title: str = "", log_loss: bool = True,
            levels: int = 30) -> None:
    """Writes a filled contour plot of the loss surface (and accuracy) to ``path``, atomically.

    Args:
        path: the PNG file.
        alphas: coefficients of the first direction (x axis).
        betas: coefficients of the second direction (y axis).
        loss: ``(len(alphas), len(betas))``.
        accuracy: same shape; drawn in a second panel when given.
        title: figure title.
        log_loss: contour ``log10(loss)`` (default) instead of the loss.
        levels: number of filled contour levels.
    """
    loss = np.asarray(loss, dtype=np.float64)
    values = np.log10(_positive(loss)) if log_loss else np.where(np.isfinite(loss), loss, np.nan)
    panels = 1 if accuracy is None else 2
    fig, axes = _figure(6.2 * panels, 5.2, panels)
    grid_a, grid_b = np.meshgrid(alphas, betas, indexing="ij")
    data = [(values, "log10(loss)" if log_loss else "loss", "viridis")]
    if accuracy is not None:
        data.append((np.asarray(accuracy, dtype=np.float64), "accuracy", "magma"))
    for ax, (z, label, cmap) in zip(axes, data):
        z = np.ma.masked_invalid(z)
        if z.count() and float(z.max() - z.min()) > 0:
            filled = ax.contourf(grid_a, grid_b, z, levels=levels, cmap=cmap)
            ax.contour(grid_a, grid_b, z, levels=filled.levels[::3], colors="white", linewidths=0.5,
                       alpha=0.6)
            fig.colorbar(filled, ax=ax, label=label)
        else:
            ax.pcolormesh(grid_a, grid_b, z, cmap=cmap, shading="nearest")
        ax.plot([0], [0], marker="*", color="red", markersize=10, linestyle="none", label="trained weights")
        ax.set_xlabel("a  (direction 1)")
        ax.set_ylabel("b  (direction 2)")
        ax.set_title(label)
        ax.set_aspect("equal", adjustable="box")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_compare(path: str, curves, *, title: str = "", mode: str = "1d", log_loss: bool = True,
                 legend: bool = True) -> None:
    """Overlays the 1-D curves of several runs (loss left, accuracy right) in one PNG, atomically.

    Args:
        path: the PNG file.
        curves: ``(label, kind, alphas, loss, accuracy)`` per run; ``kind``
            (``"R"``, ``"NR"``, ``"distilled"`` or ``None``) picks the colour,
            several runs of one kind differ in line style.
        title: figure title.
        mode: ``"1d"`` or ``"path"`` (axis label, and ``a = 0, 1`` marks).
        log_loss: logarithmic loss axis.
        legend: show the labels.
    """
    fig, (loss_ax, acc_ax) = _figure(12, 4.6, 2)
    seen = {}
    for label, kind, alphas, loss, accuracy in curves:
        n = seen[kind] = seen.get(kind, -1) + 1
        style = {"color": _KIND_COLORS.get(kind, f"C{len(seen) + 2}"),
                 "linestyle": _LINESTYLES[n % len(_LINESTYLES)], "label": label}
        loss_ax.plot(alphas, _positive(loss) if log_loss else loss, **style)
        acc_ax.plot(alphas, accuracy, **style)
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        for mark in ((0.0, 1.0) if mode == "path" else (0.0,)):
            ax.axvline(mark, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(_axis_label(mode))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if log_loss:
        loss_ax.set_yscale("log")
    acc_ax.set_ylim(-0.02, 1.02)
    if legend:
        loss_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)
