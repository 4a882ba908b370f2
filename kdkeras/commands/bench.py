"""Training, distillation and input-pipeline throughput (images per second).

Examples:
    kdkeras bench --model=wrn22x2_R_g16 --mode=train --batch_size=128 --steps=20
    kdkeras bench --model=wrn22x2_NR_g16 --mode=distill --teacher=wrn22x2_R_G4 --steps=20
    kdkeras bench --model=wrn16x1_NR_g2 --mode=distill --teacher=wrn16x1_R_g2 --methods=kd,at,fitnets
    kdkeras bench --model=wrn22x2_R_G4 --mode=infer          # inference forward (a teacher's cost)
    kdkeras bench --mode=data --steps=200                 # the augmented CIFAR pipeline alone
    kdkeras bench --mode=data --dataset=cifar100 --archive=cifar-100-python.tar.gz  # a real source
    kdkeras bench --model=wrn22x2_R_g16 --framework=torch  # the same network in PyTorch

train/distill run the real compiled step (PyTorchSGD, KD loss, Distiller) on
synthetic inputs. Each of --repeats timed windows runs --steps steps; the
reported images_per_sec is their median (all are listed in "runs"). With
several --methods, each method's windows alternate with the others' and
"methods" holds each one's median, its runs and its step time relative to
KD's. The last line printed is one JSON object with the numbers and the
host: the CPU model and its vector extensions (cpu, cpu_flags), whether
oneDNN ran and why (onednn, onednn_reason), and which path the grouped
convolutions took (grouped_conv: native or portable). Run it with
TF_ENABLE_ONEDNN_OPTS=0 to time the portable path (docs/benchmarks.md).

--gpu runs the GPU check (kdkeras.gpu_check): train and distill images/s of
the networks of Tables 1-6 and the standard zoo's usual pairs at fp32,
mixed_float16 and with XLA, the input pipeline beside the step,
MirroredStrategy over one GPU, steps_per_execution, 1 against K runs on one
GPU, peak GPU memory and the projected GPU-hours of every table, in the
order of its questions until --budget_s is spent. It prints a table and
writes --output (JSON) and a Markdown report beside it after every case.
--cpu_smoke runs its tiny version on CPU (under a minute):

    kdkeras bench --gpu --output=benchmarks/results/gpu_check.json --budget_s=240
    kdkeras bench --cpu_smoke
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from kdkeras.data.specs import DATA_TUNINGS  # noqa: E402
from kdkeras.errors import UsageError  # noqa: E402

FLAGS = flags.FLAGS
cli.define_run_flag("model", help="Model (the student for --mode=distill).")
cli.define_mode_flag("train", "What to measure.", choices=["train", "distill", "infer", "data"])
cli.define_run_flag("teacher", help="Teacher model for --mode=distill.")
flags.DEFINE_list("methods", ["kd"], "--mode=distill: distillation methods to time on the same pair, "
                  "interleaved window by window (any of kdkeras.list_methods() or a combination such as kd+at; "
                  "e.g. --methods=kd,at,fitnets).")
flags.DEFINE_enum("framework", "keras", ["keras", "torch"], "kdkeras, or the PyTorch reference (WRN only).")
cli.define_run_flag("batch_size", default=128, help="Global batch size.")
flags.DEFINE_integer("steps", 20, "Timed steps (after the warm-up).")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, compilation, caches).")
flags.DEFINE_integer("repeats", 3, "Timed windows of --steps steps; the median is reported.")
# The run settings of the measured step, a run's defaults (not "not set": nothing else decides here).
cli.define_run_flag("steps_per_execution", default=1, help="Training steps per compiled call.")
cli.define_run_flag("jit_compile", default=False, help="Compile the train step with XLA.")
cli.define_run_flag("mixed_precision", default=False, help="mixed_float16 policy (GPU).")
cli.define_run_flag("data_tuning", default="auto", choices=DATA_TUNINGS,
                    help="How tf.data spreads its work, as in training (auto: autotune with a GPU or 8+ cores, "
                         "else fixed).")
flags.DEFINE_integer("threads", None, "PyTorch: torch.set_num_threads (default: its own).")
cli.define_run_flag("train_size", default=50000, help="--mode=data: synthetic training-set size.")
cli.define_run_flag("dataset", default="synthetic", help="--mode=data: cifar100, cifar10 or synthetic (checks "
                    "that a data source loads, with its sizes).")
cli.define_run_flag("archive", help="--mode=data: original CIFAR archive or its folder.")
cli.define_run_flag("data_dir", help="--mode=data: prepared TFDS folder.")
flags.DEFINE_bool("gpu", False, "The GPU check instead of one measurement: Tables 1-6's networks and the zoo's "
                  "pairs at fp32, mixed_float16 and XLA, the input pipeline, MirroredStrategy, steps_per_execution, "
                  "several runs per GPU, peak memory, projected GPU-hours (docs/benchmarks.md, 'GPU').")
flags.DEFINE_bool("cpu_smoke", False, "The GPU check's tiny version on CPU, under a minute (a test that it runs).")
flags.DEFINE_float("budget_s", None, "--gpu: seconds of measuring (default 480); the cases that would not fit "
                   "are listed as skipped.")
flags.DEFINE_list("sections", None, "--gpu: only these sections of the check, e.g. tables,zoo (of: pipeline, "
                  "reference, precision, strategy, concurrent, steps_per_execution, tables, zoo).")
flags.DEFINE_integer("concurrent_runs", None, "--gpu: training processes at once on one device, against one "
                     "(default 4; --cpu_smoke: 2).")
cli.define_output_flag("--gpu: the JSON record (default benchmarks/results/gpu_check.json; --cpu_smoke: in the "
                       "temporary folder), rewritten after every case; its Markdown report is written beside it (.md).")


def _keras_window(model_name, mode, teacher_name, method="kd"):
    """Builds the model of one measurement, warms it up; returns ``window()``, one timed window (images/s)."""
    from kdkeras import throughput

    # The run pipeline's own steps build the model, its optimizer and the
    # distiller, as for a real run of these settings on synthetic data.
    timer = throughput.build_step(
        model_name, mode, teacher_name, method=method, batch_size=FLAGS.batch_size,
        steps_per_execution=FLAGS.steps_per_execution, jit_compile=FLAGS.jit_compile,
        mixed_precision=FLAGS.mixed_precision, data_tuning=FLAGS.data_tuning)
    timer.warm_up(FLAGS.warmup)
    steps = FLAGS.steps if mode == "infer" else timer.whole_steps(FLAGS.steps)
    return (lambda: timer.window(steps)), steps


def _bench_keras(model_name, mode, teacher_name, methods=("kd",)):
    """``({method: [images/s of each window]}, steps)``; the methods' windows are interleaved."""
    windows = {}
    for method in methods:
        windows[method], steps = _keras_window(model_name, mode, teacher_name, method)
    rates = {method: [] for method in methods}
    for _ in range(FLAGS.repeats):
        for method in methods:  # round-robin: a slow spell of the machine hits every method alike
            rates[method].append(windows[method]())
    return rates, steps


