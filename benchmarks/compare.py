"""Runs scripts/bench.py for kdkeras and the PyTorch reference, interleaved, and prints a table.

    python benchmarks/compare.py --rounds=2 --steps=10 > docs/benchmark_run.md

Each (case, framework) pair runs once per round in its own process, the
frameworks alternating, so slow phases of a shared machine hit both; the
table reports the median over rounds of each process's median images/s.
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


def bench(args, framework, steps, repeats):
    command = [sys.executable, os.path.join(ROOT, "scripts", "bench.py"), *args,
               f"--framework={framework}", f"--repeats={repeats}"]
    if not any(a.startswith("--steps") for a in args):
        command.append(f"--steps={steps}")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    rates = {}
    for r in range(opts.rounds):
        for label, args in CASES:
            for framework in (("keras", "torch") if r % 2 == 0 else ("torch", "keras")):
                rec = bench(args, framework, opts.steps, opts.repeats)
                rates.setdefault((label, framework), []).append(rec["images_per_sec"])
                print(f"# round {r + 1}: {label} [{framework}] {rec['images_per_sec']} img/s "
                      f"(windows {rec['runs']})", file=sys.stderr, flush=True)
    for label, args in EXTRA:
        rec = bench(args, "keras", opts.steps, opts.repeats)
        rates[(label, "keras")] = [rec["images_per_sec"]]
        print(f"# {label}: {rec['images_per_sec']} img/s", file=sys.stderr, flush=True)

    print("| case (batch 128, CPU) | kdkeras img/s | PyTorch img/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for label, _ in CASES:
        ours = statistics.median(rates[(label, "keras")])
        theirs = statistics.median(rates[(label, "torch")])
        print(f"| {label} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x |")
    print()
    print("| kdkeras part | img/s |")
    print("| --- | ---: |")
    for label, _ in EXTRA:
        print(f"| {label} | {rates[(label, 'keras')][0]:.1f} |")
    student = rates[(EXTRA[0][0], "keras")][0]
    teacher = rates[(EXTRA[1][0], "keras")][0]
    distill = statistics.median(rates[(CASES[2][0], "keras")])
    budget = 1.0 / (1.0 / student + 1.0 / teacher)
    print(f"\nDistill step: {1000 * 128 / distill:.0f} ms; student step + teacher forward: "
          f"{1000 * 128 / budget:.0f} ms; ratio {budget / distill:.2f} (<= 1.10 wanted: "
          f"{1.0 / distill <= 1.10 / budget}).")


if __name__ == "__main__":
    main()
