"""Training and distillation runs: ``train_and_evaluate(config, logdir)``.

One function runs a baseline (hard targets) or a KD run, end to end, into its
own run folder (see :mod:`kdkeras.config` for the name)::

    <logdir>/<dataset>/<run name>/
        config.yaml        resolved settings
        history.csv        one row per finished epoch (atomic rewrite)
        results.json       final record (written last, atomically)
        model.keras        the trained model (the student for KD)
        initial.weights.h5 the (student) weights before the first step
        tensorboard/       TensorBoard event files (train/, validation/)
        backup/            resume state while the run is unfinished

Repeating a finished run returns its stored results without training;
repeating an interrupted run resumes from its last finished epoch
(``keras.callbacks.BackupAndRestore``).
"""

from __future__ import annotations

import contextlib
import datetime
import filecmp
import json
import os
import shutil
import sys
import time
import zipfile

from kdkeras import config as config_lib

RESULTS_FILE = "results.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.yaml"
BACKUP_DIR = "backup"
INITIAL_WEIGHTS_FILE = "initial.weights.h5"
TENSORBOARD_DIR = "tensorboard"


def _print(message):
    print(message, flush=True)


def is_finished(run_directory: str) -> bool:
    """Whether ``run_directory`` holds a finished run (its ``results.json``)."""
    return os.path.exists(os.path.join(run_directory, RESULTS_FILE))


def load_results(run_directory: str) -> dict:
    """The ``results.json`` of a finished run."""
    with open(os.path.join(run_directory, RESULTS_FILE)) as f:
        return json.load(f)


def make_strategy(name: str):
    """The ``tf.distribute`` strategy for ``auto|mirrored|multiworker|none``.

    ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several
    workers, ``MirroredStrategy`` when several GPUs are visible, else the
    default (single-device) strategy.
    """
    import tensorflow as tf

    if name not in config_lib.STRATEGIES:
        raise ValueError(f"Unknown strategy '{name}'. Valid choices: {', '.join(config_lib.STRATEGIES)}.")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multiworker" or (name == "auto" and _tf_config_workers() > 1):
        if _tf_config_workers() < 1:
            raise ValueError(
                "strategy=multiworker needs the TF_CONFIG environment variable describing "
                "the cluster (see README, 'Several machines')."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tf_config_workers() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}")
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def _is_chief() -> bool:
    """Whether this process writes the run's files (always, except MWMS non-chiefs)."""
    if _tf_config_workers() <= 1:
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


#: Free space (MiB) that :func:`check_logdir` requires on the disk of ``--logdir``
#: before a run starts; ``KDKERAS_MIN_FREE_MB`` overrides it (0: no check).
MIN_FREE_MB = 256


def check_logdir(logdir: str, min_free_mb: float | None = None) -> None:
    """Fails early (one line) when ``logdir`` cannot be created or written, or its disk is nearly full.

    The free space is checked first, on the nearest existing folder of
    ``logdir``, so a nearly full disk is reported before anything is created.

    Args:
        logdir: the root folder of all runs (created when missing).
        min_free_mb: free space (MiB) required on its disk. Default: the
            environment variable ``KDKERAS_MIN_FREE_MB``, else
            :data:`MIN_FREE_MB`; 0 turns the check off.

    Raises:
        PermissionError: ``logdir`` cannot be created or written, or its disk
            has less free space than required.
        ValueError: ``KDKERAS_MIN_FREE_MB`` is not a number.
    """
    if min_free_mb is None:
        text = os.environ.get("KDKERAS_MIN_FREE_MB", "").strip()
        try:
            min_free_mb = float(text) if text else MIN_FREE_MB
        except ValueError:
            raise ValueError(f"KDKERAS_MIN_FREE_MB must be a number of MiB (0: no check). Received: {text!r}.")
    if min_free_mb > 0:
        existing = os.path.abspath(logdir)
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        try:
            free_mb = shutil.disk_usage(existing).free / 2**20
        except OSError:
            free_mb = None  # unknown here: the write test below still runs
        if free_mb is not None and free_mb < min_free_mb:
            raise PermissionError(
                f"--logdir '{logdir}' is on a nearly full disk: {free_mb:.0f} MiB free, a run needs at "
                f"least {min_free_mb:g} MiB. Free some space or choose another --logdir "
                f"(KDKERAS_MIN_FREE_MB sets the limit).")
    try:
        os.makedirs(logdir, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"Cannot create --logdir '{logdir}': {err.strerror}.")
    probe = os.path.join(logdir, f".write-test-{os.getpid()}")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise PermissionError(f"--logdir '{logdir}' is not writable: {err.strerror}.")


