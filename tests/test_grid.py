"""Grid planning, sharding, claims, and a small end-to-end grid on synthetic data."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import types

import pytest
from helpers import one_pair_grid

from kdkeras import config as config_lib
from kdkeras import claims, grid
from kdkeras.training import resume
from kdkeras.training import run_folder as run_folder_lib

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
        teacher_dir = run_folder_lib.run_dir(config_lib.teacher_config(cell.config), str(tmp_path))
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
    assert claims.owner(run_dir) is None
    # A claim left by a dead process on this host is taken over at once.
    code = f"from kdkeras import claims; import os; assert claims.try_claim({run_dir!r}); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    left = claims.owner(run_dir)
    assert left is not None and left.dead and not left.lapsed
    assert claims.try_claim(run_dir)
    assert claims.owner(run_dir).pid == os.getpid()
    claims.release(run_dir)


def test_a_claim_lost_to_another_process_logs_no_error(tmp_path, monkeypatch, caplog):
    """Two grids that reach a stale claim at once: the one that loses says so, and logs no ``timed out`` error."""
    from flufl.lock import Lock

    run_dir = str(tmp_path / "logs" / "synthetic" / "x-s0")
    os.makedirs(os.path.dirname(run_dir))
    winner = Lock(claims.lock_path(run_dir))  # the other process's lock, taken between owner() and lock()
    winner.lock()
    monkeypatch.setattr(claims, "owner", lambda _: None)  # it had not taken it yet when this one looked
    try:
        with caplog.at_level("DEBUG"):
            assert not claims.try_claim(run_dir)
    finally:
        winner.unlock()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")], caplog.records


def test_a_finished_run_loses_the_claim_its_dead_owner_left(tmp_path):
    """Killed between writing results.json and releasing its claim: the next pass removes the claim."""
    cell = _cell(tmp_path)
    code = f"from kdkeras import claims; import os; assert claims.try_claim({cell.run_dir!r}); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    os.makedirs(cell.run_dir, exist_ok=True)
    with open(os.path.join(cell.run_dir, "results.json"), "w") as f:
        json.dump({"test_accuracy": 0.5}, f)
    assert claims.owner(cell.run_dir).dead
    assert grid.run_cell(cell, str(tmp_path), log=lambda *_: None) == "done"
    assert claims.owner(cell.run_dir) is None and not os.path.exists(claims.lock_path(cell.run_dir))
    assert not [f for f in os.listdir(os.path.dirname(cell.run_dir)) if ".lock" in f]  # claim file too


def test_a_finished_run_keeps_a_live_claim(tmp_path):
    cell = _cell(tmp_path)
    assert claims.try_claim(cell.run_dir)
    try:
        os.makedirs(cell.run_dir, exist_ok=True)
        with open(os.path.join(cell.run_dir, "results.json"), "w") as f:
            json.dump({"test_accuracy": 0.5}, f)
        assert grid.run_cell(cell, str(tmp_path), log=lambda *_: None) == "done"
        assert claims.owner(cell.run_dir).pid == os.getpid()
    finally:
        claims.release(cell.run_dir)


def test_lock_files_of_earlier_versions(tmp_path):
    """A JSON lock file (kdkeras before leases): held while its process on this host lives."""
    import socket

    run_dir = str(tmp_path / "synthetic" / "x-s0")
    os.makedirs(os.path.dirname(run_dir))
    with open(claims.lock_path(run_dir), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": 0}, f)
    os.utime(claims.lock_path(run_dir), (0, 0))  # written long ago: the process still lives
    assert claims.is_claimed(run_dir) and not claims.try_claim(run_dir)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    with open(claims.lock_path(run_dir), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": int(gone), "since": 0}, f)
    assert claims.owner(run_dir).dead and claims.try_claim(run_dir)
    claims.release(run_dir)
    assert not os.path.exists(claims.lock_path(run_dir))


def _claim_from_another_host(run_dir, lease_end):
    """The files ``flufl.lock`` leaves for a claim held on host ``node7`` whose lease ends at ``lease_end``."""
    lock = claims.lock_path(run_dir)
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    claim_file = f"{lock}|node7.cluster|4242|123456"
    with open(claim_file, "w") as f:
        f.write(claim_file)
    os.link(claim_file, lock)
    os.utime(claim_file, (lease_end, lease_end))


def _cell(tmp_path):
    spec = grid.load_grid(SMOKE)
    return grid.plan(spec, str(tmp_path))[0]


def test_a_lapsed_lease_from_a_dead_host_is_taken_over(tmp_path):
    cell = _cell(tmp_path)
    _claim_from_another_host(cell.run_dir, time.time() - 600)  # its host stopped renewing 10 minutes ago
    assert grid.state(cell) == "interrupted"
    lines = []
    grid.print_plan("smoke", [cell], [cell], 0, 1, out=lines.append)
    assert "interrupted" in lines[1] and "lease of node7.cluster:4242 lapsed at" in lines[1]
    assert claims.try_claim(cell.run_dir)
    who = claims.owner(cell.run_dir)
    assert (who.host, who.pid) == (claims.this_host(), os.getpid()) and who.live
    claims.release(cell.run_dir)
    assert not os.path.exists(claims.lock_path(cell.run_dir))


def test_a_fresh_lease_from_another_host_is_respected(tmp_path):
    cell = _cell(tmp_path)
    _claim_from_another_host(cell.run_dir, time.time() + 240)  # renewed a moment ago, for 4 minutes
    assert grid.state(cell) == "running"
    lines = []
    grid.print_plan("smoke", [cell], [cell], 0, 1, out=lines.append)
    assert "running" in lines[1] and "held by node7.cluster:4242, lease until" in lines[1]
    assert not claims.try_claim(cell.run_dir)
    assert grid.run_cell(cell, str(tmp_path), log=lines.append) == "skipped"
    assert claims.owner(cell.run_dir).host == "node7.cluster"  # untouched


PAIR_GRID = one_pair_grid("pair", epochs=1, train_size=64, batch_size=64)


def test_a_kd_run_whose_teacher_another_process_trains_is_deferred_not_waited_for(tmp_path, monkeypatch):
    """The grid trains its other cells first and comes back to the KD run once the teacher's claim is gone."""
    import importlib

    run_lib = importlib.import_module("kdkeras.experiments.grid.run")  # the module, not grid.run the function
    config = tmp_path / "pair.yaml"
    config.write_text(PAIR_GRID)
    logdir = str(tmp_path / "logs")
    cells = grid.plan(grid.load_grid(str(config)), logdir)
    kd = next(c for c in cells if c.kind == "kd")
    teacher = next(c for c in cells if c.kind == "baseline" and c.config.model == kd.config.teacher)
    student = next(c for c in cells if c.kind == "baseline" and c is not teacher)
    _claim_from_another_host(teacher.run_dir, time.time() + 240)  # another host is training the teacher
    lines = []
    assert grid.run_cell(kd, logdir, log=lines.append, wait_for_teacher=False) == "deferred"
    assert lines == [f"Deferring {kd.label}: its teacher {os.path.basename(teacher.run_dir)} is being trained by "
                     f"another process (held by node7.cluster:4242, lease until "
                     f"{lines[0].split('lease until ')[1].split(')')[0]}); coming back to it after the other runs"]
    assert run_lib.teacher_held(student, logdir) is None  # not a KD run

    def other_host_stops(seconds):  # while this process waits, the other host dies: its lease lapses
        lapsed = time.time() - 600
        os.utime(f"{claims.lock_path(teacher.run_dir)}|node7.cluster|4242|123456", (lapsed, lapsed))

    monkeypatch.setattr(run_lib, "time", types.SimpleNamespace(sleep=other_host_stops))  # the grid's polls only
    lines = []
    outcomes = grid.run("pair", [kd, student], logdir, log=lines.append, verbose=0, poll_s=0)
    text = "\n".join(lines)
    assert outcomes == {"deferred": 1, "trained": 2}, text
    assert text.index(f"Deferring {kd.label}") < text.index(f"Finished {student.label}") < \
        text.index(f"[+] pair: {kd.label} (back to it") < text.index(f"Finished {kd.label}"), text
    assert "Waiting for teacher" not in text
    assert all(grid.state(c) == "done" for c in cells)  # the teacher was trained on the way, once


