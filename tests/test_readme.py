"""README.md's examples, run as tests so that the README cannot drift from the code.

Every command line of README.md's ```bash blocks is read at test time and
run as a subprocess (one test each), from a scratch folder, on tiny settings
that this file injects by the rules of :data:`RULES`: synthetic data instead
of the CIFAR archive, one epoch of 64 training and 32 test images, two bench
steps, and so on. A command of a script :data:`RULES` does not know, or with
a flag its rule does not know, fails: a new README line cannot go untested
silently. Every other line of those blocks is accounted for in
:func:`test_every_readme_shell_line_is_run_or_accounted_for`.

Commands that read earlier runs (``--run=logs/cifar100/<run>``) get the run
that the README command making ``<run>`` makes on the same tiny settings, in
the same scratch folder: synthetic runs live in ``logs/synthetic/`` and their
names end in a settings hash (``<run>-<hash>``). Each command runs once per
session (:class:`Workspace`), whichever test asks for it first.

The ```python blocks run too: each ``print(...)  # <text>`` line must print
exactly ``<text>``, and the "Python API" block runs after the textual
substitutions of :data:`API_SUBSTITUTIONS` (tiny synthetic data, one epoch).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
from helpers import ROOT, run_command, script_env

README = os.path.join(ROOT, "README.md")
#: Seconds one command may take (the grids train up to a dozen tiny runs).
TIMEOUT = 1200
#: The tiny settings of every training run.
TINY = ("--epochs=1", "--train_size=64", "--test_size=32", "--batch_size=32")


# --------------------------------------------------------------------------
# Reading README.md
# --------------------------------------------------------------------------


def _blocks(lang):
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(rf"^```{lang}[ \t]*\n(.*?)^```", text, flags=re.M | re.S)


def _split_comment(line):
    """``(command, comment)``: the comment starts at a ``#`` outside quotes, at the start or after a blank."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


@dataclass(frozen=True)
class Command:
    """One README command that the tests run."""

    text: str  # as the README writes it, without its comment
    comment: str  # the README's trailing comment ("" if none)
    script: str  # scripts/<script>.py runs it
    program: tuple  # the argv prefix: the script or `kdkeras <tool>`
    args: tuple  # the flags (and a trailing `> FILE`)

    def flags(self):
        """``{name: value}`` of the ``--name=value`` / ``--name`` flags (value ``None``)."""
        out = {}
        for token in self.args:
            if token.startswith("--"):
                name, _, value = token[2:].partition("=")
                out[name] = value if "=" in token else None
        return out


def _classify(segment, comment):
    """``("run", Command)`` or ``(kind, text)`` for one shell command of the README."""
    tokens = shlex.split(segment)
    if tokens[0] == "pip":
        return "install", segment
    if tokens[:3] == ["python", "-m", "pytest"]:
        return "test suite", segment
    if re.match(r"^[A-Z_]+=", tokens[0]):
        return "environment", segment
    if tokens[0] == "python" and len(tokens) > 1 and re.fullmatch(r"scripts/\w+\.py", tokens[1]):
        script = tokens[1][len("scripts/"):-len(".py")]
        return "run", Command(segment, comment, script, (sys.executable, os.path.join(ROOT, tokens[1])),
                              tuple(tokens[2:]))
    if tokens[0] == "kdkeras" and len(tokens) > 1:
        from kdkeras.commands import SCRIPT_NAMES

        # `python -m kdkeras` is the installed `kdkeras` command (tests/test_wheel.py runs the real one).
        return "run", Command(segment, comment, SCRIPT_NAMES.get(tokens[1], tokens[1]),
                              (sys.executable, "-m", "kdkeras", tokens[1]), tuple(tokens[2:]))
    return "unknown", segment


def readme_shell_lines():
    """``[(kind, text or Command)]`` for every command of README.md's ```bash blocks, in order."""
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            command, comment = _split_comment(line)
            if not command:
                continue  # blank or comment line
            for segment in re.split(r"\s+&&\s+", command):
                out.append(_classify(segment, comment))
    return out


COMMANDS = [item for kind, item in readme_shell_lines() if kind == "run"]


# --------------------------------------------------------------------------
# The rewriting rules
# --------------------------------------------------------------------------