def load_model_file(path: str, what: str = "model"):
    """Loads a ``.keras`` file in safe mode (with kdkeras's fast layers), or fails in one line."""
    from kdkeras.models.convert import load_model

    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} file '{path}' does not exist.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"Cannot load {what} file '{path}': not a .keras archive (corrupt, truncated "
                         f"or another format).")
    try:
        return load_model(path)
    except Exception as err:  # corrupt zip, wrong format, unknown layer ...
        detail = " ".join(str(err).split())[:200]
        raise ValueError(f"Cannot load {what} file '{path}': {type(err).__name__}: {detail}")


def resolve_teacher(config, logdir: str, log=_print, verbose="auto", train_teacher: bool = True):
    """The teacher model of a KD run: a ``.keras`` file or a finished baseline run.

    A teacher given by name whose run (same recipe overrides as the student's
    command) is not finished in ``logdir`` is trained first, or, with
    ``train_teacher=False``, is an error (``FileNotFoundError``, one line).

    Returns:
        ``(teacher_model, teacher_run_dir_or_path)``.
    """
    if config_lib.is_model_file(config.teacher):
        return load_model_file(config.teacher, "teacher"), config.teacher
    teacher_dir = ensure_teacher_run(config, logdir, log=log, verbose=verbose, train_teacher=train_teacher)
    return load_model_file(os.path.join(teacher_dir, MODEL_FILE), "teacher"), teacher_dir


def ensure_teacher_run(config, logdir: str, *, log=_print, verbose="auto", train_teacher: bool = True,
                       poll_s: float = 10.0) -> str:
    """The finished baseline run of a KD run's teacher (given by name); trained first if missing.

    The teacher's run is claimed (``<run>.lock``, see :func:`kdkeras.grid.try_claim`)
    while it trains, so processes sharing ``logdir`` (grid shards, tuning
    workers, several ``distill.py``) train it once: the others wait for it,
    and take over the claim if its process died.

    Raises:
        FileNotFoundError: with ``train_teacher=False``, when the run is not finished.

    Returns:
        The teacher's run folder.
    """
    from kdkeras.grid import release, try_claim

    teacher_cfg = config_lib.teacher_config(config)
    teacher_dir = config_lib.run_dir(teacher_cfg, logdir)
    if not is_finished(teacher_dir) and not train_teacher:
        raise FileNotFoundError(
            f"Teacher {teacher_cfg.model} has no finished run at {teacher_dir}. Train it first "
            f"(python scripts/train.py --model={teacher_cfg.model} with the same settings), pass "
            f"--teacher=PATH.keras, or allow training it on the way (--train_teacher).")
    waited = False
    while not is_finished(teacher_dir):
        if try_claim(teacher_dir):
            try:
                if not is_finished(teacher_dir):
                    log(f"Teacher {teacher_cfg.model} has no finished run at {teacher_dir}: "
                        f"training it first with the same recipe.")
                    train_and_evaluate(teacher_cfg, logdir, log=log, verbose=verbose)
            finally:
                release(teacher_dir)
            break
        if not waited:
            log(f"Waiting for teacher {os.path.basename(teacher_dir)} (claimed by another process)")
            waited = True
        time.sleep(poll_s)
    return teacher_dir


