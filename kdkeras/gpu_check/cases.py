"""The GPU check's measurements, in the order they run, and the CPU smoke's tiny version of them.

The order puts one measurement of each question first (is the GPU fed?
does a per-step host read cost? mixed precision? XLA? MirroredStrategy?
several runs per GPU? ``steps_per_execution``?), then the networks of the
paper's Tables 1-6 (for the GPU-hour projections), then the rest of the
precision and XLA matrix, the standard zoo's usual pairs and mixed precision
on every table's networks. A check cut short by its time budget has
answered the first questions.

Every table is priced at its g2 networks, the grouping with the most
multiply-adds (Table 8): hard-target runs at the training rate of
``<net>_R_g2``, KD runs at the distillation rate of ``<net>_NR_g2`` from
``<net>_R_G16``, the left-half teacher with the most (docs/reproduction.md,
"Cost", prices the CPU the same way).
"""

from __future__ import annotations

import dataclasses

#: The table whose networks are the reference of the precision, XLA, strategy and host-sync measurements.
REFERENCE_TABLE = 3
#: The paper's tables priced by the check.
TABLES = (1, 2, 3, 4, 5, 6)
#: Pairs of the standard zoo measured by the full check: the first ones of this pair grid (CRD's Table 1).
ZOO_GRID = "configs/benchmarks/cifar100_crd.yaml"
ZOO_PAIRS = 4
#: The small run of the several-runs-per-GPU measurement (the reduced grids' network, docs/reproduction.md).
SMALL_RUN = "wrn16x1_R_g2"
#: The network that stands for every table in the CPU smoke.
SMOKE_NET = "wrn10x1"

#: The questions (``Case.section``) in the order the check first asks them.
SECTIONS = ("pipeline", "reference", "precision", "strategy", "concurrent", "steps_per_execution", "tables", "zoo")

#: What one window of a case measures: the compiled step on one constant batch (``step``), the same
#: with a callback that has per-step work (``host_sync``: Keras reads every step's logs on the host), and
#: the step fed by the run's augmented training pipeline (``fed``).
VARIANTS = ("step", "host_sync", "fed")


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement of the check.

    Attributes:
        key: unique name, e.g. ``train wrn22x2_R_g2 fp32``.
        section: the question it answers (``pipeline``, ``reference``, ``precision``, ``strategy``,
            ``concurrent``, ``steps_per_execution``, ``tables``, ``zoo``).
        kind: ``data``, ``train``, ``distill``, ``infer`` or ``concurrent``.
        model: the model (the student for ``distill``).
        teacher: the teacher of ``distill``.
        mixed_precision: the ``mixed_float16`` policy.
        jit_compile: XLA for the train step.
        strategy: ``none`` or ``mirrored`` (MirroredStrategy over the first device).
        steps_per_execution: training steps per compiled call.
        variants: what its windows measure, round-robin on one model (:data:`VARIANTS`).
        recipe: the recipe (``None``: the model's own; the zoo's is ``crd``, batch 64).
        table: the paper table this case prices (its g2 networks), or ``None``.
        runs: processes at once on one device (``concurrent``).
    """

    key: str
    section: str
    kind: str
    model: str | None = None
    teacher: str | None = None
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: str = "none"
    steps_per_execution: int = 1
    variants: tuple = ("step",)
    recipe: str | None = None
    table: int | None = None
    runs: int = 1

    @property
    def precision(self) -> str:
        return "mixed_float16" if self.mixed_precision else "fp32"

    @property
    def setting(self) -> str:
        """The settings that change a step's speed, e.g. ``mixed_float16+xla``, ``fp32 mirrored spe=23``."""
        parts = [self.precision + ("+xla" if self.jit_compile else "")]
        if self.strategy != "none":
            parts.append(self.strategy)
        if self.steps_per_execution != 1:
            parts.append(f"spe={self.steps_per_execution}")
        return " ".join(parts)


def table_nets() -> dict[int, str]:
    """``{table: network}`` of the paper's grid configs (``configs/tables/``)."""
    from kdkeras import grid

    return {t: grid.load_grid(grid.table_config_path(t)).net for t in TABLES}


def zoo_pairs(count: int = ZOO_PAIRS) -> list[tuple[str, str]]:
    """``[(teacher, student)]``: the first ``count`` pairs of :data:`ZOO_GRID`."""
    from kdkeras import grid

    spec = grid.load_grid(grid.resolve_config_path(ZOO_GRID))
    return [(pair["teacher"], pair["student"]) for pair in spec.pairs[:count]]


