"""What this machine and this process give TensorFlow: the CPU, oneDNN, the grouped-convolution kernel, GPU memory.

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
:func:`configure_gpu_memory` lets several processes share one GPU
(docs/distributed.md, "A node of 8 GPUs").
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


#: Environment variable of a process's GPU memory: ``growth`` (allocate as needed) or a limit in MiB.
#: ``kdkeras grid --workers_per_gpu`` sets it for its workers (:mod:`kdkeras.experiments.grid.workers`).
GPU_MEMORY_VARIABLE = "KDKERAS_GPU_MEMORY"

#: This process's applied GPU memory setting (``None``: TensorFlow's default, the whole memory of each GPU).
_gpu_memory_applied = None


def gpu_memory_setting(text: str | None = None) -> str | int | None:
    """``"growth"``, a limit in MiB, or ``None`` (TensorFlow's default) from ``text`` (default: the variable).

    Raises:
        UsageError: anything else, naming the variable and the received value.
    """
    text = os.environ.get(GPU_MEMORY_VARIABLE) if text is None else text
    value = (text or "").strip().lower()
    if not value:
        return None
    if value == "growth":
        return "growth"
    if value.isdigit() and int(value) > 0:
        return int(value)
    from kdkeras.errors import UsageError

    raise UsageError(f"{GPU_MEMORY_VARIABLE} must be 'growth' or a positive number of MiB. Received: {text!r}.")


def configure_gpu_memory() -> str:
    """Applies :data:`GPU_MEMORY_VARIABLE` to every visible GPU, once per process, before TensorFlow uses one.

    With several processes on one GPU (``kdkeras grid --workers_per_gpu=K``)
    each must take memory as it needs it (``growth``) or a fixed share (a
    limit in MiB, one logical device of that size); by default TensorFlow
    reserves nearly all of a GPU's memory in the first process that uses it.
    Without a GPU, or without the variable, nothing changes.

    Returns:
        What applies, in words (``"growth"``, ``"limit 8000 MiB"``, ``"default"``).
    """
    global _gpu_memory_applied
    setting = gpu_memory_setting()
    if setting is None or setting == _gpu_memory_applied:
        return _describe_gpu_memory(setting)
    import tensorflow as tf

    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            if setting == "growth":
                tf.config.experimental.set_memory_growth(gpu, True)
            else:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=setting)])
    except RuntimeError as err:  # TensorFlow had already set up its GPUs in this process
        print(f"kdkeras: {GPU_MEMORY_VARIABLE}={setting} not applied: TensorFlow already uses the GPU in this "
              f"process ({err}).", file=sys.stderr, flush=True)
        return "default"
    _gpu_memory_applied = setting
    return _describe_gpu_memory(setting)


def _describe_gpu_memory(setting) -> str:
    if setting is None:
        return "default"
    return "growth" if setting == "growth" else f"limit {setting} MiB"


def gpu_assignment() -> str:
    """This process's GPUs and GPU memory as the environment sets them, in one line (no TensorFlow needed)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = "every GPU" if visible is None else (f"GPU {visible}" if visible.strip() else "no GPU")
    return (f"{devices} (CUDA_VISIBLE_DEVICES={visible if visible is not None else 'unset'}), GPU memory: "
            f"{_describe_gpu_memory(gpu_memory_setting())}")


def cpu_list(cpus) -> str:
    """``0-3,8,10-11``: core numbers as ranges."""
    cpus, out = sorted(cpus), []
    for c in cpus:
        if out and c == out[-1][1] + 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def cpu_assignment() -> str:
    """This process's CPU cores and TensorFlow threads as the environment sets them, in one line."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return (f"CPU{'s' if len(cpus) > 1 else ''} {cpu_list(cpus)}, TensorFlow threads: "
            f"TF_NUM_INTRAOP_THREADS={os.environ.get('TF_NUM_INTRAOP_THREADS', 'unset')}, "
            f"TF_NUM_INTEROP_THREADS={os.environ.get('TF_NUM_INTEROP_THREADS', 'unset')}")


def _gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (asked once per process)."""
    return _gpu_present()


def _conv_and_gradients(tf, x, kernel) -> bool:
    """Runs a convolution and the two kernels of its gradient as raw ops; True if all three run.

    Raw ops, not a gradient tape: the probes run under ``tf.init_scope`` (eager
    even while a ``tf.function`` is traced), which pauses every tape.
    """
    strides, padding = [1, 1, 1, 1], "SAME"
    y = tf.raw_ops.Conv2D(input=x, filter=kernel, strides=strides, padding=padding)
    d_kernel = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel), out_backprop=y,
                                               strides=strides, padding=padding)
    d_input = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=y,
                                             strides=strides, padding=padding)
    return bool(tf.reduce_all(tf.math.is_finite(d_kernel))) and bool(tf.reduce_all(tf.math.is_finite(d_input)))


def _probe_grouped_gradient() -> bool:
    """Runs one tiny grouped convolution and its gradient kernels eagerly; True if TensorFlow computes them."""
    import tensorflow as tf

    with tf.init_scope():  # eager, even when asked while a tf.function is being traced
        try:
            return _conv_and_gradients(tf, tf.ones((1, 3, 3, 4)), tf.ones((3, 3, 2, 4)))  # 2 groups of 2
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


def _probe_float16_step() -> bool:
    """Runs a tiny float16 convolution with its gradient kernels, a batch norm and a matmul eagerly."""
    import tensorflow as tf

    with tf.init_scope():
        try:
            x = tf.ones((2, 4, 4, 4), tf.float16)
            if not _conv_and_gradients(tf, x, tf.ones((3, 3, 4, 4), tf.float16)):
                return False
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, tf.ones(4), tf.zeros(4), is_training=True)
            z = tf.matmul(tf.reshape(y, (2, -1)), tf.ones((64, 3), tf.float16))
            return bool(tf.reduce_all(tf.math.is_finite(z)))
        except (tf.errors.OpError, ValueError, TypeError):
            return False


@functools.lru_cache(maxsize=None)
def float16_kernels() -> bool:
    """Whether float16 (mixed-precision) training runs in this process: a GPU, or CPU kernels that have it.

    TensorFlow's oneDNN kernels compute float16 convolutions only with
    AVX512-FP16 (or AMX-FP16); elsewhere some TensorFlow builds fall back to
    their own CPU kernels and others fail. Without oneDNN, TensorFlow's own
    CPU kernels have them (slowly). Decided once per process by running a tiny step.
    """
    return has_gpu() or _probe_float16_step()


def check_mixed_precision() -> None:
    """A one-line :class:`~kdkeras.errors.UsageError` when ``--mixed_precision`` cannot train here."""
    if float16_kernels():
        return
    from kdkeras.errors import UsageError

    flags = [name.upper() for name, present in cpu_info()["flags"].items() if present]
    raise UsageError(
        f"--mixed_precision (float16) cannot train on this CPU: TensorFlow's oneDNN kernels "
        f"({onednn_reason()}) have no float16 convolution without AVX512-FP16 (this CPU: "
        f"{', '.join(flags) or 'unknown flags'}{'; ONEDNN_MAX_CPU_ISA=' + os.environ['ONEDNN_MAX_CPU_ISA'] if os.environ.get('ONEDNN_MAX_CPU_ISA') else ''}). "
        f"Mixed precision is meant for GPUs: drop --mixed_precision, or set TF_ENABLE_ONEDNN_OPTS=0 to use "
        f"TensorFlow's own (slower) float16 kernels."
    )


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