def build_student(config, num_classes: int, input_shape):
    """The run's (student) model from the registry, with the run's dropout for WRNs."""
    from kdkeras.models.registry import build_model

    options = {"dropout": config.dropout} if config.model.startswith("wrn") else {}
    return build_model(config.model, num_classes=num_classes, input_shape=input_shape, **options)


def make_optimizer(config, steps_per_epoch: int, lr: float | None = None):
    """The recipe's SGD (:class:`kdkeras.optimizers.PyTorchSGD`) and lr schedule, from ``lr`` or ``config.lr``."""
    from kdkeras.optimizers import PyTorchSGD
    from kdkeras.recipes import make_lr_schedule

    return PyTorchSGD(
        learning_rate=make_lr_schedule(config.lr if lr is None else lr, config.lr_schedule,
                                       config.lr_milestones or (), config.lr_gamma, steps_per_epoch),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def check_teacher(teacher, config, info) -> None:
    """Fails (one line) when ``teacher`` does not fit the dataset of ``config``."""
    if tuple(teacher.input_shape[1:]) != tuple(info.image_shape):
        raise ValueError(
            f"Teacher '{config.teacher}' takes inputs of shape {tuple(teacher.input_shape[1:])}, "
            f"but dataset {config.dataset} has images of shape {tuple(info.image_shape)}."
        )
    if teacher.output_shape[-1] != info.num_classes:
        raise ValueError(
            f"Teacher '{config.teacher}' has {teacher.output_shape[-1]} outputs, but dataset "
            f"{config.dataset} has {info.num_classes} classes."
        )


# --------------------------------------------------------------------------
# The steps of a run. train_and_evaluate calls them in order; tuning trials
# and benchmarks call the same functions, so a setting that changes a run
# changes them too.
# --------------------------------------------------------------------------


def make_run_data(config):
    """Step 2: the run's pipelines (:class:`kdkeras.data.Splits`), with every data setting of ``config``.

    Seeds the global RNGs with ``config.seed`` first, so the pipelines are the
    same whoever builds them.
    """
    import keras

    from kdkeras import data as data_lib

    keras.utils.set_random_seed(config.seed)
    return data_lib.make_splits(
        config.dataset,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        archive=config.archive,
        train_size=config.train_size,
        test_size=config.test_size,
        val_size=config.val_size,
        seed=config.seed,
        augment=config.augment,
    )


def build_run_model(config, data, teacher=None, strategy=None):
    """Step 3: the compiled model of a run: a :class:`~kdkeras.distiller.Distiller` (KD) or the student.

    The student's weights depend only on ``config.seed`` (the global RNGs
    are seeded here, right before it is built), and its optimizer and lr
    schedule on ``config`` and the number of steps per epoch.

    Args:
        config: the resolved :class:`kdkeras.config.RunConfig` (its
            ``temperature``, ``alpha`` and ``lr`` are used as they are; a
            tuning trial passes its own values this way).
        data: the run's :class:`kdkeras.data.Splits` (classes, image shape,
            steps per epoch).
        teacher: the teacher ``keras.Model`` of a KD run.
        strategy: a ``tf.distribute`` strategy to build under (default: none).

    Returns:
        ``(model, student)``: the model to ``fit`` and the student inside it
        (the same object for a baseline).
    """
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        keras.utils.set_random_seed(config.seed)
        student = build_student(config, data.info.num_classes, data.info.image_shape)
        optimizer = make_optimizer(config, data.steps_per_epoch)
        if config.distill:
            from kdkeras.distiller import Distiller

            if teacher is None:
                raise ValueError(f"KD run {config.model} needs its teacher model.")
            check_teacher(teacher, config, data.info)
            model = Distiller(student, teacher, temperature=config.temperature, alpha=config.alpha)
            model.compile(optimizer=optimizer, steps_per_execution=config.steps_per_execution,
                          jit_compile=config.jit_compile)
        else:
            model = student
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                steps_per_execution=config.steps_per_execution,
                jit_compile=config.jit_compile,
            )
    return model, student


