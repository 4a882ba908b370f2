"""Pair grids and the CRD benchmark: configs/benchmarks/cifar100_crd.yaml, its published numbers, its tables.

The published numbers' file is checked for its structure and its coverage of the benchmark's pairs (the
READMEs it was transcribed from are not available to the suite). The tables are checked cell by cell on
run folders written directly (no training), and a smoke version of the grid (two small pairs, two
methods, synthetic data) runs end to end through the command.
"""

import csv
import os
import statistics

import numpy as np
import pytest

import kdkeras
from kdkeras import grid
from kdkeras.errors import UsageError
from kdkeras.training.run_folder import RunFolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(ROOT, "configs", "benchmarks", "cifar100_crd.yaml")
PUBLISHED = os.path.join(ROOT, "configs", "benchmarks", "published_cifar100.yaml")
SAME_FAMILY = [("resnet56", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"),
               ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("vgg13", "vgg8")]
CROSS_FAMILY = [("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"), ("resnet32x4", "ShuffleV1"),
                ("resnet32x4", "ShuffleV2"), ("wrn_40_2", "ShuffleV1")]
#: The methods of CRD's tables that kdkeras implements (the others are published-only rows).
CRD_METHODS = ("kd", "fitnets", "at", "sp", "vid", "rkd", "pkt", "nst", "crd")


def test_the_benchmark_lists_the_usual_pairs_and_every_method():
    spec = grid.load_grid(BENCHMARK)
    assert [(p["teacher"], p["student"]) for p in spec.pairs] == SAME_FAMILY + CROSS_FAMILY
    # Every method but RD, which trains a plain network with its own residual counterpart as the teacher
    # (same stage widths), not a student from another network (the config's header says so).
    assert spec.axes == {"method": [m for m in kdkeras.list_methods() if m != "rd"]}
    assert (spec.dataset, spec.seeds, spec.settings) == ("cifar100", 3, {"recipe": "crd"})
    assert spec.published == PUBLISHED
    excluded = {(p["teacher"], p["student"]): p["not_applicable"] for p in spec.pairs if p["not_applicable"]}
    assert sorted(excluded) == sorted(CROSS_FAMILY[1:])
    for entries in excluded.values():
        assert [sorted(e["method"]) for e in entries] == [["at", "fitnets", "nst", "vid"]]
        assert "same resolution" in entries[0]["reason"]


def test_the_published_numbers_are_well_formed_and_cited():
    published = grid.load_published(PUBLISHED)
    assert (published.dataset, published.metric) == ("cifar100", "top-1 test accuracy (%)")
    assert set(published.sources) == {"crd", "dkd"}
    crd, dkd = published.sources["crd"], published.sources["dkd"]
    assert "Tian" in crd["citation"] and "Contrastive Representation Distillation" in crd["citation"]
    assert "ICLR" in crd["citation"] and "Table 1" in crd["citation"] and "Table 2" in crd["citation"]
    assert "Zhao" in dkd["citation"] and "Decoupled Knowledge Distillation" in dkd["citation"]
    assert "CVPR" in dkd["citation"]
    assert "RepDistiller" in crd["transcribed_from"] and "mdistiller" in dkd["transcribed_from"]
    assert crd["names"] == {"KD": "kd", "FitNet": "fitnets", "AT": "at", "SP": "sp", "CC": "cc", "VID": "vid",
                            "RKD": "rkd", "PKT": "pkt", "AB": "ab", "FT": "ft", "FSP": "fsp", "NST": "nst",
                            "CRD": "crd"}
    assert dkd["names"] == {"KD": "kd", "DKD": "dkd"}
    assert set(published.published_only) == {"cc", "ab", "ft", "fsp"}
    # CRD's Tables 1 (7 pairs) and 2 (6 pairs), the DKD README's 11 pairs; every value a percentage.
    counts = {s: sum(e["source"] == s for e in published.results) for s in published.sources}
    assert counts == {"crd": 13, "dkd": 11}
    for entry in published.results:
        for value in entry["methods"].values():
            assert value is None or 50 < value < 80
    # Every source's KD number for a pair is the same (the DKD paper reuses CRD's KD runs).
    for teacher, student in SAME_FAMILY + CROSS_FAMILY:
        assert len({v for v, _ in published.values(teacher, student, "kd")}) == 1


@pytest.mark.parametrize("teacher, student", SAME_FAMILY + CROSS_FAMILY)
def test_every_pair_of_the_benchmark_has_published_numbers(teacher, student):
    published = grid.load_published(PUBLISHED)
    sources = lambda row: [s for _, s in published.values(teacher, student, row)]  # noqa: E731
    assert sources("Teacher") == ["crd"] and sources("Student") == ["crd"]
    for method in CRD_METHODS:
        assert "crd" in sources(method), method
    assert sources("dkd") == ["dkd"] and sources("kd") == ["crd", "dkd"]
    assert sources("reviewkd") == []  # kdkeras methods without a published number in these sources


def test_a_published_file_with_a_mistake_is_refused(tmp_path):
    import yaml

    with open(PUBLISHED) as f:
        good = yaml.safe_load(f)

    def check(mutate, match):
        data = yaml.safe_load(yaml.safe_dump(good))
        mutate(data)
        with pytest.raises(UsageError, match=match):
            grid.check_published(data, "p.yaml")

    check(lambda d: d["results"][0]["methods"].update(fitnet=70.0), "names fitnet: neither kdkeras methods")
    check(lambda d: d["results"][0].update(source="crd2"), "needs a known source")
    check(lambda d: d["results"][0]["methods"].update(kd=7492), "kd must be accuracies in percent")
    check(lambda d: d["results"].append(dict(d["results"][0])), "listed twice")
    check(lambda d: d["sources"]["dkd"].pop("citation"), "Source 'dkd' in 'p.yaml' needs a citation")
    check(lambda d: d["published_only"].update(kd="KD"), "kd in 'published_only' are kdkeras methods")


def test_the_full_benchmark_plans_its_runs_and_leaves_out_the_inapplicable_ones(tmp_path):
    name, specs = grid.load_grids(BENCHMARK)
    cells = grid.plan_all(specs, str(tmp_path))
    kd = [c for c in cells if c.kind == "kd"]
    baselines = [c for c in cells if c.kind == "baseline"]
    # Per seed: 6 teachers + 9 students on hard targets; 11 pairs x 15 methods less 4 pairs x 4 methods.
    assert len(baselines) == 3 * 15 and len(kd) == 3 * (11 * 15 - 16) == 447
    assert len({c.run_dir for c in cells}) == len(cells) == 492
    assert cells[:len(baselines)] == baselines
    assert {c.config.recipe for c in cells} == {"crd"} and {c.config.epochs for c in cells} == {240}
    lr = {c.config.model: c.config.lr for c in baselines}
    assert lr["MobileNetV2"] == lr["ShuffleV1"] == lr["ShuffleV2"] == 0.01 and lr["resnet56"] == 0.05
    runs = {(c.config.teacher, c.config.model, c.config.method) for c in kd}
    assert ("vgg13", "MobileNetV2", "fitnets") in runs and ("ResNet50", "MobileNetV2", "fitnets") not in runs
    lines = []
    assert grid.print_not_applicable(specs, out=lines.append) == 3 * 16
    assert "not applicable (48 runs, not planned): FitNets, AT, NST and VID need" in lines[0]
    # One pair, by its model names.
    one = grid.plan_all(specs, str(tmp_path), students=["resnet20"], teachers=["resnet56"])
    assert len(one) == 3 * (2 + 15)


@pytest.mark.slow
def test_the_inapplicable_runs_are_the_ones_that_fail(tmp_path):
    """Every (pair, method) that the benchmark marks not applicable fails to build its objective; the others build.

    Checked on the cross-family pairs, where taps differ in resolution. The objective is evaluated on two
    images for the methods that read feature maps (AT checks the maps' sizes there, not when the distiller is
    built); the others read the logits or the pooled embedding, whose sizes never depend on a resolution.
    """
    from kdkeras import config as config_lib
    from kdkeras.distiller import distiller_for_run
    from kdkeras.methods import EMBEDDING, LOGITS

    spec = grid.load_grid(BENCHMARK)
    models = {}

    def model(name):
        if name not in models:
            models[name] = kdkeras.build_model(name, num_classes=100, input_shape=(32, 32, 3))
        return models[name]

    x, y = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32), np.array([0, 1])
    for pair in spec.pairs:
        if (pair["teacher"], pair["student"]) not in CROSS_FAMILY:
            continue
        for method in spec.axes["method"]:
            cfg = config_lib.resolve({"model": pair["student"], "teacher": pair["teacher"], "method": method})
            where = (pair["teacher"], pair["student"], method)
            try:
                distiller = distiller_for_run(model(pair["student"]), model(pair["teacher"]), cfg)
                if set(distiller.taps) - {LOGITS, EMBEDDING}:
                    distiller.per_example_objective(x, y)
                error = None
            except UsageError as err:
                error = str(err)
            if grid.not_applicable(pair, cfg):
                assert error is not None and "spatial size" in error, where
            else:
                assert error is None, (where, error)


