"""Every flag is declared once.

No flag name is DEFINE'd in more than one file: the flags that several
commands take are defined in kdkeras/cli.py, a run's settings from the fields
of :class:`kdkeras.config.RunConfig`, whose metadata holds each one's help;
and the scripts still list the flags they always listed, of the same type and
default.
"""

import ast
import dataclasses
import os
import re
import sys

import pytest

from tests.helpers import run_command, script_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The folders whose Python files may define flags.
SOURCES = ("kdkeras", "scripts")
#: Calls that define a flag named by their first argument: absl's ``DEFINE_*`` and kdkeras.cli's ``_define``.
DEFINING = re.compile(r"^(DEFINE_\w+|_define)$")


def _python_files():
    for source in SOURCES:
        for folder, _, files in os.walk(os.path.join(ROOT, source)):
            yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))


def _defined_names(path):
    """The flag names that the file's ``DEFINE_*`` calls name (a string literal: the first argument or ``name=``)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if not DEFINING.match(called):
            continue
        first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def _defining_files():
    """``{flag name: the files that define it}``; kdkeras/cli.py defines every run setting's too (by its field)."""
    from kdkeras import config as config_lib

    where = {}
    for path in _python_files():
        names = _defined_names(path)
        if os.path.relpath(path, ROOT) == os.path.join("kdkeras", "cli.py"):
            names |= set(config_lib.FIELDS) | {"student"}
        for name in names:
            where.setdefault(name, set()).add(os.path.relpath(path, ROOT))
    return where


def test_no_flag_is_defined_in_two_files():
    where = _defining_files()
    twice = {name: sorted(files) for name, files in where.items() if len(files) > 1}
    assert not twice, f"flags defined in more than one file (define them once in kdkeras/cli.py): {twice}"
    assert len(where) > 50  # the scan sees the flags (today about 90 names besides the methods' settings)
    # The flags that several commands take, and every run setting's, are kdkeras/cli.py's.
    for name in ("output", "split", "run", "runs", "mode", "compare", "table", "config", "logdir", "seed",
                 "model", "batch_size", "archive", "dataset", "student", "teacher", "download"):
        assert where[name] == {os.path.join("kdkeras", "cli.py")}, (name, where[name])


def test_the_scan_finds_a_second_definition(tmp_path):
    """The check itself: a command that defines a run setting's flag again is caught."""
    command = tmp_path / "command.py"
    command.write_text('from absl import flags\nflags.DEFINE_integer("epochs", None, "Epochs.")\n'
                       'flags.DEFINE_string(name="logdir", default="logs", help="Runs.")\n'
                       'cli.define_run_flag("model", help="Not a definition of its own.")\n')
    assert _defined_names(str(command)) == {"epochs", "logdir"}


def test_every_run_setting_declares_its_flag():
    from kdkeras import cli
    from kdkeras import config as config_lib

    declared = cli.run_flag_declarations()
    assert tuple(declared) == config_lib.FIELDS
    for field in dataclasses.fields(config_lib.RunConfig):
        help_text = field.metadata.get("help")
        assert isinstance(help_text, str) and help_text.strip(), f"RunConfig.{field.name} has no help"
        kind, flag_help = declared[field.name]
        assert kind in (float, int, str, bool, tuple) and flag_help == help_text, (field.name, kind)
    assert declared["lr_milestones"][0] is tuple and declared["augment"][0] is bool
    assert declared["method_weight"][0] is float and declared["seed"][0] is int


def _run_settings_with_checks():
    from kdkeras import config as config_lib

    for field in dataclasses.fields(config_lib._RunSettings):
        meta = field.metadata
        if meta.get("minimum") is not None or meta.get("maximum") is not None or meta.get("choices"):
            yield field.name


#: The other settings a setting needs to be valid at all (a method's weight, plain's NR model and anneal).
_CHECK_CONTEXT = {"method_weight": {"method": "dkd"}, "plain": {"model": "wrn16x1_NR_g2"},
                  "anneal_fraction": {"model": "wrn16x1_NR_g2", "plain": "anneal"}}