def training_callbacks(config, data, *, evaluate_test: bool = True) -> list:
    """Step 4a: the callbacks that shape training and the metrics it logs, in order.

    A non-finite loss stops first; then ``lr`` / ``epoch_time_s``, the KD
    schedule (``--kd_epochs``), the test split's metrics (``test_*``; never
    in a tuning trial, ``evaluate_test=False``) and the per-epoch precise-BN
    accuracy (``--precise_bn_every_epoch``). Tuning trials use exactly
    these, so no setting can change a run without changing a trial.
    """
    from kdkeras.callbacks import EpochStats, EvaluateSplits, KDSchedule, PreciseBNEvaluation, StopOnNonFiniteLoss

    callbacks = [StopOnNonFiniteLoss(), EpochStats()]
    if config.distill and config.kd_epochs:
        callbacks.append(KDSchedule(config.kd_epochs, config.alpha))
    if evaluate_test:
        callbacks.append(EvaluateSplits({"test": data.test}))
    if config.precise_bn and config.precise_bn_every_epoch:
        splits = {"val": data.val} if data.val is not None else {}
        if evaluate_test:
            splits["test"] = data.test
        callbacks.append(PreciseBNEvaluation(data.train_plain, config.precise_bn, splits))
    return callbacks


def record_callbacks(work_dir: str, initial_epoch: int) -> list:
    """Step 4b: the callbacks that record a run in its folder (history, backup, TensorBoard).

    The history row is written before the backup, so a process killed
    between the two resumes from the previous backup and rewrites that
    epoch's row instead of leaving a gap.
    """
    import keras

    from kdkeras.callbacks import HistoryCSV, TensorBoard

    return [
        HistoryCSV(os.path.join(work_dir, HISTORY_FILE), initial_epoch=initial_epoch),
        keras.callbacks.BackupAndRestore(os.path.join(work_dir, BACKUP_DIR), save_freq="epoch",
                                         delete_checkpoint=False, double_checkpoint=True),
        TensorBoard(os.path.join(work_dir, TENSORBOARD_DIR)),
    ]


def fit_run(model, config, data, callbacks, verbose="auto"):
    """Step 5: ``model.fit`` on the run's training split, validated on its validation split (if any)."""
    return model.fit(data.train, epochs=config.epochs, validation_data=data.val, shuffle=False,
                     callbacks=list(callbacks), verbose=fit_verbosity(verbose))


def fit_verbosity(verbose="auto"):
    """``fit``'s ``verbose``: ``"auto"`` is a progress bar on a terminal, one line per epoch otherwise."""
    if verbose != "auto":
        return verbose
    return 1 if getattr(sys.stdout, "isatty", lambda: False)() else 2


def _best(history, key):
    """``(best value, 1-based epoch)`` of ``key`` in ``history`` (first epoch on ties)."""
    values = [row.get(key) for row in history]
    if not values or any(v is None for v in values):
        return None, None
    index = max(range(len(values)), key=values.__getitem__)
    return values[index], index + 1


