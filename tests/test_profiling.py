"""Parameter and FLOP counts against the paper's Tables 8 and 9, every cell."""

import keras
import pytest

from kdkeras.models.registry import PAPER_GROUPINGS, build_model, list_models
from kdkeras.paper import (
    TABLE8_MFLOPS,
    TABLE9_MPARAMS,
    agrees_with_printed,
    printed_cell,
    round_sig,
)
from tests.helpers import run_script
from kdkeras.profiling import Profile, count_macs, count_params, profile


@pytest.fixture(scope="module")
def zoo_profiles():
    """Every variant's counts, from ``profile_models.py --all --csv``.

    A fresh process: building 108 models in the long-lived pytest process, after hundreds of other tests,
    took 2.5 to 4 times as long as the same loop in a new one.
    """
    result = run_script("profile_models.py", "--all", "--csv", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = result.stdout.split()
    assert rows[0] == "model,params,macs", rows[:3]
    profiles = {}
    for row in rows[1:]:
        name, params, macs = row.split(",")
        profiles[name] = Profile(name, int(params), int(macs))
    assert list(profiles) == list_models()
    return profiles


@pytest.mark.slow  # builds all 108 models
def test_every_table9_parameter_cell(zoo_profiles):
    bad = {
        name: (p.params / 1e6, printed_cell(TABLE9_MPARAMS, name))
        for name, p in zoo_profiles.items()
        if not agrees_with_printed(p.params / 1e6, printed_cell(TABLE9_MPARAMS, name), 3)
    }
    assert len(zoo_profiles) == 108
    assert not bad


@pytest.mark.slow  # builds all 108 models
def test_every_table8_flop_cell(zoo_profiles):
    exact, bad = 0, {}
    for name, p in zoo_profiles.items():
        printed = printed_cell(TABLE8_MFLOPS, name)
        exact += agrees_with_printed(p.macs / 1e6, printed, 4)
        if not agrees_with_printed(p.macs / 1e6, printed, 4, tolerance_units=1):
            bad[name] = (p.macs / 1e6, printed)
    assert not bad
    assert exact >= 105  # docs/models.md: 105 of 108 exact, 3 differ by one printed unit


def test_worked_example():
    p = profile(build_model("wrn22x2_R_g2"))
    assert (p.params, p.macs) == (655_572, 93_647_360)


def _wrn_closed_form(depth, width, groups_of, residual, num_classes=100):
    """Closed-form params / MACs of WRN-d x k, derived from docs/models.md ("Architectures").

    Unit U(cin->cout) at spatial size s: grouped 3x3 (9*cin*cin/g params),
    BN (2*cin), 1x1 (cin*cout); MACs multiply the conv params by s*s.
    Block: BN(cin) + U(cin->cout) + BN(cout) + U(cout->cout) [+ 1x1 shortcut cin*cout].
    """
    n = (depth - 4) // 6
    params, macs = 27 * 16, 27 * 16 * 32 * 32  # stem 3x3 conv 3->16
    cin, size = 16, 32
    for stage, cout in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(n):
            if block == 0 and stage > 0:
                size //= 2
            for c_in in (cin, cout):
                conv = 9 * c_in * c_in // groups_of(c_in) + c_in * cout
                params += conv + 2 * c_in
                macs += conv * size * size
            params += 2 * cin + 2 * cout  # pre-activation BN, middle BN
            if residual and block == 0:
                params += cin * cout
                macs += cin * cout * size * size
            cin = cout
    params += 2 * cin + cin * num_classes + num_classes  # head BN + dense
    macs += cin * num_classes
    return params, macs


@pytest.mark.parametrize("name", ["wrn22x2_R_g2", "wrn28x2_NR_G1", "wrn40x2_R_G16", "wrn16x4_NR_g4"])
def test_wrn_counts_equal_closed_form(name):
    from kdkeras.models.registry import parse_model_name

    spec = parse_model_name(name)
    depth, width = (int(v) for v in spec.net[3:].split("x"))
    model = build_model(name)
    assert (count_params(model), count_macs(model)) == _wrn_closed_form(
        depth, width, spec.groups_for, spec.residual
    )


def test_count_params_excludes_bn_moving_statistics():
    model = build_model("resnet18_R_G16")
    bn_channels = sum(layer.gamma.shape[0] for layer in model.layers
                      if isinstance(layer, keras.layers.BatchNormalization))
    assert model.count_params() - count_params(model) == 2 * bn_channels


def test_round_sig_and_agreement():
    assert round_sig(15_968_468 / 1e6, 3) == 16.0
    assert agrees_with_printed(15.968468, "16", 3)
    assert agrees_with_printed(0.1999, "0.2", 3)
    assert not agrees_with_printed(0.2011, "0.2", 3)
    assert agrees_with_printed(40.4641, "40.47", 4, tolerance_units=1)
    assert not agrees_with_printed(40.4641, "40.47", 4)
    assert len(PAPER_GROUPINGS) == len(TABLE8_MFLOPS["wrn22x2"]["R"]) == 9


#: The standard CIFAR zoo's trainable parameters for 100 classes, as RepDistiller's code counts them
#: (sum of p.numel() over parameters()): issue 26's table.
STANDARD_ZOO_PARAMS = {
    "resnet8": 83892, "resnet14": 181108, "resnet20": 278324, "resnet32": 472756, "resnet44": 667188,
    "resnet56": 861620, "resnet110": 1736564, "resnet8x4": 1233540, "resnet32x4": 7433860, "ResNet50": 23705252,
    "wrn_16_1": 180916, "wrn_16_2": 703284, "wrn_40_1": 569780, "wrn_40_2": 2255156, "vgg8": 3965028,
    "vgg11": 9277284, "vgg13": 9462180, "vgg16": 14774436, "vgg19": 20086692, "MobileNetV2": 812836,
    "ShuffleV1": 949258, "ShuffleV2": 1355528,
}


def test_the_standard_zoo_has_the_reference_parameter_counts():
    """All 22 nets, through ``kdkeras profile --all --standard`` (one fresh process)."""
    result = run_script("profile_models.py", "--all", "--standard", "--csv",
                        f"--models={','.join(STANDARD_ZOO_PARAMS)}", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = result.stdout.split()
    assert rows[0] == "model,params,macs"
    params = {name: int(count) for name, count, _ in (row.split(",") for row in rows[1:])}
    assert params == STANDARD_ZOO_PARAMS