class Context:
    """One command's rewriting: its README flags, and the environment or skip reason its rules set."""

    def __init__(self, workspace, command):
        self.workspace = workspace
        self.command = command
        self.flags = command.flags()
        self.env = {}
        self.skip = None


def _token(name, value):
    return f"--{name}" if value is None else f"--{name}={value}"


def keep(name, value, ctx):
    return [_token(name, value)]


def drop(name, value, ctx):
    """Dropped: the rule's added flags set it (e.g. ``--epochs`` from :data:`TINY`)."""
    return []


def to(new):
    """The flag with the value ``new``."""
    return lambda name, value, ctx: [_token(name, new)]


def synthetic_data(name, value, ctx):
    """``--archive=...`` (the real CIFAR) -> ``--dataset=synthetic``."""
    return ["--dataset=synthetic"]


def run_folders(name, value, ctx):
    """``logs/cifar100/<run>[,...]`` -> the synthetic runs the README commands make (:meth:`Workspace.run_dir`)."""
    return [_token(name, ",".join(ctx.workspace.run_dir(ref) for ref in value.split(",")))]


def synthetic_classes(name, value, ctx):
    """CIFAR-100 class names -> as many of the synthetic dataset's (``class_0``, ``class_1``, ...)."""
    return [_token(name, ",".join(f"class_{i}" for i in range(len(value.split(",")))))]


#: A teacher given by file -> the model.keras of this README run, copied to that path in the scratch folder.
TEACHER_FILES = {"path/to/teacher.keras": "logs/cifar100/wrn22x2_R_G4-s0"}


def teacher(name, value, ctx):
    if value.endswith(".keras"):
        if value not in TEACHER_FILES:
            pytest.fail(f"{ctx.command.text}: no rule provides the teacher file {value} (TEACHER_FILES)")
        ctx.workspace.provide_file(value, os.path.join(ctx.workspace.run_dir(TEACHER_FILES[value]), "model.keras"))
    return [_token(name, value)]


#: CINIC-10's classes: ``--data_dir=~/data/cinic10`` is a tiny folder of them, under a scratch HOME.
CINIC10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def image_folder(name, value, ctx):
    """``--data_dir=~/...`` with ``--dataset=folder``: a tiny image folder there, HOME being a scratch folder."""
    if ctx.flags.get("dataset") != "folder" or not value.startswith("~/"):
        pytest.fail(f"{ctx.command.text}: no rule for --data_dir={value} (only ~/... with --dataset=folder)")
    ctx.env["HOME"] = ctx.workspace.home
    ctx.workspace.image_folder(os.path.join(ctx.workspace.home, value[2:]))
    return [_token(name, value)]


def torch_framework(name, value, ctx):
    try:
        import torch  # noqa: F401
    except ImportError:
        ctx.skip = "--framework=torch needs PyTorch, which is not installed"
    return [_token(name, value)]


def torch_checkpoint(name, value, ctx):
    """``--checkpoint=<path>.pth``: a RepDistiller-style checkpoint of the command's model there (needs PyTorch)."""
    try:
        import torch
    except ImportError:
        ctx.skip = "convert reads PyTorch checkpoints, and PyTorch is not installed"
        return [_token(name, value)]
    from tests.models.torch_reference.cifar_resnet import CifarResNet

    target = os.path.join(ctx.workspace.root, value)
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        torch.save({"model": CifarResNet(ctx.flags["model"], num_classes=100, residual=True).state_dict()}, target)
    return [_token(name, value)]


def check_convert(result, workspace):
    assert re.search(r"^Wrote \S+\.keras: ", result.stdout, re.M), result.stdout[-3000:] + result.stderr[-3000:]


def training_data(ctx):
    """A training run reads synthetic data unless the command names another dataset."""
    return [] if "dataset" in ctx.flags or "archive" in ctx.flags else ["--dataset=synthetic"]


#: embed's silhouette score needs two test images of each class it shows: the README runs that embed
#: reads get a test split of 200 images, two of each of the 100 synthetic classes.
EMBED_TEST_SIZE = 200


