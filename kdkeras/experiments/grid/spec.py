"""Grid and suite configs: the YAML files, their keys, and :class:`GridSpec`.

A grid has one of two layouts: a paper table's (``net`` and ``halves``:
students x teachers of one network) or a list of teacher-student ``pairs``
of any networks (``configs/benchmarks/cifar100_crd.yaml``), whose tables can
be set beside published numbers (``published``: a data file, see
:mod:`kdkeras.experiments.grid.published`).
"""

from __future__ import annotations

import dataclasses
import os

from kdkeras import config as config_lib
from kdkeras.errors import MissingFileError, UsageError


#: The configs shipped with kdkeras (``configs/`` of a source checkout is a link to it).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


HALVES = ("left", "right")


GRID_FIELDS = ("name", "table", "net", "dataset", "halves", "pairs", "published", "seeds", "settings", "axes")


#: The keys of one entry of a grid's ``pairs``.
PAIR_FIELDS = ("teacher", "student", "not_applicable")


SUITE_FIELDS = ("name", "grids", "dataset", "seeds", "settings", "axes")


#: Settings that cannot be a grid axis: the halves and seeds already span them.
NON_AXIS_FIELDS = ("model", "teacher", "seed", "dataset")


@dataclasses.dataclass
class GridSpec:
    """A grid's experiment: a table's network and halves (students x teachers), or teacher-student pairs;
    seeds, settings and axes.

    ``pairs``: ``[{"teacher": "resnet56", "student": "resnet20", "not_applicable": [...]}]`` (a pair grid
    has no ``net`` or ``halves``); each ``not_applicable`` entry is ``{setting: [values], "reason": text}``:
    the KD cells of the pair with those values are not run, and the tables say why.
    ``published``: the absolute path of the published numbers a pair grid's ``comparison.md`` shows.
    """

    name: str
    net: str | None = None
    halves: dict = dataclasses.field(default_factory=dict)  # half -> {"students", "teachers"}: "NR_g8", "R_G1"
    table: int | None = None
    dataset: str = "cifar100"
    seeds: int = 1
    settings: dict = dataclasses.field(default_factory=dict)
    axes: dict = dataclasses.field(default_factory=dict)  # setting -> [values], e.g. {"init": ["he", "dirac"]}
    pairs: list = dataclasses.field(default_factory=list)
    published: str | None = None


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
    data["settings"] = dict(data.get("settings") or {})
    data["axes"] = check_axes(data.get("axes"), path)
    if "pairs" in data:
        if "net" in data or "halves" in data:
            raise UsageError(f"Grid config '{path}' has both 'pairs' and 'net'/'halves': give one layout.")
        data["pairs"] = check_pairs(data["pairs"], data["axes"], path)
        if data.get("published") is not None:
            data["published"] = _published_path(data["published"], path)
        return GridSpec(**data)
    if not data.get("net") or not data.get("halves"):
        raise UsageError(f"Grid config '{path}' needs 'net' and 'halves' (a table) or 'pairs' (teacher-student "
                         f"pairs).")
    if data.get("published") is not None:
        raise UsageError(f"'published' in '{path}' is for pair grids: a table's printed values are in "
                         f"kdkeras.paper.")
    for half, spec in data["halves"].items():
        if half not in HALVES or not spec.get("students") or not spec.get("teachers"):
            raise UsageError(f"Half '{half}' in '{path}' must be left or right and list students and teachers.")
    return GridSpec(**data)


