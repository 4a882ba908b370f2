"""The run pipeline: ``train_and_evaluate(config, logdir)`` as a short list of named steps.

1. the run folder (:class:`~kdkeras.training.run_folder.RunFolder`): a
   finished run is reported, not repeated; a KD run's teacher is found, or
   trained first (:func:`resolve_teacher`);
2. :func:`make_run_data`: the pipelines, with every data setting;
3. :func:`build_run_model`: the compiled student or distiller;
4. :func:`training_callbacks` and :func:`record_callbacks`;
5. :func:`fit_run`;
6. :func:`final_measurements`, then ``model.keras`` (:func:`export_student`) and ``results.json``.

Tuning trials (:mod:`kdkeras.tuning`) and benchmarks call the same step
functions, so a setting cannot change a run without changing them too.
Repeating a finished run returns its stored results; repeating an
interrupted one resumes from its last finished epoch
(``kdkeras.callbacks.BackupAndRestore``, :mod:`kdkeras.training.resume`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import sys
import time

from kdkeras import claims, hparams, runtime
from kdkeras import config as config_lib
from kdkeras.errors import MissingFileError
from kdkeras.training import distribute, resume
from kdkeras.training.run_folder import RunFolder, check_logdir
from kdkeras.training.teachers import check_teacher, check_teacher_data, load_model_file


def _print(message):
    print(message, flush=True)


# --------------------------------------------------------------------------
# Step 1: the teacher of a KD run
# --------------------------------------------------------------------------


def resolve_teacher(config, logdir: str, log=_print, verbose="auto", train_teacher: bool = True,
                    teacher_data_check: bool = True):
    """The teacher model of a KD run: a ``.keras`` file or a finished baseline run.

    A teacher given by name whose run (same recipe overrides as the student's
    command) is not finished in ``logdir`` is trained first, or, with
    ``train_teacher=False``, is an error (``FileNotFoundError``, one line).
    A teacher file from a run folder that read other data is refused unless
    ``teacher_data_check=False`` (:func:`kdkeras.training.teachers.check_teacher_data`);
    a teacher given by name reads the student's data by construction.

    Returns:
        ``(teacher_model, teacher_run_dir_or_path)``.
    """
    if config_lib.is_model_file(config.teacher):
        check_teacher_data(config, config.teacher, check=teacher_data_check, log=log)
        return load_model_file(config.teacher, "teacher"), config.teacher
    teacher_dir = ensure_teacher_run(config, logdir, log=log, verbose=verbose, train_teacher=train_teacher)
    model_path = RunFolder(teacher_dir).model_path
    if not os.path.exists(model_path):
        raise MissingFileError(
            f"The teacher's run {teacher_dir} is finished but has no {os.path.basename(model_path)} (a copy made "
            f"by `grid --export` keeps only its result files; --export_teachers keeps the teachers' models): "
            f"put the teacher's model.keras there, or remove the folder to train the teacher again.")
    return load_model_file(model_path, "teacher"), teacher_dir


def ensure_teacher_run(config, logdir: str, *, log=_print, verbose="auto", train_teacher: bool = True,
                       poll_s: float = 10.0) -> str:
    """The finished baseline run of a KD run's teacher (given by name); trained first if missing.

    The teacher's run is claimed (:mod:`kdkeras.claims`) while it trains, so
    processes sharing ``logdir`` (grid shards, tuning workers, several
    ``distill.py``) train it once: the others wait for it, and take over the
    claim if its owner died or its lease lapsed. The workers of one
    multi-worker run act as one process: the chief claims, and every worker
    follows its decision (they train the teacher together, or wait together).

    Raises:
        FileNotFoundError: with ``train_teacher=False``, when the run is not finished.

    Returns:
        The teacher's run folder.
    """
    teacher_cfg = config_lib.teacher_config(config)
    folder = RunFolder.of(teacher_cfg, logdir)
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief()
    finished = distribute.chief_value(strategy, folder.is_finished())
    if finished and chief:
        claims.clear_stale(folder.path)  # left by a process killed after finishing it
    if not finished and not train_teacher:
        raise MissingFileError(
            f"Teacher {teacher_cfg.model} has no finished run at {folder.path}. Train it first "
            f"(kdkeras train --model={teacher_cfg.model} with the same settings"
            f"{f', --epochs={teacher_cfg.epochs}' if config.teacher_epochs else ''}), pass "
            f"--teacher=PATH.keras, or allow training it on the way (--train_teacher).")
    waited = False
    while not finished:
        claimed = distribute.chief_value(strategy, chief and claims.try_claim(folder.path))
        if claimed:
            try:
                if not distribute.chief_value(strategy, folder.is_finished()):
                    check_pair(config)
                    log(f"Teacher {teacher_cfg.model} has no finished run at {folder.path}: "
                        f"training it first with the same recipe.")
                    train_and_evaluate(teacher_cfg, logdir, log=log, verbose=verbose)
            finally:
                if chief:
                    claims.release(folder.path)
            # Every worker waits here until the chief has written the teacher's files.
            finished = distribute.chief_value(strategy, folder.is_finished())
            continue
        if not waited:
            log(f"Waiting for teacher {folder.name} ({claims.describe(folder.path)})")
            waited = True
        time.sleep(poll_s)
        finished = distribute.chief_value(strategy, folder.is_finished())
    return folder.path


def check_pair(config) -> None:
    """Builds a KD run's distiller around an untrained teacher of the named architecture.

    A pair that the run's method cannot distil (RD's stage shapes, a tap the
    teacher lacks, ...) then fails with its one-line error before the teacher
    trains, which can take hours, instead of after. Reads no images: the
    dataset's classes and image shape are static (a folder dataset's come
    from its folder).
    """
    import keras

    from kdkeras import data as data_lib
    from kdkeras.distiller import distiller_for_run

    info = data_lib.dataset_info(config.dataset, data_dir=config.data_dir)
    teacher = build_student(config_lib.teacher_config(config), info.num_classes, info.image_shape)
    student = build_student(config, info.num_classes, info.image_shape)
    distiller_for_run(student, teacher, config)
    del teacher, student
    keras.utils.set_random_seed(config.seed)  # as if nothing had been built


# --------------------------------------------------------------------------
# Step 2: data
# --------------------------------------------------------------------------


def make_run_data(config):
    """The run's pipelines (:class:`kdkeras.data.Splits`), with every data setting of ``config``.

    Seeds the global RNGs with ``config.seed`` first, so the pipelines are the
    same whoever builds them. Whether a missing CIFAR archive is downloaded
    is a process setting (:func:`kdkeras.runtime.apply`).
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
        augment=(config.pad_mode or True) if config.augment else False,
    )


