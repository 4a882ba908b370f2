"""Numbers printed in the paper, kept verbatim as strings.

"On the Demystification of Knowledge Distillation: A Residual Network
Perspective" (Jha, Saini, Mittal). Strings keep the printed precision, which
the comparisons need (``"16"`` in Table 9 means 16.0 to 3 significant digits).

Tables 8 and 9: columns follow :data:`kdkeras.models.registry.PAPER_GROUPINGS`:
``g2 g4 g8 g16 G1 G2 G4 G8 G16``.

Tables 1-6 (CIFAR-100 top-1 accuracies, percent): :data:`ACCURACY_TABLES`,
laid out as described in :mod:`kdkeras.tables`.
"""

from kdkeras.models.registry import PAPER_GROUPINGS

#: Table 8: multiply-accumulates ("FLOPs") per 32x32 image, in millions.
TABLE8_MFLOPS = {
    "wrn22x2": {
        "R": ("93.65", "56.49", "37.91", "28.62", "22.17", "25.01", "30.68", "42.04", "64.75"),
        "NR": ("92.07", "54.92", "36.34", "27.05", "20.6", "23.43", "29.11", "40.47", "63.17"),
    },
    "wrn22x10": {
        "R": ("2281", "1366", "908.8", "680.1", "465", "478.6", "505.8", "560.2", "669"),
        "NR": ("2252", "1337", "880", "651.3", "436.2", "449.8", "477", "531.4", "640.2"),
    },
    "wrn28x2": {
        "R": ("128.3", "76.94", "51.28", "38.45", "29.49", "33.36", "41.1", "56.59", "87.55"),
        "NR": ("126.7", "75.36", "49.71", "36.88", "27.92", "31.79", "39.53", "55.01", "85.98"),
    },
    "wrn40x2": {
        "R": ("197.5", "117.8", "78.02", "58.11", "44.14", "50.07", "61.94", "85.68", "133.2"),
        "NR": ("195.9", "116.3", "76.44", "56.54", "42.57", "48.5", "60.37", "84.11", "131.6"),
    },
    "resnet18": {
        "R": ("328.5", "198.7", "133.8", "101.4", "73.1", "77.26", "85.59", "102.3", "135.6"),
        "NR": ("322.2", "192.4", "127.5", "95.08", "66.8", "70.97", "79.3", "95.96", "129.3"),
    },
    "mobilenetv2": {
        "R": ("634.4", "348.3", "205.2", "133.7", "64.95", "67.72", "73.25", "84.32", "106.5"),
        "NR": ("634.4", "348.3", "205.2", "133.7", "64.95", "67.72", "73.25", "84.32", "106.5"),
    },
}

#: Table 9: trainable parameters, in millions.
TABLE9_MPARAMS = {
    "wrn22x2": {
        "R": ("0.656", "0.402", "0.275", "0.211", "0.159", "0.17", "0.192", "0.236", "0.325"),
        "NR": ("0.645", "0.391", "0.264", "0.2", "0.148", "0.159", "0.181", "0.225", "0.314"),
    },
    "wrn22x10": {
        "R": ("16", "9.63", "6.46", "4.88", "3.35", "3.41", "3.51", "3.73", "4.17"),
        "NR": ("15.7", "9.37", "6.21", "4.62", "3.09", "3.15", "3.26", "3.48", "3.91"),
    },
    "wrn28x2": {
        "R": ("0.894", "0.543", "0.368", "0.28", "0.207", "0.223", "0.253", "0.313", "0.434"),
        "NR": ("0.883", "0.532", "0.357", "0.269", "0.197", "0.212", "0.242", "0.303", "0.424"),
    },
    "wrn40x2": {
        "R": ("1.37", "0.826", "0.554", "0.418", "0.305", "0.328", "0.375", "0.467", "0.653"),
        "NR": ("1.36", "0.816", "0.543", "0.407", "0.294", "0.318", "0.364", "0.457", "0.642"),
    },
    "resnet18": {
        "R": ("6.57", "4.01", "2.74", "2.1", "1.49", "1.52", "1.58", "1.71", "1.95"),
        "NR": ("6.39", "3.84", "2.56", "1.93", "1.32", "1.35", "1.41", "1.53", "1.78"),
    },
    "mobilenetv2": {
        "R": ("22.6", "12.5", "7.38", "4.84", "2.37", "2.43", "2.56", "2.82", "3.33"),
        "NR": ("22.6", "12.5", "7.38", "4.84", "2.37", "2.43", "2.56", "2.82", "3.33"),
    },
}