def _train(net, table=None, section="tables", **settings) -> Case:
    case = Case("", section, "train", f"{net}_R_g2", table=table, **settings)
    return dataclasses.replace(case, key=f"train {case.model} {case.setting}")


def _distill(net, table=None, section="tables", **settings) -> Case:
    case = Case("", section, "distill", f"{net}_NR_g2", f"{net}_R_G16", table=table, **settings)
    return dataclasses.replace(case, key=f"distill {case.model} <- {case.teacher} {case.setting}")


def _suite(nets: dict[int, str], reference: int, small_run: str, concurrent_runs: int, spe: int,
           zoo: list[tuple[str, str]]) -> list[Case]:
    ref = nets[reference]
    compare = ("step", "host_sync", "fed")
    cases = [
        Case("input pipeline", "pipeline", "data"),
        _train(ref, reference, "reference", variants=compare),
        _distill(ref, reference, "reference", variants=compare),
        _train(ref, reference, "precision", mixed_precision=True),
        _train(ref, reference, "precision", jit_compile=True),
        _train(ref, reference, "strategy", strategy="mirrored"),
        Case(f"{concurrent_runs} runs of {small_run} on one device", "concurrent", "concurrent", small_run,
             runs=concurrent_runs),
        _train(ref, reference, "steps_per_execution", steps_per_execution=spe),
    ]
    for table, net in nets.items():  # every table's networks, for its projection
        if table != reference:
            cases += [_train(net, table), _distill(net, table)]
    cases.append(Case(f"infer {ref}_R_g2 fp32", "reference", "infer", f"{ref}_R_g2"))
    cases += [
        _distill(ref, reference, "precision", mixed_precision=True),
        _distill(ref, reference, "precision", jit_compile=True),
        _train(ref, reference, "precision", mixed_precision=True, jit_compile=True),
        _distill(ref, reference, "precision", mixed_precision=True, jit_compile=True),
        _distill(ref, reference, "strategy", strategy="mirrored"),
        _distill(ref, reference, "steps_per_execution", steps_per_execution=spe),
    ]
    for teacher, student in zoo:
        cases.append(Case(f"train {student} fp32 (crd recipe)", "zoo", "train", student, recipe="crd"))
        cases.append(Case(f"distill {student} <- {teacher} fp32 (crd recipe)", "zoo", "distill", student, teacher,
                          recipe="crd"))
    for table, net in nets.items():  # mixed precision everywhere: the projection at that setting
        if table != reference:
            cases += [_train(net, table, mixed_precision=True), _distill(net, table, mixed_precision=True)]
    return cases


def full_suite(concurrent_runs: int = 4) -> list[Case]:
    """The GPU check, most informative first (see the module docstring)."""
    from kdkeras import runtime

    spe = runtime.steps_per_execution(None, _cifar_steps_per_epoch(128), gpu=True)  # the GPU default: 23
    return _suite(table_nets(), REFERENCE_TABLE, SMALL_RUN, concurrent_runs, spe, zoo_pairs())


def smoke_suite(concurrent_runs: int = 2) -> list[Case]:
    """The CPU smoke: each kind of measurement once, on :data:`SMOKE_NET` standing for the reference table.

    Every code path of the full check but two settings: XLA and float16
    take tens of seconds per step or compilation on a CPU (XLA's CPU grouped
    convolution; float16 CPU kernels), so the smoke leaves them out; they are
    compile options of the same :func:`kdkeras.throughput.build_step`.
    """
    net, ref, compare = SMOKE_NET, REFERENCE_TABLE, ("step", "host_sync", "fed")
    return [
        Case("input pipeline", "pipeline", "data"),
        _train(net, ref, "reference", variants=compare),
        _distill(net, ref, "reference"),
        _train(net, ref, "strategy", strategy="mirrored"),
        Case(f"{concurrent_runs} runs of {net}_R_g2 on one device", "concurrent", "concurrent", f"{net}_R_g2",
             runs=concurrent_runs),
        _train(net, ref, "steps_per_execution", steps_per_execution=2),
        Case(f"infer {net}_R_g2 fp32", "reference", "infer", f"{net}_R_g2"),
    ]


def _cifar_steps_per_epoch(batch_size: int) -> int:
    from kdkeras.data.specs import SPECS

    return -(-SPECS["cifar100"].train_examples // batch_size)
