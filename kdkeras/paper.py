"""Numbers printed in the paper, kept verbatim as strings.

"On the Demystification of Knowledge Distillation: A Residual Network
Perspective" (Jha, Saini, Mittal). Strings keep the printed precision, which
the comparisons need (``"16"`` in Table 9 means 16.0 to 3 significant digits).

Columns follow :data:`kdkeras.models.registry.PAPER_GROUPINGS`:
``g2 g4 g8 g16 G1 G2 G4 G8 G16``.
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
