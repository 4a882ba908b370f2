"""Running a grid's cells: claims with leases, waiting for teachers, the plan's state."""

from __future__ import annotations

import time

from kdkeras import claims
from kdkeras import hparams
from kdkeras.experiments.grid.expand import Cell


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


#: ``(KD cell's run folder, logdir)`` -> its teacher's run folder (the run folder's name needs the data's
#: fingerprint, which reads the data: computed once per cell, not at every poll).
_TEACHER_FOLDERS: dict = {}


def teacher_held(cell: Cell, logdir: str) -> str | None:
    """How another live process holds the unfinished teacher run of KD cell ``cell`` (``None`` if it does not).

    A collective under a multi-worker strategy: every worker calls it and gets the chief's answer.
    """
    from kdkeras import config as config_lib
    from kdkeras.training import distribute
    from kdkeras.training.run_folder import RunFolder

    if cell.kind != "kd":
        return None
    key = (cell.run_dir, logdir)
    if key not in _TEACHER_FOLDERS:
        _TEACHER_FOLDERS[key] = RunFolder.of(config_lib.teacher_config(cell.config), logdir)
    folder = _TEACHER_FOLDERS[key]
    strategy = distribute.make_strategy(cell.config.strategy)
    chief = distribute.is_chief()
    held = chief and not folder.is_finished() and claims.is_claimed(folder.path)
    if not distribute.chief_value(strategy, held):
        return None
    return f"its teacher {folder.name} is being trained by another process ({claims.describe(folder.path)})"


def run_cell(cell: Cell, logdir: str, log=print, poll_s: float = 10.0, verbose="auto", callbacks=None,
             wait_for_teacher: bool = True) -> str:
    """Trains ``cell`` unless finished or claimed; waits for a claimed teacher unless told not to.

    ``callbacks``: a function of the cell's config and run folder returning
    extra Keras callbacks for its ``fit`` (instruments such as gradient flow).

    Returns:
        ``"done"`` (already finished), ``"trained"``, ``"skipped"`` (another
        process holds it) or, with ``wait_for_teacher=False``, ``"deferred"``
        (another process is training its teacher).
    """
    from kdkeras.training import ensure_teacher_run, is_finished, train_and_evaluate

    if is_finished(cell.run_dir):
        claims.clear_stale(cell.run_dir)  # left by a process killed after finishing it
        return "done"
    if cell.kind == "kd":
        if not wait_for_teacher:
            held = teacher_held(cell, logdir)
            if held:
                log(f"Deferring {cell.label}: {held}; coming back to it after the other runs")
                return "deferred"
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


def print_plan(spec, cells, mine, index, count, out=print) -> None:
    """Lists the cells of this shard with their state, and a summary (``spec``: a grid or a name)."""
    states = {}
    name = getattr(spec, "name", spec)
    out(f"Grid {name}: {len(cells)} runs, shard {index}/{count} has {len(mine)}")
    lengths = len({cell.config.epochs for cell in cells}) > 1  # e.g. teachers trained longer (teacher_epochs)
    for cell in mine:
        s = state(cell)
        states[s] = states.get(s, 0) + 1
        teacher = f" from {cell.config.teacher}" if cell.kind == "kd" else ""
        claim = claims.owner(cell.run_dir) if s in ("running", "interrupted") else None
        held = f" [{claim.describe()}]" if claim is not None else ""
        epochs = cell.config.epochs
        axes = (f", {epochs} epoch{'s' * (epochs != 1)}" if lengths else "") + \
            "".join(f", {k}={v}" for k, v in cell.axes)
        if cell.kind == "kd" and cell.config.method != "kd" and "method" not in dict(cell.axes):
            axes += f", method={cell.config.method}"  # a grid's setting, not an axis: still not Hinton KD
        out(f"  {s:<12} {cell.kind:<9} {cell.config.model}{teacher} (seed {cell.config.seed}{axes}) -> "
            f"{cell.run_dir}{held}")
    out("  " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))


def print_not_applicable(specs, students=None, teachers=None, out=print) -> int:
    """Lists the KD runs of pair grids that their ``not_applicable`` excludes, with the reasons; returns their count.

    They are never planned: the dry run shows them so that a grid's plan says
    what it leaves out and why.
    """
    from kdkeras.experiments.grid.expand import pair_configs

    count = 0
    for spec in specs:
        if not spec.pairs:
            continue
        reasons = {}
        for pair, role, cfg, reason in pair_configs(spec, None, students, teachers):
            if reason is not None and role == "kd":  # a pair without a plain student: its KD runs say it
                axes = ", ".join(f"{k}={getattr(cfg, k)}" for k in spec.axes)
                reasons.setdefault(reason, []).append(f"{pair} ({axes or cfg.method}, seed {cfg.seed})")
        for reason, cells in reasons.items():
            out(f"  not applicable ({len(cells)} runs, not planned): {reason}")
            for cell in cells:
                out(f"    {cell}")
            count += len(cells)
    return count


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

    A KD cell whose teacher another process is training is deferred: the
    process trains its other cells first and comes back to it, rather than
    waiting idle for the teacher.
    """
    name = getattr(spec, "name", spec)
    hparams.write_experiment(logdir, [c.config for c in [*cells, *take_over]], on_error=log)  # HParams tab
    outcomes, skipped, deferred = {}, [], set()
    for i, cell in enumerate(cells, start=1):
        log(f"[{i}/{len(cells)}] {name}: {cell.label}")
        outcome = run_cell(cell, logdir, log=log, verbose=verbose, callbacks=callbacks, poll_s=poll_s,
                           wait_for_teacher=False)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "deferred":
            deferred.add(cell.run_dir)
        elif outcome == "skipped":
            skipped.append(cell)
    pending = [c for c in [*(c for c in cells if c.run_dir in deferred), *skipped, *take_over] if state(c) != "done"]
    waiting = False
    while pending:
        for cell in pending:
            cell_state = state(cell)
            if cell_state not in ("to do", "interrupted") or teacher_held(cell, logdir):
                continue
            if cell.run_dir in deferred and cell_state == "to do":
                log(f"[+] {name}: {cell.label} (back to it: its teacher is no longer held by another process)")
                outcome = run_cell(cell, logdir, log=log, verbose=verbose, callbacks=callbacks, poll_s=poll_s)
                if outcome == "trained":
                    outcomes["trained"] = outcomes.get("trained", 0) + 1
            else:  # not started here, or another process started it and stopped
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
