"""``--shard=i/n``: every n-th cell of a plan."""

from __future__ import annotations

from kdkeras.errors import UsageError
from kdkeras.experiments.grid.expand import Cell


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with 0 <= i < n (``None`` -> ``(0, 1)``)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like i/n, e.g. 0/4. Received: {text!r}.")
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard={text}: need 0 <= i < n. Received: i={i}, n={n}.")
    return i, n


def shard(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """Every ``count``-th cell starting at ``index``: disjoint, and complete over all shards."""
    return cells[index::count]
