"""A search's results: the trials table, the best trial, its test accuracy, ``best.json``."""

from __future__ import annotations

import datetime
import json
import os
import shlex

from kdkeras import config as config_lib
from kdkeras.experiments.tuning.folder import BEST_FILE, OBJECTIVE, search_config, teacher_location, tune_name
from kdkeras.experiments.tuning.space import SearchSpace, TUNED


def trial_rows(oracle) -> list[dict]:
    """One dict per trial of ``oracle`` in start order: id, status, values, score."""
    rows = []
    for trial in sorted(oracle.trials.values(), key=lambda t: int(t.trial_id)):
        values = trial.hyperparameters.values
        row = {"trial": trial.trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in TUNED})
        row[OBJECTIVE] = trial.score
        row["best_epoch"] = None if trial.best_step is None else int(trial.best_step) + 1
        if "tuner/epochs" in values:
            row["epochs"] = values["tuner/epochs"]
            row["continues_trial"] = values.get("tuner/trial_id")
        rows.append(row)
    return rows


def format_table(rows: list[dict], best: str | None = None) -> str:
    """The trials as a text table (trial, T, alpha, lr, val_accuracy, status); ``*`` marks ``best``."""
    lines = [f"{'trial':>7}  {'T':>8}  {'alpha':>7}  {'lr':>9}  {OBJECTIVE:>12}  status"]

    def number(value, spec):
        return format(value, spec) if value is not None else "-"

    for row in rows:
        mark = "*" if row["trial"] == best else " "
        lines.append(f"{row['trial']:>6}{mark}  {number(row['temperature'], '8.4g')}  "
                     f"{number(row['alpha'], '7.4f')}  {number(row['lr'], '9.4g')}  "
                     f"{number(row[OBJECTIVE], '12.4f')}  {row['status']}")
    return "\n".join(lines)


def _flag(name, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (list, tuple)):
        return f"--{name}={','.join(str(v) for v in value)}"
    return f"--{name}={value}"


def distill_command(config, values: dict, logdir: str = "logs") -> str:
    """The ``kdkeras distill`` command that trains the student with ``values``.

    It repeats every setting of ``config`` that differs from the paper's
    recipe. When the lr differs from the recipe's and the teacher is given by
    name, the teacher is passed as its model file: by name, ``distill.py``
    would look for a teacher trained with that lr.
    """
    base = search_config(config)
    defaults = config_lib.recipe_defaults(config.model, distill=True)
    # distill.py scales the recipe's schedule to --epochs itself.
    scaled = config_lib.recipe_defaults(config.model, distill=True, epochs=base.epochs)
    defaults.update({k: scaled[k] for k in ("lr_milestones", "lr_gamma")})
    teacher = config.teacher
    if not config_lib.is_model_file(teacher) and values["lr"] != defaults["lr"]:
        from kdkeras.training import MODEL_FILE

        teacher = os.path.join(teacher_location(config, logdir), MODEL_FILE)
    args = ["kdkeras", "distill", f"--student={config.model}", f"--teacher={teacher}"]
    current = base.to_dict()
    for name in config_lib.FIELDS:
        if name in ("model", "teacher", *TUNED) or current[name] == defaults[name]:
            continue
        if name == "teacher_epochs" and config_lib.is_model_file(teacher):
            continue  # the file is that teacher, already trained
        args.append(_flag(name, current[name]))
    args += [f"--{name}={values[name]:.6g}" for name in TUNED]
    if os.path.normpath(logdir) != "logs":
        args.append(f"--logdir={logdir}")
    return " ".join(shlex.quote(a) for a in args)


def best_trial_row(oracle) -> dict | None:
    """The completed trial with the highest validation score (``None`` before one completes)."""
    completed = [r for r in trial_rows(oracle) if r["status"] == "COMPLETED" and r[OBJECTIVE] is not None]
    return max(completed, key=lambda r: r[OBJECTIVE]) if completed else None


def measure_test_accuracy(search, trial_id: str) -> float:
    """Test accuracy of a trial's checkpoint (its best validation epoch), measured once, after the search.

    The model is rebuilt by the hypermodel, the checkpoint KerasTuner kept
    for the trial (the epoch with the best ``val_accuracy``) is loaded, and
    the run's test split is evaluated. This is the only place a search reads
    the test split.
    """
    trial = search.oracle.get_trial(trial_id)
    model = search.load_model(trial)
    data = search.hypermodel.data()
    return float(model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"])


def stored_test_accuracy(folder: str, trial_id: str):
    """The test accuracy ``best.json`` already holds for ``trial_id`` (``None``: not measured yet)."""
    path = os.path.join(folder, BEST_FILE)
    try:
        with open(path) as f:
            best = json.load(f).get("best") or {}
    except (OSError, ValueError):
        return None
    return best.get("test_accuracy") if best.get("trial") == trial_id else None


def write_results(search, config, logdir: str, space=None, tuner: str = "bayesian",
                  executions_per_trial: int = 1, test_accuracy: float | None = None) -> dict:
    """Writes ``best.json`` (atomically) into the search folder and returns it.

    Keys: ``name``, ``student``, ``teacher``, ``teacher_run``, ``dataset``,
    ``epochs``, ``seed``, ``tuner``, ``objective``, ``val_size``,
    ``max_trials``, ``executions_per_trial``, ``search_space``,
    ``completed_trials``, ``best`` (``trial``, ``temperature``, ``alpha``,
    ``lr``, ``val_accuracy`` (the selection score) and ``test_accuracy``
    (measured once after the search, see :func:`measure_test_accuracy`;
    ``None`` until then); ``best`` is ``None`` before a trial completes),
    ``distill_command``, ``trials`` (see :func:`trial_rows`), ``config`` and
    ``updated_at``.
    """
    from kdkeras.io_utils import atomic_write_json

    space = space or SearchSpace()
    rows = trial_rows(search.oracle)
    completed = [r for r in rows if r["status"] == "COMPLETED" and r[OBJECTIVE] is not None]
    best_row = best_trial_row(search.oracle)
    best = None
    command = None
    if best_row is not None:
        best = {"trial": best_row["trial"], **{n: best_row[n] for n in TUNED}, OBJECTIVE: best_row[OBJECTIVE],
                "test_accuracy": test_accuracy}
        command = distill_command(config, best, logdir)
    results = {
        "name": tune_name(config, space, tuner, executions_per_trial),
        "student": config.model,
        "teacher": config.teacher,
        "teacher_run": teacher_location(config, logdir),
        "dataset": config.dataset,
        "epochs": config.epochs,
        "seed": config.seed,
        "tuner": tuner,
        "objective": OBJECTIVE,
        "val_size": search_config(config).val_size,
        "max_trials": search.oracle.max_trials,
        "executions_per_trial": executions_per_trial,
        "search_space": space.to_dict(),
        "completed_trials": len(completed),
        "best": best,
        "distill_command": command,
        "trials": rows,
        "config": search_config(config).to_dict(),
        "updated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(os.path.join(search.project_dir, BEST_FILE), results)
    return results
