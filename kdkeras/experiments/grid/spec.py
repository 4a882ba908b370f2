"""Grid and suite configs: the YAML files, their keys, and :class:`GridSpec`."""

from __future__ import annotations

import dataclasses
import os

from kdkeras import config as config_lib
from kdkeras.errors import MissingFileError, UsageError


#: The configs shipped with kdkeras (``configs/`` of a source checkout is a link to it).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


HALVES = ("left", "right")


GRID_FIELDS = ("name", "table", "net", "dataset", "halves", "seeds", "settings", "axes")


SUITE_FIELDS = ("name", "grids", "dataset", "seeds", "settings", "axes")


#: Settings that cannot be a grid axis: the halves and seeds already span them.
NON_AXIS_FIELDS = ("model", "teacher", "seed", "dataset")


@dataclasses.dataclass
class GridSpec:
    """A table's experiment: network, halves (students x teachers), seeds, settings."""

    name: str
    net: str
    halves: dict  # half -> {"students": [...], "teachers": [...]}, tokens like "NR_g8" / "R_G1"
    table: int | None = None
    dataset: str = "cifar100"
    seeds: int = 1
    settings: dict = dataclasses.field(default_factory=dict)
    axes: dict = dataclasses.field(default_factory=dict)  # setting -> [values], e.g. {"init": ["he", "dirac"]}


def check_axes(axes, where: str) -> dict:
    """A grid's ``axes`` as ``{setting: [values]}``; one-line :class:`UsageError` if malformed."""
    axes = axes or {}
    if not isinstance(axes, dict):
        raise UsageError(f"'axes' in '{where}' must map settings to lists of values, e.g. {{init: [he, dirac]}}.")
    valid = [f for f in config_lib.FIELDS if f not in NON_AXIS_FIELDS]
    for key, values in axes.items():
        if key not in valid:
            raise UsageError(f"Unknown axis '{key}' in '{where}'. Valid axes: {', '.join(valid)}.")
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            raise UsageError(f"Axis '{key}' in '{where}' must list distinct values. Received: {values!r}.")
    return {key: list(values) for key, values in axes.items()}


def shipped_config(path: str) -> str | None:
    """The shipped config that ``path`` names (``configs/tables/table3_wrn22x2.yaml`` or
    ``tables/table3_wrn22x2.yaml``), or ``None``: how an installed kdkeras finds its configs
    when the path does not exist from the current folder."""
    parts = os.path.normpath(path).split(os.sep)
    if parts and parts[0] == "configs":
        parts = parts[1:]
    if not parts or os.path.isabs(path) or ".." in parts:
        return None
    candidate = os.path.join(CONFIGS_DIR, *parts)
    return candidate if os.path.isfile(candidate) else None


def resolve_config_path(path: str) -> str:
    """``path`` if it exists, else the shipped config it names (see :func:`shipped_config`)."""
    return path if os.path.exists(path) else (shipped_config(path) or path)


def _read_yaml(path: str) -> dict:
    import yaml

    if not os.path.exists(path):
        raise MissingFileError(f"Grid config '{path}' does not exist (shipped configs are in {CONFIGS_DIR}).")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise UsageError(f"Grid config '{path}' is not valid YAML: {' '.join(str(err).split())}")
    if not isinstance(data, dict):
        raise UsageError(f"Grid config '{path}' must hold a mapping.")
    return data


def load_grids(path: str) -> tuple[str, list[GridSpec]]:
    """Reads a grid config or a suite config.

    A suite config lists grid configs (``grids:``, paths relative to it) and
    may set ``dataset``, ``seeds`` and ``settings`` for all of them (a grid's
    own ``settings`` win); its grids run in the listed order.

    Returns:
        ``(name, specs)``: the config's name and its grids (one for a grid config).
    """
    path = resolve_config_path(path)
    data = _read_yaml(path)
    if "grids" not in data:
        spec = load_grid(path)
        return spec.name, [spec]
    unknown = sorted(set(data) - set(SUITE_FIELDS))
    if unknown:
        raise UsageError(f"Unknown key(s) {', '.join(unknown)} in suite '{path}'. "
                         f"Valid keys: {', '.join(SUITE_FIELDS)}.")
    folder = os.path.dirname(os.path.abspath(path))
    specs = []
    for entry in data["grids"] or ():
        spec = load_grid(os.path.join(folder, entry))
        if "dataset" in data:
            spec.dataset = data["dataset"]
        if "seeds" in data:
            spec.seeds = int(data["seeds"])
        spec.settings = {**(data.get("settings") or {}), **spec.settings}
        spec.axes = {**check_axes(data.get("axes"), path), **spec.axes}
        specs.append(spec)
    if not specs:
        raise UsageError(f"Suite '{path}' lists no grids.")
    return data.get("name") or os.path.splitext(os.path.basename(path))[0], specs


def load_grid(path: str) -> GridSpec:
    """Reads a grid config YAML (see ``configs/tables/``)."""
    path = resolve_config_path(path)
    data = _read_yaml(path)
    unknown = sorted(set(data) - set(GRID_FIELDS))
    if unknown:
        raise UsageError(f"Unknown key(s) {', '.join(unknown)} in '{path}'. Valid keys: {', '.join(GRID_FIELDS)}.")
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    if not data.get("net") or not data.get("halves"):
        raise UsageError(f"Grid config '{path}' needs 'net' and 'halves'.")
    for half, spec in data["halves"].items():
        if half not in HALVES or not spec.get("students") or not spec.get("teachers"):
            raise UsageError(f"Half '{half}' in '{path}' must be left or right and list students and teachers.")
    data["settings"] = dict(data.get("settings") or {})
    data["axes"] = check_axes(data.get("axes"), path)
    return GridSpec(**data)


def table_config_path(table: int, configs_dir: str | None = None) -> str:
    """The config file of paper table ``table`` (1-6) in ``configs/tables/``."""
    folder = configs_dir or os.path.join(CONFIGS_DIR, "tables")
    matches = sorted(f for f in os.listdir(folder) if f.startswith(f"table{table}_")) if os.path.isdir(folder) else []
    if not matches:
        raise UsageError(f"No config for table {table} in {folder}. Valid tables: 1, 2, 3, 4, 5, 6.")
    return os.path.join(folder, matches[0])