def test_a_grid_whose_teachers_train_longer_plans_them_so_and_says_it(tmp_path):
    config = tmp_path / "pair.yaml"
    config.write_text(PAIR_GRID.replace("  epochs: 1\n", "  epochs: 1\n  teacher_epochs: 3\n"))
    cells = grid.plan(grid.load_grid(str(config)), str(tmp_path))
    # The student's R baseline (the table's "Baseline" row) trains as long as the student; its teacher longer.
    assert sorted((c.kind, c.config.model, c.config.epochs) for c in cells) == [
        ("baseline", "wrn10x1_NR_g2", 1), ("baseline", "wrn10x1_R_g2", 1), ("baseline", "wrn10x1_R_g2", 3),
        ("kd", "wrn10x1_NR_g2", 1)]
    lines = []
    grid.print_plan("pair", cells, cells, 0, 1, out=lines.append)
    assert any(" wrn10x1_R_g2 (seed 0, 3 epochs) -> " in line for line in lines), lines
    assert any(" wrn10x1_NR_g2 from wrn10x1_R_g2 (seed 0, 1 epoch) -> " in line for line in lines), lines


def test_the_plan_names_what_each_cell_trains(tmp_path):
    """Baselines train on hard targets (no KD axis shown); a KD cell of a grid whose method is a setting, not
    an axis, still names its method unless it is Hinton KD."""
    path = tmp_path / "rd.yaml"
    path.write_text("name: rd\nnet: wrn10x1\ndataset: synthetic\nhalves: {left: {students: [NR_g2], teachers: "
                    "[R_g2]}}\nsettings: {method: rd}\n")
    for config, expected in ((str(path), ", method=rd)"), (SMOKE, ")")):
        cells = grid.plan(grid.load_grid(config), str(tmp_path))
        lines = []
        grid.print_plan("x", cells, cells, 0, 1, out=lines.append)
        kd = [line for line in lines if " kd " in line]
        assert kd and all(line.split(" -> ")[0].endswith(expected) for line in kd), lines
        assert not any("method=" in line for line in lines if " baseline " in line), lines