def tiny_run(ctx):
    tiny = list(TINY)
    embedded = {_run_ref(c.flags()["run"]) for c in COMMANDS if c.script == "embed" and "run" in c.flags()}
    if readme_runs(ctx.command) & embedded:
        tiny[tiny.index("--test_size=32")] = f"--test_size={EMBED_TEST_SIZE}"
    return [*training_data(ctx), *tiny]


#: Extra settings of the README's grid configs that train (on top of :data:`TINY` and synthetic data).
GRID_CONFIGS = {}
#: README grid configs run as ``--dry_run``: the config loads and its plan is checked, nothing trains.
#: The smoke grid trains end to end through this same script in tests/training/test_faults.py (killed
#: mid-way, resumed, its tables written) and in-process in tests/test_grid.py; the reduced-scale grids are
#: 24 and 32 runs, minutes even at one tiny epoch each.
PLANNED_ONLY = {"configs/smoke_grid.yaml", "configs/reduced/cifar10_wrn.yaml", "configs/reduced/cifar100_wrn.yaml"}


def _grid_dry_run(ctx):
    return "dry_run" in ctx.flags or ctx.flags.get("config") in PLANNED_ONLY


def grid_archive(name, value, ctx):
    """A dry run reads no data: its ``--archive`` stays; a grid that trains gets synthetic data."""
    return keep(name, value, ctx) if _grid_dry_run(ctx) else synthetic_data(name, value, ctx)