PAIR_GRID = """
name: pairs
dataset: synthetic
seeds: {seeds}
published: {published}
settings: {{epochs: 1, train_size: 16, test_size: 16, batch_size: 16{extra}}}
axes:
  method: [kd, at]
pairs:
  - teacher: resnet56
    student: resnet20
    not_applicable: [{{method: at, reason: "an excluded run, for the test"}}]
  - {{teacher: resnet20, student: resnet8}}
"""
#: The smoke grid's pairs: one of the benchmark's, with published numbers, and a small one without.
PAIR, SMALL = "resnet56 -> resnet20", "resnet20 -> resnet8"


def _pair_config(tmp_path, seeds=1, extra=""):
    path = tmp_path / "pairs.yaml"
    path.write_text(PAIR_GRID.format(seeds=seeds, published=PUBLISHED, extra=extra))
    return str(path)


def test_a_pair_grid_plans_baselines_first_and_no_inapplicable_run(tmp_path):
    spec = grid.load_grid(_pair_config(tmp_path, seeds=2))
    cells = grid.plan(spec, str(tmp_path))
    # resnet20 is the first pair's student and the second's teacher: one hard-target run per seed for both.
    assert [c.kind for c in cells] == ["baseline"] * 6 + ["kd"] * 6
    assert sorted(c.config.model for c in cells if c.kind == "baseline") == sorted(
        ["resnet56", "resnet20", "resnet8"] * 2)
    kd = sorted((c.config.teacher, c.config.model, c.config.method, c.config.seed) for c in cells if c.kind == "kd")
    assert kd == sorted((t, s, m, seed) for seed in (0, 1) for t, s, m in
                        [("resnet56", "resnet20", "kd"), ("resnet20", "resnet8", "kd"), ("resnet20", "resnet8", "at")])
    assert dict(cells[-1].axes) == {"method": cells[-1].config.method}
    assert all(c.axes == () for c in cells if c.kind == "baseline")  # hard targets: no method to show
    parts = [grid.shard(cells, i, 3) for i in range(3)]
    assert sorted(c.run_dir for part in parts for c in part) == sorted(c.run_dir for c in cells)
    # Filters take model names.
    assert {c.config.model for c in grid.plan(spec, str(tmp_path), students=["resnet8"])} == {"resnet20", "resnet8"}
    assert {c.config.model for c in grid.plan(spec, str(tmp_path), teachers=["resnet56"])} == {"resnet56",
                                                                                               "resnet20"}
    with pytest.raises(UsageError, match="Unknown students resnet9 for grid pairs. Valid students: resnet20, "
                                         "resnet8"):
        grid.plan(spec, str(tmp_path), students=["resnet9"])
    with pytest.raises(UsageError, match="has no halves"):
        grid.plan(spec, str(tmp_path), half="left")