def test_a_held_lease_is_renewed_by_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.LEASE_ENV, "2")  # flufl.lock keeps lease ends in whole seconds
    run_dir = str(tmp_path / "synthetic" / "x-s0")
    assert claims.try_claim(run_dir)
    try:
        first = claims.owner(run_dir).lease_end
        while time.time() <= first:  # let the first lease run out: only renewal can keep the claim
            time.sleep(max(0.05, first - time.time()))
        # The heartbeat renews it (every quarter lease, when this loaded machine lets its thread run):
        # poll for a lease that ends in the future, with a generous deadline.
        deadline, renewed, live = time.monotonic() + 120, None, False
        while not live and time.monotonic() < deadline:
            renewed = claims.owner(run_dir)
            live = renewed is not None and renewed.lease_end > time.time()  # now > first: a new lease
            if not live:
                time.sleep(0.05)
        assert live and renewed.lease_end > first, f"the lease ending at {first} was not renewed in 120 s: {renewed}"
    finally:
        claims.release(run_dir)


@pytest.mark.parametrize("value", ["0", "-3", "five"])
def test_bad_lease_length(monkeypatch, value):
    monkeypatch.setenv(claims.LEASE_ENV, value)
    with pytest.raises(ValueError, match="KDKERAS_LEASE_S must be a positive number"):
        claims.lease_seconds()


