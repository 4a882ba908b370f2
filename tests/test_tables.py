"""Tables 1-6: the printed numbers, the Acc. drop / Distil. gain definitions and the renderers."""

import csv
import io
import math
import os

import pytest

from kdkeras import tables
from kdkeras.paper import ACCURACY_TABLES
from kdkeras.tables import TableHalf

LEFT_STUDENTS = ("NR-g2", "NR-g4", "NR-g8", "NR-g16")
LEFT_TEACHERS = ("R-G1", "R-G2", "R-G4", "R-G8", "R-G16")
RIGHT_STUDENTS = ("NR-G2", "NR-G4", "NR-G8", "NR-G16")
RIGHT_TEACHERS = ("R-g2", "R-g4", "R-g8", "R-g16")
HALVES = [(n, side) for n in range(1, 7) for side in ("left", "right")]
#: Printed values have two decimals at most; a difference of two rounded
#: numbers is within one unit of the last printed digit.
PRINTED_TOLERANCE = 0.011


# ----------------------------------------------------------------- printed tables


def test_accuracy_tables_shape():
    assert sorted(ACCURACY_TABLES) == [1, 2, 3, 4, 5, 6]
    assert [ACCURACY_TABLES[n]["net"] for n in range(1, 7)] == [
        "resnet18", "mobilenetv2", "wrn22x2", "wrn22x10", "wrn28x2", "wrn40x2"]
    for n, side in HALVES:
        half = ACCURACY_TABLES[n][side]
        students, teachers = ((LEFT_STUDENTS, LEFT_TEACHERS) if side == "left"
                              else (RIGHT_STUDENTS, RIGHT_TEACHERS))
        assert half["students"] == students
        assert half["teachers"] == teachers
        assert tuple(half["kd"]) == teachers
        rows = [half["kd"][t] for t in teachers] + [
            half[k] for k in ("baseline", "nr_baseline", "acc_drop", "distil_gain")]
        for row in rows:
            assert tuple(row) == students
            for value in row.values():
                assert isinstance(value, str)
                float(value)


def test_accuracy_tables_spot_checks():
    # Cells read off the paper's text, keeping the printed precision.
    assert ACCURACY_TABLES[1]["left"]["kd"]["R-G1"]["NR-g2"] == "71.93"
    assert ACCURACY_TABLES[1]["left"]["kd"]["R-G1"]["NR-g4"] == "71.3"
    assert ACCURACY_TABLES[1]["right"]["kd"]["R-g2"]["NR-G2"] == "73.88"
    assert ACCURACY_TABLES[2]["left"]["baseline"]["NR-g16"] == "70.25"
    assert ACCURACY_TABLES[3]["right"]["kd"]["R-g8"]["NR-G16"] == "66.30"
    assert ACCURACY_TABLES[4]["right"]["nr_baseline"]["NR-G16"] == "71.1"
    assert ACCURACY_TABLES[5]["left"]["kd"]["R-G2"]["NR-g2"] == "62.43"
    assert ACCURACY_TABLES[6]["left"]["distil_gain"]["NR-g2"] == "-14.29"
    assert ACCURACY_TABLES[6]["right"]["acc_drop"]["NR-G2"] == "30.05"


def _disagreements(definition, printed_key):
    """``{(table, side, student): (computed, printed)}`` beyond the printed rounding."""
    out = {}
    for n, side in HALVES:
        printed = ACCURACY_TABLES[n][side]
        computed = definition(tables.half_from_printed(printed))
        for s in printed["students"]:
            value, expected = computed[s], float(printed[printed_key][s])
            if value is None or abs(value - expected) > PRINTED_TOLERANCE:
                out[(n, side, s)] = (value, expected)
    return out


def test_acc_drop_matches_every_printed_cell():
    # All 48 printed Acc. drop cells equal Baseline - NR-baseline.
    assert _disagreements(tables.acc_drop, "acc_drop") == {}


def test_distil_gain_matches_every_printed_cell():
    # All 48 printed Distil. gain cells equal max over teachers of KD - Baseline.
    assert _disagreements(tables.distil_gain, "distil_gain") == {}


