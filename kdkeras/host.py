"""What this machine and this process give TensorFlow: the CPU, oneDNN, the grouped-convolution kernel.

TensorFlow turns its oneDNN kernels on by default only on some x86 CPUs: on
with AVX-512, off on CPUs with AVX2 only (many AMD EPYC and cloud machines).
Without oneDNN, TensorFlow's CPU kernels compute a grouped convolution's
forward pass but have no gradient for it, so every grouped network of the
paper's zoo would fail in its first training step. kdkeras therefore

1. turns oneDNN on (``TF_ENABLE_ONEDNN_OPTS=1``) when ``import kdkeras`` runs
   before TensorFlow is imported and the user has not set the variable
   (:func:`enable_onednn`, called by ``kdkeras/__init__.py``); an explicit
   ``TF_ENABLE_ONEDNN_OPTS=0`` is respected;
2. where the grouped kernel is still missing (oneDNN off on purpose,
   TensorFlow imported before kdkeras, a platform without it),
   :class:`kdkeras.layers.GroupedConv2D` runs a portable form built from
   kernels every TensorFlow build has (:func:`grouped_conv_kernel` decides,
   once per process, and says so in one line).

docs/training.md ("CPUs and oneDNN") and docs/benchmarks.md give the figures.
Nothing here imports TensorFlow at module import time.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

#: The environment variable TensorFlow reads once, when it is imported.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"

#: True when :func:`enable_onednn` set :data:`ONEDNN_VARIABLE` in this process.
onednn_set_by_kdkeras = False

#: CPU flags reported by :func:`cpu_info` (``/proc/cpuinfo`` names).
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def enable_onednn() -> None:
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless TensorFlow is imported already or the user chose.

    Called when ``kdkeras`` is imported. TensorFlow reads the variable only
    when it is imported, so once it is imported nothing is changed (the
    grouped convolutions then pick their path with :func:`grouped_conv_kernel`).
    """
    global onednn_set_by_kdkeras
    if "tensorflow" in sys.modules or ONEDNN_VARIABLE in os.environ:
        return
    os.environ[ONEDNN_VARIABLE] = "1"
    onednn_set_by_kdkeras = True


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels in this process (imports TensorFlow).

    ``None`` where this TensorFlow build cannot tell (the query is a private
    TensorFlow function, ``_pywrap_util_port.IsMklEnabled``).
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    try:
        return bool(_pywrap_util_port.IsMklEnabled())
    except AttributeError:
        return None


def cpu_info() -> dict:
    """The CPU's model name, architecture and vector extensions (no TensorFlow needed).

    Returns:
        ``{"model": str, "machine": str, "cores": int, "flags": {name: bool}}``
        with every name of :data:`VECTOR_FLAGS`; on systems without
        ``/proc/cpuinfo`` the flags are ``None`` (unknown).
    """
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model Name") and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "flags": {name: (None if flags is None else name in flags) for name in VECTOR_FLAGS},
    }


def onednn_reason() -> str:
    """Why oneDNN is on or off in this process, in a few words (imports TensorFlow)."""
    value = os.environ.get(ONEDNN_VARIABLE)
    enabled = onednn_enabled()
    if enabled:
        if onednn_set_by_kdkeras:
            return f"on ({ONEDNN_VARIABLE}=1 set by kdkeras)"
        return f"on ({ONEDNN_VARIABLE}={value})" if value is not None else "on (TensorFlow's default on this CPU)"
    if enabled is None:
        return "unknown (this TensorFlow build does not say)"
    if value is not None and value.strip().lower() in ("0", "false", "no", "off"):
        return f"off ({ONEDNN_VARIABLE}={value})"
    if value is None:
        return ("off (TensorFlow's default on this CPU, and TensorFlow was imported before kdkeras: "
                f"set {ONEDNN_VARIABLE}=1 before importing it to turn oneDNN on)")
    return f"off (not available in this TensorFlow build or on this CPU; {ONEDNN_VARIABLE}={value})"


def _gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (asked once per process)."""
    return _gpu_present()


def _probe_grouped_gradient() -> bool:
    """Runs one tiny grouped convolution and its gradient eagerly; True if TensorFlow computes it."""
    import tensorflow as tf

    with tf.init_scope():  # eager, even when asked while a tf.function is being traced
        x = tf.ones((1, 3, 3, 4))
        kernel = tf.ones((3, 3, 2, 4))  # 2 groups of 2 input channels
        try:
            with tf.GradientTape() as tape:
                tape.watch(kernel)
                tape.watch(x)
                y = tf.nn.conv2d(x, kernel, 1, "SAME")
            grads = tape.gradient(y, [x, kernel])
            return all(g is not None for g in grads) and bool(tf.reduce_all(tf.math.is_finite(grads[1])))
        except (tf.errors.OpError, ValueError, TypeError):
            return False


@functools.lru_cache(maxsize=None)
def grouped_conv_kernel() -> bool:
    """Whether TensorFlow's own grouped ``tf.nn.conv2d`` trains in this process (decided once).

    True with a GPU (cuDNN) or with oneDNN on; otherwise one tiny grouped
    convolution and its gradient are run to find out. When False, the first
    call prints one line saying that the portable path is used, and why.
    """
    if has_gpu() or onednn_enabled():
        return True
    if _probe_grouped_gradient():
        return True
    print(f"kdkeras: grouped convolutions use the portable path (split, depthwise or dense per layer): "
          f"TensorFlow's oneDNN is {onednn_reason()}, and without it TensorFlow's CPU kernels have no "
          f"grouped-convolution gradient; training is about 2x slower than with oneDNN (docs/benchmarks.md).",
          file=sys.stderr, flush=True)
    return False


def describe() -> dict:
    """This host as benchmarks and analysis record it (imports TensorFlow).

    ``{"cpu": ..., "onednn": bool | None, "onednn_reason": str, "gpu": bool,
    "grouped_conv": "native" | "portable"}``.
    """
    import tensorflow as tf

    return {
        "cpu": cpu_info(),
        "tensorflow": tf.__version__,
        "onednn": onednn_enabled(),
        "onednn_reason": onednn_reason(),
        "gpu": has_gpu(),
        "grouped_conv": "native" if grouped_conv_kernel() else "portable",
    }
