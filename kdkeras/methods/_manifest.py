"""The methods' names and settings without importing them: ``manifest.json``, a checked cache.

A command defines one flag per method setting, and a config checks them, before
any model is built. Reading the settings from the method classes means importing
every method module, and with them Keras and TensorFlow (seconds), only to print
``--help`` or a one-line error. ``manifest.json`` holds what the flags and the
checks need (each method's name, paper, default weight and declared settings),
with the SHA-256 of every file of this package it was read from. It is used only
while those hashes match the files; after any change to a method (or a new
one) the methods are imported as before, so the manifest can be stale but never
wrong. ``tests/test_methods_manifest.py`` fails while it is stale; rewrite it with

    python -m kdkeras.methods
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

from kdkeras.methods._settings import Setting, declared_settings

#: The manifest, beside this file.
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.json")
#: What the manifest records of each method class, beside its declared settings.
ATTRIBUTES = ("paper", "default_weight")


def source_hashes() -> dict:
    """``{file name: SHA-256}`` of every Python file of the methods package, ``__init__.py`` (the registry's
    order and filter) included: the manifest's sources."""
    folder = os.path.dirname(os.path.abspath(__file__))
    names = sorted(name for name in os.listdir(folder) if name.endswith(".py"))
    out = {}
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def build(classes: dict) -> dict:
    """The manifest of ``{name: Method subclass}`` (the registry, in listing order)."""
    methods = {}
    for name, method_class in classes.items():
        settings = [{**vars(s), "type": s.type.__name__,
                     "choices": list(s.choices) if s.choices is not None else None,
                     "default": list(s.default) if isinstance(s.default, tuple) else s.default}
                    for s in declared_settings(method_class)]
        methods[name] = {"paper": method_class.paper, "default_weight": default_weight(method_class),
                         "settings": settings}
    return {"sources": source_hashes(), "methods": methods}


def default_weight(method_class):
    """A method's default weight as its ``--<method>_weight`` flag shows it; ``None`` for KD, which has no such
    flag (``--alpha`` weights it, and its value lives outside this package, in kdkeras/losses.py)."""
    return None if method_class.method == "kd" else method_class.default_weight


_TYPES = {"float": float, "int": int, "str": str, "bool": bool, "tuple": tuple}


def _setting(entry: dict) -> Setting:
    return Setting(**{**entry, "type": _TYPES[entry["type"]],
                      "choices": tuple(entry["choices"]) if entry["choices"] is not None else None,
                      "default": tuple(entry["default"]) if isinstance(entry["default"], list) else entry["default"]})


@functools.cache
def load() -> dict | None:
    """``{name: {"paper", "default_weight", "settings": [Setting, ...]}}`` in listing order, or ``None``.

    ``None`` when there is no manifest, it cannot be read, or a file of the
    package differs from the one it was read from: the caller imports the
    methods instead.
    """
    try:
        with open(PATH) as f:
            manifest = json.load(f)
        if manifest.get("sources") != source_hashes():
            return None
        return {name: {**{key: entry[key] for key in ATTRIBUTES}, "settings": [_setting(s) for s in entry["settings"]]}
                for name, entry in manifest["methods"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(classes: dict, path: str = PATH) -> None:
    """Writes the manifest of ``{name: Method subclass}`` (``python -m kdkeras.methods`` writes the registry's)."""
    from kdkeras.io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(build(classes), indent=1) + "\n")
