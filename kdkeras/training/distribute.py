"""Where a run trains: the ``tf.distribute`` strategy, and which process writes the run folder.

Several machines (or several processes) train one run together with
``tf.distribute.MultiWorkerMirroredStrategy``, configured from ``TF_CONFIG``
through ``tf.distribute.cluster_resolver.TFConfigClusterResolver``
(docs/distributed.md). Every worker builds the same seeded pipelines and
takes its part of each global batch; BatchNorm statistics are computed over
the global batch (``synchronized``), so a multi-worker run trains the same
network as one process with the same global batch. The chief writes the run
folder; the other workers keep their resume state in a scratch folder that
is removed when the run finishes.
"""

from __future__ import annotations

import json
import os

from kdkeras import config as config_lib
from kdkeras.errors import UsageError

#: The one multi-worker strategy of this process (collective ops are configured once per process).
_MULTI_WORKER = None
#: This process's MirroredStrategy objects, by their devices (None: the default, every GPU).
_MIRRORED: dict = {}


def _resolver():
    import tensorflow as tf

    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def _check_tf_config() -> None:
    try:
        json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError as err:
        raise UsageError(f"TF_CONFIG is not valid JSON: {err}. See docs/distributed.md for an example.")


def tf_config_workers() -> int:
    """Number of chief and worker tasks ``TF_CONFIG`` describes (0 without it)."""
    _check_tf_config()
    cluster = _resolver().cluster_spec().as_dict()
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def task() -> tuple[str | None, int]:
    """``(task type, task index)`` of this process in ``TF_CONFIG`` (``(None, 0)`` without it)."""
    _check_tf_config()
    resolver = _resolver()
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief() -> bool:
    """Whether this process writes the run's files (always, except the non-chief workers of a cluster)."""
    if tf_config_workers() <= 1:
        return True
    task_type, task_id = task()
    if "chief" in _resolver().cluster_spec().as_dict():
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def worker_name() -> str:
    """``chief``, ``worker-<i>``: this process's name in the cluster (``chief`` without one)."""
    if is_chief():
        return "chief"
    task_type, task_id = task()
    return f"{task_type}-{task_id}"


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` spans several processes (collectives between workers)."""
    return strategy is not None and strategy is _MULTI_WORKER


def make_strategy(name: str):
    """The ``tf.distribute`` strategy for ``auto|mirrored|multiworker|none``.

    ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several
    workers, ``MirroredStrategy`` when several GPUs are visible, else the
    default (single-device) strategy. ``mirrored`` without a GPU mirrors over
    the logical CPU devices when the process made several. The multi-worker strategy is created
    once per process and shared by every run it trains (a teacher trained on
    the way and its student).
    """
    import tensorflow as tf

    if name not in config_lib.STRATEGIES:
        raise UsageError(f"Unknown strategy '{name}'. Valid choices: {', '.join(config_lib.STRATEGIES)}.")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multiworker" or (name == "auto" and tf_config_workers() > 1):
        if tf_config_workers() < 1:
            raise UsageError(
                "strategy=multiworker needs the TF_CONFIG environment variable describing "
                "the cluster (see docs/distributed.md).")
        return multi_worker_strategy()
    if name == "mirrored" or len(tf.config.list_logical_devices("GPU")) > 1:
        cpus = tf.config.list_logical_devices("CPU")
        devices = None
        if name == "mirrored" and not tf.config.list_logical_devices("GPU") and len(cpus) > 1:
            # No GPU, and the CPU split into logical devices (tf.config.set_logical_device_configuration):
            # a replica on each, e.g. to check a run's replica behaviour on a laptop.
            devices = tuple(d.name for d in cpus)
        return mirrored_strategy(devices)
    return tf.distribute.get_strategy()


def mirrored_strategy(devices=None):
    """This process's ``MirroredStrategy`` over ``devices`` (default: every GPU), created on first use.

    One per process, as the multi-worker strategy: two strategies in one
    process number their collectives alike, and TensorFlow keeps the shapes
    of a number's first collective, so the second run of a process (a student
    after the teacher trained on the way) stopped at its first step with
    "Shape mismatch in the collective instance".
    """
    import tensorflow as tf

    key = tuple(devices) if devices else None
    if key not in _MIRRORED:
        _MIRRORED[key] = tf.distribute.MirroredStrategy(list(key) if key else None)
    return _MIRRORED[key]


def multi_worker_strategy():
    """This process's ``MultiWorkerMirroredStrategy`` (from ``TF_CONFIG``), created on first use."""
    global _MULTI_WORKER
    if _MULTI_WORKER is None:
        _MULTI_WORKER = _strategy_class()(cluster_resolver=_resolver())
    return _MULTI_WORKER


def _strategy_class():
    import tensorflow as tf

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """``MultiWorkerMirroredStrategy`` whose ``reduce`` accepts what Keras 3's ``fit`` passes it.

        Keras 3 (TF backend) calls ``strategy.reduce`` on a nested data batch
        when it builds a model, and with ``axis=0`` on scalar metrics; the
        TensorFlow strategy handles neither with several workers, so ``fit``
        stops at its first step (keras-team/keras#20585). This reduces each
        value of a nest on its own, and scalars across replicas only.
        """

        def reduce(self, reduce_op, value, axis):
            parent = super()

            def one(v):
                first = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
                rank = getattr(getattr(first, "shape", None), "rank", None)
                return parent.reduce(reduce_op, v, None if rank == 0 else axis)

            return tf.nest.map_structure(one, value)

    return KerasMultiWorkerMirroredStrategy


def chief_value(strategy, value: int) -> int:
    """The chief's ``value``, on every worker of ``strategy`` (a collective: every worker must call it).

    Workers agree this way on what only the chief may decide (the epoch to
    resume from, whether a teacher is trained now). Without several workers
    it returns ``value``.
    """
    if not is_multi_worker(strategy):
        return int(value)
    import tensorflow as tf

    mine = tf.constant(int(value) if is_chief() else 0, tf.int64)

    @tf.function
    def share(v):
        def replica_fn(v):
            first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
            return v * tf.cast(first, tf.int64)  # one contribution: the chief's first replica

        return strategy.reduce("SUM", strategy.run(replica_fn, args=(v,)), axis=None)

    return int(share(mine).numpy())


def synchronize_batchnorm(model, strategy) -> None:
    """Global-batch BatchNorm statistics when ``strategy`` has several replicas (no-op otherwise).

    Sets ``synchronized=True`` on every ``BatchNormalization`` layer, so each
    training step normalises with the statistics of the whole global batch,
    as one process would.
    """
    if strategy is None or strategy.num_replicas_in_sync <= 1:
        return
    import keras

    def visit(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
        for sub in getattr(layer, "layers", []) or []:
            visit(sub)

    visit(model)
