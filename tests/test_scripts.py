"""The command-line scripts: one-line errors with exit code 2, and a smoke run."""

import os
import re
import subprocess
import sys

import pytest

import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


run_script = helpers.run_script
error_lines = helpers.error_lines


@pytest.mark.parametrize(
    "script, args, fragment",
    [
        ("train.py", ["--model=wrn23x2_R_g2"], "(d - 4) % 6 == 0"),
        ("train.py", ["--model=wrn22x2_R_g3"], "Valid groupings"),
        ("train.py", ["--model=wrn22x2_X_g2"], "Bad residual token 'X'"),
        ("train.py", ["--model=vgg_R_g2"], "Unknown network 'vgg'"),
        ("train.py", ["--model=wrn22x2_R_g2", "--epochs=0"], "epochs must be a positive integer"),
        ("train.py", ["--model=wrn22x2_R_g2", "--batch_size=-4"], "batch_size must be a positive integer"),
        ("train.py", ["--model=wrn22x2_R_g2", "--dataset=mnist"], "Valid choices: cifar100, cifar10, synthetic"),
        ("train.py", [], "No model given"),
        ("distill.py", ["--student=wrn22x2_NR_g2"], "No teacher given"),
        ("distill.py", ["--student=wrn22x2_NR_g2", "--teacher=wrn22x2_R_g5"], "'g5'"),
        ("profile_models.py", ["--model=resnet19_R_g2"], "Unknown network 'resnet19'"),
        ("profile_models.py", ["--csv"], "--csv needs --all"),
        ("profile_models.py", ["--all", "--models=wrn22x2_R_g2,vgg*"], "vgg* matches none of the 108"),
        ("profile_models.py", ["--models=wrn22x2_*"], "--models needs --all or --table"),
        ("grid.py", ["--table=9"], "Valid tables: 1, 2, 3, 4, 5, 6"),
        ("grid.py", ["--table=1", "--shard=5/2"], "0 <= i < n"),
        ("grid.py", ["--table=1", "--students=NR_g3"], "Valid students"),
        ("grid.py", [], "exactly one of --table"),
        ("train.py", ["--modle=wrn22x2_R_g2"], "unknown flag --modle; did you mean --model?"),
        ("grid.py", ["--table=1", "--epochs=abc"], "flag --epochs=abc: not an integer"),
        ("grid.py", ["--table=1", "--lr=fast"], "flag --lr=fast: not a number"),
        ("train.py", ["--nodeterministic=true"], "--nodeterministic takes no value; pass --nodeterministic or"),
        ("distill.py", ["--deterministic=maybe"], "--deterministic=maybe: not a boolean; pass --deterministic or --nodeterministic"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, script, args, fragment):
    logdir = tmp_path / "logs"
    result = run_script(script, *args, f"--logdir={logdir}" if script != "profile_models.py" else "--num_classes=100")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert not logdir.exists()  # nothing written before the error


def test_a_new_process_prints_the_error_and_nothing_of_tensorflows_start_up(tmp_path):
    """A new interpreter (not a fork of tests/forkserver.py, which has imported TensorFlow already) in a user's
    environment, without TF_CPP_MIN_LOG_LEVEL: TensorFlow's native start-up lines are muted."""
    env = helpers.script_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    result = run_script("train.py", "--model=wrn23x2_R_g2", f"--logdir={tmp_path}", env=env, fresh=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == error_lines(result.stderr), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_missing_dataset_is_a_fast_clear_error(tmp_path):
    result = run_script("train.py", "--model=wrn10x1_R_g2", f"--data_dir={tmp_path}/tfds",
                        f"--logdir={tmp_path}/logs")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert "--archive" in line and "--dataset=synthetic" in line


@pytest.mark.slow
def test_distill_smoke_run_then_stored_result(tmp_path):
    args = ["--student=wrn10x1_NR_g2", "--teacher=wrn10x1_R_g2", "--dataset=synthetic", "--epochs=2",
            "--train_size=128", "--batch_size=64", "--test_size=64", f"--logdir={tmp_path}"]
    first = run_script("distill.py", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "training it first" in first.stdout and first.stdout.count("Finished") == 2
    # Not a terminal (a pipe, as under Slurm or `| tee`): one plain line per epoch, no progress bar.
    assert "\x1b" not in first.stdout and "\r" not in first.stdout
    epoch_lines = [line for line in first.stdout.splitlines() if re.match(r"^2/2 - \d+m?s - ", line)]
    assert len(epoch_lines) == 4, first.stdout  # 2 epochs of the teacher, 2 of the student
    second = run_script("distill.py", *args)
    assert second.returncode == 0
    assert "already finished" in second.stdout and "Finished" not in second.stdout


def test_grid_dry_run_lists_the_table(tmp_path):
    result = run_script("grid.py", "--table=3", "--dry_run", f"--logdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "53 runs" in result.stdout and "53 to do" in result.stdout
    assert "wrn22x2_NR_g16 from wrn22x2_R_G4" in result.stdout
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_profile_one_model():
    result = run_script("profile_models.py", "--model=wrn22x2_R_g2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "655,572 trainable parameters" in result.stdout
    assert "93,647,360 multiply-accumulates" in result.stdout


@pytest.mark.slow  # a process that builds or trains models: over 8 s
def test_profile_a_selection_of_the_zoo():
    result = run_script("profile_models.py", "--all", "--csv", "--models=wrn22x2_R_g2,wrn22x2_NR_g1*")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["model,params,macs", "wrn22x2_R_g2,655572,93647360",
                                     "wrn22x2_NR_g16,200292,27046400"]


@pytest.mark.slow  # four bench processes: about 40 s
@pytest.mark.parametrize(
    "args",
    [
        ["--model=wrn10x1_R_g2", "--mode=train"],
        ["--model=wrn10x1_NR_g2", "--mode=distill", "--teacher=wrn10x1_R_G4"],
        ["--model=wrn10x1_R_g2", "--mode=infer"],
        ["--mode=data", "--train_size=512"],
    ],
)
def test_bench_prints_one_json_record_last(args):
    import json

    result = run_script("bench.py", *args, "--batch_size=16", "--steps=2", "--warmup=1", "--repeats=2")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"model", "mode", "batch_size", "images_per_sec", "device"} <= set(record)
    assert record["batch_size"] == 16 and record["images_per_sec"] > 0 and len(record["runs"]) == 2
    # The host: the CPU and its vector extensions (as /proc/cpuinfo names them), the oneDNN state and the
    # grouped convolutions' path, which the scripts' environment sets (kdkeras turns oneDNN on).
    from kdkeras import host

    cpu = host.cpu_info()
    assert record["cpu"] == cpu["model"]
    assert record["cpu_flags"] == [name for name, present in cpu["flags"].items() if present]
    assert record["onednn"] is host.onednn_enabled() and record["onednn_reason"].startswith("on")
    assert record["grouped_conv"] == "native"


@pytest.mark.slow  # a process that builds a model: about 10 s
def test_bench_reports_the_portable_path_with_onednn_off():
    import json
    import subprocess

    from tests.helpers import script_command, script_env

    result = subprocess.run(script_command("bench.py", "--model=wrn10x1_R_g2", "--batch_size=8", "--steps=1",
                                           "--warmup=1", "--repeats=1"),
                            capture_output=True, text=True, env=script_env(TF_ENABLE_ONEDNN_OPTS="0"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["onednn"] is False and record["onednn_reason"] == "off (TF_ENABLE_ONEDNN_OPTS=0)"
    assert record["grouped_conv"] == "portable"


@pytest.mark.slow  # a process that builds or trains models: over 8 s
def test_bench_times_several_methods_on_one_pair():
    import json

    result = run_script("bench.py", "--model=wrn10x1_NR_g2", "--mode=distill", "--teacher=wrn10x1_R_g2",
                        "--methods=kd,fitnets", "--batch_size=16", "--steps=2", "--warmup=1", "--repeats=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "shuffle=True" not in result.stderr  # no Keras warning per timed window
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(record["methods"]) == ["kd", "fitnets"] and record["method"] == "kd"
    for method, entry in record["methods"].items():
        assert len(entry["runs"]) == 2 and entry["images_per_sec"] > 0
    kd, fitnets = (record["methods"][m]["images_per_sec"] for m in ("kd", "fitnets"))
    assert record["methods"]["fitnets"]["step_time_vs_kd"] == pytest.approx(kd / fitnets, abs=2e-3)
    assert record["images_per_sec"] == kd  # the top-level figure is the first method's


@pytest.mark.parametrize("args, message", [
    (["--mode=distill", "--teacher=wrn10x1_R_g2", "--methods=kd,bogus"], "Unknown method bogus in --methods. Valid choices: kd, dkd, fitnets, at"),
    (["--mode=train", "--methods=at"], "--methods times distillation methods: it needs --mode=distill"),
])
def test_bench_rejects_bad_methods(args, message):
    result = run_script("bench.py", "--model=wrn10x1_NR_g2", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert line.startswith("bench.py: error: ") and message in line


def run_kdkeras(*args, cwd=None):
    """``python -m kdkeras ARGS``: the ``kdkeras`` command of an installed package."""
    return helpers.run_command([sys.executable, "-m", "kdkeras", *args], cwd=cwd)


def test_the_kdkeras_command_lists_every_script_and_rejects_unknown_ones(tmp_path):
    from kdkeras.commands import COMMANDS, SCRIPT_NAMES

    listing = run_kdkeras("--help")
    assert listing.returncode == 0
    for name in COMMANDS:
        assert re.search(rf"^  {name}\s+\S", listing.stdout, re.M), listing.stdout
        assert os.path.isfile(os.path.join(ROOT, "scripts", SCRIPT_NAMES.get(name, name) + ".py"))
    shells = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(ROOT, "scripts")) if f.endswith(".py")}
    assert shells == {SCRIPT_NAMES.get(name, name) for name in COMMANDS}  # one shell per subcommand
    unknown = run_kdkeras("trian")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    (line,) = error_lines(unknown.stderr)
    assert "unknown command 'trian'" in line and "train, distill, grid" in line
    assert run_kdkeras().returncode == 2  # no command: the list, as an error


@pytest.mark.slow  # a process that builds or trains models: over 8 s
def test_a_subcommand_takes_the_scripts_flags_and_errors(tmp_path):
    bad = run_kdkeras("train", "--model=wrn23x2_R_g2", f"--logdir={tmp_path}")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    (line,) = error_lines(bad.stderr)
    assert line.startswith("kdkeras train: error: ") and "(d - 4) % 6 == 0" in line
    helped = run_kdkeras("grid", "--help")  # absl's --help: the docstring and the flags
    assert helped.returncode == 0  # absl itself exits with 1 here
    assert "kdkeras grid --table=3 --dry_run" in helped.stdout and "--shard:" in helped.stdout
    assert "--archive:" in helped.stdout  # defined through kdkeras.cli, listed too
    for script in ("train.py", "distill.py"):
        listed = run_script(script, "--help")
        flags_listed = listed.stdout
        assert listed.returncode == 0 and "--logdir:" in flags_listed and "--epochs:" in flags_listed, flags_listed
    # A shipped config is found by its configs/ path from any folder.
    plan = run_kdkeras("grid", "--config=configs/smoke_grid.yaml", "--dry_run", f"--logdir={tmp_path}",
                       cwd=tmp_path)
    assert plan.returncode == 0 and "Grid smoke_grid: 12 runs" in plan.stdout, plan.stderr


def test_output_cut_short_by_its_reader_is_not_an_error(tmp_path):
    """``kdkeras grid --table=3 --dry_run | head -2`` stops quietly."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "kdkeras", "grid", "--table=3", "--dry_run",
                             f"--logdir={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away
    _, err = proc.communicate(timeout=300)
    assert first.startswith(b"Grid table3_wrn22x2") and b"Traceback" not in err and b"error" not in err, err
