"""A grid spec expanded into its cells (one training run each), baselines first.

A table grid's cells come from :func:`table_configs`, a pair grid's from
:func:`pair_configs`; :func:`plan` turns either into the ordered list of runs.
"""

from __future__ import annotations

import dataclasses
import os

from kdkeras import config as config_lib
from kdkeras.errors import UsageError
from kdkeras.experiments.grid.spec import GridSpec
from kdkeras.training.run_folder import run_dir


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of a grid.

    Attributes:
        kind: ``"baseline"`` (hard targets) or ``"kd"``.
        config: its resolved :class:`kdkeras.config.RunConfig`.
        run_dir: its run folder.
        axes: its values of the grid's axes, ``(("init", "dirac"),)``
            (empty without axes), those of KD settings (``method``,
            ``temperature``, ...) on KD runs only; shown in the plan.
    """

    kind: str
    config: config_lib.RunConfig
    run_dir: str
    axes: tuple = ()

    @property
    def label(self) -> str:
        return os.path.basename(self.run_dir)


def axis_combinations(spec: GridSpec) -> list[dict]:
    """Every combination of the grid's axis values, in order (``[{}]`` without axes)."""
    import itertools

    keys = list(spec.axes)
    return [dict(zip(keys, values)) for values in itertools.product(*(spec.axes[k] for k in keys))]


def half_label(half: str, combination: dict) -> str:
    """The name of a half for one axis combination: ``left``, or ``left (init=dirac)``.

    A combination of default values (:class:`~kdkeras.config.RunConfig`'s)
    keeps the plain name, so the paper's cells keep their tables.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config_lib.RunConfig)}
    shown = {k: v for k, v in combination.items() if v != defaults.get(k)}
    return f"{half} ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else half


def _model(net, token):
    """A grid token's model: ``"R_g2"`` is ``net``'s; a whole name (``"wrn16x4_R_g2"``) is itself.

    A whole name lets a grid distil from a teacher of another network (a
    wider or deeper one), beside the teachers of the student's own network.
    """
    return token if token.count("_") == 2 else f"{net}_{token}"


def select(spec: GridSpec, half=None, students=None, teachers=None) -> dict:
    """The halves, students and teachers left after the command-line filters."""
    selected = {}
    for name, h in spec.halves.items():
        if half and name != half:
            continue
        s = [t for t in h["students"] if not students or t in students]
        t = [t for t in h["teachers"] if not teachers or t in teachers]
        if s:
            selected[name] = {"students": s, "teachers": t}
    known_s = {t for h in spec.halves.values() for t in h["students"]}
    known_t = {t for h in spec.halves.values() for t in h["teachers"]}
    for given, known, what in ((students, known_s, "students"), (teachers, known_t, "teachers")):
        bad = sorted(set(given or ()) - known)
        if bad:
            raise UsageError(f"Unknown {what} {', '.join(bad)} for grid {spec.name}. "
                             f"Valid {what}: {', '.join(sorted(known))}.")
    if half and half not in spec.halves:
        raise UsageError(f"Unknown half '{half}'. Valid halves: {', '.join(spec.halves)}.")
    return selected


def table_configs(spec: GridSpec, half=None, students=None, teachers=None):
    """Yields ``(half, role, student, teacher, config)`` for every table cell, axis combination and seed.

    ``half`` is the half's name for the axis combination (:func:`half_label`);
    the combination's values override the grid's settings.
    ``role`` is ``"baseline"`` (the R version of ``student``), ``"nr_baseline"``
    or ``"kd"`` (``student`` from ``teacher``); students and teachers are grid
    tokens like ``"NR_g8"`` / ``"R_G1"``. The single place that maps a table
    cell to its run, used by :func:`plan` and :func:`collect`. A ``plain``
    setting (``--plain``, or a ``plain`` axis) trains the NR runs its way; the
    R baseline stays the R network (its run is shared by every ``plain`` value).
    """
    selected = select(spec, half, students, teachers)
    for seed, combination in ((s, c) for s in range(spec.seeds) for c in axis_combinations(spec)):
        base = {**spec.settings, **combination, "dataset": spec.dataset, "seed": seed}
        for half, h in selected.items():
            name = half_label(half, combination)
            for student in h["students"]:
                nr = _model(spec.net, student)
                r = _model(spec.net, "R_" + student.split("_", 1)[1])
                r_base = {k: v for k, v in base.items() if k not in config_lib.PLAIN_FIELDS}
                yield name, "baseline", student, None, config_lib.resolve({**r_base, "model": r})
                yield name, "nr_baseline", student, None, config_lib.resolve({**base, "model": nr})
                for teacher in h["teachers"]:
                    cfg = config_lib.resolve({**base, "model": nr, "teacher": _model(spec.net, teacher)})
                    yield name, "kd", student, teacher, cfg


def pair_label(pair: dict) -> str:
    """A pair's name in plans and tables: ``resnet56 -> resnet20``."""
    return f"{pair['teacher']} -> {pair['student']}"


def select_pairs(spec: GridSpec, half=None, students=None, teachers=None) -> list[dict]:
    """The pairs left after the command-line filters (``students``, ``teachers``: model names)."""
    if half:
        raise UsageError(f"Grid {spec.name} lists teacher-student pairs: it has no halves (drop --half).")
    known_s = sorted({p["student"] for p in spec.pairs})
    known_t = sorted({p["teacher"] for p in spec.pairs})
    for given, known, what in ((students, known_s, "students"), (teachers, known_t, "teachers")):
        bad = sorted(set(given or ()) - set(known))
        if bad:
            raise UsageError(f"Unknown {what} {', '.join(bad)} for grid {spec.name}. "
                             f"Valid {what}: {', '.join(known)}.")
    return [p for p in spec.pairs
            if (not students or p["student"] in students) and (not teachers or p["teacher"] in teachers)]


