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

:func:`apply` sets all four in one place. It is called where a run starts
(:func:`kdkeras.training.train_and_evaluate`, a tuning search, a benchmark);
the run pipeline's steps (data, model, callbacks, fit) set none of them.

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

    if config.mixed_precision:
        host.check_mixed_precision()  # float16 needs a GPU or CPU kernels that have it (docs/training.md)
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    if config.deterministic:  # for the rest of the process: TensorFlow cannot switch it off again
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    data_lib.set_data_tuning(config.data_tuning)
    download.configure(enabled=config.download, mirror=config.data_mirror or "")


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