def final_measurements(config, model, data, history) -> dict:
    """Step 6a: the run's numbers: final and selected accuracies, BatchNorm-statistics checks.

    * ``test_accuracy`` / ``test_loss``: the final epoch (the paper's protocol).
    * ``best_test_accuracy`` / ``best_test_epoch``: the best epoch *on the
      test split*, optimistic (selected on the data it reports).
    * With a validation split: ``val_accuracy`` (final), ``best_val_accuracy``,
      ``best_val_epoch`` and ``test_accuracy_at_best_val`` (the test accuracy
      of the epoch the validation split selects).
    * ``test_accuracy_batch_stats`` (and ``val_...``): the final model
      with every BatchNorm layer using the evaluated batch's statistics;
      ``batch_stats_gap`` is its difference to ``test_accuracy``.
    * With ``precise_bn``: ``test_accuracy_precise_bn`` (and ``val_...``)
      after the moving statistics are replaced by population statistics;
      the model keeps those statistics (it is saved with them).
    """
    from kdkeras import batchnorm

    last = history[-1]
    out = {"test_accuracy": last["test_accuracy"], "test_loss": last.get("test_loss")}
    out["best_test_accuracy"], out["best_test_epoch"] = _best(history, "test_accuracy")
    if data.val is not None:
        out["val_accuracy"] = last["val_accuracy"]
        out["val_loss"] = last.get("val_loss")
        out["best_val_accuracy"], out["best_val_epoch"] = _best(history, "val_accuracy")
        out["test_accuracy_at_best_val"] = history[out["best_val_epoch"] - 1]["test_accuracy"]
    for split, dataset in data.eval_splits().items():
        out[f"{split}_accuracy_batch_stats"] = batchnorm.batch_statistics_accuracy(model, dataset)
    out["batch_stats_gap"] = out["test_accuracy_batch_stats"] - out["test_accuracy"]
    if config.precise_bn:
        batchnorm.precise_bn(model, data.train_plain, config.precise_bn)
        for split, dataset in data.eval_splits().items():
            out[f"{split}_accuracy_precise_bn"] = model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"]
    return out


def _readable(path: str, kind: str) -> bool:
    try:
        if kind == "h5":
            import h5py

            with h5py.File(path, "r"):
                return True
        with open(path) as f:
            return "epoch" in json.load(f)
    except (OSError, ValueError):
        return False


def _torn(weights: str, meta: str) -> bool:
    """Whether the latest weights are newer than the metadata beside them."""
    pairs = ((weights, "h5"), (meta, "json"), (weights + ".bkp", "h5"), (meta + ".bkp", "json"))
    if not all(_readable(path, kind) for path, kind in pairs):
        return False
    with open(meta) as f, open(meta + ".bkp") as g:
        same_epoch = json.load(f).get("epoch") == json.load(g).get("epoch")
    return same_epoch and not filecmp.cmp(weights, weights + ".bkp", shallow=False)


def repair_backup(backup_dir: str, log=_print) -> None:
    """Makes a backup folder loadable after a kill during its writing.

    ``BackupAndRestore(double_checkpoint=True)`` keeps the previous epoch's
    files as ``*.bkp``. When the latest weights or metadata cannot be read
    (the process died while writing them), the previous pair replaces them;
    when neither pair is readable the backup is dropped and the run starts
    over.
    """
    weights = os.path.join(backup_dir, "latest.weights.h5")
    meta = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isdir(backup_dir):
        return
    if _torn(weights, meta):
        # Killed after the new weights were written but before their metadata:
        # the metadata still names the previous epoch, whose weights are the copy.
        log(f"The latest backup in {backup_dir} is incomplete (interrupted while saving): "
            f"using the one before it.")
        shutil.copyfile(weights + ".bkp", weights)
        return
    if os.path.exists(weights) and _readable(weights, "h5") and _readable(meta, "json"):
        return
    if _readable(weights + ".bkp", "h5") and _readable(meta + ".bkp", "json"):
        log(f"The latest backup in {backup_dir} is incomplete (interrupted while saving): "
            f"using the one before it.")
        shutil.copyfile(weights + ".bkp", weights)
        shutil.copyfile(meta + ".bkp", meta)
        return
    if os.listdir(backup_dir):
        log(f"The backup in {backup_dir} is unreadable (interrupted while saving): starting over.")
    shutil.rmtree(backup_dir, ignore_errors=True)