def cpu_workers(name, value, ctx):
    """``--cpu_workers=N`` -> at most the cores this machine lets the test use (a 1-core runner: 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return [_token(name, str(min(int(value), cores)))]


def grid_extra(ctx):
    if "dry_run" in ctx.flags:
        return []  # prints the plan, reads no data: runs as written
    config = ctx.flags.get("config")
    if config in PLANNED_ONLY:
        return ["--dry_run"]
    if config not in GRID_CONFIGS:
        pytest.fail(f"{ctx.command.text}: no rule shrinks this grid (only --config= of GRID_CONFIGS or "
                    "PLANNED_ONLY, or --dry_run)")
    return [*training_data(ctx), *TINY, *GRID_CONFIGS[config]]


@dataclass(frozen=True)
class Rule:
    """How the commands of one script are shrunk: an action per flag, and flags to add."""

    flags: dict
    add: object = None  # Context -> extra flags
    slow: object = True  # trains (or takes minutes): a function of the command's flags, or a constant
    check: object = None  # (result, workspace) -> None, asserts on the output

    def is_slow(self, command):
        return self.slow(command.flags()) if callable(self.slow) else self.slow


# --------------------------------------------------------------------------
# What the output of each script must show
# --------------------------------------------------------------------------


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def check_run(result, workspace):
    """A training run ends with its result line."""
    assert re.search(r"^Finished \S+: test_accuracy=\d\.\d{4} ", result.stdout, re.M), result.stdout[-3000:]


def check_profile(result, workspace):
    flags = result.command.flags()
    if "model" in flags:
        assert re.search(rf"^{flags['model']}: [\d,]+ trainable parameters \(.*\), [\d,]+ multiply-accumulates",
                         result.stdout, re.M), result.stdout[-3000:]
    if "table" in flags:
        assert "Table 8: FLOPs" in result.stdout and "Table 9: parameters" in result.stdout
        # Both tables, every cell of the PROFILED rows (tests/test_profiling.py checks all 216).
        assert f"0 of {2 * PROFILED_COUNT} cells differ from the paper" in result.stdout, result.stdout[-3000:]
    if "standard" in flags:
        rows = [line.split() for line in _lines(result.stdout)]
        assert [row[0] for row in rows] == list(PROFILED_STANDARD), rows
        assert rows[0][1] == "83,892", rows  # RepDistiller's resnet8 (tests/test_profiling.py: all 22)
    if "csv" in flags:
        rows = _lines(result.stdout)
        assert rows[0] == "model,params,macs" and len(rows) == 1 + PROFILED_COUNT, rows[:3]
        assert all(re.fullmatch(r"\w+,\d+,\d+", row) for row in rows[1:]), rows[:3]


def check_grid(result, workspace):
    if "--dry_run" in result.argv:
        match = re.search(r"^Grid \S+: (\d+) runs", result.stdout, re.M)
        assert match and re.search(rf"^  {match.group(1)} to do$", result.stdout, re.M), result.stdout[-3000:]
        claimed = re.search(r"the (\d+) runs", result.command.comment)
        if claimed:  # "# the 53 runs of Table 3"
            assert match.group(1) == claimed.group(1), result.stdout[-3000:]
        assert not result.new_paths, result.new_paths  # a dry run writes nothing
        given = [a for a in result.argv if a.startswith("--cpu_workers=")]
        if given:  # the workers it would start, a line each
            workers = int(given[0].partition("=")[2])
            assert re.search(rf"^{workers} workers on CPUs \S+:$", result.stdout, re.M), result.stdout[-3000:]
            assert len(re.findall(r"^  worker \d+: CPU", result.stdout, re.M)) == workers, result.stdout[-3000:]
        return
    match = re.search(r"^Tables written to (\S+)$", result.stdout, re.M)
    assert match, result.stdout[-3000:]
    tables = os.path.join(workspace.root, match.group(1))
    assert os.path.isfile(os.path.join(tables, "table.md")), os.listdir(tables)
    assert re.search(r"^\S+: \d+ trained", result.stdout, re.M), result.stdout[-3000:]


def check_bench(result, workspace):
    record = json.loads(_lines(result.stdout)[-1])  # "last line is JSON"
    flags = result.command.flags()
    assert record["mode"] == flags.get("mode", "train") and record["images_per_sec"] > 0, record
    assert record["model"] == flags["model"], record
    if "methods" in flags:
        methods = flags["methods"].split(",")
        assert list(record["methods"]) == methods, record
        assert record["methods"][methods[0]]["step_time_vs_kd"] == 1.0, record
        assert all(m["step_time_vs_kd"] > 0 for m in record["methods"].values()), record


def _written(result, label, workspace):
    """The file a ``<label>: <path>`` line of the output names; it must exist."""
    match = re.search(rf"^{label}: (\S+)", result.stdout, re.M)
    assert match, result.stdout[-3000:]
    path = os.path.join(workspace.root, match.group(1))
    assert os.path.isfile(path), path
    return path


def check_embed(result, workspace):
    assert re.search(r"^\d+ test images of class_0, class_1, class_2$", result.stdout, re.M), result.stdout[-3000:]
    assert re.search(r"silhouette=-?\d\.\d{4} accuracy=\d\.\d{4}", result.stdout), result.stdout[-3000:]
    assert _written(result, "Scatter", workspace).endswith(".png")


def check_landscape(result, workspace):
    flags = result.command.flags()
    run = workspace.run_dir(flags["run"])
    assert re.search(r"loss at the origin \(trained weights\) \d+\.\d+", result.stdout), result.stdout[-3000:]
    written = re.findall(r"^Wrote (\S+\.png)$", result.stdout, re.M)
    assert written and all(p.startswith(f"{run}/landscape/{flags['mode']}-") for p in written), written
    assert all(os.path.isfile(os.path.join(workspace.root, p)) for p in written)


def check_gradflow(result, workspace):
    path = re.search(r"^Wrote (\S+gradient_flow\.png)$", result.stdout, re.M)
    assert path and os.path.isfile(os.path.join(workspace.root, path.group(1))), result.stdout[-3000:]


def check_tune(result, workspace):
    flags = result.command.flags()
    assert re.search(r"^Best trial \d+: T=\S+, alpha=\S+, lr=\S+, val_accuracy=\d\.\d{4} .*test accuracy, "
                     r"measured once after the search: \d\.\d{4}", result.stdout, re.M), result.stdout[-3000:]
    assert re.search(rf"^  kdkeras distill --student={flags['student']} ", result.stdout, re.M), result.stdout[-3000:]
    [best] = [p for p in workspace.new_files(result) if os.path.basename(p) == "best.json"]
    with open(best) as f:
        stored = json.load(f)
    assert stored["max_trials"] == 1 and "test_accuracy" in stored["best"], stored["best"]


def check_bnstats(result, workspace):
    assert re.search(r"^run\s+kind\s+moving\s+precise\s+precise\+drop\s+batch$", result.stdout, re.M), \
        result.stdout[-3000:]
    for ref in result.command.flags()["runs"].split(","):
        run = workspace.run_dir(ref)
        assert re.search(rf"^{os.path.basename(run)}\s", result.stdout, re.M), result.stdout[-3000:]
        assert os.path.isfile(os.path.join(workspace.root, run, "bnstats.json"))


#: ``--all`` / ``--table`` profile the 18 WRN-22x2 variants here (tests/test_profiling.py builds all 108).
PROFILED, PROFILED_COUNT = "wrn22x2_*", 18


#: The standard-zoo models the README's ``--all --standard`` profiles (tests/test_profiling.py checks all 22).
PROFILED_STANDARD = ("resnet8", "resnet8_NR", "ShuffleV2")


def profiled_models(ctx):
    if "standard" in ctx.flags:
        return [f"--models={','.join(PROFILED_STANDARD)}"]
    return [f"--models={PROFILED}"] if "all" in ctx.flags or "table" in ctx.flags else []


TRAINING = {"archive": synthetic_data, "dataset": keep, "epochs": drop, "seed": keep, "recipe": keep,
            "val_size": to(16), "precise_bn": to(2), "gradient_flow_epochs": to(1)}

#: The rewriting rules, per script. A flag not listed for its script fails the command's test.
RULES = {
    "profile_models": Rule({"model": keep, "table": keep, "all": keep, "csv": keep, "standard": keep},
                           add=profiled_models,
                           slow=lambda flags: "model" not in flags,  # --all / --table build 18 models
                           check=check_profile),
    "train": Rule({**TRAINING, "model": keep, "data_dir": image_folder, "plain": keep}, add=tiny_run,
                  check=check_run),
    "distill": Rule({**TRAINING, "student": keep, "teacher": teacher, "temperature": keep, "alpha": keep,
                     "kd_epochs": to(1)}, add=tiny_run, check=check_run),
    "grid": Rule({"table": keep, "config": keep, "dry_run": keep, "logdir": keep, "archive": grid_archive,
                  "cpu_workers": cpu_workers},
                 add=grid_extra, slow=lambda flags: "dry_run" not in flags and flags.get("config") not in PLANNED_ONLY,
                 check=check_grid),
    "bench": Rule({"model": keep, "mode": keep, "teacher": keep, "steps": to(2), "framework": torch_framework,
                   "methods": keep},
                  add=lambda ctx: ["--batch_size=16", "--warmup=1", "--repeats=1"], check=check_bench),
    "embed": Rule({"run": run_folders, "classes": synthetic_classes}, check=check_embed),
    "landscape": Rule({"run": run_folders, "mode": keep, "resolution": to(3)}, check=check_landscape),
    "gradflow": Rule({"runs": run_folders}, check=check_gradflow),
    "tune": Rule({"student": keep, "teacher": keep, "max_trials": to(1), "epochs": drop}, add=tiny_run,
                 check=check_tune),
    "convert": Rule({"checkpoint": torch_checkpoint, "model": keep}, check=check_convert),
    "bnstats": Rule({"runs": run_folders}, add=lambda ctx: ["--batches=2"], check=check_bnstats),
}


def rewrite(command, workspace):
    """``(argv, env, stdout_file, skip)`` of a README command on tiny settings, by :data:`RULES`."""
    rule = RULES.get(command.script)
    if rule is None:
        pytest.fail(f"{command.text}: no rule in RULES shrinks scripts/{command.script}.py")
    ctx = Context(workspace, command)
    args, stdout_file = list(command.args), None
    if ">" in args:
        at = args.index(">")
        assert at == len(args) - 2, command.text
        stdout_file, args = args[-1], args[:at]
    out = []
    for token in args:
        name = token[2:].partition("=")[0] if token.startswith("--") else None
        if name not in rule.flags:
            pytest.fail(f"{command.text}: no rule for {token!r} of scripts/{command.script}.py in RULES")
        value = token.partition("=")[2] if "=" in token else None
        out += rule.flags[name](name, value, ctx)
    if rule.add:
        out += rule.add(ctx)
    return [*command.program, *out], ctx.env, stdout_file, ctx.skip


# --------------------------------------------------------------------------
# The scratch folder every command runs in
# --------------------------------------------------------------------------


@dataclass
class Result:
    command: Command
    argv: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    new_runs: list = field(default_factory=list)  # run folders it made, relative to the workspace
    new_paths: list = field(default_factory=list)  # every file it made, relative to the workspace
    skip: str | None = None


def _run_ref(ref):
    """``(dataset, run name)`` of a README run folder ``logs/<dataset>/<run>[-<hash>]``."""
    match = re.fullmatch(r"logs/(\w+)/([^/<>]+?)(-<hash>)?/?", ref)
    assert match, f"not a run folder of the default --logdir: {ref}"
    return match.group(1), match.group(2)


def readme_runs(command):
    """``{(dataset folder, run name)}`` a README training command makes (a named teacher's run included)."""
    if command.script not in ("train", "distill"):
        return set()
    flags = command.flags()
    dataset = flags.get("dataset") or ("cifar10" if "cifar-10-" in (flags.get("archive") or "") else "cifar100")
    seed = flags.get("seed", "0")
    if command.script == "train":
        return {(dataset, f"{flags['model']}-s{seed}")}
    if flags["teacher"].endswith(".keras"):
        return set()
    return {(dataset, f"{flags['student']}_from_{flags['teacher']}-s{seed}"), (dataset, f"{flags['teacher']}-s{seed}")}


class Workspace:
    """One scratch folder for the session's commands; each command runs at most once."""

    def __init__(self, root):
        self.root = str(root)
        self.home = os.path.join(self.root, "home")
        self.results = {}
        os.makedirs(self.home)

    def _files(self):
        found = set()
        for folder, _, files in os.walk(self.root):
            if not folder.startswith(self.home):
                found.update(os.path.relpath(os.path.join(folder, f), self.root) for f in files)
        return found

    def run(self, command):
        if command.text in self.results:
            return self.results[command.text]
        argv, env, stdout_file, skip = rewrite(command, self)
        if skip:
            self.results[command.text] = Result(command, argv, 0, "", "", 0.0, skip=skip)
            return self.results[command.text]
        before = self._files()
        start = time.monotonic()
        proc = run_command(argv, cwd=self.root, env=script_env(**env), timeout=TIMEOUT)
        stdout = proc.stdout
        if stdout_file:  # the shell's `> FILE`
            with open(os.path.join(self.root, stdout_file), "w") as f:
                f.write(stdout)
        new_paths = sorted(self._files() - before)
        new_runs = sorted({os.path.dirname(p) for p in new_paths
                           if re.fullmatch(r"logs/[^/]+/[^/]+/results\.json", p)})
        result = Result(command, argv, proc.returncode, stdout, proc.stderr, time.monotonic() - start,
                        new_runs, new_paths)
        self.results[command.text] = result
        return result

    def new_files(self, result):
        return [os.path.join(self.root, p) for p in result.new_paths]

    def run_dir(self, ref):
        """``logs/<dataset>/<run>[-<hash>]`` of the README -> the tiny synthetic run of the README command making it."""
        dataset, name = _run_ref(ref)
        makers = [c for c in COMMANDS if (dataset, name) in readme_runs(c)]
        if not makers:
            pytest.fail(f"{ref}: no README command makes this run")
        maker = self.run(makers[0])
        assert maker.returncode == 0, f"{maker.command.text} (makes {ref}) failed:\n{maker.stderr[-3000:]}"
        found = sorted(os.path.relpath(os.path.join(self.root, "logs", "synthetic", d), self.root)
                       for d in os.listdir(os.path.join(self.root, "logs", "synthetic"))
                       if (d == name or d.startswith(name + "-"))
                       and os.path.isfile(os.path.join(self.root, "logs", "synthetic", d, "results.json")))
        mine = [d for d in found if d in maker.new_runs or os.path.join(self.root, d) in maker.stdout]
        candidates = mine or found
        assert len(candidates) == 1, f"{ref}: {maker.command.text} made {candidates}"
        return candidates[0]

    def provide_file(self, path, source):
        import shutil

        target = os.path.join(self.root, path)
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(self.root, source), target)

    def image_folder(self, root, per_class=(("train", 8), ("test", 4)), size=32):
        """``root/<split>/<class>/<i>.png`` for :data:`CINIC10`: per-class colour plus noise."""
        if os.path.isdir(root):
            return
        import numpy as np
        import tensorflow as tf

        rng = np.random.default_rng(0)
        for split, n in per_class:
            for c, name in enumerate(CINIC10):
                os.makedirs(os.path.join(root, split, name))
                for i in range(n):
                    image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                    image[..., c % 3] += np.uint8(20 * c)
                    tf.io.write_file(os.path.join(root, split, name, f"{i}.png"), tf.io.encode_png(image))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("readme"))


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------