def printed_cell(table: dict, model_name: str) -> str:
    """The printed value of ``model_name`` (e.g. ``"wrn22x2_R_g2"``) in Table 8 or 9."""
    net, res, grouping = model_name.split("_")
    return table[net][res][PAPER_GROUPINGS.index(grouping)]


def round_sig(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    if value == 0:
        return 0.0
    return round(value, digits - 1 - int(f"{abs(value):e}".split("e")[1]))


def agrees_with_printed(value: float, printed: str, digits: int, tolerance_units: int = 0) -> bool:
    """Whether ``value`` (millions) prints as ``printed`` at ``digits`` significant digits.

    ``tolerance_units`` allows that many units of the last significant digit
    of difference (Table 8 is compared with 1: the paper's print noise).
    """
    rounded = round_sig(value, digits)
    unit = 10 ** (int(f"{abs(rounded):e}".split("e")[1]) - digits + 1)
    return abs(rounded - float(printed)) <= tolerance_units * unit + 1e-9 * unit


ACCURACY_TABLES = {
    1: {
        "net": "resnet18",
        "left": {
            "students": ("NR-g2", "NR-g4", "NR-g8", "NR-g16"),
            "teachers": ("R-G1", "R-G2", "R-G4", "R-G8", "R-G16"),
            "kd": {
                "R-G1": {"NR-g2": "71.93", "NR-g4": "71.3", "NR-g8": "71.84", "NR-g16": "73.17"},
                "R-G2": {"NR-g2": "70.76", "NR-g4": "72.38", "NR-g8": "72.38", "NR-g16": "73.61"},
                "R-G4": {"NR-g2": "70.14", "NR-g4": "71.98", "NR-g8": "71.07", "NR-g16": "73.79"},
                "R-G8": {"NR-g2": "70.23", "NR-g4": "72.04", "NR-g8": "72.82", "NR-g16": "73.33"},
                "R-G16": {"NR-g2": "70.19", "NR-g4": "71.98", "NR-g8": "72.27", "NR-g16": "73.55"},
            },
            "baseline": {"NR-g2": "73.47", "NR-g4": "72.59", "NR-g8": "71.64", "NR-g16": "71.53"},
            "nr_baseline": {"NR-g2": "66.14", "NR-g4": "66.43", "NR-g8": "69.24", "NR-g16": "70.47"},
            "acc_drop": {"NR-g2": "7.33", "NR-g4": "6.16", "NR-g8": "2.4", "NR-g16": "1.06"},
            "distil_gain": {"NR-g2": "-1.54", "NR-g4": "-0.21", "NR-g8": "1.18", "NR-g16": "2.26"},
        },
        "right": {
            "students": ("NR-G2", "NR-G4", "NR-G8", "NR-G16"),
            "teachers": ("R-g2", "R-g4", "R-g8", "R-g16"),
            "kd": {
                "R-g2": {"NR-G2": "73.88", "NR-G4": "73.81", "NR-G8": "72.76", "NR-G16": "72.86"},
                "R-g4": {"NR-G2": "73.31", "NR-G4": "73.91", "NR-G8": "73.31", "NR-G16": "71.12"},
                "R-g8": {"NR-G2": "73.30", "NR-G4": "73.40", "NR-G8": "73.69", "NR-G16": "71.18"},
                "R-g16": {"NR-G2": "73.60", "NR-G4": "72.56", "NR-G8": "73.47", "NR-G16": "73.16"},
            },
            "baseline": {"NR-G2": "71.08", "NR-G4": "71.18", "NR-G8": "71.36", "NR-G16": "72.22"},
            "nr_baseline": {"NR-G2": "69.72", "NR-G4": "69.45", "NR-G8": "69.22", "NR-G16": "68.58"},
            "acc_drop": {"NR-G2": "1.36", "NR-G4": "1.73", "NR-G8": "2.14", "NR-G16": "3.64"},
            "distil_gain": {"NR-G2": "2.8", "NR-G4": "2.73", "NR-G8": "2.33", "NR-G16": "0.94"},
        },
    },
    2: {
        "net": "mobilenetv2",
        "left": {
            "students": ("NR-g2", "NR-g4", "NR-g8", "NR-g16"),
            "teachers": ("R-G1", "R-G2", "R-G4", "R-G8", "R-G16"),
            "kd": {
                "R-G1": {"NR-g2": "67.3", "NR-g4": "67.32", "NR-g8": "67.09", "NR-g16": "67.85"},
                "R-G2": {"NR-g2": "67.38", "NR-g4": "66.86", "NR-g8": "65.51", "NR-g16": "67.27"},
                "R-G4": {"NR-g2": "67.54", "NR-g4": "67.28", "NR-g8": "67.4", "NR-g16": "67.55"},
                "R-G8": {"NR-g2": "67.44", "NR-g4": "66.5", "NR-g8": "67.02", "NR-g16": "67.4"},
                "R-G16": {"NR-g2": "67.67", "NR-g4": "67.15", "NR-g8": "67.65", "NR-g16": "65.93"},
            },
            "baseline": {"NR-g2": "68.11", "NR-g4": "69.52", "NR-g8": "69.93", "NR-g16": "70.25"},
            "nr_baseline": {"NR-g2": "58.68", "NR-g4": "58.72", "NR-g8": "58.77", "NR-g16": "58.79"},
            "acc_drop": {"NR-g2": "9.43", "NR-g4": "10.8", "NR-g8": "11.16", "NR-g16": "11.46"},
            "distil_gain": {"NR-g2": "-0.44", "NR-g4": "-2.2", "NR-g8": "-2.28", "NR-g16": "-2.4"},
        },
        "right": {
            "students": ("NR-G2", "NR-G4", "NR-G8", "NR-G16"),
            "teachers": ("R-g2", "R-g4", "R-g8", "R-g16"),
            "kd": {
                "R-g2": {"NR-G2": "66.21", "NR-G4": "65.88", "NR-G8": "66.01", "NR-G16": "67.66"},
                "R-g4": {"NR-G2": "67.07", "NR-G4": "67.37", "NR-G8": "67.40", "NR-G16": "67.55"},
                "R-g8": {"NR-G2": "67.54", "NR-G4": "67.63", "NR-G8": "67.80", "NR-G16": "67.58"},
                "R-g16": {"NR-G2": "67.62", "NR-G4": "67.45", "NR-G8": "68.13", "NR-G16": "68.33"},
            },
            "baseline": {"NR-G2": "70.36", "NR-G4": "70.28", "NR-G8": "70.25", "NR-G16": "68.88"},
            "nr_baseline": {"NR-G2": "60.77", "NR-G4": "59.66", "NR-G8": "58.62", "NR-G16": "57.18"},
            "acc_drop": {"NR-G2": "9.59", "NR-G4": "10.62", "NR-G8": "11.63", "NR-G16": "11.7"},
            "distil_gain": {"NR-G2": "-2.74", "NR-G4": "-2.65", "NR-G8": "-2.12", "NR-G16": "-0.55"},
        },
    },
    3: {
        "net": "wrn22x2",
        "left": {
            "students": ("NR-g2", "NR-g4", "NR-g8", "NR-g16"),
            "teachers": ("R-G1", "R-G2", "R-G4", "R-G8", "R-G16"),
            "kd": {
                "R-G1": {"NR-g2": "66.52", "NR-g4": "68.08", "NR-g8": "69.42", "NR-g16": "70.56"},
                "R-G2": {"NR-g2": "66.68", "NR-g4": "68.57", "NR-g8": "69.56", "NR-g16": "69.38"},
                "R-G4": {"NR-g2": "66.46", "NR-g4": "69.02", "NR-g8": "69.6", "NR-g16": "70.96"},
                "R-G8": {"NR-g2": "66.65", "NR-g4": "68.13", "NR-g8": "70.64", "NR-g16": "69.05"},
                "R-G16": {"NR-g2": "66.54", "NR-g4": "67.86", "NR-g8": "70.42", "NR-g16": "70.32"},
            },
            "baseline": {"NR-g2": "71.13", "NR-g4": "69.92", "NR-g8": "69.29", "NR-g16": "68.74"},
            "nr_baseline": {"NR-g2": "64.01", "NR-g4": "65.58", "NR-g8": "66.26", "NR-g16": "66.59"},
            "acc_drop": {"NR-g2": "7.12", "NR-g4": "4.34", "NR-g8": "3.03", "NR-g16": "2.15"},
            "distil_gain": {"NR-g2": "-4.45", "NR-g4": "-0.9", "NR-g8": "1.35", "NR-g16": "2.22"},
        },
        "right": {
            "students": ("NR-G2", "NR-G4", "NR-G8", "NR-G16"),
            "teachers": ("R-g2", "R-g4", "R-g8", "R-g16"),
            "kd": {
                "R-g2": {"NR-G2": "69.70", "NR-G4": "69.61", "NR-G8": "67.25", "NR-G16": "68.05"},
                "R-g4": {"NR-G2": "69.78", "NR-G4": "69.41", "NR-G8": "68.12", "NR-G16": "67.48"},
                "R-g8": {"NR-G2": "69.75", "NR-G4": "69.32", "NR-G8": "68.46", "NR-G16": "66.30"},
                "R-g16": {"NR-G2": "69.51", "NR-G4": "69.15", "NR-G8": "66.92", "NR-G16": "66.03"},
            },
            "baseline": {"NR-G2": "68.04", "NR-G4": "68.88", "NR-G8": "69.04", "NR-G16": "69.53"},
            "nr_baseline": {"NR-G2": "65.98", "NR-G4": "65.82", "NR-G8": "65.19", "NR-G16": "65.08"},
            "acc_drop": {"NR-G2": "2.06", "NR-G4": "3.06", "NR-G8": "3.85", "NR-G16": "4.45"},
            "distil_gain": {"NR-G2": "1.74", "NR-G4": "0.73", "NR-G8": "-0.58", "NR-G16": "-1.48"},
        },
    },
    4: {
        "net": "wrn22x10",
        "left": {
            "students": ("NR-g2", "NR-g4", "NR-g8", "NR-g16"),
            "teachers": ("R-G1", "R-G2", "R-G4", "R-G8", "R-G16"),
            "kd": {
                "R-G1": {"NR-g2": "75.15", "NR-g4": "75.25", "NR-g8": "77.21", "NR-g16": "77.1"},
                "R-G2": {"NR-g2": "75", "NR-g4": "76.44", "NR-g8": "76.44", "NR-g16": "77.01"},
                "R-G4": {"NR-g2": "73.05", "NR-g4": "75.39", "NR-g8": "76.44", "NR-g16": "76.87"},
                "R-G8": {"NR-g2": "75.68", "NR-g4": "75.64", "NR-g8": "76.43", "NR-g16": "78.03"},
                "R-G16": {"NR-g2": "75.07", "NR-g4": "73.54", "NR-g8": "76.63", "NR-g16": "77.8"},
            },
            "baseline": {"NR-g2": "77.26", "NR-g4": "77.15", "NR-g8": "77.11", "NR-g16": "77.06"},
            "nr_baseline": {"NR-g2": "69.61", "NR-g4": "71.05", "NR-g8": "71.83", "NR-g16": "73.32"},
            "acc_drop": {"NR-g2": "7.65", "NR-g4": "6.1", "NR-g8": "5.28", "NR-g16": "3.74"},
            "distil_gain": {"NR-g2": "-1.58", "NR-g4": "-0.71", "NR-g8": "0.1", "NR-g16": "0.97"},
        },
        "right": {
            "students": ("NR-G2", "NR-G4", "NR-G8", "NR-G16"),
            "teachers": ("R-g2", "R-g4", "R-g8", "R-g16"),
            "kd": {
                "R-g2": {"NR-G2": "77.55", "NR-G4": "78.21", "NR-G8": "77.92", "NR-G16": "76.70"},
                "R-g4": {"NR-G2": "78.17", "NR-G4": "77.95", "NR-G8": "77.85", "NR-G16": "76.58"},
                "R-g8": {"NR-G2": "77.70", "NR-G4": "78.16", "NR-G8": "77.79", "NR-G16": "78.19"},
                "R-g16": {"NR-G2": "78.05", "NR-G4": "78.10", "NR-G8": "77.49", "NR-G16": "78.17"},
            },
            "baseline": {"NR-G2": "75.46", "NR-G4": "75.57", "NR-G8": "75.59", "NR-G16": "76.22"},
            "nr_baseline": {"NR-G2": "74.63", "NR-G4": "74.16", "NR-G8": "73.7", "NR-G16": "71.1"},
            "acc_drop": {"NR-G2": "0.83", "NR-G4": "1.41", "NR-G8": "1.89", "NR-G16": "5.12"},
            "distil_gain": {"NR-G2": "2.71", "NR-G4": "2.64", "NR-G8": "2.33", "NR-G16": "1.97"},
        },
    },
    5: {
        "net": "wrn28x2",
        "left": {
            "students": ("NR-g2", "NR-g4", "NR-g8", "NR-g16"),
            "teachers": ("R-G1", "R-G2", "R-G4", "R-G8", "R-G16"),
            "kd": {
                "R-G1": {"NR-g2": "66.02", "NR-g4": "65.63", "NR-g8": "68.66", "NR-g16": "70.02"},
                "R-G2": {"NR-g2": "62.43", "NR-g4": "65.38", "NR-g8": "67.06", "NR-g16": "69.95"},
                "R-G4": {"NR-g2": "66.43", "NR-g4": "65.4", "NR-g8": "67.28", "NR-g16": "68.94"},
                "R-G8": {"NR-g2": "64.62", "NR-g4": "65.5", "NR-g8": "68.71", "NR-g16": "68.87"},
                "R-G16": {"NR-g2": "65.01", "NR-g4": "65.8", "NR-g8": "64.98", "NR-g16": "69.6"},
            },
            "baseline": {"NR-g2": "70.84", "NR-g4": "70.3", "NR-g8": "69.93", "NR-g16": "69.57"},
            "nr_baseline": {"NR-g2": "62.06", "NR-g4": "62.26", "NR-g8": "62.39", "NR-g16": "64.37"},
            "acc_drop": {"NR-g2": "8.78", "NR-g4": "8.04", "NR-g8": "7.54", "NR-g16": "5.2"},
            "distil_gain": {"NR-g2": "-4.41", "NR-g4": "-4.5", "NR-g8": "-1.22", "NR-g16": "0.45"},
        },
        "right": {
            "students": ("NR-G2", "NR-G4", "NR-G8", "NR-G16"),
            "teachers": ("R-g2", "R-g4", "R-g8", "R-g16"),
            "kd": {
                "R-g2": {"NR-G2": "68.98", "NR-G4": "67.32", "NR-G8": "66.56", "NR-G16": "65.24"},
                "R-g4": {"NR-G2": "68.72", "NR-G4": "68.37", "NR-G8": "64.37", "NR-G16": "65.49"},
                "R-g8": {"NR-G2": "69.14", "NR-G4": "68.05", "NR-G8": "67.42", "NR-G16": "65.45"},
                "R-g16": {"NR-G2": "68.94", "NR-G4": "68.52", "NR-G8": "67.66", "NR-G16": "65.39"},
            },
            "baseline": {"NR-G2": "68.62", "NR-G4": "68.82", "NR-G8": "69.14", "NR-G16": "70.28"},
            "nr_baseline": {"NR-G2": "62.53", "NR-G4": "62.37", "NR-G8": "61.92", "NR-G16": "61.76"},
            "acc_drop": {"NR-G2": "6.09", "NR-G4": "6.45", "NR-G8": "7.22", "NR-G16": "8.52"},
            "distil_gain": {"NR-G2": "0.52", "NR-G4": "-0.3", "NR-G8": "-1.48", "NR-G16": "-4.79"},
        },
    },
    6: {
        "net": "wrn40x2",
        "left": {
            "students": ("NR-g2", "NR-g4", "NR-g8", "NR-g16"),
            "teachers": ("R-G1", "R-G2", "R-G4", "R-G8", "R-G16"),
            "kd": {
                "R-G1": {"NR-g2": "55.85", "NR-g4": "57.32", "NR-g8": "58.87", "NR-g16": "57.26"},
                "R-G2": {"NR-g2": "55.26", "NR-g4": "58.19", "NR-g8": "59.75", "NR-g16": "64.44"},
                "R-G4": {"NR-g2": "54.64", "NR-g4": "58.13", "NR-g8": "61.71", "NR-g16": "64.9"},
                "R-G8": {"NR-g2": "56.92", "NR-g4": "61.42", "NR-g8": "59.73", "NR-g16": "64.67"},
                "R-G16": {"NR-g2": "53.64", "NR-g4": "55.5", "NR-g8": "61.78", "NR-g16": "62.42"},
            },
            "baseline": {"NR-g2": "71.21", "NR-g4": "70.34", "NR-g8": "70.13", "NR-g16": "69.98"},
            "nr_baseline": {"NR-g2": "43.92", "NR-g4": "42.86", "NR-g8": "42.58", "NR-g16": "40.49"},
            "acc_drop": {"NR-g2": "27.29", "NR-g4": "27.48", "NR-g8": "27.55", "NR-g16": "29.49"},
            "distil_gain": {"NR-g2": "-14.29", "NR-g4": "-8.92", "NR-g8": "-8.35", "NR-g16": "-5.08"},
        },
        "right": {
            "students": ("NR-G2", "NR-G4", "NR-G8", "NR-G16"),
            "teachers": ("R-g2", "R-g4", "R-g8", "R-g16"),
            "kd": {
                "R-g2": {"NR-G2": "63.19", "NR-G4": "62.13", "NR-G8": "60.96", "NR-G16": "57.29"},
                "R-g4": {"NR-G2": "64.45", "NR-G4": "64.41", "NR-G8": "61.04", "NR-G16": "61.13"},
                "R-g8": {"NR-G2": "62.22", "NR-G4": "62.46", "NR-G8": "61.38", "NR-G16": "57.79"},
                "R-g16": {"NR-G2": "64.50", "NR-G4": "64.91", "NR-G8": "62.66", "NR-G16": "60.91"},
            },
            "baseline": {"NR-G2": "68.52", "NR-G4": "69.34", "NR-G8": "69.54", "NR-G16": "70.17"},
            "nr_baseline": {"NR-G2": "38.47", "NR-G4": "45.88", "NR-G8": "47.55", "NR-G16": "49.49"},
            "acc_drop": {"NR-G2": "30.05", "NR-G4": "23.46", "NR-G8": "21.99", "NR-G16": "20.68"},
            "distil_gain": {"NR-G2": "-4.02", "NR-G4": "-4.43", "NR-G8": "-6.88", "NR-G16": "-9.04"},
        },
    },
}
"""Tables 1-6 of the paper: CIFAR-100 top-1 accuracy (percent) of KD students.

Keyed by table number; ``"net"`` is the network (1 ``resnet18``,
2 ``mobilenetv2``, 3 ``wrn22x2``, 4 ``wrn22x10``, 5 ``wrn28x2``, 6 ``wrn40x2``).
Each table has two halves of the same shape:

* ``"left"``: non-residual students ``NR-g{2,4,8,16}`` (constant number of
  groups ``g``) distilled from residual teachers ``R-G{1,2,4,8,16}`` (constant
  channels per group ``G``);
* ``"right"``: students ``NR-G{2,4,8,16}`` with teachers ``R-g{2,4,8,16}``.

A half holds ``"students"`` and ``"teachers"`` (printed order), ``"kd"``
(``kd[teacher][student]``: accuracy of the student distilled from that
teacher) and four per-student rows: ``"baseline"`` (the residual version of
the student trained on hard targets), ``"nr_baseline"`` (the non-residual
student trained on hard targets), ``"acc_drop"`` (Baseline - NR-baseline) and
``"distil_gain"`` (best KD accuracy of the student's column - Baseline).
Values are the printed strings, keeping the printed precision (``"71.3"``,
``"73.30"``). :func:`kdkeras.tables.half_from_printed` turns a half into
numbers.
"""
