"""Records the run name and identity of every run that every config in configs/ plans.

    python tests/record_config_runs.py > tests/fixtures/config_runs.json

The committed file was written before the method registry replaced the
method settings of RunConfig; tests/test_config_runs.py checks that the
names and identities are unchanged, so existing run folders are found again.
"""

from __future__ import annotations

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGDIR = "LOGDIR"


def config_files() -> list[str]:
    """Every grid or suite config shipped in configs/, relative to the project root.

    The published numbers a pair grid compares with (``published_*.yaml``) are data, not configs.
    """
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
    return [os.path.relpath(p, ROOT) for p in paths if not os.path.basename(p).startswith("published_")]


def record_one(path: str) -> list[dict]:
    """``[{"run": <dataset>/<run name>, "identity": {...}}]`` of every cell ``path`` plans."""
    from kdkeras import config as config_lib
    from kdkeras import grid

    _, specs = grid.load_grids(os.path.join(ROOT, path))
    return [
        {"run": os.path.relpath(cell.run_dir, LOGDIR), "identity": config_lib.identity(cell.config)}
        for cell in grid.plan_all(specs, LOGDIR)
    ]


def record() -> dict:
    return {path: record_one(path) for path in config_files()}


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    json.dump(record(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