def test_every_readme_shell_line_is_run_or_accounted_for():
    lines = readme_shell_lines()
    assert not [text for kind, text in lines if kind == "unknown"], "a README command no test runs"
    others = sorted((kind, text) for kind, text in lines if kind != "run")
    # The installs are this environment's own (tests/test_wheel.py installs the wheel); the suite is
    # what runs this; the multi-worker example is run by tests/training/test_multiworker.py, which
    # reads the one README line starting with TF_CONFIG= that runs scripts/train.py.
    assert [kind for kind, _ in others] == ["environment", "install", "install", "test suite"], others
    [(_, multiworker)] = [item for item in others if item[0] == "environment"]
    assert multiworker.startswith("TF_CONFIG=") and "scripts/train.py" in multiworker
    assert len(COMMANDS) == len({c.text for c in COMMANDS}) >= 20
    for command in COMMANDS:  # every command has a rule (the run itself checks every flag)
        assert command.script in RULES, command.text


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, id=c.text, marks=[pytest.mark.slow] if c.script not in RULES or RULES[c.script].is_slow(c)
                  else []) for c in COMMANDS],
)
def test_readme_command(command, workspace):
    result = workspace.run(command)
    if result.skip:
        pytest.skip(result.skip)
    assert result.returncode == 0, f"{shlex.join(result.argv)}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    RULES[command.script].check(result, workspace)