def _bench_data(record):
    from kdkeras.data import make_datasets, measure_throughput, set_data_tuning

    set_data_tuning(FLAGS.data_tuning)
    synthetic = FLAGS.dataset == "synthetic"
    start = time.perf_counter()
    train_ds, _, info = make_datasets(FLAGS.dataset, batch_size=FLAGS.batch_size, archive=FLAGS.archive,
                                      data_dir=FLAGS.data_dir, train_size=FLAGS.train_size if synthetic else None,
                                      test_size=256 if synthetic else None)
    record.update(dataset=info.name, train_examples=info.train_examples, test_examples=info.test_examples,
                  num_classes=info.num_classes, load_s=round(time.perf_counter() - start, 2))
    dataset = train_ds.repeat()
    return [measure_throughput(dataset, FLAGS.steps, warmup=FLAGS.warmup)
            for _ in range(FLAGS.repeats)], FLAGS.steps


def _gpu_check():
    """``--gpu`` / ``--cpu_smoke``: the GPU check (:mod:`kdkeras.gpu_check`), its report printed at the end."""
    import tempfile

    import tensorflow as tf

    from kdkeras import gpu_check, host

    smoke = FLAGS.cpu_smoke
    # Memory growth before TensorFlow first uses the GPU (listing logical devices would set it up): else this
    # process reserves nearly all of it and the check's concurrent runs find none.
    os.environ.setdefault(host.GPU_MEMORY_VARIABLE, "growth")
    host.configure_gpu_memory()
    if not smoke and not tf.config.list_physical_devices("GPU"):
        cli.fail("--gpu: TensorFlow sees no GPU here (tensorflow.config.list_physical_devices('GPU') is empty). "
                 "--cpu_smoke runs the check's tiny version on CPU.")
    if FLAGS.budget_s is not None and FLAGS.budget_s <= 0:
        cli.fail(f"--budget_s must be a positive number of seconds. Received: {FLAGS.budget_s}.")
    if FLAGS.concurrent_runs is not None and FLAGS.concurrent_runs < 2:
        cli.fail(f"--concurrent_runs must be at least 2. Received: {FLAGS.concurrent_runs}.")
    cases = (gpu_check.smoke_suite if smoke else gpu_check.full_suite)(FLAGS.concurrent_runs or (2 if smoke else 4))
    if FLAGS.sections:
        unknown = sorted(set(FLAGS.sections) - set(gpu_check.SECTIONS))
        if unknown:
            cli.fail(f"Unknown section {', '.join(unknown)} in --sections. Valid choices: "
                     f"{', '.join(gpu_check.SECTIONS)}.")
        cases = [c for c in cases if c.section in FLAGS.sections]
    steps = gpu_check.SMOKE_STEPS if smoke else gpu_check.FULL_STEPS
    given = {name: FLAGS[name].value for name in ("warmup", "steps", "repeats", "batch_size")
             if FLAGS[name].present}
    output = FLAGS.output or (os.path.join(tempfile.gettempdir(), "kdkeras_gpu_check_cpu_smoke.json") if smoke
                              else gpu_check.DEFAULT_OUTPUT)
    from kdkeras import runtime

    with runtime.quiet_retracing():  # every case is a new model
        record = gpu_check.run_check(output, smoke=smoke, budget_s=FLAGS.budget_s,
                                     concurrent_runs=FLAGS.concurrent_runs, cases=cases, steps=gpu_check.Steps(**{
                                         **dataclasses.asdict(steps), **given}),
                                     command=" ".join(["kdkeras bench", *sys.argv[1:]]))
    json_path, md_path = gpu_check.output_paths(output)
    from kdkeras.gpu_check import report

    print(report.render(record))
    print(f"Wrote {json_path} and {md_path}")