@pytest.mark.parametrize("text, match", [
    ("name: x\nnet: wrn10x1\npairs: [{teacher: resnet56, student: resnet20}]\n", "both 'pairs' and 'net'"),
    ("name: x\npairs: []\n", "must list teacher-student pairs"),
    ("name: x\npairs: [{teacher: resnet56}]\n", "needs a teacher and a student"),
    ("name: x\npairs: [{teacher: a, student: b}, {teacher: a, student: b}]\n", "Pair a -> b is listed twice"),
    ("name: x\npairs: [{teacher: a, student: b, method: kd}]\n", "Unknown key.s. method in a pair"),
    ("name: x\npairs: [{teacher: a, student: b, not_applicable: [{method: at}]}]\n", "needs a reason"),
    ("name: x\naxes: {method: [kd, at]}\npairs: [{teacher: a, student: b, not_applicable: "
     "[{method: fitnets, reason: r}]}]\n", "names method fitnets, not a value of the grid's axis"),
    ("name: x\npairs: [{teacher: a, student: b, not_applicable: [{reason: r}]}]\n", "names no setting"),
    ("name: x\npublished: nowhere.yaml\npairs: [{teacher: a, student: b}]\n", "do not exist"),
    ("name: x\nnet: wrn10x1\nhalves: {left: {students: [NR_g2], teachers: [R_g2]}}\npublished: p.yaml\n",
     "'published' .* is for pair grids"),
    ("name: x\nseeds: 1\n", "needs 'net' and 'halves' .a table. or 'pairs'"),
])
def test_a_malformed_pair_grid_is_refused_in_one_line(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=match) as info:
        grid.load_grid(str(path))
    assert "\n" not in str(info.value)


