import warnings

import pytest

from kdkeras.models import registry
from kdkeras.models.registry import (
    PAPER_GROUPINGS,
    PAPER_NETS,
    ModelSpec,
    build_model,
    list_models,
    parse_model_name,
    valid_groupings,
)


def test_list_models_is_the_papers_108_variants():
    names = list_models()
    assert len(names) == 108 == len(set(names))
    assert set(registry.list_nets(standard=False)) == set(PAPER_NETS)
    assert "wrn22x10_NR_G4" in names and "mobilenetv2_R_g16" in names
    assert len(list_models(include_standard=True)) == 120


@pytest.mark.parametrize("name", list_models(include_standard=True))
def test_parse_and_name_are_inverse(name):
    spec = parse_model_name(name)
    assert spec.name == name
    assert parse_model_name(spec.name) == spec


def test_parse_fields():
    spec = parse_model_name("wrn22x10_NR_G4")
    assert spec == ModelSpec("wrn22x10", residual=False, group_mode="G", group_value=4)
    assert spec.groups_for(160) == 40  # 4 channels per group
    assert parse_model_name("resnet18_R_g8").groups_for(256) == 8
    assert parse_model_name("wrn34x1_R_G1").net == "wrn34x1"  # any valid WRN


@pytest.mark.parametrize(
    "name, fragments",
    [
        ("vgg99_R_g2", ["Unknown network 'vgg99'", "wrn22x2", "resnet18", "mobilenetv2"]),
        ("vgg16_R_g2", ["vgg16 is a network of the standard CIFAR zoo", "no skip connection", "Valid names: vgg16"]),
        ("resnet56_NR_g2", ["standard CIFAR zoo", "has no grouping", "resnet56, resnet56_NR"]),
        ("ShuffleV1_NR", ["no NR variant", "Valid names: ShuffleV1"]),
        ("wrn23x2_R_g2", ["wrn23x2", "(d - 4) % 6 == 0"]),
        ("wrn22x2_RR_g2", ["Bad residual token 'RR'", "R (residual)", "NR"]),
        ("wrn22x2_R_k2", ["Bad grouping 'k2'", "g<n>", "G<n>"]),
        ("wrn22x2_R_g0", ["Bad grouping 'g0'"]),
        ("wrn22x2_R_g3", ["'g3'", "16 channels", "Valid groupings", "g16"]),
        ("mobilenetv2_R_G64", ["'G64'", "Valid groupings"]),
        ("wrn22x2_R", ["'wrn22x2_R' lacks its grouping", "'_g<n>'", "e.g. 'wrn22x2_R_g2'"]),
        ("wrn22x2", ["Unknown model 'wrn22x2'", "'<net>_<R|NR>_<g|G><n>'", "resnet56", "ShuffleV2"]),
        ("resnet57", ["Unknown model 'resnet57'", "Did you mean 'resnet56'", "standard CIFAR zoo: resnet8"]),
        ("Resnet56", ["Did you mean 'resnet56'?"]),
        ("wrn_16_3", ["Unknown network 'wrn'", "Did you mean 'wrn_16_2' or 'wrn_16_1'?"]),
        ("", ["non-empty"]),
    ],
)
def test_bad_names_raise_with_the_bad_part_and_choices(name, fragments):
    with pytest.raises(ValueError) as err:
        parse_model_name(name)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_bad_name_fails_before_building():
    with pytest.raises(ValueError, match="does not divide"):
        build_model("resnet18_NR_g3")


def test_valid_groupings():
    groupings = valid_groupings("wrn22x2")
    # WRN-22x2 grouped layers have 16, 32, 64, 128 channels: n must divide 16.
    assert groupings == [f"g{n}" for n in (1, 2, 4, 8, 16)] + [f"G{n}" for n in (1, 2, 4, 8, 16)]
    for grouping in PAPER_GROUPINGS:
        assert grouping in valid_groupings("mobilenetv2")


def test_grouped_channels_match_built_layers():
    # The validation list must describe the real grouped layers, in order.
    from kdkeras.layers import GroupedConv2D

    for net in PAPER_NETS:
        model = build_model(f"{net}_R_g2")
        built = [layer.kernel.shape[2] * layer.groups for layer in model.layers
                 if isinstance(layer, GroupedConv2D)]
        assert built == registry.grouped_channels(net), net


def test_registering_twice_warns():
    entry = registry._NETS["wrn22x2"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            registry.register_net(entry.grouped_channels, "wrn", name="wrn22x2")(entry.builder)
        assert any("registered twice" in str(w.message) for w in caught)
    finally:
        registry._NETS["wrn22x2"] = entry


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("wrn22x2_R_g2", num_classes=0)
