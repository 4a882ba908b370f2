"""Run claims: one lock file per run folder, so processes sharing a log folder never train a run twice.

A claim is the file ``<run folder>.lock``, created with ``O_CREAT | O_EXCL``
(atomic on local and network file systems) and holding the owner's host, pid
and start time. A claim whose process died on this host is stale and is
broken by the next process that asks; a claim held on another host is
treated as live (see docs/reliability.md). Training (a teacher trained on the
way) and grids (every cell) both claim through this module.
"""

from __future__ import annotations

import json
import os
import socket
import time

LOCK_SUFFIX = ".lock"


def lock_path(run_dir: str) -> str:
    """``<run_dir>.lock``: the claim file of a run folder."""
    return run_dir.rstrip(os.sep) + LOCK_SUFFIX


def _owner_alive(path: str) -> bool:
    try:
        with open(path) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return True  # being written: treat as held
    if owner.get("host") != socket.gethostname():
        return True  # cannot check another machine's processes
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


def is_claimed(run_dir: str) -> bool:
    """Whether a live process holds the claim of ``run_dir``."""
    path = lock_path(run_dir)
    return os.path.exists(path) and _owner_alive(path)


def try_claim(run_dir: str) -> bool:
    """Atomically creates ``<run_dir>.lock``; breaks a lock whose process on this host died.

    Returns:
        ``True`` when this process now holds the claim.
    """
    path = lock_path(run_dir)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _owner_alive(path):
                return False
            try:
                os.remove(path)  # stale: its process is gone
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
        return True
    return False


def release(run_dir: str) -> None:
    """Removes the claim of ``run_dir`` (no error when there is none)."""
    try:
        os.remove(lock_path(run_dir))
    except FileNotFoundError:
        pass