def main(argv):
    del argv
    if FLAGS.gpu or FLAGS.cpu_smoke:
        _gpu_check()
        return
    mode = FLAGS.mode
    if mode != "data" and not FLAGS.model:
        cli.fail("--model is required for --mode=train and --mode=distill.")
    if mode == "distill" and not FLAGS.teacher:
        cli.fail("--mode=distill needs --teacher=NAME.")
    if FLAGS.batch_size < 1 or FLAGS.steps < 1 or FLAGS.repeats < 1:
        cli.fail("--batch_size, --steps and --repeats must be positive.")
    from kdkeras import methods as methods_lib

    methods = list(dict.fromkeys(FLAGS.methods))
    unknown = []
    for m in methods:
        try:
            methods_lib.parse(m)
        except UsageError:
            unknown.append(m)
    if unknown or not methods:
        cli.fail(f"Unknown method {', '.join(unknown) or '(none)'} in --methods. "
                 f"Valid choices: {', '.join(methods_lib.list_methods())}.")
    if methods != ["kd"] and (mode != "distill" or FLAGS.framework != "keras"):
        cli.fail("--methods times distillation methods: it needs --mode=distill (and --framework=keras).")
    from kdkeras.models.registry import parse_model_name

    for name in (FLAGS.model, FLAGS.teacher if mode == "distill" else None):
        if name:
            parse_model_name(name)

    record = {"model": FLAGS.model if mode != "data" else f"{FLAGS.dataset}-pipeline", "mode": mode,
              "teacher": FLAGS.teacher if mode == "distill" else None,
              "method": methods[0] if mode == "distill" else None,
              "framework": FLAGS.framework, "batch_size": FLAGS.batch_size}
    from kdkeras import host

    cpu = host.cpu_info()
    record.update(cpu=cpu["model"], cpu_flags=[name for name, present in cpu["flags"].items() if present],
                  isa_limit=os.environ.get("ONEDNN_MAX_CPU_ISA"))
    if FLAGS.framework == "torch":
        if mode == "data":
            cli.fail("--framework=torch measures --mode=train or --mode=distill.")
        package = os.path.dirname(os.path.abspath(cli.__file__))
        benchmarks = os.path.join(os.path.dirname(package), "benchmarks")
        if not os.path.isfile(os.path.join(benchmarks, "torch_reference.py")):
            cli.fail("--framework=torch needs benchmarks/torch_reference.py of a kdkeras source checkout "
                     "(git clone, then pip install -e .); an installed wheel does not ship it.")
        sys.path.insert(0, benchmarks)
        try:
            import torch
            import torch_reference
        except ImportError:
            cli.fail("--framework=torch needs PyTorch: pip install torch")
        rates = torch_reference.benchmark(FLAGS.model, mode, FLAGS.teacher, FLAGS.batch_size,
                                          FLAGS.steps, FLAGS.warmup, FLAGS.threads, FLAGS.repeats)
        record.update(images_per_sec=round(statistics.median(rates), 2),
                      runs=[round(r, 2) for r in rates], steps=FLAGS.steps,
                      device=f"CPU ({os.cpu_count()} cores)", threads=torch.get_num_threads(),
                      onednn=torch.backends.mkldnn.is_available(),
                      cpu_capability=torch.backends.cpu.get_cpu_capability(),
                      version=f"torch {torch.__version__}")
    else:
        import keras
        import tensorflow as tf

        from kdkeras import throughput
        from kdkeras.data import data_tuning

        if mode == "data":
            rates, steps = _bench_data(record)
        else:
            from kdkeras import runtime

            with runtime.quiet_retracing():  # every method's window is a new model
                per_method, steps = _bench_keras(FLAGS.model, mode, FLAGS.teacher, tuple(methods))
            rates = per_method[methods[0]]
            if len(methods) > 1:
                kd = statistics.median(per_method["kd"]) if "kd" in per_method else None
                record["methods"] = {
                    m: {"images_per_sec": round(statistics.median(r), 2), "runs": [round(v, 2) for v in r],
                        "step_time_vs_kd": round(kd / statistics.median(r), 3) if kd else None}
                    for m, r in per_method.items()}
        record.update(images_per_sec=round(statistics.median(rates), 2),
                      runs=[round(r, 2) for r in rates], steps=steps, device=throughput.device_name(),
                      steps_per_execution=FLAGS.steps_per_execution, jit_compile=FLAGS.jit_compile,
                      mixed_precision=FLAGS.mixed_precision, data_tuning=data_tuning(),
                      onednn=host.onednn_enabled(), onednn_reason=host.onednn_reason(),
                      grouped_conv="native" if host.grouped_conv_kernel() else "portable",
                      version=f"tensorflow {tf.__version__}, keras {keras.__version__}")
    print(json.dumps(record))


if __name__ == "__main__":
    cli.run(main)
