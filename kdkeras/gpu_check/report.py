"""The GPU check's record as Markdown tables: the figures docs/benchmarks.md quotes, ready to commit."""

from __future__ import annotations

NA = "n/a"


def _num(value, digits: int = 1) -> str:
    if value is None:
        return NA
    if isinstance(value, list):
        return ", ".join(_num(v, digits) for v in value) if value else NA
    return f"{value:,.{digits}f}"


def _batch(batch_size) -> str:
    return f"batch {batch_size}" if batch_size else "each recipe's batch (the paper's 128, the crd recipe's 64)"


def _rate(result: dict, variant: str = "step"):
    return ((result.get("variants") or {}).get(variant) or {}).get("images_per_sec")


def _ratio(a, b, digits: int = 2) -> str:
    return f"{a / b:.{digits}f}x" if a and b else NA


def _find(results, **match):
    for result in results:
        if result.get("status") == "measured" and all(result.get(k) == v for k, v in match.items()):
            return result
    return None


def render(record: dict) -> str:
    """The whole report (Markdown)."""
    results = record.get("results", [])
    smoke = " (CPU smoke: tiny networks, the figures mean nothing)" if record.get("smoke") else ""
    lines = [f"# kdkeras GPU check{smoke}",
             "",
             f"Device: {record.get('device')}; {record.get('versions')}; "
             f"{_batch(record['steps'].get('batch_size'))}; "
             f"{record['steps']['warmup']} warm-up steps, then {record['steps']['repeats']} windows of "
             f"{record['steps']['steps']} steps (median); GPU memory: {record.get('memory')}.",
             f"Command: `{record.get('command')}`; {record.get('started_at')}; "
             f"{record.get('elapsed_s', 0):.0f} s of a {record.get('budget_s', 0):.0f} s budget; "
             f"{sum(r['status'] == 'measured' for r in results)} measured, "
             f"{sum(r['status'] == 'skipped' for r in results)} skipped, "
             f"{sum(r['status'] == 'failed' for r in results)} failed"
             f"{'' if record.get('complete') else ' (incomplete: the check was still running or was stopped)'}.",
             ""]
    lines += _throughput(results)
    lines += _fed(results)
    lines += _host_sync(results)
    lines += _comparisons(results)
    lines += _concurrent(results)
    lines += _projections(record, results)
    skipped = [r for r in results if r["status"] != "measured"]
    if skipped:
        lines += ["## Not measured", ""]
        lines += [f"- {r['key']}: {r['status']}{' (' + r['error'] + ')' if r.get('error') else ''}" for r in skipped]
        lines.append("")
    return "\n".join(lines)


