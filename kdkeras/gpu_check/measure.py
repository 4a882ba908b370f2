"""One case of the GPU check: build, warm up, time windows round-robin over its variants, peak GPU memory.

The numbers are honest in the way of ``kdkeras bench``: warm-up steps
(tracing, XLA compilation, cuDNN autotuning) are never timed; each window
runs a fixed number of steps (whole compiled calls) and ends when the
device has finished them (:class:`kdkeras.throughput.StepTimer`); the
reported rate is the median of the windows, all of them listed. A case's
variants (:data:`kdkeras.gpu_check.cases.VARIANTS`) run on the same
compiled model, their windows interleaved, so a slow spell hits them alike.
Peak GPU memory is TensorFlow's allocator peak on the first GPU
(``tf.config.experimental.get_memory_info``), reset before the case's model
is built; ``None`` without a GPU.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

#: Synthetic training images of the pipeline measurements: CIFAR's training split.
PIPELINE_IMAGES = 50_000


@dataclasses.dataclass(frozen=True)
class Steps:
    """How long each case is timed: ``warmup`` untimed steps, then ``repeats`` windows of ``steps`` steps."""

    warmup: int
    steps: int
    repeats: int
    pipeline_images: int = PIPELINE_IMAGES
    batch_size: int | None = None  # None: each recipe's (the paper's 128, the crd recipe's 64)


def gpu_device() -> str | None:
    """The first GPU's logical device name (``None`` without a GPU)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else None


def reset_peak_memory() -> None:
    """Starts a new peak of GPU memory (no-op without a GPU)."""
    import tensorflow as tf

    if gpu_device():
        tf.config.experimental.reset_memory_stats("GPU:0")


def peak_memory_mib() -> float | None:
    """TensorFlow's peak GPU memory since :func:`reset_peak_memory`, in MiB (``None`` without a GPU)."""
    import tensorflow as tf

    if not gpu_device():
        return None
    return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)


def _per_step_read():
    """A callback with per-step work: Keras then reads every step's logs on the host, in the training loop."""
    import keras

    class PerStepRead(keras.callbacks.Callback):
        """What a per-step callback that is not ``async_safe`` costs (``keras.callbacks.BackupAndRestore``, say)."""

        def on_train_batch_end(self, batch, logs=None):
            pass

    return PerStepRead()


def _summary(rates: list[float], batch: int) -> dict:
    median = statistics.median(rates)
    return {"images_per_sec": round(median, 1), "step_ms": round(1000.0 * batch / median, 3),
            "runs": [round(r, 1) for r in rates]}


def measure_pipeline(steps: Steps) -> dict:
    """The augmented training pipeline alone (synthetic CIFAR-sized images), iterated on the host."""
    from kdkeras.data import make_datasets
    from kdkeras.throughput import pipeline_rate

    batch_size = steps.batch_size or 128
    start = time.perf_counter()
    train, _, _ = make_datasets("synthetic", batch_size=batch_size, train_size=steps.pipeline_images,
                                test_size=batch_size)
    build_s = time.perf_counter() - start
    rates = [pipeline_rate(train.repeat(), max(steps.steps, 20), max(steps.warmup, 2))
             for _ in range(steps.repeats)]
    return {"variants": {"step": _summary(rates, batch_size)}, "batch_size": batch_size,
            "build_s": round(build_s, 1), "peak_gpu_mib": None}


def _strategy(name: str):
    if name == "none":
        return None
    from kdkeras.training import distribute

    return distribute.mirrored_strategy((gpu_device() or "/device:CPU:0",))  # one replica: the first device


def measure_step(case, steps: Steps) -> dict:
    """A train, distill or infer case: its variants' images/s on one compiled model, and its peak GPU memory."""
    from kdkeras import throughput

    with throughput.fresh_session():
        reset_peak_memory()
        start = time.perf_counter()
        timer = throughput.build_step(
            case.model, case.kind, case.teacher, batch_size=steps.batch_size,
            steps_per_execution=case.steps_per_execution,
            jit_compile=case.jit_compile, mixed_precision=case.mixed_precision, recipe=case.recipe,
            train_size=steps.pipeline_images if "fed" in case.variants else None,
            strategy=_strategy(case.strategy))
        inputs = {"step": (None, ()), "host_sync": (None, (_per_step_read(),)),
                  "fed": (timer.pipeline() if "fed" in case.variants else None, ())}
        timer.warm_up(steps.warmup)
        for variant in case.variants:
            if variant != "step":  # its own first calls: the per-step callback, the pipeline's batches
                dataset, callbacks = inputs[variant]
                timer.warm_up(1, dataset, callbacks)
        build_s = time.perf_counter() - start
        rates = {variant: [] for variant in case.variants}
        for _ in range(steps.repeats):
            for variant in case.variants:  # round-robin: a slow spell hits every variant alike
                dataset, callbacks = inputs[variant]
                rates[variant].append(timer.window(steps.steps, dataset, callbacks))
        out = {"variants": {v: _summary(r, timer.batch_size) for v, r in rates.items()},
               "batch_size": timer.batch_size, "build_s": round(build_s, 1), "peak_gpu_mib": peak_memory_mib(),
               "steps": timer.whole_steps(steps.steps) if case.kind != "infer" else steps.steps}
        if case.kind != "infer" and "host_sync" in case.variants:
            out["run_callbacks_host_syncing"] = run_callbacks_host_syncing(timer)
        return out


def run_callbacks_host_syncing(timer) -> list[str]:
    """The callbacks of a real run of ``timer``'s settings that make ``fit`` read every step's logs on the host.

    The run pipeline's own callback steps (:func:`kdkeras.training.training_callbacks`,
    :func:`kdkeras.training.record_callbacks`) in a scratch run folder; nothing is trained.
    """
    import tempfile

    from kdkeras.callbacks import host_syncing_callbacks
    from kdkeras.training import RunFolder, record_callbacks, training_callbacks

    with tempfile.TemporaryDirectory(prefix="kdkeras-gpu-check-") as scratch:
        callbacks = [*training_callbacks(timer.config, timer.data, evaluate_test=True),
                     *record_callbacks(RunFolder(scratch), 0)]
        return host_syncing_callbacks(callbacks)
