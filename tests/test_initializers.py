"""Dirac initialisation (``--init=dirac``): the initializer, the models, the run names, the grid axis, the flag."""

import keras
import numpy as np
import pytest

from kdkeras import config as config_lib
from kdkeras import grid
from kdkeras.errors import UsageError
from kdkeras.initializers import Dirac, dirac_kernel, initialize_convolutions, is_dirac_target
from kdkeras.layers import GroupedConv2D
from kdkeras.training import build_student
from tests.helpers import error_lines, run_script


def torch_dirac(out_channels, in_per_group, kh, kw, groups):
    """``torch.nn.init.dirac_`` as documented, on a PyTorch-layout ``(out, in / groups, kh, kw)`` array."""
    w = np.zeros((out_channels, in_per_group, kh, kw), dtype="float32")
    out_per_group = out_channels // groups
    for g in range(groups):
        for d in range(min(out_per_group, in_per_group)):
            w[g * out_per_group + d, d, kh // 2, kw // 2] = 1
    return w


# (kh, kw, in_per_group, out, groups): square, in < out, in > out, groups 2 and 4 (both
# directions), depthwise, a non-square and an even kernel.
SHAPES = [
    (3, 3, 4, 4, 1), (3, 3, 2, 6, 1), (3, 3, 6, 2, 1), (3, 3, 4, 8, 2), (3, 3, 3, 4, 2),
    (3, 3, 1, 8, 4), (3, 3, 4, 4, 4), (3, 3, 1, 6, 6), (1, 5, 3, 3, 1), (4, 4, 2, 2, 1),
]


@pytest.mark.parametrize("kh, kw, in_per_group, out, groups", SHAPES)
def test_dirac_kernel_matches_pytorch_semantics(kh, kw, in_per_group, out, groups):
    expected = torch_dirac(out, in_per_group, kh, kw, groups).transpose(2, 3, 1, 0)  # -> Keras layout
    kernel = dirac_kernel((kh, kw, in_per_group, out), groups)
    np.testing.assert_array_equal(kernel, expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Dirac(groups)((kh, kw, in_per_group, out))), expected)
    # As many identities per group as channels allow; an output channel beyond them is all zero.
    assert kernel.sum() == groups * min(out // groups, in_per_group)


def test_dirac_kernel_documented_example():
    # PyTorch's docs: w = torch.empty(3, 24, 5, 5); nn.init.dirac_(w, 3): each output channel copies
    # the first input channel of its group.
    kernel = dirac_kernel((5, 5, 24, 3), groups=3)
    assert [tuple(np.argwhere(kernel[..., o])[0]) for o in range(3)] == [(2, 2, 0)] * 3
    assert kernel.sum() == 3


def test_dirac_errors_and_serialization():
    with pytest.raises(UsageError, match="divisible by groups"):
        dirac_kernel((3, 3, 2, 6), groups=4)
    with pytest.raises(UsageError, match="rank 3, 4 or 5"):
        dirac_kernel((3, 3))
    init = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(Dirac(groups=4)))
    assert isinstance(init, Dirac) and init.get_config() == {"groups": 4}
    assert keras.ops.convert_to_numpy(Dirac()((3, 3, 2, 2), dtype="float16")).dtype == np.float16


