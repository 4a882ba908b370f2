"""File hashes cached by path, size and mtime: a large archive is hashed once per machine.

The cache is ``data_hashes.json`` in ``$KDKERAS_CACHE_DIR`` (default
``$XDG_CACHE_HOME/kdkeras``). Used to check a downloaded archive against its
published checksum (:mod:`kdkeras.data.download`) and to name the data a run
reads (:mod:`kdkeras.data.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

#: Environment variable: the folder of the archive-hash cache (default ``$XDG_CACHE_HOME/kdkeras``).
CACHE_VARIABLE = "KDKERAS_CACHE_DIR"
_CACHE_FILE = "data_hashes.json"
_lock = threading.Lock()
_memory: dict = {}


def cache_dir() -> str:
    """The folder of the archive-hash cache: ``$KDKERAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdkeras``."""
    folder = os.environ.get(CACHE_VARIABLE)
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "kdkeras")
    return folder


def _load_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file, cached by its real path, size and mtime (in memory and on disk).

    A large archive is thus hashed once per machine, and again only when it
    changes. The cache is a convenience: when it cannot be read or written,
    the file is hashed.
    """
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    with _lock:
        if key in _memory:
            return _memory[key]
    cache_path = os.path.join(cache_dir(), _CACHE_FILE)
    cached = _load_cache(cache_path).get(key)
    if isinstance(cached, str) and len(cached) == 64:
        with _lock:
            _memory[key] = cached
        return cached
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _lock:
        _memory[key] = value
    try:
        from kdkeras.io_utils import atomic_write_json

        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        data = _load_cache(cache_path)  # again: another process may have added entries
        data[key] = value
        atomic_write_json(cache_path, data)
    except OSError:
        pass
    return value