# --------------------------------------------------------------------------
# Step 3: the compiled model
# --------------------------------------------------------------------------


def build_student(config, num_classes: int, input_shape):
    """The run's (student) model from the registry, with the run's dropout for WRNs, its ``plain`` and ``init``.

    ``plain`` other than ``none`` builds the training-time structure of that
    residual-free rival (:func:`kdkeras.models.plain.build_plain`; the run
    saves it folded, :func:`export_student`). ``init=dirac`` re-initialises
    every 3x3 convolution after the build
    (:func:`kdkeras.initializers.initialize_convolutions`).
    """
    from kdkeras.initializers import initialize_convolutions
    from kdkeras.models import build_plain

    options = {"dropout": config.dropout} if config.model.startswith("wrn") else {}
    model = build_plain(config.model, getattr(config, "plain", "none"), num_classes=num_classes,
                        input_shape=input_shape, **options)
    initialize_convolutions(model, getattr(config, "init", "he"))
    return model


def export_student(config, student, warn: bool = True):
    """The network a run saves: the student, or for ``plain`` other than ``none`` its folded NR network.

    The training checkpoints keep the student as it trains (branches, skips),
    so a resumed run continues exactly; ``model.keras`` and the reported
    parameter and MAC counts are those of the plain network
    (:func:`kdkeras.models.plain.fold`).
    """
    if getattr(config, "plain", "none") == "none":
        return student
    from kdkeras.models import fold

    return fold(student, warn=warn)


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


