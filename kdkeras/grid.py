"""The paper's experiment grid: plan, shard, run and tabulate Tables 1-6.

A grid config (``configs/tables/*.yaml``) names a network, the two halves of
a table (students x teachers) and shared settings. Planning turns it into
cells, one training run each, keyed by their run folder (see
:mod:`kdkeras.config`):

* hard-target baselines: every R teacher, the R version of every student
  (the paper's "Baseline" row) and every NR student ("NR-baseline");
* KD runs: every NR student from every R teacher of its half;

for each seed. A grid's ``axes`` (a mapping of :class:`~kdkeras.config.RunConfig`
settings to lists of values, e.g. ``axes: {init: [he, dirac]}``) multiply
these cells: every cell is planned once per combination of values, and the
tables get one block per combination (see :func:`axis_combinations`).
Baselines come first, so teachers exist before the KD cells
that need them. A *suite* config (a ``grids:`` list, e.g.
``configs/reduced/cifar10_wrn.yaml``) runs several grids in its order, with
shared settings, and adds a summary across them. ``--shard=i/n`` takes every n-th cell of that order, so shards
are disjoint and together complete. Each run is claimed with a lock file next
to its folder, so two processes on a shared ``--logdir`` never train the same
run; a KD cell whose teacher another shard is training waits for it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time

from kdkeras import claims, hparams
from kdkeras import config as config_lib
from kdkeras.errors import MissingFileError, UsageError

HALVES = ("left", "right")
GRID_FIELDS = ("name", "table", "net", "dataset", "halves", "seeds", "settings", "axes")
SUITE_FIELDS = ("name", "grids", "dataset", "seeds", "settings", "axes")
#: Settings that cannot be a grid axis: the halves and seeds already span them.
NON_AXIS_FIELDS = ("model", "teacher", "seed", "dataset")

#: The accuracies a table can show: ``(name, results.json key, title)``. The
#: first is the paper's protocol; the best-on-test one is optimistic, since
#: it selects the epoch on the split it reports.
MEASURES = (
    ("final", "test_accuracy", "final-epoch test accuracy (the paper's protocol)"),
    ("at_best_val", "test_accuracy_at_best_val", "test accuracy at the best validation epoch"),
    ("precise_bn", "test_accuracy_precise_bn", "final-epoch test accuracy with precise BN statistics"),
    ("batch_stats", "test_accuracy_batch_stats", "final-epoch test accuracy with batch statistics"),
    ("best_on_test", "best_test_accuracy",
     "best-epoch test accuracy (OPTIMISTIC: the epoch is selected on the test split itself)"),
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of a grid.

    Attributes:
        kind: ``"baseline"`` (hard targets) or ``"kd"``.
        config: its resolved :class:`kdkeras.config.RunConfig`.
        run_dir: its run folder.
        axes: its values of the grid's axes, ``(("init", "dirac"),)``
            (empty without axes); shown in the plan.
    """

    kind: str
    config: config_lib.RunConfig
    run_dir: str
    axes: tuple = ()

    @property
    def label(self) -> str:
        return os.path.basename(self.run_dir)


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


