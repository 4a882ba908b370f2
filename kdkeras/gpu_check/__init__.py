"""The GPU check: ``kdkeras bench --gpu``, one command that measures kdkeras on a GPU within a time budget.

It measures, in the order of :mod:`kdkeras.gpu_check.cases` (one figure per
question first), until its budget is spent:

* images/s of the train and distill steps of the paper's Tables 1-6 and the
  standard zoo's usual pairs, at fp32, ``mixed_float16`` and with XLA;
* the input pipeline's rate beside the step's, and the step fed by it;
* a callback with per-step work against none (a host read per step);
* ``MirroredStrategy`` over one device against no strategy;
* ``steps_per_execution`` at its GPU default against 1;
* 1 against K training processes on one device (:mod:`~kdkeras.gpu_check.concurrent`);
* the peak GPU memory of each;

then projects the GPU-hours of each table and of the whole paper
(:mod:`~kdkeras.gpu_check.projection`). After every case it rewrites the
JSON record and its Markdown report (:mod:`~kdkeras.gpu_check.report`)
atomically, so a check stopped by a time limit leaves what it measured.
``--cpu_smoke`` runs the same code on a tiny network on CPU (a test).

One job per module:

* :mod:`~kdkeras.gpu_check.cases`: the measurements and their order;
* :mod:`~kdkeras.gpu_check.measure`: one case (windows, variants, peak memory);
* :mod:`~kdkeras.gpu_check.concurrent`: several processes on one device;
* :mod:`~kdkeras.gpu_check.projection`: GPU-hours per table;
* :mod:`~kdkeras.gpu_check.report`: the Markdown tables.

docs/benchmarks.md ("GPU") says how to run it and what it measured.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time

from kdkeras.gpu_check.cases import SECTIONS, Case, full_suite, smoke_suite
from kdkeras.gpu_check.measure import Steps

__all__ = ["DEFAULT_BUDGET_S", "DEFAULT_OUTPUT", "FULL_STEPS", "SECTIONS", "SMOKE_STEPS", "Case", "Steps",
           "estimate_s", "full_suite", "measure_case", "output_paths", "run_check", "smoke_suite"]

#: Where ``kdkeras bench --gpu`` writes its record by default (the report beside it, ``.md``).
DEFAULT_OUTPUT = os.path.join("benchmarks", "results", "gpu_check.json")
#: Seconds of measuring the check allows itself by default (the command takes a little more: start-up, the last case).
DEFAULT_BUDGET_S = 480.0
#: Timing of the full check and of the CPU smoke.
FULL_STEPS = Steps(warmup=5, steps=50, repeats=3)
SMOKE_STEPS = Steps(warmup=1, steps=2, repeats=1, pipeline_images=256, batch_size=32)

#: Estimated seconds of one case on a GPU (build, tracing, warm-up, windows), to stop before the budget runs out.
_ESTIMATE_S = {"data": 10.0, "train": 20.0, "distill": 25.0, "infer": 10.0, "concurrent": 60.0}
_XLA_EXTRA_S = 30.0


def estimate_s(case: Case) -> float:
    """Rough seconds one case takes on a GPU (the budget check's guess; XLA compiles for longer)."""
    return _ESTIMATE_S[case.kind] * (1.5 if len(case.variants) > 1 else 1.0) + (_XLA_EXTRA_S if case.jit_compile else 0)


def output_paths(output: str) -> tuple[str, str]:
    """``(json, markdown)``: the record and its report beside it."""
    stem = output[:-5] if output.endswith(".json") else output
    return stem + ".json", stem + ".md"


def _result(case: Case, status: str, **values) -> dict:
    return {**dataclasses.asdict(case), "precision": case.precision, "setting": case.setting, "status": status,
            **values}


def measure_case(case: Case, steps: Steps) -> dict:
    """Measures one case (see :mod:`~kdkeras.gpu_check.measure`)."""
    from kdkeras.gpu_check import concurrent
    from kdkeras.gpu_check import measure as measure_lib

    if case.kind == "data":
        return measure_lib.measure_pipeline(steps)
    if case.kind == "concurrent":
        return concurrent.measure_concurrent(case, steps)
    return measure_lib.measure_step(case, steps)


def _skip_reason(case: Case, elapsed: float, budget_s: float, float16: bool) -> str | None:
    if case.mixed_precision and not float16:
        return "skipped: no float16 kernels here (kdkeras.host.float16_kernels)"
    if elapsed + estimate_s(case) > budget_s:
        return f"skipped: time budget ({elapsed:.0f} s of {budget_s:.0f} s spent)"
    return None


def run_check(output: str, *, smoke: bool = False, budget_s: float | None = None, concurrent_runs: int | None = None,
              steps: Steps | None = None, command: str = "", cases=None, measure_fn=None, log=print) -> dict:
    """Runs the check and writes its record (JSON) and report (Markdown); returns the record.

    Args:
        output: the JSON file (the report goes beside it, ``.md``).
        smoke: the CPU smoke: :func:`smoke_suite` and :data:`SMOKE_STEPS`.
        budget_s: seconds of measuring (default :data:`DEFAULT_BUDGET_S`); cases that would not
            fit are recorded as skipped.
        concurrent_runs: processes at once on one device (default 4; the smoke 2).
        steps: the timing (default :data:`FULL_STEPS` or :data:`SMOKE_STEPS`).
        command: the command line, recorded.
        cases: the cases (default: the suite); ``measure_fn(case, steps)``: how one is measured (tests).
        log: progress lines.
    """
    import keras
    import tensorflow as tf

    from kdkeras import host, throughput
    from kdkeras.data.specs import short_error
    from kdkeras.gpu_check import projection, report
    from kdkeras.io_utils import atomic_write_json, atomic_write_text

    # Memory growth, before TensorFlow first uses the GPU: room for the concurrent runs' processes.
    os.environ.setdefault(host.GPU_MEMORY_VARIABLE, "growth")
    memory = host.configure_gpu_memory()
    budget_s = DEFAULT_BUDGET_S if budget_s is None else float(budget_s)
    steps = steps or (SMOKE_STEPS if smoke else FULL_STEPS)
    runs = concurrent_runs or (2 if smoke else 4)
    if cases is None:
        cases = smoke_suite(runs) if smoke else full_suite(runs)
    measure_fn = measure_fn or measure_case
    json_path, md_path = output_paths(output)
    record = {
        "kind": "kdkeras gpu check", "smoke": smoke, "complete": False, "command": command,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": throughput.device_name(), "gpu": host.has_gpu(),
        "versions": f"tensorflow {tf.__version__}, keras {keras.__version__}",
        "cpu": host.cpu_info()["model"], "memory": memory, "budget_s": budget_s, "elapsed_s": 0.0,
        "steps": dataclasses.asdict(steps), "results": [], "projections": None,
    }
    tables = sorted({c.table for c in cases if c.table is not None})
    plans = {t: projection.table_plan(t) for t in tables}
    float16 = host.float16_kernels()

    def write():
        record["projections"] = projection.project(record["results"], plans) if plans else None
        atomic_write_json(json_path, record)
        atomic_write_text(md_path, report.render(record))

    start = time.monotonic()
    log(f"GPU check on {record['device']} ({record['versions']}), GPU memory {memory}; {len(cases)} cases, "
        f"budget {budget_s:.0f} s -> {json_path}")
    for i, case in enumerate(cases, start=1):
        elapsed = time.monotonic() - start
        reason = _skip_reason(case, elapsed, budget_s, float16)
        if reason:
            record["results"].append(_result(case, "skipped", error=reason[len("skipped: "):]))
            continue
        case_start = time.monotonic()
        try:
            values = measure_fn(case, steps)
            record["results"].append(_result(case, "measured", **values))
            rate = values["variants"][next(iter(values["variants"]))]["images_per_sec"]
            log(f"[{i}/{len(cases)}] {case.key}: {rate:,.1f} img/s ({time.monotonic() - case_start:.0f} s)")
        except Exception as err:  # one case failing (out of memory, a missing kernel) is recorded; the rest go on
            record["results"].append(_result(case, "failed", error=short_error(err, 300)))
            log(f"[{i}/{len(cases)}] {case.key}: failed: {short_error(err, 300)}")
        record["elapsed_s"] = round(time.monotonic() - start, 1)
        write()
    record["complete"] = True
    record["elapsed_s"] = round(time.monotonic() - start, 1)
    write()
    return record