def _throughput(results) -> list[str]:
    lines = ["## Images per second", "",
             "| case | section | setting | img/s | step ms | peak GPU MiB | build s |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r["status"] != "measured" or r["kind"] == "concurrent":
            continue
        step = (r.get("variants") or {}).get("step") or {}
        lines.append(f"| {r['key']} | {r['section']} | {r.get('setting', '')} | {_num(step.get('images_per_sec'))} | "
                     f"{_num(step.get('step_ms'), 2)} | {_num(r.get('peak_gpu_mib'))} | {_num(r.get('build_s'))} |")
    return lines + [""]


def _fed(results) -> list[str]:
    pipeline = _find(results, kind="data")
    fed = [r for r in results if r["status"] == "measured" and "fed" in (r.get("variants") or {})]
    if not pipeline and not fed:
        return []
    lines = ["## Is the GPU fed?", "",
             f"The augmented input pipeline alone: {_num(_rate(pipeline) if pipeline else None)} img/s "
             f"(synthetic, CIFAR-sized, batch 128, iterated on the host).", "",
             "| case | step alone img/s | fed by the pipeline img/s | fed / alone | pipeline / step |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in fed:
        alone, fed_rate = _rate(r), _rate(r, "fed")
        lines.append(f"| {r['key']} | {_num(alone)} | {_num(fed_rate)} | {_ratio(fed_rate, alone)} | "
                     f"{_ratio(_rate(pipeline) if pipeline else None, alone)} |")
    return lines + [""]


def _host_sync(results) -> list[str]:
    cases = [r for r in results if r["status"] == "measured" and "host_sync" in (r.get("variants") or {})]
    if not cases:
        return []
    lines = ["## A host read per step", "",
             "A callback with per-step work that is not `async_safe` makes Keras read every step's logs on the "
             "host in the training loop (`keras.callbacks.CallbackList`).", "",
             "| case | no per-step callback img/s | with one img/s | cost | run callbacks that read per step |",
             "| --- | ---: | ---: | ---: | --- |"]
    for r in cases:
        a, b = _rate(r), _rate(r, "host_sync")
        cost = f"{100.0 * (a - b) / a:+.1f}%" if a and b else NA
        syncing = r.get("run_callbacks_host_syncing")
        lines.append(f"| {r['key']} | {_num(a)} | {_num(b)} | {cost} | "
                     f"{', '.join(syncing) if syncing else ('none' if syncing is not None else NA)} |")
    return lines + [""]


def _comparisons(results) -> list[str]:
    """Each non-reference setting of the reference networks against the same network at fp32."""
    rows = []
    for r in results:
        if r["status"] != "measured" or r["section"] not in ("precision", "strategy", "steps_per_execution"):
            continue
        base = _find(results, section="reference", kind=r["kind"], model=r["model"])
        rows.append(f"| {r['key']} | {r['section']} | {_num(_rate(base) if base else None)} | {_num(_rate(r))} | "
                    f"{_ratio(_rate(r), _rate(base) if base else None)} | {_num(r.get('peak_gpu_mib'))} |")
    if not rows:
        return []
    return ["## Settings against fp32, no strategy, one step per call", "",
            "| case | question | fp32 img/s | this setting img/s | speed-up | peak GPU MiB |",
            "| --- | --- | ---: | ---: | ---: | ---: |", *rows, ""]


def _concurrent(results) -> list[str]:
    r = _find(results, kind="concurrent")
    if not r:
        return []
    variants = r["variants"]
    many = next(k for k in variants if k != "1 run")
    return ["## Several runs on one device", "",
            f"{r['key']}, memory growth in each process: 1 run {_num(variants['1 run']['images_per_sec'])} img/s; "
            f"{many} at once {_num(variants[many]['images_per_sec'])} img/s in all "
            f"({_num(variants[many].get('per_run'))} each): {r['speedup']:.2f}x the throughput of one. "
            f"Peak GPU MiB per process: {_num(r.get('peak_gpu_mib'))}.", ""]


def _projections(record, results) -> list[str]:
    projection = record.get("projections")
    if not projection:
        return []
    lines = ["## Projected GPU-hours (one seed, training steps only)", "",
             "Each table's runs (`kdkeras grid --table=N --dry_run`) x their epochs x 50,000 images; hard-target "
             "runs at the training rate of `<net>_R_g2`, KD runs at the distillation rate of "
             "`<net>_NR_g2 <- <net>_R_G16` (the g2 networks: the most multiply-adds).", "",
             "| table | network | runs | hours by setting | fastest |", "| --- | --- | ---: | --- | ---: |"]
    for table, t in sorted(projection["tables"].items(), key=lambda kv: int(kv[0])):
        by_setting = "; ".join(f"{s} {h:,.1f} h" for s, h in t["hours"].items()) or "not measured"
        fastest = f"{t['hours'][t['fastest']]:,.1f} h ({t['fastest']})" if t["fastest"] else NA
        lines.append(f"| {table} | {t['net']} | {sum(t['runs'].values())} | {by_setting} | {fastest} |")
    paper = projection["paper"]
    total = "; ".join(f"{s} {h:,.1f} h" for s, h in paper["hours"].items()) or "not every table measured"
    fastest = f"{paper['fastest_hours']:,.1f} h" if paper.get("fastest_hours") is not None else NA
    lines.append(f"| all | Tables 1-6 | {sum(sum(t['runs'].values()) for t in projection['tables'].values())} | "
                 f"{total} | {fastest} |")
    infer = _find(results, kind="infer")
    train = _find(results, section="reference", kind="train")
    if infer and train:
        share = (10_000 / _rate(infer)) / (50_000 / _rate(train))
        lines += ["", f"Evaluation on top: on {infer['model']}, 10,000 test images at {_num(_rate(infer))} img/s "
                      f"(inference) per 50,000 training images at {_num(_rate(train))} img/s is "
                      f"{100 * share:.1f}% more per hard-target epoch (a KD run's evaluation also runs its teacher)."]
    return lines + [""]