def _backup_epoch(backup_dir: str) -> int:
    """The epoch a ``BackupAndRestore`` folder will resume from (0 if none)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                return int(json.load(f)["epoch"])
        except (ValueError, KeyError, OSError):
            pass
    return 0


def train_and_evaluate(config, logdir: str = "logs", *, callbacks=(), log=_print, verbose="auto",
                       train_teacher: bool = True) -> dict:
    """Trains (or resumes, or just reports) one run and returns its results.

    Args:
        config: a resolved :class:`kdkeras.config.RunConfig`.
        logdir: root folder of all runs.
        callbacks: extra Keras callbacks for ``fit``.
        log: function printing progress messages.
        verbose: ``fit`` verbosity (``"auto"``: a progress bar on a terminal,
            one line per epoch otherwise).
        train_teacher: train a teacher given by name that has no finished run
            in ``logdir`` first (else fail before training).

    Returns:
        The run's ``results.json`` as a dict (with ``run_dir`` added).
    """
    config_lib.validate(config)
    directory = config_lib.run_dir(config, logdir)
    if is_finished(directory):  # 1. the run folder: a finished run is reported, not repeated
        return _report_finished(config, directory, log)
    check_logdir(logdir)
    strategy = make_strategy(config.strategy)
    chief = _is_chief()
    teacher, teacher_source = (None, None)
    if config.distill:  # before the run folder exists: a missing teacher fails without leaving one
        teacher, teacher_source = resolve_teacher(config, logdir, log=log, verbose=verbose,
                                                  train_teacher=train_teacher)
    data = make_run_data(config)  # 2
    model, student = build_run_model(config, data, teacher, strategy)  # 3
    work_dir = directory if chief else os.path.join(directory, ".workers", str(os.getpid()))
    os.makedirs(work_dir, exist_ok=True)
    initial_epoch = _prepare_resume(work_dir, log)
    if chief:
        _write_config(config, directory)
        _save_initial_weights(student, directory, initial_epoch)
    _log_start(config, data, student, directory, work_dir, initial_epoch, log)
    all_callbacks = [*training_callbacks(config, data), *record_callbacks(work_dir, initial_epoch),
                     *callbacks]  # 4
    fit_run(model, config, data, all_callbacks, verbose)  # 5
    return _summarise(config, model, student, data, directory, work_dir, teacher_source, chief, log)  # 6


def _report_finished(config, directory, log) -> dict:
    results = load_results(directory)
    log(f"{config_lib.run_name(config)} already finished: test_accuracy="
        f"{results['test_accuracy']:.4f}; stored result in {directory}")
    return {**results, "run_dir": directory}


def _prepare_resume(work_dir: str, log) -> int:
    """Repairs the backup of an interrupted run; returns the epoch it resumes from (0: a new run)."""
    backup_dir = os.path.join(work_dir, BACKUP_DIR)
    repair_backup(backup_dir, log=log)
    return _backup_epoch(backup_dir)


def _write_config(config, directory: str) -> None:
    from kdkeras.io_utils import atomic_write_text

    atomic_write_text(os.path.join(directory, CONFIG_FILE),
                      config_lib.to_yaml(config, {"run": config_lib.run_name(config)}))


def _save_initial_weights(student, directory: str, initial_epoch: int) -> None:
    """The student before its first step: the start of the 1-D loss-landscape path."""
    initial_path = os.path.join(directory, INITIAL_WEIGHTS_FILE)
    if initial_epoch or os.path.exists(initial_path):
        return
    tmp_initial = os.path.join(directory, f".tmp-{os.getpid()}.{INITIAL_WEIGHTS_FILE}")
    student.save_weights(tmp_initial)
    os.replace(tmp_initial, initial_path)


def _log_start(config, data, student, directory, work_dir, initial_epoch, log) -> None:
    from kdkeras.profiling import profile
    from kdkeras.recipes import describe_schedule

    name = config_lib.run_name(config)
    backup_dir = os.path.join(work_dir, BACKUP_DIR)
    if initial_epoch >= config.epochs:
        log(f"All {config.epochs} epochs of {name} finished before the interruption: "
            f"writing its final files from {backup_dir}")
        return
    if initial_epoch:
        log(f"Resuming {name} at epoch {initial_epoch + 1}/{config.epochs} from {backup_dir}")
        return
    kd_part = f" (KD in the first {config.kd_epochs} epochs only)" if config.distill and config.kd_epochs else ""
    what = (f"{config.model} from teacher {config.teacher}{kd_part}" if config.distill
            else f"{config.model} on hard targets")
    info = data.info
    val = f" / {info.val_examples} validation" if info.val_examples else ""
    log(f"Training {what}: {config.epochs} epochs on {config.dataset} "
        f"({info.train_examples} train{val} / {info.test_examples} test images), "
        f"{profile(student).params:,} params -> {directory}")
    log("Learning rate: " + describe_schedule(config.lr, config.lr_schedule, config.lr_milestones or (),
                                              config.lr_gamma, config.epochs))


def _summarise(config, model, student, data, directory, work_dir, teacher_source, chief, log) -> dict:
    """Step 6: final measurements, ``model.keras`` and ``results.json`` (the chief only)."""
    from kdkeras.callbacks import read_history
    from kdkeras.io_utils import atomic_write_json
    from kdkeras.models.convert import save_model
    from kdkeras.profiling import profile

    history = read_history(os.path.join(work_dir, HISTORY_FILE))
    name = config_lib.run_name(config)
    backup_dir = os.path.join(work_dir, BACKUP_DIR)
    if len(history) < config.epochs:
        raise RuntimeError(f"{name} stopped after {len(history)} of {config.epochs} epochs; "
                           f"repeat the command to resume from {backup_dir}.")
    measured = final_measurements(config, model, data, history)  # every worker: evaluate is collective
    if not chief:
        return {"run_dir": directory}
    model_path = os.path.join(directory, MODEL_FILE)
    tmp_path = os.path.join(directory, f".{MODEL_FILE}.tmp.keras")
    save_model(student, tmp_path)  # plain Keras layers: loads without kdkeras
    os.replace(tmp_path, model_path)
    counts = profile(student)
    info = data.info
    results = {
        "run": name,
        "model": config.model,
        "teacher": config.teacher,
        "teacher_run": teacher_source,
        "dataset": config.dataset,
        "epochs": config.epochs,
        **measured,
        "params": counts.params,
        "macs": counts.macs,
        "seed": config.seed,
        "temperature": config.temperature if config.distill else None,
        "alpha": config.alpha if config.distill else None,
        "kd_epochs": config.kd_epochs if config.distill else None,
        "precise_bn": config.precise_bn,
        "lr_milestones": list(config.lr_milestones or ()),
        "lr_gamma": config.lr_gamma,
        "train_examples": info.train_examples,
        "val_examples": info.val_examples,
        "test_examples": info.test_examples,
        "wall_time_s": round(sum(row.get("epoch_time_s") or 0.0 for row in history), 3),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(os.path.join(directory, RESULTS_FILE), results)
    shutil.rmtree(backup_dir, ignore_errors=True)
    log(f"Finished {name}: " + format_results(results) + f", {results['wall_time_s']:.0f} s -> {directory}")
    return {**results, "run_dir": directory}


def format_results(results: dict) -> str:
    """One line of a run's accuracies: final test, validation-selected, BatchNorm checks."""
    parts = [f"test_accuracy={results['test_accuracy']:.4f} (final epoch)"]
    if results.get("best_val_epoch"):
        parts.append(f"{results['test_accuracy_at_best_val']:.4f} at the best validation epoch "
                     f"{results['best_val_epoch']}")
    if results.get("test_accuracy_batch_stats") is not None:
        parts.append(f"{results['test_accuracy_batch_stats']:.4f} with batch statistics")
    if results.get("test_accuracy_precise_bn") is not None:
        parts.append(f"{results['test_accuracy_precise_bn']:.4f} with precise BN")
    return "; ".join(parts)