def build_run_model(config, data, teacher=None, strategy=None):
    """The compiled model of a run: a :class:`~kdkeras.distiller.Distiller` (KD) or the student.

    A KD run's distiller is that of ``config.method`` and its settings
    (:func:`kdkeras.distiller.distiller_for_run`): ``kd`` is the paper's
    Hinton KD. Its methods with ``needs_data_size`` (memory banks) get the
    number of training examples before it is compiled.

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

    # The setting, or its GPU default; it must divide the epoch (Keras runs whole calls across an epoch's end).
    steps_per_execution = runtime.steps_per_execution(config.steps_per_execution, data.steps_per_epoch)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        keras.utils.set_random_seed(config.seed)
        student = build_student(config, data.info.num_classes, data.info.image_shape)
        distribute.synchronize_batchnorm(student, strategy)
        optimizer = make_optimizer(config, data.steps_per_epoch)
        if config.distill:
            from kdkeras.distiller import distiller_for_run

            if teacher is None:
                raise ValueError(f"KD run {config.model} needs its teacher model.")
            check_teacher(teacher, config, data.info)
            model = distiller_for_run(student, teacher, config)
            for method in model.distillation_losses:  # per-example state (memory banks) sized to the data
                if method.needs_data_size:
                    method.set_data_size(data.info.train_examples)
            model.compile(optimizer=optimizer, steps_per_execution=steps_per_execution,
                          jit_compile=config.jit_compile)
        else:
            model = student
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                steps_per_execution=steps_per_execution,
                jit_compile=config.jit_compile,
            )
        # The optimizer's variables (momentum buffers) exist before fit: created inside the first traced step,
        # they would make TensorFlow trace the training step twice. Built over what the step updates, in its order.
        model.optimizer.build(model.trained_variables if config.distill else model.trainable_weights)
    return model, student


# --------------------------------------------------------------------------
# Step 4: callbacks
# --------------------------------------------------------------------------


def training_callbacks(config, data, *, evaluate_test: bool = True) -> list:
    """The callbacks that shape training and the metrics it logs, in order.

    A non-finite loss stops first; then ``lr`` / ``epoch_time_s``, the
    dropout RNG of the epoch (:class:`~kdkeras.callbacks.EpochKeyedDropout`),
    the skips' weight of ``--plain=anneal`` (:class:`~kdkeras.models.plain.SkipAnneal`), the KD
    schedule (``--kd_epochs``), the test split's metrics (``test_*``; never
    in a tuning trial, ``evaluate_test=False``) and the per-epoch precise-BN
    accuracy (``--precise_bn_every_epoch``). Tuning trials use exactly
    these, so no setting can change a run without changing a trial.
    """
    from kdkeras.callbacks import (EpochKeyedDropout, EpochStats, EvaluateSplits, KDSchedule, PreciseBNEvaluation,
                                   StopOnNonFiniteLoss)

    callbacks = [StopOnNonFiniteLoss(), EpochStats(), EpochKeyedDropout(data.steps_per_epoch)]
    if getattr(config, "plain", "none") == "anneal":
        from kdkeras.models.plain import SkipAnneal

        callbacks.append(SkipAnneal(data.steps_per_epoch, config.epochs, config.anneal_fraction))
    if config.distill and config.kd_epochs:
        callbacks.append(KDSchedule(config.kd_epochs, config.alpha))
    if evaluate_test:
        callbacks.append(EvaluateSplits({"test": data.test}))
    if config.precise_bn and config.precise_bn_every_epoch:
        splits = {"val": data.val} if data.val is not None else {}
        if evaluate_test:
            splits["test"] = data.test
        callbacks.append(PreciseBNEvaluation(precise_bn_batches(config, data), config.precise_bn, splits))
    return callbacks


def precise_bn_batches(config, data):
    """The training batches that precise BN recomputes the statistics over: augmented with ``precise_bn_augment``."""
    return data.train_augmented if config.precise_bn_augment else data.train_plain


def record_callbacks(folder: RunFolder, initial_epoch: int) -> list:
    """The callbacks that record a run in its folder (history, backup, TensorBoard).

    The history row is written before the backup, so a process killed
    between the two resumes from the previous backup and rewrites that
    epoch's row instead of leaving a gap.
    """
    from kdkeras.callbacks import BackupAndRestore, HistoryCSV, TensorBoard

    # kdkeras's BackupAndRestore and TensorBoard are async_safe: fit reads no step's logs on the host for them.
    return [
        HistoryCSV(folder.history_path, initial_epoch=initial_epoch),
        BackupAndRestore(folder.backup_dir, save_freq="epoch", delete_checkpoint=False, double_checkpoint=True),
        TensorBoard(folder.tensorboard_dir),
    ]


# --------------------------------------------------------------------------
# Step 5: fit
# --------------------------------------------------------------------------


def fit_verbosity(verbose="auto"):
    """``fit``'s ``verbose``: ``"auto"`` is a progress bar on a terminal, one line per epoch otherwise."""
    if verbose != "auto":
        return verbose
    return 1 if getattr(sys.stdout, "isatty", lambda: False)() else 2


def needs_indices(model) -> bool:
    """Whether ``model`` is a distiller with a method that reads the training examples' indices."""
    return any(method.needs_indices for method in getattr(model, "distillation_losses", ()))