def check_pairs(pairs, axes: dict, where: str) -> list[dict]:
    """A grid's ``pairs`` as ``[{"teacher", "student", "not_applicable": [{setting: [values], "reason"}]}]``.

    Raises a one-line :class:`UsageError` for a malformed list: a ``plain``
    axis (a grid's ``--plain`` or ``plain`` setting is one value), a pair without
    both model names, a pair twice, an unknown key, or a ``not_applicable``
    entry without a reason, without a setting, or naming a value that the
    grid's axis of that setting does not have.
    """
    if not isinstance(pairs, list) or not pairs:
        raise UsageError(f"'pairs' in '{where}' must list teacher-student pairs, e.g. "
                         f"[{{teacher: resnet56, student: resnet20}}].")
    if "plain" in axes:  # its Teacher and Student rows would mix the students of both values
        raise UsageError(f"A pair grid has no 'plain' axis ('{where}'): give --plain=repvgg|diracnet|anneal (or "
                         f"'plain' in its settings) for a grid of its own.")
    out, seen = [], set()
    valid = [f for f in config_lib.FIELDS if f not in NON_AXIS_FIELDS]
    for pair in pairs:
        if not isinstance(pair, dict) or not all(isinstance(pair.get(k), str) and pair[k]
                                                 for k in ("teacher", "student")):
            raise UsageError(f"Each of 'pairs' in '{where}' needs a teacher and a student. Received: {pair!r}.")
        unknown = sorted(set(pair) - set(PAIR_FIELDS))
        if unknown:
            raise UsageError(f"Unknown key(s) {', '.join(unknown)} in a pair of '{where}'. "
                             f"Valid keys: {', '.join(PAIR_FIELDS)}.")
        label = f"{pair['teacher']} -> {pair['student']}"
        if label in seen:
            raise UsageError(f"Pair {label} is listed twice in '{where}'.")
        seen.add(label)
        entries = []
        for entry in pair.get("not_applicable") or ():
            if not isinstance(entry, dict) or not isinstance(entry.get("reason"), str) or not entry["reason"].strip():
                raise UsageError(f"Each 'not_applicable' entry of pair {label} in '{where}' needs a reason. "
                                 f"Received: {entry!r}.")
            where_ = {k: v if isinstance(v, list) else [v] for k, v in entry.items() if k != "reason"}
            if not where_:
                raise UsageError(f"A 'not_applicable' entry of pair {label} in '{where}' names no setting, "
                                 f"e.g. {{method: [fitnets], reason: ...}}.")
            for key, values in where_.items():
                if key not in valid:
                    raise UsageError(f"Unknown setting '{key}' in 'not_applicable' of pair {label} in '{where}'. "
                                     f"Valid settings: {', '.join(valid)}.")
                bad = [v for v in values if key in axes and v not in axes[key]]
                if bad:
                    raise UsageError(f"'not_applicable' of pair {label} in '{where}' names {key} "
                                     f"{', '.join(map(str, bad))}, not a value of the grid's axis. "
                                     f"Valid values: {', '.join(map(str, axes[key]))}.")
            entries.append({**where_, "reason": " ".join(entry["reason"].split())})
        out.append({"teacher": pair["teacher"], "student": pair["student"], "not_applicable": entries})
    return out


def _published_path(value, config_path: str) -> str:
    """A grid's ``published`` file, relative to the grid config; :class:`MissingFileError` if absent."""
    if not isinstance(value, str) or not value:
        raise UsageError(f"'published' in '{config_path}' must be the path of a published-numbers YAML file.")
    path = os.path.join(os.path.dirname(os.path.abspath(config_path)), value)
    if not os.path.isfile(path):
        raise MissingFileError(f"Published numbers '{value}' of '{config_path}' do not exist (looked for {path}).")
    return path


def table_config_path(table: int, configs_dir: str | None = None) -> str:
    """The config file of paper table ``table`` (1-6) in ``configs/tables/``."""
    folder = configs_dir or os.path.join(CONFIGS_DIR, "tables")
    matches = sorted(f for f in os.listdir(folder) if f.startswith(f"table{table}_")) if os.path.isdir(folder) else []
    if not matches:
        raise UsageError(f"No config for table {table} in {folder}. Valid tables: 1, 2, 3, 4, 5, 6.")
    return os.path.join(folder, matches[0])
