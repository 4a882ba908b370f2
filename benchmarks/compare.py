"""Runs scripts/bench.py for kdkeras and the PyTorch reference, interleaved, and prints a table per setting.

    python benchmarks/compare.py --rounds=2 --steps=10 > docs/benchmark_run.md
    python benchmarks/compare.py --settings=default,portable,avx2,avx2-portable   # every CPU setting

Each (setting, case, framework) runs once per round in its own process, the
frameworks and settings alternating, so slow phases of a shared machine hit
all of them; the tables report the median over rounds of each process's
median images/s.

A setting is a set of environment variables for each framework's process:

- ``default``: as the host gives it (kdkeras turns TensorFlow's oneDNN on);
- ``portable``: ``TF_ENABLE_ONEDNN_OPTS=0``, TensorFlow's own default on
  CPUs without AVX-512: kdkeras's grouped convolutions take the portable path;
- ``avx2``: oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``) in both
  frameworks and PyTorch's own kernels too (``ATEN_CPU_CAPABILITY=avx2``):
  the kernels an AVX2-only CPU runs, measured on an AVX-512 host;
- ``avx2-portable``: the AVX2 cap, and oneDNN off for TensorFlow.

PyTorch runs the same in ``default`` and ``portable`` (and in ``avx2`` and
``avx2-portable``), so it is timed once per group and shared.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [
    ("wrn22x2_R_g16 train", ["--model=wrn22x2_R_g16", "--mode=train"]),
    ("wrn22x2_R_g2 train", ["--model=wrn22x2_R_g2", "--mode=train"]),
    ("wrn22x2_NR_g16 <- wrn22x2_R_G4 distill", ["--model=wrn22x2_NR_g16", "--mode=distill", "--teacher=wrn22x2_R_G4"]),
]
EXTRA = [  # kdkeras only: the parts of a distill step, and the input pipeline
    ("wrn22x2_NR_g16 train (student alone)", ["--model=wrn22x2_NR_g16", "--mode=train"]),
    ("wrn22x2_R_G4 inference (teacher forward)", ["--model=wrn22x2_R_G4", "--mode=infer"]),
    ("input pipeline (augmented, 50k images)", ["--mode=data", "--steps=200"]),
]
_AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
#: setting -> (kdkeras's environment, PyTorch's environment, what it stands for)
SETTINGS = {
    "default": ({}, {}, "this CPU, kdkeras's default (oneDNN on)"),
    "portable": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}, "this CPU, oneDNN off (kdkeras's portable grouped path)"),
    "avx2": (_AVX2, {**_AVX2, "ATEN_CPU_CAPABILITY": "avx2"}, "AVX2 kernels, kdkeras's default (oneDNN on)"),
    "avx2-portable": ({**_AVX2, "TF_ENABLE_ONEDNN_OPTS": "0"}, {**_AVX2, "ATEN_CPU_CAPABILITY": "avx2"},
                      "AVX2 kernels, oneDNN off (portable grouped path)"),
}


def bench(args, framework, steps, repeats, env):
    command = [sys.executable, os.path.join(ROOT, "scripts", "bench.py"), *args,
               f"--framework={framework}", f"--repeats={repeats}"]
    if not any(a.startswith("--steps") for a in args):
        command.append(f"--steps={steps}")
    cleared = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
    full_env = {k: v for k, v in os.environ.items() if k not in cleared}
    full_env.update(env)
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=full_env).stdout
    return json.loads(out.strip().splitlines()[-1])


def torch_group(setting):
    """Settings whose PyTorch environment is the same share one PyTorch measurement."""
    return json.dumps(SETTINGS[setting][1], sort_keys=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", default="default",
                        help=f"comma-separated, from {', '.join(SETTINGS)} (default: default)")
    parser.add_argument("--extra", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the parts of a distill step and the input pipeline (default setting)")
    opts = parser.parse_args()
    settings = [s for s in opts.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        parser.error(f"unknown setting {', '.join(unknown) or '(none)'}. Valid choices: {', '.join(SETTINGS)}.")
    rates, hosts = {}, {}
    for r in range(opts.rounds):
        order = settings if r % 2 == 0 else settings[::-1]
        for label, args in CASES:
            torch_done = set()
            for setting in order:
                frameworks = ["keras"]
                if torch_group(setting) not in torch_done:
                    frameworks.append("torch")
                    torch_done.add(torch_group(setting))
                for framework in (frameworks if r % 2 == 0 else frameworks[::-1]):
                    env = SETTINGS[setting][0 if framework == "keras" else 1]
                    rec = bench(args, framework, opts.steps, opts.repeats, env)
                    key = torch_group(setting) if framework == "torch" else setting
                    rates.setdefault((label, framework, key), []).append(rec["images_per_sec"])
                    hosts.setdefault((framework, key), rec)
                    print(f"# round {r + 1} [{setting}] {label} [{framework}] {rec['images_per_sec']} img/s "
                          f"(windows {rec['runs']}; oneDNN {rec.get('onednn')}, "
                          f"grouped conv {rec.get('grouped_conv', '-')})", file=sys.stderr, flush=True)
    first = next(iter(hosts.values()))
    print(f"CPU: {first['cpu']} ({first['device']}; flags: {', '.join(first['cpu_flags'])}).\n")
    for setting in settings:
        keras_rec, torch_rec = hosts[("keras", setting)], hosts[("torch", torch_group(setting))]
        print(f"### {setting}: {SETTINGS[setting][2]}\n")
        print(f"kdkeras: oneDNN {keras_rec.get('onednn_reason')}, grouped convolutions "
              f"{keras_rec.get('grouped_conv')}, oneDNN ISA cap {keras_rec.get('isa_limit') or 'none'}; "
              f"PyTorch: kernels {torch_rec.get('cpu_capability')}, oneDNN ISA cap "
              f"{torch_rec.get('isa_limit') or 'none'}.\n")
        print("| case (batch 128, CPU) | kdkeras img/s | PyTorch img/s | ratio |")
        print("| --- | ---: | ---: | ---: |")
        for label, _ in CASES:
            ours = statistics.median(rates[(label, "keras", setting)])
            theirs = statistics.median(rates[(label, "torch", torch_group(setting))])
            print(f"| {label} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x |")
        print()
    if not opts.extra:
        return
    extra = {}
    for label, args in EXTRA:
        rec = bench(args, "keras", opts.steps, opts.repeats, {})
        extra[label] = rec["images_per_sec"]
        print(f"# {label}: {rec['images_per_sec']} img/s", file=sys.stderr, flush=True)
    print("| kdkeras part (default setting) | img/s |")
    print("| --- | ---: |")
    for label, _ in EXTRA:
        print(f"| {label} | {extra[label]:.1f} |")
    if "default" in settings:
        student, teacher = extra[EXTRA[0][0]], extra[EXTRA[1][0]]
        distill = statistics.median(rates[(CASES[2][0], "keras", "default")])
        budget = 1.0 / (1.0 / student + 1.0 / teacher)
        print(f"\nDistill step: {1000 * 128 / distill:.0f} ms; student step + teacher forward: "
              f"{1000 * 128 / budget:.0f} ms; ratio {budget / distill:.2f} (<= 1.10 wanted: "
              f"{1.0 / distill <= 1.10 / budget}).")


if __name__ == "__main__":
    main()