@pytest.mark.parametrize("layer_cls, channels, filters, groups", [
    (keras.layers.Conv2D, 4, 4, 1), (keras.layers.Conv2D, 4, 6, 1), (keras.layers.Conv2D, 6, 4, 1),
    (keras.layers.Conv2D, 8, 8, 2), (GroupedConv2D, 8, 8, 2), (GroupedConv2D, 8, 8, 4),
    (GroupedConv2D, 8, 8, 8),  # depthwise
])
def test_dirac_convolution_is_the_identity_on_its_channels(layer_cls, channels, filters, groups):
    layer = layer_cls(filters, 3, padding="same", groups=groups, kernel_initializer=Dirac(groups),
                      bias_initializer="zeros")
    x = np.random.default_rng(0).normal(size=(2, 5, 5, channels)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    in_per_group, out_per_group = channels // groups, filters // groups
    for o in range(filters):
        g, d = divmod(o, out_per_group)
        expected = x[..., g * in_per_group + d] if d < in_per_group else np.zeros_like(x[..., 0])
        # x * 1 plus products with 0 is exact in any summation order: bit-identical with every kernel seen
        # (oneDNN, Eigen, AVX2); 1e-6 relative to the inputs' size (~3) admits a transform-based (Winograd)
        # convolution's rounding, while a wrong channel is O(1) off.
        np.testing.assert_allclose(y[..., o], expected, rtol=1e-6, atol=1e-6 * np.max(np.abs(x)))


def _kernels(model):
    return {layer.name: keras.ops.convert_to_numpy(layer.kernel)
            for layer in model.layers if hasattr(layer, "kernel")}


@pytest.mark.parametrize("model", ["wrn10x1_NR_g2", "wrn10x1_R_G4"])
def test_build_student_dirac_sets_every_3x3_convolution_and_nothing_else(model):
    shape, classes = (16, 16, 3), 10
    plain = build_student(config_lib.resolve({"model": model}), classes, shape)
    keras.utils.set_random_seed(0)
    he = _kernels(build_student(config_lib.resolve({"model": model}), classes, shape))
    keras.utils.set_random_seed(0)
    student = build_student(config_lib.resolve({"model": model, "init": "dirac"}), classes, shape)
    dirac = _kernels(student)
    targets = {layer.name: layer for layer in student.layers if is_dirac_target(layer)}
    assert "stem_conv" in targets and any(isinstance(layer, GroupedConv2D) for layer in targets.values())
    assert any("pconv" in name for name in dirac) and "logits" in dirac
    if "_R_" in model:
        assert any("shortcut" in name for name in dirac)
    for name, kernel in dirac.items():
        if name in targets:
            np.testing.assert_array_equal(kernel, dirac_kernel(kernel.shape, targets[name].groups))
        else:  # 1x1 convolutions (pointwise, shortcuts) and the dense head: as drawn by he_normal
            np.testing.assert_array_equal(kernel, he[name])
    assert set(_kernels(plain)) == set(dirac)


def test_depthwise_mobilenet_gets_dirac():
    keras.utils.set_random_seed(0)
    student = build_student(config_lib.resolve({"model": "mobilenetv2_NR_G1", "init": "dirac"}), 10, (32, 32, 3))
    gconvs = [layer for layer in student.layers if is_dirac_target(layer)]
    assert len(gconvs) == 17 and all(layer.groups == layer.filters for layer in gconvs)  # depthwise 3x3
    for layer in gconvs:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert kernel.shape[2] == 1
        np.testing.assert_array_equal(kernel[1, 1, 0], np.ones(layer.filters))
        assert kernel.sum() == layer.filters
    assert initialize_convolutions(student, "he") == []
    with pytest.raises(UsageError, match="Valid choices: he, dirac"):
        initialize_convolutions(student, "orthogonal")


def test_run_names_and_teacher_of_a_dirac_student():
    plain = config_lib.resolve({"model": "wrn22x2_NR_g2"})
    assert plain.init == "he"
    assert config_lib.run_name(config_lib.resolve({"model": "wrn22x2_NR_g2", "init": "he"})) \
        == config_lib.run_name(plain) == "wrn22x2_NR_g2-s0"
    dirac = config_lib.resolve({"model": "wrn22x2_NR_g2", "init": "dirac"})
    assert config_lib.run_name(dirac).startswith("wrn22x2_NR_g2-s0-")
    kd = {"model": "wrn22x2_NR_g2", "teacher": "wrn22x2_R_g2", "epochs": 2}
    kd_dirac = config_lib.resolve({**kd, "init": "dirac"})
    assert config_lib.run_name(kd_dirac) != config_lib.run_name(config_lib.resolve(kd))
    teacher = config_lib.teacher_config(kd_dirac)
    assert teacher.init == "he" and teacher.epochs == 2
    assert config_lib.run_name(teacher) == config_lib.run_name(config_lib.teacher_config(config_lib.resolve(kd)))
    with pytest.raises(UsageError, match="Unknown init 'bogus'. Valid choices: he, dirac."):
        config_lib.resolve({"model": "wrn22x2_NR_g2", "init": "bogus"})


def _spec(**axes):
    return grid.GridSpec(name="dirac", net="wrn10x1", dataset="synthetic", settings={"epochs": 1},
                         halves={"left": {"students": ["NR_g2"], "teachers": ["R_g2"]}}, axes=axes)


def test_grid_init_axis_plans_a_cell_per_init(tmp_path):
    logdir = str(tmp_path)
    plain = grid.plan(_spec(), logdir)
    cells = grid.plan(_spec(init=["he", "dirac"]), logdir)
    # Baselines R and NR per init, then KD per init; the dirac KD run's teacher is the he R baseline.
    assert [(c.kind, c.config.model, c.config.init) for c in cells] == [
        ("baseline", "wrn10x1_R_g2", "he"), ("baseline", "wrn10x1_NR_g2", "he"),
        ("baseline", "wrn10x1_R_g2", "dirac"), ("baseline", "wrn10x1_NR_g2", "dirac"),
        ("kd", "wrn10x1_NR_g2", "he"), ("kd", "wrn10x1_NR_g2", "dirac"),
    ]
    assert [c.axes for c in cells] == [(("init", c.config.init),) for c in cells]
    assert [c.run_dir for c in plain] == [cells[i].run_dir for i in (0, 1, 4)]  # the he cells are the plain grid's
    assert len({c.run_dir for c in cells}) == 6
    halves = {half for half, *_ in grid.table_configs(_spec(init=["he", "dirac"]))}
    assert halves == {"left", "left (init=dirac)"}


def test_grid_axes_in_a_config_file(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("net: wrn10x1\ndataset: synthetic\naxes: {init: [he, dirac]}\n"
                    "halves: {left: {students: [NR_g2], teachers: [R_g2]}}\n")
    assert grid.load_grid(str(path)).axes == {"init": ["he", "dirac"]}
    path.write_text("net: wrn10x1\naxes: {seed: [0, 1]}\nhalves: {left: {students: [NR_g2], teachers: [R_g2]}}\n")
    with pytest.raises(UsageError, match="Unknown axis 'seed'"):
        grid.load_grid(str(path))
    path.write_text("net: wrn10x1\naxes: {init: dirac}\nhalves: {left: {students: [NR_g2], teachers: [R_g2]}}\n")
    with pytest.raises(UsageError, match="must list distinct values"):
        grid.load_grid(str(path))
    with pytest.raises(UsageError, match="Unknown init 'bogus'"):
        grid.plan(_spec(init=["he", "bogus"]), str(tmp_path))


def test_init_flag_is_validated_in_one_line():
    result = run_script("train.py", "--model=wrn10x1_NR_g2", "--init=bogus")
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Unknown init 'bogus'. Valid choices: he, dirac." in lines[0]
    assert "Traceback" not in result.stderr