def fit_run(model, config, data, callbacks, verbose="auto", initial_epoch: int = 0, epochs: int | None = None):
    """``model.fit`` on the run's training split, validated on its validation split (if any).

    The training batches are those of epochs ``initial_epoch`` .. ``epochs - 1``
    (:attr:`kdkeras.data.Splits.train_epochs`): a run resumed at epoch k
    sees epoch k's order and augmentation, as if it had never stopped. They
    carry the examples' indices when a method of the distiller reads them
    (:func:`needs_indices`). ``epochs``: where to stop (default
    ``config.epochs``; a Hyperband trial's budget). Runs and tuning trials
    both train through here.
    """
    epochs = config.epochs if epochs is None else epochs
    return model.fit(data.train_epochs(initial_epoch, epochs, with_indices=needs_indices(model)),
                     epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=data.steps_per_epoch,
                     validation_data=data.val, shuffle=False, callbacks=list(callbacks),
                     verbose=fit_verbosity(verbose))


# --------------------------------------------------------------------------
# Step 6: measurements and results
# --------------------------------------------------------------------------


def _best(history, key):
    """``(best value, 1-based epoch)`` of ``key`` in ``history`` (first epoch on ties)."""
    values = [row.get(key) for row in history]
    if not values or any(v is None for v in values):
        return None, None
    index = max(range(len(values)), key=values.__getitem__)
    return values[index], index + 1


def final_measurements(config, model, data, history) -> dict:
    """The run's numbers: final and selected accuracies, BatchNorm-statistics checks.

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
      after the moving statistics are replaced by population statistics
      (over augmented batches with ``precise_bn_augment``);
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
        batchnorm.precise_bn(model, precise_bn_batches(config, data), config.precise_bn)
        for split, dataset in data.eval_splits().items():
            out[f"{split}_accuracy_precise_bn"] = model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"]
    return out


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


def summarise(config, model, student, data, folder: RunFolder, work: RunFolder, teacher_source, chief,
              log=_print) -> dict:
    """Final measurements (every worker: ``evaluate`` is collective), then ``model.keras`` and ``results.json``."""
    from kdkeras.callbacks import read_history
    from kdkeras.profiling import profile

    history = read_history(work.history_path)
    if len(history) < config.epochs:
        raise RuntimeError(f"{folder.name} stopped after {len(history)} of {config.epochs} epochs; "
                           f"repeat the command to resume from {work.backup_dir}.")
    measured = final_measurements(config, model, data, history)
    if not chief:  # its scratch folder goes; the chief writes the run's files
        shutil.rmtree(work.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(work.path))
        return {"run_dir": folder.path}
    network = export_student(config, student)
    folder.save_model(network, data.info)
    counts = profile(network)
    info = data.info
    results = {
        "run": folder.name,
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
        "method": config.method if config.distill else None,
        "precise_bn": config.precise_bn,
        "precise_bn_augment": config.precise_bn_augment if config.precise_bn else None,
        "lr_milestones": list(config.lr_milestones or ()),
        "lr_gamma": config.lr_gamma,
        "train_examples": info.train_examples,
        "val_examples": info.val_examples,
        "test_examples": info.test_examples,
        "data": config_lib.data_fingerprint(config).to_dict(),
        "wall_time_s": round(sum(row.get("epoch_time_s") or 0.0 for row in history), 3),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    folder.write_results(results)
    hparams.log_run(folder, config, results, on_error=log)  # TensorBoard's HParams tab
    folder.remove_backup()
    log(f"Finished {folder.name}: " + format_results(results) + f", {results['wall_time_s']:.0f} s -> {folder.path}")
    return {**results, "run_dir": folder.path}


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def train_and_evaluate(config, logdir: str = "logs", *, callbacks=(), log=_print, verbose="auto",
                       train_teacher: bool = True, teacher_data_check: bool = True) -> dict:
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
        teacher_data_check: refuse a teacher file trained on other data
            (``False``: distil across data on purpose).

    Returns:
        The run's ``results.json`` as a dict (with ``run_dir`` added).
    """
    config_lib.validate(config)
    runtime.apply(config)  # the process-wide settings, once, before any step
    folder = RunFolder.of(config, logdir)  # 1. the run folder
    if folder.is_finished():
        results = folder.load_results()
        log(f"{folder.name} already finished: test_accuracy={results['test_accuracy']:.4f}; "
            f"stored result in {folder.path}")
        return {**results, "run_dir": folder.path}
    check_logdir(logdir)
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief()
    teacher, teacher_source = (None, None)
    if config.distill:  # before the run folder exists: a missing teacher fails without leaving one
        teacher, teacher_source = resolve_teacher(config, logdir, log=log, verbose=verbose,
                                                  train_teacher=train_teacher,
                                                  teacher_data_check=teacher_data_check)
    data = make_run_data(config)  # 2. data
    model, student = build_run_model(config, data, teacher, strategy)  # 3. the compiled model
    work = folder if chief else folder.worker(distribute.worker_name())
    os.makedirs(work.path, exist_ok=True)
    initial_epoch = _resume_epoch(strategy, folder, work, chief, log)
    if chief:
        folder.write_config(config)
        if not initial_epoch:  # the weights of the network model.keras holds
            folder.save_initial_weights(export_student(config, student, warn=False))
    _log_start(config, data, student, folder, work, initial_epoch, log)
    all_callbacks = [*training_callbacks(config, data), *record_callbacks(work, initial_epoch),
                     *callbacks]  # 4. callbacks
    fit_run(model, config, data, all_callbacks, verbose, initial_epoch)  # 5. fit
    return summarise(config, model, student, data, folder, work, teacher_source, chief, log)  # 6. results