def _finish(cells, skip=()):
    """Writes a finished run folder for every cell (but ``skip``); returns ``{run_dir: results}``."""
    stored = {}
    for i, cell in enumerate(cells):
        if cell.run_dir in skip:
            continue
        folder = RunFolder(cell.run_dir)
        os.makedirs(folder.path)
        folder.write_config(cell.config)
        final, at_best_val, best = np.random.default_rng(500 + i).uniform(0.05, 0.95, size=3)
        results = {"model": cell.config.model, "teacher": cell.config.teacher, "seed": cell.config.seed,
                   "epochs": cell.config.epochs, "test_accuracy": float(final),
                   "test_accuracy_at_best_val": float(at_best_val), "best_test_accuracy": float(best),
                   "val_accuracy": 0.5, "best_val_epoch": 1}
        folder.write_results(results)
        stored[cell.run_dir] = results
    return stored


def test_the_pair_tables_hold_the_runs_numbers_beside_the_published_ones(tmp_path):
    logdir = str(tmp_path / "logs")
    spec = grid.load_grid(_pair_config(tmp_path, seeds=3, extra=", val_size: 8"))
    cells = grid.plan(spec, logdir)
    unfinished = next(c for c in cells if c.kind == "kd" and c.config.method == "at" and c.config.seed == 2)
    stored = _finish(cells, skip={unfinished.run_dir})
    folder = grid.write_tables(spec, logdir, log=lambda message: None)
    assert sorted(os.listdir(folder)) == ["comparison.md", "table.csv", "table.md"]

    def expected(teacher, student, method, key):
        """``[percent per finished seed]`` of one cell, from the stored results."""
        out = []
        for c in cells:
            cfg = c.config
            if c.kind == "kd":
                match = (cfg.teacher, cfg.model, cfg.method) == (teacher, student, method)
            else:
                match = method is None and cfg.model == (teacher or student)
            if match and c.run_dir in stored:
                out.append(100 * stored[c.run_dir][key])
        return out

    cell_runs = {(PAIR, "Teacher"): ("resnet56", None, None), (PAIR, "Student"): (None, "resnet20", None),
                 (PAIR, "kd"): ("resnet56", "resnet20", "kd"),
                 (SMALL, "Teacher"): ("resnet20", None, None), (SMALL, "Student"): (None, "resnet8", None),
                 (SMALL, "kd"): ("resnet20", "resnet8", "kd"), (SMALL, "at"): ("resnet20", "resnet8", "at")}
    with open(os.path.join(folder, "table.csv")) as f:
        rows = {(r["pair"], r["measure"], r["row"]): r for r in csv.DictReader(f)}
    for measure, key in (("final", "test_accuracy"), ("at_best_val", "test_accuracy_at_best_val"),
                         ("best_on_test", "best_test_accuracy")):
        for (pair, row), (teacher, student, method) in cell_runs.items():
            values = expected(teacher, student, method, key)
            got = rows[(pair, measure, row)]
            assert int(got["n"]) == len(values) == (2 if (pair, row) == (SMALL, "at") else 3)
            assert float(got["mean"]) == pytest.approx(statistics.fmean(values), abs=1e-4)
            assert float(got["std"]) == pytest.approx(statistics.stdev(values), abs=1e-4)
        na = rows[(PAIR, measure, "at")]
        assert (na["n"], na["mean"], na["not_applicable"]) == ("0", "", "an excluded run, for the test")
    assert rows[(PAIR, "final", "kd")]["published"] == "70.66:crd 70.66:dkd"
    assert rows[(PAIR, "final", "at")]["published"] == "70.55:crd"
    assert rows[(SMALL, "final", "kd")]["published"] == ""
    assert rows[(SMALL, "final", "Teacher")]["mean"] == rows[(PAIR, "final", "Student")]["mean"]  # one run

    text = open(os.path.join(folder, "comparison.md")).read()
    assert "Tian, Dilip Krishnan, Phillip Isola. Contrastive Representation Distillation" in text
    assert "Decoupled Knowledge Distillation" in text and "https://arxiv.org/abs/1910.10699" in text
    assert "**These runs are on synthetic, the published numbers on cifar100" in text
    assert f"No published numbers for: {SMALL}." in text

    def table(text, title):
        block = text.split(f"## kdkeras: {title}", 1)[1].split("\n## ", 1)[0]
        lines = [line for line in block.splitlines() if line.startswith("|")]
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        return header, {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
                        for line in lines[2:]}

    header, body = table(text, "final-epoch test accuracy (%)")
    assert header == ["method", PAIR, SMALL]
    assert list(body) == ["Teacher", "Student", "kd", "at", "cc (published only)", "ab (published only)",
                          "ft (published only)", "fsp (published only)"]

    def ours_and_published(teacher, student, method, published):
        values = expected(teacher, student, method, "test_accuracy")
        mean, std = statistics.fmean(values), statistics.stdev(values)
        diff = round(mean - float(published[:5]), 2) + 0
        return f"{mean:.2f} ± {std:.2f} (n={len(values)}) / {published} ({diff:+.2f})"

    assert body["kd"][0] == ours_and_published("resnet56", "resnet20", "kd", "70.66 [crd, dkd]")
    assert body["Teacher"][0] == ours_and_published("resnet56", None, None, "72.34 [crd]")
    assert body["Student"][0] == ours_and_published(None, "resnet20", None, "69.06 [crd]")
    assert body["at"][0] == "n/a [1] / 70.55 [crd]"  # not run: the published number stands alone
    values = expected("resnet20", "resnet8", "at", "test_accuracy")
    assert body["at"][1] == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (n=2) / —"
    assert body["kd"][1].endswith("(n=3) / —")
    assert body["cc (published only)"] == ["not in kdkeras / 69.63 [crd]", "not in kdkeras / —"]
    assert body["fsp (published only)"][0] == "not in kdkeras / 69.95 [crd]"
    for title in ("test accuracy at the best validation epoch (%)", "best-epoch test accuracy (OPTIMISTIC"):
        assert f"## kdkeras: {title}" in text
    assert f"1. an excluded run, for the test ({PAIR}: at)" in text
    assert "cc: CC, Correlation Congruence" in text
    table_md = open(os.path.join(folder, "table.md")).read()
    assert "| at | n/a [1] | " in table_md and "[crd" not in table_md  # ours only

    # Missing runs stay missing: without a finished run every cell is a dash, never a number.
    folder = grid.write_tables(spec, str(tmp_path / "empty"), log=lambda message: None)
    text = open(os.path.join(folder, "comparison.md")).read()
    _, body = table(text, "final-epoch test accuracy (%)")
    assert body["kd"] == ["— / 70.66 [crd, dkd]", "— / —"]
    assert body["Teacher"] == ["— / 72.34 [crd]", "— / —"]
    assert "## kdkeras: best-epoch" not in text  # a measure that no run reports is left out