#: The configs shipped with kdkeras (``configs/`` of a source checkout is a link to it).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


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
    cell to its run, used by :func:`plan` and :func:`collect`.
    """
    selected = select(spec, half, students, teachers)
    for seed, combination in ((s, c) for s in range(spec.seeds) for c in axis_combinations(spec)):
        base = {**spec.settings, **combination, "dataset": spec.dataset, "seed": seed}
        for half, h in selected.items():
            name = half_label(half, combination)
            for student in h["students"]:
                nr = _model(spec.net, student)
                r = _model(spec.net, "R_" + student.split("_", 1)[1])
                yield name, "baseline", student, None, config_lib.resolve({**base, "model": r})
                yield name, "nr_baseline", student, None, config_lib.resolve({**base, "model": nr})
                for teacher in h["teachers"]:
                    cfg = config_lib.resolve({**base, "model": nr, "teacher": _model(spec.net, teacher)})
                    yield name, "kd", student, teacher, cfg


def plan(spec: GridSpec, logdir: str, half=None, students=None, teachers=None) -> list[Cell]:
    """Every run the (filtered) grid needs, baselines first, without duplicates."""
    baselines, kd = {}, {}
    for _, role, _, _, cfg in table_configs(spec, half, students, teachers):
        if role == "kd":
            t_cfg = config_lib.teacher_config(cfg)
            baselines.setdefault(config_lib.run_dir(t_cfg, logdir), t_cfg)
            kd.setdefault(config_lib.run_dir(cfg, logdir), cfg)
        else:
            baselines.setdefault(config_lib.run_dir(cfg, logdir), cfg)
    def cell(kind, run_dir, cfg):
        return Cell(kind, cfg, run_dir, tuple((k, getattr(cfg, k)) for k in spec.axes))

    cells = [cell("baseline", d, c) for d, c in baselines.items()]
    cells += [cell("kd", d, c) for d, c in kd.items()]
    return cells


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


def state(cell: Cell) -> str:
    """``done``, ``running`` (a live claim), ``interrupted`` (resumable, or its claim lapsed) or ``to do``."""
    from kdkeras.training.run_folder import RunFolder

    folder = RunFolder(cell.run_dir)
    if folder.is_finished():
        return "done"
    owner = claims.owner(cell.run_dir)
    if owner is not None and owner.live:
        return "running"
    if folder.is_interrupted() or owner is not None:
        return "interrupted"
    return "to do"


def run_cell(cell: Cell, logdir: str, log=print, poll_s: float = 10.0, verbose="auto", callbacks=None) -> str:
    """Trains ``cell`` unless finished or claimed; waits for a claimed teacher.

    ``callbacks``: a function of the cell's config and run folder returning
    extra Keras callbacks for its ``fit`` (instruments such as gradient flow).

    Returns:
        ``"done"`` (already finished), ``"trained"`` or ``"skipped"`` (another
        process holds it).
    """
    from kdkeras.training import ensure_teacher_run, is_finished, train_and_evaluate

    if is_finished(cell.run_dir):
        claims.clear_stale(cell.run_dir)  # left by a process killed after finishing it
        return "done"
    if cell.kind == "kd":
        ensure_teacher_run(cell.config, logdir, log=log, verbose=verbose, poll_s=poll_s)
    if not claims.try_claim(cell.run_dir):
        log(f"Skipping {cell.label}: another process is training it ({claims.describe(cell.run_dir)})")
        return "skipped"
    try:
        if is_finished(cell.run_dir):
            return "done"
        extra = callbacks(cell.config, cell.run_dir) if callbacks else ()
        train_and_evaluate(cell.config, logdir, log=log, verbose=verbose, callbacks=extra)
        return "trained"
    finally:
        claims.release(cell.run_dir)


def plan_all(specs, logdir: str, half=None, students=None, teachers=None) -> list[Cell]:
    """The cells of several grids in order (:func:`plan` of each), each run once."""
    cells, seen = [], set()
    for spec in specs:
        for cell in plan(spec, logdir, half, students, teachers):
            if cell.run_dir not in seen:
                seen.add(cell.run_dir)
                cells.append(cell)
    return cells


def print_plan(spec, cells, mine, index, count, out=print) -> None:
    """Lists the cells of this shard with their state, and a summary (``spec``: a grid or a name)."""
    states = {}
    name = getattr(spec, "name", spec)
    out(f"Grid {name}: {len(cells)} runs, shard {index}/{count} has {len(mine)}")
    for cell in mine:
        s = state(cell)
        states[s] = states.get(s, 0) + 1
        teacher = f" from {cell.config.teacher}" if cell.kind == "kd" else ""
        claim = claims.owner(cell.run_dir) if s in ("running", "interrupted") else None
        held = f" [{claim.describe()}]" if claim is not None else ""
        axes = "".join(f", {k}={v}" for k, v in cell.axes)
        out(f"  {s:<12} {cell.kind:<9} {cell.config.model}{teacher} (seed {cell.config.seed}{axes}) -> "
            f"{cell.run_dir}{held}")
    out("  " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))


def run(spec, cells, logdir: str, log=print, verbose="auto", callbacks=None, take_over=(),
        poll_s: float = 10.0) -> dict:
    """Runs the cells in order with a progress line per cell; returns counts by outcome.

    ``spec``: the grid (or a suite's name) shown in the progress lines;
    ``callbacks``: as in :func:`run_cell`. First writes the TensorBoard
    HParams experiment of every cell at the root of ``logdir``
    (:func:`kdkeras.hparams.write_experiment`).

    ``take_over``: the cells of the other shards. After its own cells, the
    process trains those that no live process holds (a shard not started
    yet, or one whose process was preempted: its claim lapsed) and waits for
    the ones held, taking them over if their owner stops renewing its lease.
    It returns when every cell is finished, so a grid run as N processes
    completes as long as one of them survives.
    """
    name = getattr(spec, "name", spec)
    hparams.write_experiment(logdir, [c.config for c in [*cells, *take_over]], on_error=log)  # HParams tab
    outcomes, skipped = {}, []
    for i, cell in enumerate(cells, start=1):
        log(f"[{i}/{len(cells)}] {name}: {cell.label}")
        outcome = run_cell(cell, logdir, log=log, verbose=verbose, callbacks=callbacks, poll_s=poll_s)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "skipped":
            skipped.append(cell)
    pending = [c for c in [*skipped, *take_over] if state(c) != "done"] if (take_over or skipped) else []
    waiting = False
    while pending:
        for cell in pending:
            if state(cell) in ("to do", "interrupted"):
                log(f"[+] {name}: {cell.label} (taking over: {claims.describe(cell.run_dir)})")
                outcome = run_cell(cell, logdir, log=log, verbose=verbose, callbacks=callbacks, poll_s=poll_s)
                if outcome == "trained":
                    outcomes["taken over"] = outcomes.get("taken over", 0) + 1
        pending = [c for c in pending if state(c) != "done"]
        if pending:
            if not waiting:
                log(f"{name}: waiting for {len(pending)} run(s) held by other processes")
                waiting = True
            time.sleep(poll_s)
    log(f"{name}: " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())))
    return outcomes


def _label(token: str) -> str:
    return token.replace("_", "-")  # "NR_g8" -> "NR-g8", the paper's labels


def _accuracies(run_dirs, key) -> list[float]:
    """Per-seed accuracies (percent) of the finished runs that report ``key``."""
    from kdkeras.training import is_finished, load_results

    values = (load_results(d).get(key) for d in run_dirs if is_finished(d))
    return [100.0 * v for v in values if v is not None]


def collect(spec: GridSpec, logdir: str, key="test_accuracy", half=None, students=None, teachers=None):
    """``{half: kdkeras.tables.TableHalf}`` of the finished runs (accuracy in percent).

    With axes, one half per half and axis combination (:func:`half_label`).

    Args:
        key: a ``results.json`` key of :data:`MEASURES`, e.g.
            ``"test_accuracy"`` (final epoch).
    """
    from kdkeras.tables import TableHalf

    selected = select(spec, half, students, teachers)
    halves = {half_label(name, c): h for c in axis_combinations(spec) for name, h in selected.items()}
    dirs = {name: {"baseline": {}, "nr_baseline": {}, "kd": {}} for name in halves}
    for name, role, student, teacher, cfg in table_configs(spec, half, students, teachers):
        key_ = (_label(teacher), _label(student)) if role == "kd" else _label(student)
        dirs[name][role].setdefault(key_, []).append(config_lib.run_dir(cfg, logdir))
    out = {}
    for name, h in halves.items():
        accuracies = {role: {k: _accuracies(d, key) for k, d in cells.items()}
                      for role, cells in dirs[name].items()}
        out[name] = TableHalf(
            students=[_label(s) for s in h["students"]],
            teachers=[_label(t) for t in h["teachers"]],
            kd=accuracies["kd"], baseline=accuracies["baseline"], nr_baseline=accuracies["nr_baseline"],
        )
    return out


def _combine_pngs(paths, out_path):
    import matplotlib.image as mpimg

    from kdkeras.plotting import new_figure, save_png

    images = [mpimg.imread(p) for p in paths]
    fig = new_figure(7 * len(images), 6)
    axes = fig.subplots(1, len(images), squeeze=False)
    for ax, image in zip(axes[0], images):
        ax.imshow(image)
        ax.axis("off")
    fig.tight_layout()
    save_png(fig, out_path, dpi=100)


def _long_rows(half_name, measure, half, wide_csv):
    """The paper-layout CSV of one half as long rows (half, measure, row, student, mean, std, n)."""
    rows = []
    for record in csv.DictReader(io.StringIO(wide_csv)):
        for student in half.students:
            rows.append([half_name, measure, record["row"], student, record[student],
                         record.get(f"{student}_std", ""), record.get(f"{student}_n", "")])
    return rows


def _present(halves) -> bool:
    """Whether any cell of ``{half: TableHalf}`` has a value."""
    return any(v for h in halves.values() for cells in (h.kd, h.baseline, h.nr_baseline)
               for v in cells.values())


def write_tables(spec: GridSpec, logdir: str, half=None, students=None, teachers=None, log=print) -> str:
    """Writes ``<logdir>/<grid>/table.md``, ``table.csv``, ``table.png`` and ``comparison.md``.

    ``table.md`` has the paper's layout (teachers x students, then Baseline,
    NR-baseline, Acc. drop, Distil. gain), mean +- std over seeds, once per
    measure of :data:`MEASURES` that the runs report: the final epoch (the
    paper's protocol), the best validation epoch (runs with ``val_size``),
    precise BN, batch statistics, and the best epoch on the test split,
    labelled optimistic. ``table.csv`` holds the same numbers as long rows
    ``half,measure,row,student,mean,std,n``; ``table.png`` is a heatmap of
    the final epoch; ``comparison.md`` (CIFAR-100 paper tables only) puts
    every final-epoch cell beside the paper's printed value. The TensorBoard
    HParams experiment at the root of ``logdir`` is rewritten too
    (:func:`kdkeras.hparams.write_experiment`).
    """
    import tempfile

    from kdkeras import tables
    from kdkeras.io_utils import atomic_write_text
    from kdkeras.paper import ACCURACY_TABLES

    folder = os.path.join(logdir, spec.name)
    os.makedirs(folder, exist_ok=True)
    hparams.write_experiment(logdir, [c.config for c in plan(spec, logdir, half, students, teachers)],
                             on_error=log)  # TensorBoard's HParams tab: every run of the table
    measured = {}
    for name, key, what in MEASURES:
        halves = collect(spec, logdir, key, half, students, teachers)
        if name == "final" or _present(halves):
            measured[name] = (what, halves)
    final = measured["final"][1]
    title = f"{spec.name}: {spec.net} on {spec.dataset}, {spec.seeds} seed(s)"
    md, csv_parts, comparison, pngs = [f"# {title}\n"], [], [f"# {title}: ours / paper\n"], []
    for name in final:
        for measure, (what, halves) in measured.items():
            md.append(tables.render_markdown(halves[name], f"{name} half, {what} (%)"))
            csv_parts += _long_rows(name, measure, halves[name], tables.render_csv(halves[name]))
        png = os.path.join(tempfile.mkdtemp(), f"{name}.png")
        tables.render_heatmap(final[name], png, f"{spec.net} {name} half (final epoch)")
        pngs.append(png)
        if spec.table in ACCURACY_TABLES and spec.dataset == "cifar100" and name in ACCURACY_TABLES[spec.table]:
            printed = ACCURACY_TABLES[spec.table][name]
            comparison.append(tables.render_comparison(final[name], printed, f"{name} half, final epoch"))
    atomic_write_text(os.path.join(folder, "table.md"), "\n\n".join(md) + "\n")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["half", "measure", "row", "student", "mean", "std", "n"])
    writer.writerows(csv_parts)
    atomic_write_text(os.path.join(folder, "table.csv"), out.getvalue())
    if pngs:
        _combine_pngs(pngs, os.path.join(folder, "table.png"))
    if len(comparison) > 1:
        atomic_write_text(os.path.join(folder, "comparison.md"), "\n\n".join(comparison) + "\n")
    log(f"Tables written to {folder}")
    return folder


# --------------------------------------------------------------------------
# Summary across the grids of a suite
# --------------------------------------------------------------------------


def _per_seed(run_dirs_by_seed: dict, key: str) -> dict:
    """``{seed: accuracy in percent}`` of the finished runs reporting ``key``."""
    from kdkeras.training import is_finished, load_results

    out = {}
    for seed, directory in run_dirs_by_seed.items():
        if is_finished(directory):
            value = load_results(directory).get(key)
            if value is not None:
                out[seed] = 100.0 * value
    return out


def _stats(values) -> str:
    from kdkeras import tables

    values = list(values)
    stats = tables.summarize(values)
    if stats is None:
        return tables.MISSING
    mean, std = stats
    n = len(values)
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _paired(a: dict, b: dict) -> list[float]:
    """Per-seed differences ``a - b`` over the seeds both have."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def _method_label(cfg) -> str:
    """How a student was distilled: ``kd``, ``fitnets``, ``kd, init=dirac``."""
    return cfg.method + (f", init={cfg.init}" if cfg.init != "he" else "")


def summary_rows(specs, logdir: str) -> list[dict]:
    """One row per (grid, half, student, measure): R baseline, NR baseline, best KD, drop, gains.

    Differences (``acc_drop`` = R - NR, ``kd_gain_over_nr`` = KD - NR,
    ``distil_gain`` = KD - R) are taken per seed and then averaged, so their
    ``±`` is the spread over seeds of the difference itself. The KD column
    uses the teacher with the best mean over seeds (by the final-epoch
    accuracy, as the paper's tables).
    """
    rows = []
    for spec in specs:
        dirs = {}
        for name, role, student, teacher, cfg in table_configs(spec):
            key = (name, student)
            slot = dirs.setdefault(key, {"baseline": {}, "nr_baseline": {}, "kd": {}, "method": None})
            run = config_lib.run_dir(cfg, logdir)
            if role == "kd":
                slot["kd"].setdefault(teacher, {})[cfg.seed] = run
                slot["method"] = _method_label(cfg)
            else:
                slot[role][cfg.seed] = run
        for (half, student), slot in dirs.items():
            finals = {t: _per_seed(d, "test_accuracy") for t, d in slot["kd"].items()}
            means = {t: sum(v.values()) / len(v) for t, v in finals.items() if v}
            teacher = max(means, key=means.get) if means else None
            for measure, key, what in MEASURES:
                r = _per_seed(slot["baseline"], key)
                nr = _per_seed(slot["nr_baseline"], key)
                kd = _per_seed(slot["kd"][teacher], key) if teacher else {}
                if not (r or nr or kd):
                    continue
                rows.append({
                    "grid": spec.name, "net": spec.net, "half": half, "student": _label(student),
                    "teacher": _label(teacher) if teacher else None, "method": slot["method"],
                    "measure": measure, "title": what,
                    "r_baseline": r, "nr_baseline": nr, "kd": kd,
                    "acc_drop": _paired(r, nr), "kd_gain_over_nr": _paired(kd, nr),
                    "distil_gain": _paired(kd, r),
                })
    return rows


def write_summary(name: str, specs, logdir: str, log=print) -> str:
    """Writes ``<logdir>/<name>/summary.md`` and ``summary.csv``: every grid of a suite in one table per measure.

    Columns: the distillation method (and a non-default init), R baseline,
    NR baseline, the NR student distilled from its best teacher, ``Acc. drop``
    (R - NR), ``distilled - NR`` (what distillation recovers) and ``Distil.
    gain`` (distilled - R, as the paper's tables), mean ± std over seeds.
    """
    from kdkeras.io_utils import atomic_write_text

    rows = summary_rows(specs, logdir)
    folder = os.path.join(logdir, name)
    os.makedirs(folder, exist_ok=True)
    md = [f"# {name}: {len(specs)} grid(s), mean ± std over seeds (n per cell in summary.csv)\n"]
    for measure, _, what in MEASURES:
        chosen = [r for r in rows if r["measure"] == measure]
        if not chosen:
            continue
        md.append(f"## {what} (%)\n")
        md.append("| grid | student | teacher | method | R baseline | NR baseline | NR distilled "
                  "| Acc. drop (R - NR) | distilled - NR | Distil. gain (distilled - R) |")
        md.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in chosen:
            md.append(f"| {r['grid']} | {r['student']} | {r['teacher'] or '—'} | {r['method'] or '—'} | "
                      f"{_stats(r['r_baseline'].values())} | {_stats(r['nr_baseline'].values())} | "
                      f"{_stats(r['kd'].values())} | {_stats(r['acc_drop'])} | {_stats(r['kd_gain_over_nr'])} | "
                      f"{_stats(r['distil_gain'])} |")
        md.append("")
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ("r_baseline", "nr_baseline", "kd", "acc_drop", "kd_gain_over_nr", "distil_gain")
    writer.writerow(["grid", "net", "half", "student", "teacher", "method", "measure", "column", "mean", "std",
                     "n", "values"])
    from kdkeras import tables

    for r in rows:
        for column in columns:
            values = list(r[column].values()) if isinstance(r[column], dict) else r[column]
            stats = tables.summarize(values)
            writer.writerow([r["grid"], r["net"], r["half"], r["student"], r["teacher"] or "", r["method"] or "",
                             r["measure"],
                             column, "" if stats is None else f"{stats[0]:.4f}",
                             "" if stats is None else f"{stats[1]:.4f}", len(values),
                             " ".join(f"{v:.2f}" for v in values)])
    atomic_write_text(os.path.join(folder, "summary.md"), "\n".join(md) + "\n")
    atomic_write_text(os.path.join(folder, "summary.csv"), out.getvalue())
    log(f"Summary written to {folder}")
    return folder


#: The small files of a run that :func:`export` copies (records, not models or checkpoints).
EXPORTED_RUN_FILES = ("config.yaml", "history.csv", "results.json", "bnstats.json", "gradient_flow.csv")
#: The files of a grid's or suite's folder that :func:`export` copies.
EXPORTED_TABLE_FILES = ("table.md", "table.csv", "table.png", "comparison.md", "summary.md", "summary.csv")


def export(name: str, specs, logdir: str, destination: str, log=print) -> list[str]:
    """Copies the small result files of every finished run, table and summary of ``specs`` into ``destination``.

    The layout below ``destination`` is the one below ``logdir``
    (``<dataset>/<run>/results.json``, ``<grid>/table.md``, ...), so the copy
    can be read like a log folder, committed, or copied back into one: a run
    whose ``results.json`` is there counts as finished. Models, backups and
    TensorBoard files stay behind.

    Returns:
        The copied paths.
    """
    import shutil

    from kdkeras.training import is_finished

    copied = []

    def copy(source_dir, names):
        relative = os.path.relpath(source_dir, logdir)
        for file_name in names:
            source = os.path.join(source_dir, file_name)
            if os.path.isfile(source):
                target = os.path.join(destination, relative, file_name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(source, target)
                copied.append(target)

    for cell in plan_all(specs, logdir):
        if is_finished(cell.run_dir):  # unfinished runs resume from their log folder, not from a copy
            copy(cell.run_dir, EXPORTED_RUN_FILES)
    for folder in {spec.name for spec in specs} | {name}:
        copy(os.path.join(logdir, folder), EXPORTED_TABLE_FILES)
    log(f"Exported {len(copied)} files to {destination}")
    return copied