@pytest.mark.parametrize("name", list(_run_settings_with_checks()))
def test_a_run_settings_declared_check_is_the_one_validate_makes(name):
    """A range or choices in a run setting's metadata: the values validate() accepts and refuses."""
    from kdkeras import cli
    from kdkeras import config as config_lib
    from kdkeras.errors import UsageError

    meta = next(f.metadata for f in dataclasses.fields(config_lib.RunConfig) if f.name == name)
    kind = cli.run_flag_declarations()[name][0]
    base = {"model": "wrn16x1_R_g2", **_CHECK_CONTEXT.get(name, {})}
    step = 1 if kind is int else 0.5
    good, bad = [], []
    if meta["minimum"] is not None:
        low = kind(meta["minimum"])
        if meta["exclusive_minimum"]:
            good.append(low + step)
            bad.append(low)
        else:
            good.append(low)
            bad.append(low - step)
    if meta["maximum"] is not None:
        good.append(kind(meta["maximum"]))
        bad.append(kind(meta["maximum"]) + step)
    if meta["choices"]:
        good += list(meta["choices"])
        bad.append("none_of_them")
    for value in good:
        assert getattr(config_lib.resolve({**base, name: value}), name) == value
    for value in bad:
        with pytest.raises(UsageError, match=name):
            config_lib.resolve({**base, name: value})


#: The flags each script's --help listed, with their type and default (besides every method's settings:
#: distill.py's and tune.py's, whatever methods there are), as ``type[=default]``.
LISTED = {
    "train.py": {
        "archive": "str", "augment": "bool", "batch_size": "int", "pad_mode": "str", "recipe": "str", "config": "str", "data_dir": "str",
        "data_mirror": "str", "data_tuning": "str", "dataset": "str", "deterministic": "bool", "download": "bool",
        "dropout": "float", "epochs": "int", "gradient_flow_epochs": "int=0", "gradient_flow_every": "int=10",
        "init": "str", "jit_compile": "bool", "logdir": "str=logs", "lr": "float", "lr_gamma": "float",
        "lr_milestones": "list", "lr_schedule": "str", "mixed_precision": "bool", "model": "str", "momentum": "float",
        "precise_bn": "int", "precise_bn_augment": "bool", "precise_bn_every_epoch": "bool", "seed": "int", "steps_per_execution": "int",
        "strategy": "str", "test_size": "int", "train_size": "int", "val_size": "int", "weight_decay": "float",
        "plain": "str", "anneal_fraction": "float",
    },
    "distill.py": {
        "alpha": "float", "archive": "str", "augment": "bool", "batch_size": "int", "pad_mode": "str", "recipe": "str", "config": "str",
        "data_dir": "str", "data_mirror": "str", "data_tuning": "str", "dataset": "str", "deterministic": "bool",
        "download": "bool", "dropout": "float", "epochs": "int", "gradient_flow_epochs": "int=0",
        "gradient_flow_every": "int=10", "init": "str", "jit_compile": "bool", "kd_epochs": "int",
        "teacher_epochs": "int", "logdir": "str=logs", "lr": "float", "lr_gamma": "float", "lr_milestones": "list", "lr_schedule": "str",
        "method": "str", "method_weight": "float", "mixed_precision": "bool", "momentum": "float",
        "precise_bn": "int", "precise_bn_augment": "bool", "precise_bn_every_epoch": "bool", "seed": "int", "steps_per_execution": "int",
        "strategy": "str", "student": "str", "teacher": "str", "teacher_data_check": "bool=true",
        "temperature": "float", "test_size": "int", "train_size": "int", "train_teacher": "bool=true",
        "val_size": "int", "weight_decay": "float", "plain": "str", "anneal_fraction": "float",
    },
    "grid.py": {
        "archive": "str", "batch_size": "int", "config": "str", "data_dir": "str", "data_mirror": "str",
        "dataset": "str", "download": "bool", "dry_run": "bool=false", "epochs": "int", "export": "str", "export_teachers": "bool=false",
        "gradient_flow_epochs": "int=0", "gradient_flow_every": "int=10", "half": "enum(left|right)", "init": "str",
        "kd_epochs": "int", "teacher_epochs": "int", "lease_s": "float", "logdir": "str=logs", "lr": "float",
        "precise_bn": "int", "precise_bn_augment": "bool",
        "seeds": "int", "shard": "str", "strategy": "str", "students": "list", "table": "int",
        "take_over": "bool=true", "teachers": "list", "test_size": "int", "train_size": "int", "val_size": "int",
        "plain": "str", "anneal_fraction": "float",
        "gpus": "list", "workers_per_gpu": "int=1", "gpu_memory_mb": "int", "cpu_workers": "int",
    },
    "tune.py": {
        "alpha": "float", "alpha_range": "str", "archive": "str", "augment": "bool", "batch_size": "int", "pad_mode": "str", "recipe": "str",
        "config": "str", "data_dir": "str", "data_mirror": "str", "data_tuning": "str", "dataset": "str",
        "deterministic": "bool", "download": "bool", "dropout": "float", "epochs": "int",
        "executions_per_trial": "int=1", "gradient_flow_epochs": "int=0", "gradient_flow_every": "int=10",
        "init": "str", "jit_compile": "bool", "kd_epochs": "int", "teacher_epochs": "int", "logdir": "str=logs",
        "lr": "float", "lr_gamma": "float", "lr_milestones": "list", "lr_range": "str", "lr_schedule": "str", "max_trials": "int=10",
        "method": "str", "method_weight": "float", "mixed_precision": "bool", "momentum": "float",
        "precise_bn": "int", "precise_bn_augment": "bool", "precise_bn_every_epoch": "bool", "seed": "int", "steps_per_execution": "int",
        "strategy": "str", "student": "str", "teacher": "str", "teacher_data_check": "bool=true",
        "temperature": "float", "temperature_range": "str", "test_size": "int", "train_size": "int",
        "train_teacher": "bool=true", "tuner": "str=bayesian", "val_size": "int", "weight_decay": "float",
        "plain": "str", "anneal_fraction": "float",
    },
    "bench.py": {
        "archive": "str", "batch_size": "int=128", "data_dir": "str", "data_tuning": "enum(auto|fixed|autotune)=auto",
        "dataset": "str=synthetic", "framework": "enum(keras|torch)=keras", "jit_compile": "bool=false",
        "methods": "list=kd", "mixed_precision": "bool=false", "mode": "enum(train|distill|infer|data)=train",
        "model": "str", "repeats": "int=3", "steps": "int=20", "steps_per_execution": "int=1", "teacher": "str",
        "threads": "int", "train_size": "int=50000", "warmup": "int=3",
        "gpu": "bool=false", "cpu_smoke": "bool=false", "budget_s": "float", "concurrent_runs": "int", "output": "str",
        "sections": "list",
    },
}
#: absl's --help of a method setting's flag, by the setting's type.
_METHOD_FLAG_TYPES = {float: "float", int: "int", str: "str", bool: "bool", tuple: "list"}