@pytest.mark.slow
def test_the_smoke_benchmark_runs_end_to_end_through_the_command(tmp_path):
    """Two pairs x two methods on synthetic data, 16 images, one epoch: trained, tabulated, beside the
    published numbers."""
    from tests.helpers import run_script

    config, logdir = _pair_config(tmp_path), str(tmp_path / "logs")
    done = run_script("grid.py", f"--config={config}", f"--logdir={logdir}", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pairs: 6 trained" in done.stdout
    text = open(os.path.join(logdir, "pairs", "comparison.md")).read()
    block = text.split("## kdkeras: final-epoch test accuracy (%)", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in block.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["method"] == [PAIR, SMALL]
    for row, published in (("Teacher", "72.34 [crd]"), ("Student", "69.06 [crd]"), ("kd", "70.66 [crd, dkd]")):
        assert f"(n=1) / {published} (" in rows[row][0], rows[row]
        assert rows[row][1].endswith("(n=1) / —"), rows[row]
    assert rows["at"] == ["n/a [1] / 70.55 [crd]", rows["at"][1]] and rows["at"][1].endswith("(n=1) / —")
    dry = run_script("grid.py", f"--config={config}", f"--logdir={logdir}", "--dry_run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "6 runs, shard 0/1 has 6" in dry.stdout and "6 done" in dry.stdout
    assert "not applicable (1 runs, not planned): an excluded run, for the test" in dry.stdout
    assert f"{PAIR} (method=at, seed 0)" in dry.stdout
