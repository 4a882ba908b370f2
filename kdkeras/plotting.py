"""Figures for tables and analysis: Agg canvas, atomic PNG files.

Figures are built on their own Agg canvas, never through ``pyplot``: no
global figure state, no GUI backend, nothing to close.
"""

from __future__ import annotations


def new_figure(width: float, height: float):
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str, dpi: int = 110, **savefig_kwargs) -> str:
    """Writes ``fig`` to ``path`` as PNG, atomically (temporary file + rename); returns ``path``."""
    from kdkeras.io_utils import atomic_open

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, **savefig_kwargs)
    return path