def _resume_epoch(strategy, folder: RunFolder, work: RunFolder, chief: bool, log) -> int:
    """The epoch the run resumes from, the same on every worker (the chief's backup decides).

    A non-chief worker whose own backup is at another epoch (killed at
    another moment, or never started) continues from a copy of the chief's
    backup and of the chief's history (its own may lack the rows of the
    epochs it did not record before the kill), read from the shared run folder.
    """
    initial_epoch = resume.prepare(work.backup_dir, log=log, history_path=work.history_path)
    agreed = distribute.chief_value(strategy, initial_epoch)
    if chief or agreed == initial_epoch:
        return agreed
    shutil.rmtree(work.backup_dir, ignore_errors=True)
    if agreed:
        if resume.backup_epoch(folder.backup_dir) != agreed:
            raise RuntimeError(
                f"The chief resumes {folder.name} from epoch {agreed}, but this worker cannot read that "
                f"backup in {folder.backup_dir}: every worker needs the same --logdir on a shared file system.")
        shutil.copytree(folder.backup_dir, work.backup_dir)
        shutil.copyfile(folder.history_path, work.history_path)
    return agreed


def _deployed_params(config, info) -> int:
    """The parameters of the network a plain run deploys (its NR model), counted on a throwaway build.

    The build draws Keras's default initializer seeds from Python's and NumPy's
    global generators; their states are put back, so that a fresh start (which
    logs this) and a resumed run (which does not) draw the same numbers after it.
    """
    import random

    import numpy as np

    from kdkeras.models import build_model
    from kdkeras.profiling import profile

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        return profile(build_model(config.model, num_classes=info.num_classes, input_shape=info.image_shape)).params
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _log_start(config, data, student, folder, work, initial_epoch, log) -> None:
    from kdkeras.profiling import profile
    from kdkeras.recipes import describe_schedule

    if initial_epoch >= config.epochs:
        log(f"All {config.epochs} epochs of {folder.name} finished before the interruption: "
            f"writing its final files from {work.backup_dir}")
        return
    if initial_epoch:
        log(f"Resuming {folder.name} at epoch {initial_epoch + 1}/{config.epochs} from {work.backup_dir}")
        return
    kd_part = f" (KD in the first {config.kd_epochs} epochs only)" if config.distill and config.kd_epochs else ""
    method_part = f" by {config.method}" if config.distill and config.method != "kd" else ""
    what = (f"{config.model} from teacher {config.teacher}{method_part}{kd_part}" if config.distill
            else f"{config.model} on hard targets")
    info = data.info
    val = f" / {info.val_examples} validation" if info.val_examples else ""
    params = f"{profile(student).params:,} params"
    if config.plain != "none":  # the branches or skips it trains with are folded away at export
        params = f"{params} while training as {config.plain}, {_deployed_params(config, info):,} deployed"
    log(f"Training {what}: {config.epochs} epoch{'s' if config.epochs != 1 else ''} on {config.dataset} "
        f"({info.train_examples} train{val} / {info.test_examples} test images), {params} -> {folder.path}")
    log("Learning rate: " + describe_schedule(config.lr, config.lr_schedule, config.lr_milestones or (),
                                              config.lr_gamma, config.epochs))