def _python_block(marker):
    [block] = [b for b in _blocks("python") if marker in b]
    return block


def test_every_readme_python_block_is_run():
    markers = ("print(kdkeras.profile(", "kdkeras.Distiller(")
    assert sorted(_blocks("python")) == sorted(_python_block(m) for m in markers)


def test_readme_profile_block_prints_what_its_comments_say():
    block = _python_block("print(kdkeras.profile(")
    expected, counts = [], []
    for line in block.splitlines():
        code, comment = _split_comment(line)
        if not comment:
            continue
        if code.startswith("print("):
            expected.append(comment)
        elif re.fullmatch(r"the paper's (\d+) variants", comment):
            counts.append((code, int(re.search(r"\d+", comment).group())))
        else:
            pytest.fail(f"README python line with a comment this test does not check: {line}")
    assert expected and counts
    namespace, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  (the README's own example)
    assert printed.getvalue().splitlines() == expected
    for code, n in counts:
        assert len(eval(code, namespace)) == n, code  # noqa: S307


#: The "Python API" block on tiny settings: each text must occur exactly once in the block.
#: (``logs/cifar100/<run>`` paths become the tiny runs of :meth:`Workspace.run_dir`.)
API_SUBSTITUTIONS = (
    ('make_splits("cifar100", archive="cifar-100-python.tar.gz", val_size=5000)',
     'make_splits("synthetic", train_size=64, test_size=32, batch_size=32, val_size=16)'),
    ("epochs=120", "epochs=1"),
    ("num_batches=64", "num_batches=2"),
)


@pytest.mark.slow
def test_readme_python_api_block_runs(workspace):
    source = _python_block("kdkeras.Distiller(")
    for old, new in API_SUBSTITUTIONS:
        assert source.count(old) == 1, f"the README's Python API block no longer has: {old}"
        source = source.replace(old, new)
    refs = re.findall(r'"(logs/cifar100/[^"/]+)/model\.keras"', source)
    assert refs, "the Python API block loads no teacher run"
    for ref in refs:
        source = source.replace(f'"{ref}/', f'"{workspace.run_dir(ref)}/')
    proc = subprocess.run([sys.executable, "-c", source], cwd=workspace.root, env=script_env(),
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert os.path.isfile(os.path.join(workspace.root, "student.keras"))
    assert os.listdir(os.path.join(workspace.root, "logs", "tb"))
