"""Images per second of a run's compiled step and of its input pipeline: what ``kdkeras bench`` times.

:func:`build_step` builds what a run of the given settings fits, with the
run pipeline's own steps (:func:`kdkeras.training.build_run_model`: the
student or the :class:`~kdkeras.distiller.Distiller`, its optimizer, its
compile options), and returns a :class:`StepTimer`: warm-up steps first
(tracing, compilation, autotuning), then timed windows of a fixed number of
steps, each ended by reading a weight back so that the device has finished
every step of the window. ``kdkeras bench`` and the GPU check
(:mod:`kdkeras.gpu_check`) both time through here.

The batches are one constant batch of random images (the step alone) or,
with :meth:`StepTimer.window` given a dataset, any pipeline (the step fed by
the augmented training pipeline, :meth:`StepTimer.pipeline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time


@dataclasses.dataclass
class StepTimer:
    """A compiled model and its batches, ready to be timed (:func:`build_step`).

    Attributes:
        model: what ``fit`` trains (the student, or the distiller).
        student: the student inside it.
        config: the resolved :class:`kdkeras.config.RunConfig` it was built from.
        data: the run's :class:`kdkeras.data.Splits` (synthetic).
        batch: ``(x, y)``, one batch of the run's shapes.
        mode: ``train``, ``distill`` or ``infer``.
        steps_per_execution: training steps per compiled call.
        strategy: the ``tf.distribute`` strategy it was built under (``None``: none).
    """

    model: object
    student: object
    config: object
    data: object
    batch: tuple
    mode: str
    steps_per_execution: int = 1
    strategy: object = None
    _forward: object = None
    _last: object = None

    @property
    def batch_size(self) -> int:
        return int(self.config.batch_size)

    def constant(self):
        """The step's batches: the same batch again and again, with the run's ``tf.data`` options."""
        import tensorflow as tf

        from kdkeras.data import pipeline_options

        return tf.data.Dataset.from_tensors(self.batch).repeat().with_options(pipeline_options())

    def pipeline(self):
        """The run's own augmented, shuffled training batches, repeated (with indices when the model reads them)."""
        from kdkeras.training import needs_indices

        return self.data.train_epochs(0, 1_000_000, with_indices=needs_indices(self.model))

    def whole_steps(self, steps: int) -> int:
        """``steps`` rounded down to whole compiled calls (at least one call)."""
        spe = self.steps_per_execution
        return max(spe, int(steps) - int(steps) % spe)

    def warm_up(self, steps: int, dataset=None, callbacks=()) -> None:
        """Untimed steps: tracing, compilation, the first allocations (at least one compiled call)."""
        if self.mode == "infer":
            for _ in range(max(1, int(steps))):
                self._infer_once()
            self._sync()
            return
        spe = self.steps_per_execution
        warmup = max(int(steps), spe)
        self._fit(dataset, warmup - warmup % spe, callbacks)
        self._sync()

    def window(self, steps: int, dataset=None, callbacks=()) -> float:
        """One timed window of :meth:`whole_steps` steps; images per second, the device's work included."""
        if self.mode == "infer":
            start = time.perf_counter()
            for _ in range(int(steps)):
                self._infer_once()
            self._sync()
            return self.batch_size * int(steps) / (time.perf_counter() - start)
        steps = self.whole_steps(steps)
        start = time.perf_counter()
        self._fit(dataset, steps, callbacks)
        self._sync()
        return self.batch_size * steps / (time.perf_counter() - start)

    def _fit(self, dataset, steps, callbacks):
        self.model.fit(self.constant() if dataset is None else dataset, steps_per_epoch=steps, epochs=1,
                       verbose=0, shuffle=False, callbacks=list(callbacks))

    def _infer_once(self):
        import tensorflow as tf

        if self._forward is None:
            student, x = self.student, self.batch[0]
            self._forward = tf.function(lambda: student(x, training=False))
        self._last = self._forward()

    def _sync(self):
        """Waits for the device: reads back the last output (inference) or a weight the last step updated."""
        import keras

        if self.mode == "infer":
            keras.ops.convert_to_numpy(self._last)
        else:
            keras.ops.convert_to_numpy(self.student.trainable_variables[-1])


def build_step(model_name: str, mode: str, teacher_name: str | None = None, *, method: str = "kd",
               batch_size: int | None = None, steps_per_execution: int = 1, jit_compile: bool = False,
               mixed_precision: bool = False, data_tuning: str = "auto", recipe: str | None = None,
               train_size: int | None = None, strategy=None) -> StepTimer:
    """Builds the model of one measurement as a run of these settings builds it; a :class:`StepTimer`.

    Args:
        model_name: the model (the student for ``distill``).
        mode: ``train``, ``distill`` or ``infer`` (the student's forward pass in inference mode).
        teacher_name: the teacher for ``distill``.
        method: the distillation method (``distill``).
        batch_size: the global batch (``None``: the recipe's).
        steps_per_execution: training steps per compiled call.
        jit_compile: XLA for the train step.
        mixed_precision: the ``mixed_float16`` policy (set for the whole process, as a run does).
        data_tuning: ``tf.data`` parallelism, as in training.
        recipe: the recipe (``None``: the model's own).
        train_size: synthetic training images (the pipeline's size; ``None``: the synthetic default).
        strategy: a ``tf.distribute`` strategy to build the student (and distiller) under; the
            teacher is built outside it, as a run loads its teacher.
    """
    import tensorflow as tf

    from kdkeras import config as config_lib
    from kdkeras import runtime
    from kdkeras.training import build_run_model, build_student, make_run_data, needs_indices

    distill = mode == "distill"
    config = config_lib.resolve({
        "model": model_name, "teacher": teacher_name if distill else None, "dataset": "synthetic",
        "batch_size": batch_size, "steps_per_execution": steps_per_execution, "jit_compile": jit_compile,
        "mixed_precision": mixed_precision, "data_tuning": data_tuning, "recipe": recipe,
        "train_size": train_size, **({"method": method} if distill else {})})
    runtime.apply(config)  # as a run's start: mixed precision, tf.data tuning, GPU memory
    data = make_run_data(config)
    batch = int(config.batch_size)
    x = tf.random.normal((batch,) + tuple(data.info.image_shape))
    y = tf.random.uniform((batch,), 0, data.info.num_classes, dtype=tf.int64)
    teacher = None
    if distill:
        teacher = build_student(config_lib.teacher_config(config), data.info.num_classes, data.info.image_shape)
    model, student = build_run_model(config, data, teacher, strategy)
    if needs_indices(model):  # a method with per-example state (CRD): the examples' positions too
        x = (x, tf.random.uniform((batch,), 0, data.info.train_examples, dtype=tf.int64))
    return StepTimer(model, student, config, data, (x, y), mode, int(steps_per_execution), strategy)


def device_name() -> str:
    """The device a measurement runs on: ``"1x NVIDIA H100 80GB HBM3"`` or ``"CPU (2 cores, x86_64)"``."""
    import os
    import platform

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus]
        return f"{len(gpus)}x {names[0]}"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def pipeline_rate(dataset, steps: int, warmup: int) -> float:
    """Images per second of ``dataset`` alone, iterated on the host (:func:`kdkeras.data.measure_throughput`)."""
    from kdkeras.data import measure_throughput

    return measure_throughput(dataset, steps, warmup=warmup)


@contextlib.contextmanager
def fresh_session():
    """Frees the models of the previous measurement (Keras's global state and Python garbage) on the way out."""
    import gc

    import keras

    try:
        yield
    finally:
        keras.backend.clear_session()
        gc.collect()