def not_applicable(pair: dict, config: config_lib.RunConfig) -> str | None:
    """Why the KD run ``config`` of ``pair`` is not run (the grid's ``not_applicable``), or ``None``."""
    for entry in pair.get("not_applicable", ()):
        if all(getattr(config, key) in values for key, values in entry.items() if key != "reason"):
            return entry["reason"]
    return None


def pair_configs(spec: GridSpec, half=None, students=None, teachers=None):
    """Yields ``(pair, role, config, reason)`` for every run of a pair grid, axis combination and seed.

    ``pair`` is :func:`pair_label`; ``role`` is ``"teacher"`` (the teacher's
    hard-target run, as its KD runs train it: :func:`kdkeras.config.teacher_config`),
    ``"student"`` (the student on hard targets, same settings) or ``"kd"``.
    ``reason`` is ``None``, or for a KD run that the pair's ``not_applicable``
    excludes, why: such a run is tabulated as not applicable, never planned.
    Under ``plain``, a pair whose student has no plain form has the reason on
    all three of its runs (:func:`plain_student`).
    The combination's values override the grid's settings. The single place
    that maps a pair grid's cell to its run, used by :func:`plan` and its tables.
    """
    pairs = select_pairs(spec, half, students, teachers)
    for seed, combination in ((s, c) for s in range(spec.seeds) for c in axis_combinations(spec)):
        base = {**spec.settings, **combination, "dataset": spec.dataset, "seed": seed}
        for pair in pairs:
            label = pair_label(pair)
            student, unplain = plain_student(pair["student"], base.get("plain") or "none")
            settings = {k: v for k, v in base.items() if k not in config_lib.PLAIN_FIELDS} if unplain else base
            kd = config_lib.resolve({**settings, "model": student, "teacher": pair["teacher"]})
            yield label, "teacher", config_lib.teacher_config(kd), unplain  # a pair without a plain student: none
            yield label, "student", config_lib.resolve({**settings, "model": student}), unplain
            yield label, "kd", kd, unplain or not_applicable(pair, kd)


def plain_student(student: str, plain: str) -> tuple[str, str | None]:
    """A pair grid's student under ``plain`` (``--plain`` or a ``plain`` axis): ``(model, reason)``.

    Without ``plain`` (``none``) the student is itself. ``plain`` is one value
    for the whole pair grid (a ``plain`` axis is refused:
    :func:`~kdkeras.experiments.grid.spec.check_pairs`). With it, the student
    trains residual-free and deploys without skips, so its runs are those of
    its NR network (``resnet20`` -> ``resnet20_NR``); a student of a family
    that ``plain`` does not apply to (VGG, MobileNetV2, the ShuffleNets, the
    standard zoo's WRNs) has
    a reason instead, and the pair's runs (its teacher's too) are not applicable.
    """
    from kdkeras.models.plain import plain_unavailable
    from kdkeras.models.registry import ModelSpec, parse_model_name

    if plain == "none":
        return student, None
    unavailable = plain_unavailable(student, plain)  # "plain=repvgg is not available for vgg8 (family vgg): ..."
    if unavailable:
        return student, unavailable
    spec = parse_model_name(student)
    return ModelSpec(spec.net, False, spec.group_mode, spec.group_value).name, None


def _roles(spec: GridSpec, half=None, students=None, teachers=None):
    """``(role, config)`` of every run of a table or pair grid (``role == "kd"``: a KD run)."""
    if spec.pairs:
        return ((role, cfg) for _, role, cfg, reason in pair_configs(spec, half, students, teachers)
                if reason is None)
    return ((role, cfg) for _, role, _, _, cfg in table_configs(spec, half, students, teachers))


def plan(spec: GridSpec, logdir: str, half=None, students=None, teachers=None) -> list[Cell]:
    """Every run the (filtered) grid needs, baselines first, without duplicates.

    A pair grid's KD runs marked not applicable are left out (its tables show them as such).
    """
    baselines, kd = {}, {}
    for role, cfg in _roles(spec, half, students, teachers):
        if role == "kd":
            t_cfg = config_lib.teacher_config(cfg)
            baselines.setdefault(run_dir(t_cfg, logdir), t_cfg)
            kd.setdefault(run_dir(cfg, logdir), cfg)
        else:
            baselines.setdefault(run_dir(cfg, logdir), cfg)
    def cell(kind, run_dir, cfg):
        # A baseline trains on hard targets: the KD axes (method, temperature, ...) do not apply to it.
        axes = [k for k in spec.axes if kind == "kd" or k not in config_lib.KD_FIELDS]
        return Cell(kind, cfg, run_dir, tuple((k, getattr(cfg, k)) for k in axes))

    cells = [cell("baseline", d, c) for d, c in baselines.items()]
    cells += [cell("kd", d, c) for d, c in kd.items()]
    return cells


def plan_all(specs, logdir: str, half=None, students=None, teachers=None) -> list[Cell]:
    """The cells of several grids in order (:func:`plan` of each), each run once."""
    cells, seen = [], set()
    for spec in specs:
        for cell in plan(spec, logdir, half, students, teachers):
            if cell.run_dir not in seen:
                seen.add(cell.run_dir)
                cells.append(cell)
    return cells