@pytest.mark.slow
def test_concurrent_shards_train_every_cell_once_then_resume_and_tables(tmp_path):
    """The smoke grid end to end: two concurrent shards train every cell once; a rerun trains nothing; the tables."""
    command = [sys.executable, os.path.join(ROOT, "scripts", "grid.py"), f"--config={SMOKE}",
               f"--logdir={tmp_path}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen(command + [f"--shard={i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    spec = grid.load_grid(SMOKE)
    cells = grid.plan(spec, str(tmp_path))
    assert [c.kind for c in cells].count("kd") == 5
    finished = [line.split()[1].rstrip(":") for out, _ in outputs for line in out.splitlines()
                if line.startswith("Finished ")]
    assert sorted(finished) == sorted(c.label for c in cells)  # each run trained exactly once
    # Each shard's summary line ("smoke_grid: 1 skipped, 1 taken over, 5 trained"): every cell trained once.
    summaries = [line for out, _ in outputs for line in out.splitlines() if re.match(r"smoke_grid: \d+ ", line)]
    trained = [int(n) for line in summaries for n in re.findall(r"(\d+) (?:trained|taken over)\b", line)]
    assert len(summaries) == 2 and sum(trained) == len(cells), [out[-1000:] for out, _ in outputs]
    assert all(grid.state(c) == "done" for c in cells)
    dry = subprocess.run(command + ["--dry_run"], capture_output=True, text=True, env=env)
    assert f"{len(cells)} done" in dry.stdout
    # A second invocation trains nothing.
    messages = []
    assert grid.run(spec, cells, str(tmp_path), log=messages.append, verbose=0) == {"done": len(cells)}

    folder = grid.write_tables(spec, str(tmp_path), log=messages.append)
    for name in ("table.md", "table.csv", "table.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0
    text = open(os.path.join(folder, "table.md")).read()
    assert "NR-g2" in text and "R-G4" in text and "Distil. gain" in text
    assert not os.path.exists(os.path.join(folder, "comparison.md"))  # synthetic: no paper values


PREEMPT_GRID = one_pair_grid("preempt", epochs=6, train_size=128, test_size=64, batch_size=64)


@pytest.mark.slow
def test_a_preempted_grid_worker_is_replaced_by_the_others(tmp_path):
    """Three grid workers, as a Slurm array or an Indexed Job starts them; the one training the teacher is killed."""
    from tests.helpers import script_command, script_env

    config = tmp_path / "preempt.yaml"
    config.write_text(PREEMPT_GRID)
    logdir = str(tmp_path / "logs")
    cells = grid.plan(grid.load_grid(str(config)), logdir)
    assert len(cells) == 3
    teacher = next(i for i, c in enumerate(cells) if c.kind == "baseline" and c.config.model.endswith("_R_g2"))
    procs, logs = [], []
    for i in range(3):
        path = str(tmp_path / f"worker{i}.log")
        with open(path, "w") as out:
            procs.append(subprocess.Popen(
                script_command("grid.py", f"--config={config}", f"--logdir={logdir}", f"--shard={i}/3"),
                stdout=out, stderr=subprocess.STDOUT, text=True, env=script_env(KDKERAS_LEASE_S="30")))
        logs.append(path)
    # Whoever trains the teacher is preempted: its own shard, or the student's shard, which trains a missing
    # teacher first when it gets there before the teacher's shard does.
    backup = os.path.join(cells[teacher].run_dir, "backup", "training_metadata.json")
    deadline, holder = time.time() + 300, None
    while time.time() < deadline and all(p.poll() is None for p in procs):
        holder = claims.owner(cells[teacher].run_dir)
        if holder is not None and resume.backup_epoch(os.path.dirname(backup)) >= 1:
            break
        time.sleep(0.2)
    assert all(p.poll() is None for p in procs), "\n----\n".join(open(x).read()[-3000:] for x in logs)
    assert holder is not None and resume.backup_epoch(os.path.dirname(backup)) >= 1, "no epoch of the teacher ended"
    victim_index = next(i for i, p in enumerate(procs) if p.pid == holder.pid)
    victim = procs[victim_index]
    victim.send_signal(signal.SIGKILL)  # preempted mid-run, after its first epoch
    victim.wait()
    survivors = [(p, path) for i, (p, path) in enumerate(zip(procs, logs)) if i != victim_index]
    for p, path in survivors:
        try:
            p.wait(timeout=420)
        except subprocess.TimeoutExpired:
            for q, _ in survivors:
                q.kill()
            pytest.fail("survivors did not finish:\n" + "\n".join(open(x).read()[-2000:] for _, x in survivors))
        assert p.returncode == 0, open(path).read()[-3000:]
    outputs = [open(path).read() for _, path in survivors]
    finished = [line.split()[1].rstrip(":") for path in logs for line in open(path).read().splitlines()
                if line.startswith("Finished ")]
    assert sorted(finished) == sorted(os.path.basename(c.run_dir) for c in cells)  # each exactly once
    assert all(grid.state(c) == "done" for c in cells)
    # The killed run was resumed from its backup, not started over.
    name = os.path.basename(cells[teacher].run_dir)
    assert any(f"Resuming {name} at epoch" in out or f"All 6 epochs of {name} finished before" in out
               for out in outputs), "\n----\n".join([open(logs[victim_index]).read(), *outputs])
    assert not any(f"Training {cells[teacher].config.model} on hard targets" in out for out in outputs), \
        "\n----\n".join([open(logs[victim_index]).read(), *outputs])
    assert not [f for f in os.listdir(os.path.join(logdir, "synthetic")) if ".lock" in f]


def test_the_methods_ablation_plans_every_method_and_dirac_beside_shared_baselines(tmp_path):
    name, specs = grid.load_grids(os.path.join(ROOT, "configs", "ablations", "wrn40x2_methods.yaml"))
    cells = grid.plan_all(specs, str(tmp_path))
    kd = [c for c in cells if c.kind == "kd"]
    assert sorted({(c.config.method, c.config.init) for c in kd}) == [
        ("at", "he"), ("dkd", "he"), ("fitnets", "he"), ("kd", "dirac"), ("kd", "he")]
    assert len(kd) == 5 * 4  # 2 students x 2 teachers per arm
    plain_kd = [c for c in kd if c.config.method == "kd" and c.config.init == "he"]
    table6 = grid.plan(grid.load_grid(grid.table_config_path(6)), str(tmp_path))
    assert {c.run_dir for c in plain_kd} <= {c.run_dir for c in table6}  # the same runs as Table 6's
    nr_dirac = [c for c in cells if c.kind == "baseline" and "_NR_" in c.config.model and c.config.init == "dirac"]
    assert len(nr_dirac) == 2  # the teacher-free arm


SHIPPED = sorted(os.path.relpath(p, os.path.join(ROOT, "kdkeras"))
                 for p in __import__("glob").glob(os.path.join(ROOT, "kdkeras", "configs", "**", "*.yaml"),
                                                  recursive=True)
                 if not os.path.basename(p).startswith("published_"))  # data: tests/test_benchmark_crd.py


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_config_loads_and_plans(path, tmp_path):
    name, specs = grid.load_grids(grid.resolve_config_path(path))
    cells = grid.plan_all(specs, str(tmp_path))
    assert name and specs and cells
    assert len({c.run_dir for c in cells}) == len(cells)  # one cell per run folder
    assert {grid.state(c) for c in cells} == {"to do"}


def test_the_reduced_methods_ablation_plans_each_method_once_per_seed(tmp_path):
    name, specs = grid.load_grids(grid.resolve_config_path("configs/reduced/methods_wrn40x1.yaml"))
    cells = grid.plan_all(specs, str(tmp_path))
    students = sorted((c.config.method, c.config.init, c.config.seed) for c in cells if c.kind == "kd")
    assert students == sorted((m, i, s) for m, i in [("kd", "he"), ("fitnets", "he"), ("at", "he"),
                                                      ("dkd", "he"), ("kd", "dirac")] for s in (0, 1))
    assert {(c.config.epochs, c.config.val_size, c.config.dropout) for c in cells} == {(6, 1000, 0.0)}


def test_the_cifar100_study_plans_both_nets_and_the_stronger_teacher(tmp_path):
    name, specs = grid.load_grids(grid.resolve_config_path("configs/reduced/cifar100_wrn.yaml"))
    cells = grid.plan_all(specs, str(tmp_path))
    assert name == "reduced_cifar100_wrn" and {c.config.dataset for c in cells} == {"cifar100"}
    assert {(c.config.epochs, c.config.val_size, c.config.precise_bn) for c in cells} == {(30, 2500, 64)}
    kd = sorted((c.config.model, c.config.teacher, str(c.config.dropout), c.config.seed)
                for c in cells if c.kind == "kd")
    arms = [("wrn16x1_NR_g2", "wrn16x1_R_g2"), ("wrn16x1_NR_g2", "wrn16x2_R_g2"), ("wrn40x1_NR_g2", "wrn40x1_R_g2")]
    assert kd == sorted((s, t, d, seed) for s, t in arms for d in ("None", "0.0") for seed in (0, 1))
    # A teacher named by its whole name (another network) is planned as a baseline run of its own, with
    # the student's data and recipe overrides, and the shared R and NR baselines are planned once.
    teachers = [c for c in cells if c.kind == "baseline" and c.config.model == "wrn16x2_R_g2"]
    assert len(teachers) == 4 and {c.config.epochs for c in teachers} == {30}
    assert len({c.run_dir for c in cells}) == len(cells) == 32
