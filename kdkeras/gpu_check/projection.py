"""GPU-hours of the paper's Tables 1-6 from measured rates: runs x epochs x images / images per second.

Each table's runs are its grid's plan (``kdkeras grid --table=N --dry_run``:
17 hard-target runs and 36 KD runs, one seed, the paper's recipe: 120
epochs, 300 for MobileNetV2's KD students). A hard-target run is priced at
the measured training rate of the table's ``<net>_R_g2``, a KD run at the
distillation rate of ``<net>_NR_g2`` from ``<net>_R_G16``
(:mod:`kdkeras.gpu_check.cases`), each at one setting (fp32, mixed
precision, with or without XLA). Only the training steps are counted: each
epoch's evaluation of the 10,000 test images comes on top (the report gives
its share on the reference network, from the measured inference rate).
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def table_plan(table: int) -> dict:
    """``{"net", "runs": {kind: n}, "epochs": {kind: total}, "images": {kind: total}}`` of a paper table's grid.

    ``images``: training images over all epochs of all runs of that kind
    (epochs x the training split, CIFAR-100's 50,000).
    """
    from kdkeras import grid
    from kdkeras.data.specs import SPECS

    spec = grid.load_grid(grid.table_config_path(table))
    out = {"net": spec.net, "runs": {}, "epochs": {}, "images": {}}
    for cell in grid.plan(spec, "logs"):  # the run folders' names only; nothing is read or written
        config = cell.config
        examples = config.train_size or SPECS[config.dataset].train_examples - (config.val_size or 0)
        out["runs"][cell.kind] = out["runs"].get(cell.kind, 0) + 1
        out["epochs"][cell.kind] = out["epochs"].get(cell.kind, 0) + config.epochs
        out["images"][cell.kind] = out["images"].get(cell.kind, 0) + config.epochs * examples
    return out


def rates_by_table(results: list[dict]) -> dict:
    """``{table: {setting: {"baseline": img/s, "kd": img/s}}}`` of the measured cases that price a table."""
    found = {}
    for result in results:
        if result.get("status") != "measured" or result.get("table") is None:
            continue
        if result["strategy"] != "none" or result["steps_per_execution"] != 1:
            continue  # a table is priced at plain runs' settings
        kind = {"train": "baseline", "distill": "kd"}.get(result["kind"])
        if kind is None:
            continue
        setting = result["precision"] + ("+xla" if result["jit_compile"] else "")
        found.setdefault(result["table"], {}).setdefault(setting, {})[kind] = \
            result["variants"]["step"]["images_per_sec"]
    return found


def project(results: list[dict], plans: dict) -> dict:
    """GPU-hours per table and setting, the fastest setting of each table, and the whole paper.

    Args:
        results: the check's case results.
        plans: ``{table: table_plan(table)}``.

    Returns:
        ``{"tables": {table: {"net", "runs", "epochs", "hours": {setting: h}, "fastest": setting}},
        "paper": {"hours": {setting: h}, "fastest_hours": h, "tables": [...]}}``; a setting appears
        where both of a table's rates were measured; the paper's total where every table has it.
    """
    rates = rates_by_table(results)
    tables = {}
    for table, plan in plans.items():
        hours = {}
        for setting, kinds in sorted(rates.get(table, {}).items()):
            if set(kinds) >= set(plan["images"]):
                hours[setting] = round(sum(plan["images"][k] / kinds[k] for k in plan["images"]) / 3600.0, 2)
        tables[table] = {"net": plan["net"], "runs": plan["runs"], "epochs": plan["epochs"], "hours": hours,
                         "fastest": min(hours, key=hours.get) if hours else None}
    common = set.intersection(*(set(t["hours"]) for t in tables.values())) if tables else set()
    paper = {"hours": {s: round(sum(t["hours"][s] for t in tables.values()), 2) for s in sorted(common)},
             "tables": sorted(tables)}
    complete = tables and all(t["fastest"] for t in tables.values())
    paper["fastest_hours"] = round(sum(t["hours"][t["fastest"]] for t in tables.values()), 2) if complete else None
    return {"tables": tables, "paper": paper}
