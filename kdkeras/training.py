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

import datetime
import filecmp
import json
import math
import os
import shutil
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
    if config_lib._is_model_file(config.teacher):
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
        verbose: ``fit`` verbosity (``"auto"``: progress bar on a terminal).
        train_teacher: train a teacher given by name that has no finished run
            in ``logdir`` first (else fail before training).

    Returns:
        The run's ``results.json`` as a dict (with ``run_dir`` added).
    """
    config_lib.validate(config)
    directory = config_lib.run_dir(config, logdir)
    if is_finished(directory):
        results = load_results(directory)
        log(f"{config_lib.run_name(config)} already finished: test_accuracy="
            f"{results['test_accuracy']:.4f} (best {results['best_test_accuracy']:.4f}); "
            f"stored result in {directory}")
        return {**results, "run_dir": directory}
    check_logdir(logdir)

    import keras

    from kdkeras import data as data_lib
    from kdkeras.callbacks import EpochStats, HistoryCSV, KDSchedule, StopOnNonFiniteLoss, read_history
    from kdkeras.io_utils import atomic_write_json, atomic_write_text
    from kdkeras.models.convert import save_model
    from kdkeras.profiling import profile

    strategy = make_strategy(config.strategy)
    chief = _is_chief()
    teacher, teacher_source = (None, None)
    if config.distill:
        teacher, teacher_source = resolve_teacher(config, logdir, log=log, verbose=verbose,
                                                  train_teacher=train_teacher)

    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    keras.utils.set_random_seed(config.seed)
    train_ds, test_ds, info = data_lib.make_datasets(
        config.dataset,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        archive=config.archive,
        train_size=config.train_size,
        test_size=config.test_size,
        seed=config.seed,
        augment=config.augment,
    )
    steps_per_epoch = math.ceil(info.train_examples / config.batch_size)

    work_dir = directory if chief else os.path.join(directory, ".workers", str(os.getpid()))
    os.makedirs(work_dir, exist_ok=True)
    name = config_lib.run_name(config)
    if chief:
        atomic_write_text(os.path.join(directory, CONFIG_FILE),
                          config_lib.to_yaml(config, {"run": name}))

    with strategy.scope():
        student = build_student(config, info.num_classes, info.image_shape)
        optimizer = make_optimizer(config, steps_per_epoch)
        if config.distill:
            from kdkeras.distiller import Distiller

            check_teacher(teacher, config, info)
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

    counts = profile(student)
    backup_dir = os.path.join(work_dir, BACKUP_DIR)
    repair_backup(backup_dir, log=log)
    initial_epoch = _backup_epoch(backup_dir)
    history_path = os.path.join(work_dir, HISTORY_FILE)
    kd_part = f" (KD in the first {config.kd_epochs} epochs only)" if config.distill and config.kd_epochs else ""
    what = (f"{config.model} from teacher {config.teacher}{kd_part}" if config.distill
            else f"{config.model} on hard targets")
    if initial_epoch >= config.epochs:
        log(f"All {config.epochs} epochs of {name} finished before the interruption: "
            f"writing its final files from {backup_dir}")
    elif initial_epoch:
        log(f"Resuming {name} at epoch {initial_epoch + 1}/{config.epochs} from {backup_dir}")
    else:
        log(f"Training {what}: {config.epochs} epochs on {config.dataset} "
            f"({info.train_examples} train / {info.test_examples} test images), "
            f"{counts.params:,} params -> {directory}")

    initial_path = os.path.join(directory, INITIAL_WEIGHTS_FILE)
    if chief and not initial_epoch and not os.path.exists(initial_path):
        # The student before its first step: the start of the 1-D loss-landscape path.
        tmp_initial = os.path.join(directory, f".tmp-{os.getpid()}.{INITIAL_WEIGHTS_FILE}")
        student.save_weights(tmp_initial)
        os.replace(tmp_initial, initial_path)

    # Order matters at each epoch end: a non-finite loss stops before anything
    # is saved; the history row is written before the backup, so a process
    # killed between the two resumes from the previous backup and rewrites
    # that epoch's row instead of leaving a gap.
    all_callbacks = [
        StopOnNonFiniteLoss(),
        EpochStats(),
        *([KDSchedule(config.kd_epochs, config.alpha)] if config.distill and config.kd_epochs else []),
        HistoryCSV(history_path, initial_epoch=initial_epoch),
        keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch", delete_checkpoint=False,
                                         double_checkpoint=True),
        keras.callbacks.TensorBoard(os.path.join(work_dir, TENSORBOARD_DIR)),
        *callbacks,
    ]
    model.fit(train_ds, epochs=config.epochs, validation_data=test_ds, shuffle=False,
              callbacks=all_callbacks, verbose=verbose)

    history = read_history(history_path)
    if not chief:
        return {"run_dir": directory}
    if len(history) < config.epochs:
        raise RuntimeError(f"{name} stopped after {len(history)} of {config.epochs} epochs; "
                           f"repeat the command to resume from {backup_dir}.")
    accuracies = [row["val_accuracy"] for row in history]
    best_epoch = max(range(len(accuracies)), key=accuracies.__getitem__)
    model_path = os.path.join(directory, MODEL_FILE)
    tmp_path = os.path.join(directory, f".{MODEL_FILE}.tmp.keras")
    save_model(student, tmp_path)  # plain Keras layers: loads without kdkeras
    os.replace(tmp_path, model_path)
    results = {
        "run": name,
        "model": config.model,
        "teacher": config.teacher,
        "teacher_run": teacher_source,
        "dataset": config.dataset,
        "epochs": config.epochs,
        "test_accuracy": accuracies[-1],
        "best_test_accuracy": accuracies[best_epoch],
        "best_epoch": best_epoch + 1,
        "test_loss": history[-1].get("val_loss"),
        "params": counts.params,
        "macs": counts.macs,
        "seed": config.seed,
        "temperature": config.temperature if config.distill else None,
        "alpha": config.alpha if config.distill else None,
        "kd_epochs": config.kd_epochs if config.distill else None,
        "train_examples": info.train_examples,
        "test_examples": info.test_examples,
        "wall_time_s": round(sum(row.get("epoch_time_s") or 0.0 for row in history), 3),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(os.path.join(directory, RESULTS_FILE), results)
    shutil.rmtree(backup_dir, ignore_errors=True)
    log(f"Finished {name}: test_accuracy={results['test_accuracy']:.4f} "
        f"(best {results['best_test_accuracy']:.4f} at epoch {results['best_epoch']}), "
        f"{results['wall_time_s']:.0f} s -> {directory}")
    return {**results, "run_dir": directory}
