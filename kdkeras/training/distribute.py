"""Where a run trains: the ``tf.distribute`` strategy, and which process writes the run folder."""

from __future__ import annotations

import json
import os

from kdkeras import config as config_lib


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
    if name == "multiworker" or (name == "auto" and tf_config_workers() > 1):
        if tf_config_workers() < 1:
            raise ValueError(
                "strategy=multiworker needs the TF_CONFIG environment variable describing "
                "the cluster (see README, 'Several machines')."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def tf_config_workers() -> int:
    """Number of chief and worker tasks ``TF_CONFIG`` describes (0 without it)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}")
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def is_chief() -> bool:
    """Whether this process writes the run's files (always, except MWMS non-chiefs)."""
    if tf_config_workers() <= 1:
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0
