"""The process-wide settings of a run, applied once where a process starts one.

Four settings of :class:`kdkeras.config.RunConfig` act on the whole process,
not on one model or one pipeline:

* ``deterministic``: TensorFlow's op determinism (it cannot be switched off
  again in the same process);
* ``mixed_precision``: Keras's global dtype policy (``mixed_float16`` or
  ``float32``);
* ``data_tuning``: how ``tf.data`` spreads its work (:mod:`kdkeras.data.pipeline`);
* ``download`` / ``data_mirror``: whether a missing CIFAR archive is
  downloaded, and from where (:mod:`kdkeras.data.download`).

:func:`apply` sets all four in one place, and the process's GPU memory
setting (``KDKERAS_GPU_MEMORY``, :func:`kdkeras.host.configure_gpu_memory`). It is called where a run starts
(:func:`kdkeras.training.train_and_evaluate`, a tuning search, a benchmark);
the run pipeline's steps (data, model, callbacks, fit) set none of them.

:func:`steps_per_execution` is the number of training steps a run's
compiled call takes: the setting, or its GPU default.

:func:`quiet_retracing` mutes TensorFlow's "triggered tf.function retracing"
warning where a process builds many models on purpose (a search's trials,
a benchmark's methods).
"""

from __future__ import annotations

import contextlib
import logging


def apply(config) -> None:
    """Applies ``config``'s process-wide settings (see the module docstring).

    Raises:
        UsageError: ``mixed_precision`` on a host whose kernels cannot run
            float16 convolutions (:func:`kdkeras.host.check_mixed_precision`).
    """
    import keras

    from kdkeras import data as data_lib
    from kdkeras import host
    from kdkeras.data import download

    host.configure_gpu_memory()  # before TensorFlow first uses a GPU; a no-op without KDKERAS_GPU_MEMORY
    if config.mixed_precision:
        host.check_mixed_precision()  # float16 needs a GPU or CPU kernels that have it (docs/training.md)
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    if config.deterministic:  # for the rest of the process: TensorFlow cannot switch it off again
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    data_lib.set_data_tuning(config.data_tuning)
    download.configure(enabled=config.download, mirror=config.data_mirror or "")


#: The most training steps per compiled call that the GPU default takes.
GPU_STEPS_PER_EXECUTION = 32


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` (positive), in increasing order."""
    return [d for d in range(1, int(n) + 1) if n % d == 0]


def steps_per_execution(requested: int | None, steps_per_epoch: int, gpu: bool | None = None) -> int:
    """The training steps per compiled call of a run: ``requested``, or the default (``None``).

    Keras runs ``steps_per_execution`` steps per call whatever the epoch's
    length (keras/src/trainers/epoch_iterator.py): with 391 steps per epoch
    and 8 per call, each "epoch" trains 392 steps and the next one starts
    a step late, so the epochs no longer match the per-epoch order and
    augmentation of the data (``Splits.train_epochs``), a resumed run no
    longer repeats the uninterrupted one, and the last epoch runs out of
    data. The value must divide ``steps_per_epoch``.

    The default: 1 on a CPU (a step takes hundreds of milliseconds there;
    nothing to gain, docs/benchmarks.md); with a GPU, the largest divisor of
    ``steps_per_epoch`` up to :data:`GPU_STEPS_PER_EXECUTION` (CIFAR,
    50,000 images: 23 at batch 128, 391 steps; 23 at batch 64, 782 steps),
    so that Python's per-step work (the ``fit`` loop, callbacks) is paid once
    per call instead of once per step (docs/benchmarks.md, "GPU").

    Args:
        requested: the run's ``steps_per_execution`` (``None``: the default).
        steps_per_epoch: training steps per epoch.
        gpu: whether a GPU trains (default: whether TensorFlow sees one).

    Raises:
        UsageError: a value that does not divide ``steps_per_epoch``, naming the ones that do.
    """
    steps_per_epoch = int(steps_per_epoch)
    if requested is None:
        from kdkeras import host

        if not (host.has_gpu() if gpu is None else gpu):
            return 1
        return max(d for d in divisors(steps_per_epoch) if d <= GPU_STEPS_PER_EXECUTION)
    if steps_per_epoch % int(requested):
        from kdkeras.errors import UsageError

        choices = ", ".join(str(d) for d in divisors(steps_per_epoch) if d <= 4 * GPU_STEPS_PER_EXECUTION)
        raise UsageError(f"steps_per_execution must divide the {steps_per_epoch} training steps of an epoch "
                         f"(Keras would run whole calls across the epoch's end and shift every later epoch's "
                         f"data). Received: {requested}. Values that divide it: {choices}.")
    return int(requested)


class _DropRetracingWarnings(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warnings."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def quiet_retracing():
    """No "triggered tf.function retracing" warnings inside the block (every model is a new one there)."""
    logger = logging.getLogger("tensorflow")
    drop = _DropRetracingWarnings()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