def _flags_in_help(text):
    """``{flag: "type[=default]"}`` of the flags an absl ``--help`` lists."""
    blocks, name = {}, None
    for line in text.splitlines():
        match = re.match(r"^  --(\[no\])?(\w+): ?(.*)$", line)
        if match:
            name = match[2]
            blocks[name] = [bool(match[1]), match[3]]
        elif name and line.startswith("    "):
            blocks[name][1] += " " + line.strip()
        else:
            name = None
    listed = {}
    for name, (switch, text) in blocks.items():
        enum = re.match(r"<([^>]*)>:", text)
        kind = ("bool" if switch else f"enum({enum[1]})" if enum else "int" if "(an integer)" in text
                else "float" if "(a number)" in text else "list" if "(a comma separated list)" in text else "str")
        default = re.search(r"\(default: '([^']*)'\)", text)
        listed[name] = kind + (f"={default[1]}" if default else "")
    return listed


@pytest.mark.parametrize("script", list(LISTED))
def test_scripts_list_the_flags_they_listed(script):
    from kdkeras import methods

    expected = dict(LISTED[script])
    if script in ("distill.py", "tune.py"):
        expected.update({s.flag: _METHOD_FLAG_TYPES[s.type] for s in methods.all_settings()})
    env = script_env()
    result = run_command([sys.executable, os.path.join(ROOT, "scripts", script), "--help"], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    listed = _flags_in_help(result.stdout)
    assert set(listed) == set(expected), (sorted(set(expected) - set(listed)), sorted(set(listed) - set(expected)))
    assert listed == expected