def test_distil_gain_example_from_table1():
    half = tables.half_from_printed(ACCURACY_TABLES[1]["left"])
    assert tables.distil_gain(half)["NR-g16"] == pytest.approx(73.79 - 71.53)
    assert tables.best_teacher(half)["NR-g16"] == "R-G4"
    assert tables.acc_drop(half)["NR-g16"] == pytest.approx(71.53 - 70.47)


# ----------------------------------------------------------------- statistics


def test_summarize():
    assert tables.summarize([70.0, 72.0, 74.0]) == pytest.approx((72.0, 2.0))
    mean, std = tables.summarize([71.0, 72.0])
    assert mean == pytest.approx(71.5)
    assert std == pytest.approx(math.sqrt(0.5))  # sample std: (0.25 + 0.25) / (2 - 1)
    assert tables.summarize([73.5]) == (73.5, 0.0)
    assert tables.summarize([]) is None
    assert tables.summarize(None) is None


def _partial_half():
    """Multi-seed cells, a missing KD cell, a student without any result."""
    return TableHalf(
        students=("NR-g2", "NR-g4", "NR-g8"),
        teachers=("R-G1", "R-G2"),
        kd={
            ("R-G1", "NR-g2"): [70.0, 72.0, 74.0],
            ("R-G2", "NR-g2"): [71.0],
            ("R-G2", "NR-g4"): [69.5, 70.5],
            ("R-G1", "NR-g8"): [],
        },
        baseline={"NR-g2": [73.0, 75.0], "NR-g4": [70.0]},
        nr_baseline={"NR-g2": [66.0], "NR-g8": [60.0]},
    )


def test_missing_cells_give_none():
    half = _partial_half()
    assert tables.acc_drop(half) == {"NR-g2": pytest.approx(8.0), "NR-g4": None, "NR-g8": None}
    gain = tables.distil_gain(half)
    assert gain["NR-g2"] == pytest.approx(72.0 - 74.0)  # R-G1 mean 72 beats R-G2's 71
    assert gain["NR-g4"] == pytest.approx(70.0 - 70.0)  # only R-G2 has a result
    assert gain["NR-g8"] is None  # empty list counts as missing
    assert tables.best_teacher(half) == {"NR-g2": "R-G1", "NR-g4": "R-G2", "NR-g8": None}
    assert half.kd_stats("R-G1", "NR-g4") is None
    assert half.count("R-G1", "NR-g2") == 3 and half.count("Baseline", "NR-g8") == 0


# ----------------------------------------------------------------- renderers


def _md_rows(text):
    return {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in text.splitlines() if line.startswith("| ")}


def test_render_markdown():
    text = tables.render_markdown(_partial_half(), "Table X, left")
    assert text.startswith("**Table X, left**\n")
    assert "| I_t \\ S_s | NR-g2 | NR-g4 | NR-g8 |" in text
    rows = _md_rows(text)
    assert list(rows) == ["I_t \\ S_s", "R-G1", "R-G2", "Baseline", "NR-baseline",
                          "Acc. drop (↓)", "Distil. gain (↑)"]
    assert rows["R-G1"] == ["72.00 ± 2.00", "—", "—"]
    assert rows["R-G2"] == ["71.00", "70.00 ± 0.71", "—"]
    assert rows["Baseline"] == ["74.00 ± 1.41", "70.00", "—"]
    assert rows["NR-baseline"] == ["66.00", "—", "60.00"]
    assert rows["Acc. drop (↓)"] == ["8.00", "—", "—"]
    assert rows["Distil. gain (↑)"] == ["-2.00", "0.00", "—"]
    assert "±" not in text.split("Acc. drop")[1]
    assert "| 72.0 ± 2.0 |" in tables.render_markdown(_partial_half(), "", digits=1)


