"""Grid planning, sharding, claims, and a small end-to-end grid on synthetic data."""

import json
import os
import subprocess
import sys

import pytest

from kdkeras import config as config_lib
from kdkeras import claims, grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke_grid.yaml")


@pytest.mark.parametrize("table, net", [(1, "resnet18"), (2, "mobilenetv2"), (3, "wrn22x2"),
                                        (4, "wrn22x10"), (5, "wrn28x2"), (6, "wrn40x2")])
def test_table_configs(table, net):
    spec = grid.load_grid(grid.table_config_path(table))
    assert (spec.table, spec.net, spec.dataset) == (table, net, "cifar100")
    assert spec.halves["left"]["teachers"] == ["R_G1", "R_G2", "R_G4", "R_G8", "R_G16"]
    assert spec.halves["right"]["students"] == ["NR_G2", "NR_G4", "NR_G8", "NR_G16"]


def test_plan_of_a_whole_table(tmp_path):
    spec = grid.load_grid(grid.table_config_path(1))
    cells = grid.plan(spec, str(tmp_path))
    baselines = [c for c in cells if c.kind == "baseline"]
    kd = [c for c in cells if c.kind == "kd"]
    # R-g{2,4,8,16} (left baselines = right teachers), NR-g*, R-G{1..16} (left teachers,
    # R-G{2..16} are also the right baselines), NR-G*: 17 hard-target runs; 4x5 + 4x4 KD runs.
    assert len(baselines) == 17 and len(kd) == 36
    assert len({c.run_dir for c in cells}) == len(cells)
    assert cells[:17] == baselines  # dependency order: every baseline before any KD run
    baseline_dirs = {c.run_dir for c in baselines}
    for cell in kd:
        teacher_dir = config_lib.run_dir(config_lib.teacher_config(cell.config), str(tmp_path))
        assert teacher_dir in baseline_dirs
    assert {c.config.model for c in baselines} >= {"resnet18_R_g8", "resnet18_NR_g8", "resnet18_R_G1"}
    assert len(grid.plan(spec, str(tmp_path)) ) == len(cells)  # deterministic
    spec.seeds = 3
    assert len(grid.plan(spec, str(tmp_path))) == 3 * 53


def test_filters(tmp_path):
    spec = grid.load_grid(grid.table_config_path(1))
    cells = grid.plan(spec, str(tmp_path), half="left", students=["NR_g8"], teachers=["R_G1"])
    assert sorted((c.kind, c.config.model, c.config.teacher) for c in cells) == [
        ("baseline", "resnet18_NR_g8", None), ("baseline", "resnet18_R_G1", None),
        ("baseline", "resnet18_R_g8", None), ("kd", "resnet18_NR_g8", "resnet18_R_G1")]
    with pytest.raises(ValueError, match="Unknown students NR_g3.*Valid students"):
        grid.plan(spec, str(tmp_path), students=["NR_g3"])
    with pytest.raises(ValueError, match="Unknown teachers"):
        grid.plan(spec, str(tmp_path), teachers=["R_X"])


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_and_complete(tmp_path, count):
    cells = grid.plan(grid.load_grid(grid.table_config_path(3)), str(tmp_path))
    parts = [grid.shard(cells, i, count) for i in range(count)]
    flat = [c.run_dir for part in parts for c in part]
    assert sorted(flat) == sorted(c.run_dir for c in cells)
    assert len(set(flat)) == len(flat)


@pytest.mark.parametrize("text, error", [("3/2", "0 <= i < n"), ("a/b", "i/n"), ("1", "i/n")])
def test_bad_shard(text, error):
    with pytest.raises(ValueError, match=error):
        grid.parse_shard(text)


def test_claims(tmp_path):
    run_dir = str(tmp_path / "logs" / "synthetic" / "x-s0")
    assert claims.try_claim(run_dir)
    assert not claims.try_claim(run_dir)  # held by this (live) process
    claims.release(run_dir)
    # A lock left by a dead process on this host is stale and gets broken.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket

    with open(run_dir + ".lock", "w") as f:
        json.dump({"host": socket.gethostname(), "pid": int(dead), "since": 0}, f)
    assert claims.try_claim(run_dir)
    claims.release(run_dir)


@pytest.mark.slow
def test_smoke_grid_end_to_end_and_resume(tmp_path):
    spec = grid.load_grid(SMOKE)
    logdir = str(tmp_path)
    cells = grid.plan(spec, logdir)
    assert [c.kind for c in cells].count("kd") == 5
    messages = []
    outcomes = grid.run(spec, cells, logdir, log=messages.append, verbose=0)
    assert outcomes == {"trained": len(cells)}
    assert all(grid.state(c) == "done" for c in cells)
    # A second invocation trains nothing.
    assert grid.run(spec, cells, logdir, log=messages.append, verbose=0) == {"done": len(cells)}

    folder = grid.write_tables(spec, logdir, log=messages.append)
    for name in ("table.md", "table.csv", "table.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0
    text = open(os.path.join(folder, "table.md")).read()
    assert "NR-g2" in text and "R-G4" in text and "Distil. gain" in text
    assert not os.path.exists(os.path.join(folder, "comparison.md"))  # synthetic: no paper values


@pytest.mark.slow
def test_concurrent_shards_train_every_cell_once(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "scripts", "grid.py"), f"--config={SMOKE}",
               f"--logdir={tmp_path}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen(command + [f"--shard={i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    finished = [line.split()[1].rstrip(":") for out, _ in outputs for line in out.splitlines()
                if line.startswith("Finished ")]
    cells = grid.plan(grid.load_grid(SMOKE), str(tmp_path))
    assert sorted(finished) == sorted(c.label for c in cells)  # each run trained exactly once
    dry = subprocess.run(command + ["--dry_run"], capture_output=True, text=True, env=env)
    assert f"{len(cells)} done" in dry.stdout