def test_render_markdown_of_printed_table():
    printed = ACCURACY_TABLES[1]["left"]
    rows = _md_rows(tables.render_markdown(tables.half_from_printed(printed), "Table 1"))
    assert rows["R-G1"] == ["71.93", "71.30", "71.84", "73.17"]
    assert rows["Acc. drop (↓)"] == ["7.33", "6.16", "2.40", "1.06"]
    assert rows["Distil. gain (↑)"] == ["-1.54", "-0.21", "1.18", "2.26"]
    assert "±" not in tables.render_markdown(tables.half_from_printed(printed), "")


def test_render_csv_round_trips_means():
    half = _partial_half()
    records = list(csv.DictReader(io.StringIO(tables.render_csv(half))))
    assert [r["row"] for r in records] == ["R-G1", "R-G2", "Baseline", "NR-baseline",
                                           "Acc. drop", "Distil. gain"]
    by_row = {r["row"]: r for r in records}
    expected = {
        ("R-G1", "NR-g2"): 72.0, ("R-G2", "NR-g2"): 71.0, ("R-G2", "NR-g4"): 70.0,
        ("Baseline", "NR-g2"): 74.0, ("Baseline", "NR-g4"): 70.0,
        ("NR-baseline", "NR-g2"): 66.0, ("NR-baseline", "NR-g8"): 60.0,
        ("Acc. drop", "NR-g2"): 8.0, ("Distil. gain", "NR-g2"): -2.0,
        ("Distil. gain", "NR-g4"): 0.0,
    }
    for row in by_row:
        for s in half.students:
            cell = by_row[row][s]
            if (row, s) in expected:
                assert float(cell) == pytest.approx(expected[(row, s)])
            else:
                assert cell == ""
    assert float(by_row["R-G1"]["NR-g2_std"]) == pytest.approx(2.0)
    assert by_row["R-G1"]["NR-g2_n"] == "3"
    assert float(by_row["R-G2"]["NR-g2_std"]) == 0.0 and by_row["R-G2"]["NR-g2_n"] == "1"
    assert by_row["R-G1"]["NR-g4_std"] == "" and by_row["R-G1"]["NR-g4_n"] == "0"
    assert by_row["Acc. drop"]["NR-g2_std"] == "" and by_row["Acc. drop"]["NR-g2_n"] == ""


def test_render_csv_exact_for_printed_values():
    printed = ACCURACY_TABLES[3]["right"]
    by_row = {r["row"]: r for r in csv.DictReader(io.StringIO(
        tables.render_csv(tables.half_from_printed(printed))))}
    for t in printed["teachers"]:
        for s in printed["students"]:
            assert float(by_row[t][s]) == float(printed["kd"][t][s])
    for s in printed["students"]:
        assert float(by_row["Baseline"][s]) == float(printed["baseline"][s])


def test_render_heatmap_writes_png(tmp_path):
    path = tmp_path / "figs" / "table1_left.png"
    tables.render_heatmap(_partial_half(), str(path), "Table X, left")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert os.listdir(path.parent) == ["table1_left.png"]  # no temporary file left
    # Overwrites in place; a half with no result at all still renders.
    empty = TableHalf(students=("NR-G2",), teachers=("R-g2", "R-g4"))
    tables.render_heatmap(empty, str(path), "")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert os.listdir(path.parent) == ["table1_left.png"]


def test_render_comparison():
    printed = ACCURACY_TABLES[1]["left"]
    half = tables.half_from_printed(printed)
    half.kd[("R-G1", "NR-g2")] = [72.0, 72.34]  # mean 72.17, paper 71.93
    del half.kd[("R-G2", "NR-g4")]
    text = tables.render_comparison(half, printed, "Table 1, left")
    assert "ours / paper" in text
    rows = _md_rows(text)
    assert rows["R-G1"][0] == "72.17 / 71.93 (+0.24)"
    assert rows["R-G1"][1] == "71.30 / 71.30 (+0.00)"
    assert rows["R-G2"][1] == "— / 72.38"
    assert rows["Distil. gain (↑)"][0] == "-1.30 / -1.54 (+0.24)"
    assert rows["Acc. drop (↓)"][0] == "7.33 / 7.33 (+0.00)"
    assert "over 19 KD cells" in text
