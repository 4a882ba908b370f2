"""Tests for `kdkeras.methods.rd`: Residual Distillation (Li et al., NeurIPS 2020).

The references are float64 NumPy code written here from the authors' loss
(process/multikd_train.py, branch ``JOINT``): cross-entropies of the
student's logits and of the teacher's logits from the student's stage maps,
the latter weighted by the half-cosine ``m``, all divided by the number of
outputs. The teacher's later stages are checked by the identity they must
satisfy: applied to the teacher's own stage map they give the teacher's
logits. Tiny networks (wrn10x1, resnet8) on 16x16 inputs.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.distiller import Distiller
from kdkeras.errors import UsageError
from kdkeras.methods import check_run_settings
from kdkeras.methods.rd import RD, cross_entropy, cross_weight_at, rd_loss
from kdkeras.models import build_model
from kdkeras.models.taps import feature_taps, tail_model

CLASSES = 10
SHAPE = (16, 16, 3)
#: float32 log-softmax and sums against float64 NumPy on losses of size ~1-10: ~1e-7 relative; 1e-5.
RTOL = 1e-5


def _model(name, seed=0):
    keras.utils.set_random_seed(seed)
    options = {"dropout": 0.0} if name.startswith("wrn") else {}
    return build_model(name, num_classes=CLASSES, input_shape=SHAPE, **options)


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *SHAPE), dtype=np.float32), rng.integers(0, CLASSES, n)


def _np_ce(logits, y):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -log_p[np.arange(len(y)), y]


def test_the_loss_matches_numpy_on_tiny_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 5)).astype(np.float32) * 3
    cross = [rng.normal(size=(4, 5)).astype(np.float32) * 3 for _ in range(2)]
    y = np.array([0, 4, 2, 2])
    expected = (_np_ce(logits, y) + 0.7 * (_np_ce(cross[0], y) + _np_ce(cross[1], y))) / 3
    np.testing.assert_allclose(np.asarray(rd_loss(logits, cross, y, 0.7)), expected, rtol=RTOL)
    # (B, 1) labels too; m = 0 leaves the student's own cross-entropy over K + 1.
    np.testing.assert_allclose(np.asarray(rd_loss(logits, cross, y[:, None], 0.0)), _np_ce(logits, y) / 3,
                               rtol=RTOL)


def test_the_weight_falls_by_a_half_cosine_to_the_floor():
    assert cross_weight_at(0) == 1.0 and cross_weight_at(60) == cross_weight_at(200) == 0.5
    assert cross_weight_at(30) == pytest.approx(0.75)
    assert cross_weight_at(10, floor=0.0, decay_epochs=20) == pytest.approx(0.5)
    term = RD(floor=0.2, decay_epochs=4)
    term.on_epoch_begin(2)  # creates m and sets it
    assert float(term.cross_weight.numpy()) == pytest.approx(0.6)


@pytest.mark.parametrize("name", ["wrn10x1_R_g2", "resnet8_R"])
def test_the_teachers_later_stages_on_its_own_stage_map_give_its_logits(name):
    teacher = _model(name)
    x, _ = _data(4)
    expected = np.asarray(teacher(x, training=False))
    maps = feature_taps(teacher)
    for tap in ("stage1", "stage2", "stage3"):
        head = keras.Model(teacher.input, maps[tap])
        tail = tail_model(teacher, tap)
        # The same float32 kernels on the same values: equal up to the ops' own rounding; 1e-5 relative.
        np.testing.assert_allclose(np.asarray(tail(head(x, training=False), training=False)), expected,
                                   rtol=1e-5, atol=1e-6, err_msg=tap)
        assert {id(v) for v in tail.weights} <= {id(v) for v in teacher.weights}  # shared, not copied
    with pytest.raises(UsageError, match="Unknown feature tap 'stage9'"):
        tail_model(teacher, "stage9")


def test_a_cut_inside_a_block_is_refused(monkeypatch):
    from kdkeras.models import taps as taps_module

    teacher = _model("wrn10x1_R_g2")
    real = taps_module.tap_layers
    # A tap inside the block: the add after it also reads the block's input.
    monkeypatch.setattr(taps_module, "tap_layers",
                        lambda model: {**real(model), "stage1": "stage1_block1_unit2_pconv"})
    with pytest.raises(UsageError, match="read earlier tensors") as error:
        tail_model(teacher, "stage1")
    assert "\n" not in str(error.value)


def test_the_distillers_loss_is_numpy_when_the_student_is_the_teacher():
    """With the student a copy of the teacher, every cross output is the teacher's logits."""
    teacher = _model("wrn10x1_R_g2")
    student = _model("wrn10x1_R_g2", seed=1)
    student.set_weights(teacher.get_weights())
    distiller = Distiller(student, teacher, distillation_losses=[RD()])
    distiller.compile(optimizer="sgd")
    distiller.set_epoch(30)  # m = 0.75
    x, y = _data(8)
    logs = distiller.test_step((x, y))
    ce = _np_ce(np.asarray(teacher(x, training=False)), y)
    assert distiller.ce_weight == 0.0 and distiller.taps == ("stage1", "stage2")
    np.testing.assert_allclose(float(logs["rd"]), np.mean((1 + 0.75 * 2) * ce / 3), rtol=RTOL)
    np.testing.assert_allclose(float(logs["loss"]), float(logs["rd"]), rtol=RTOL)
    np.testing.assert_allclose(float(logs["ce"]), ce.mean(), rtol=RTOL)


def test_cross_logits_are_the_teachers_later_stages_on_the_students_maps():
    student, teacher = _model("resnet8_NR"), _model("resnet8_R", seed=1)
    term = RD()
    term.bind(student, teacher)
    assert term.taps == ("stage1", "stage2")
    x, y = _data(4)
    from kdkeras.models.taps import feature_model

    outputs = feature_model(student, term.taps)(x, training=False)
    cross = term.cross_logits(outputs)
    for tap in term.taps:
        expected = tail_model(teacher, tap)(outputs[tap], training=False)
        np.testing.assert_allclose(np.asarray(cross[tap]), np.asarray(expected), rtol=1e-5, atol=1e-6)
        assert not np.allclose(np.asarray(cross[tap]), np.asarray(outputs["logits"]))  # a hybrid, not the student
    term.on_epoch_begin(0)
    expected = (_np_ce(outputs["logits"], y) + sum(_np_ce(cross[t], y) for t in term.taps)) / 3
    np.testing.assert_allclose(np.asarray(term.per_example_loss({}, outputs, labels=y)), expected, rtol=RTOL)


def test_no_gradient_reaches_the_teacher_and_the_student_gets_one_through_the_teachers_stages(tmp_path):
    student, teacher = _model("wrn10x1_NR_g2"), _model("wrn10x1_R_g2", seed=1)
    distiller = Distiller(student, teacher, distillation_losses=[RD()])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    term = distiller.distillation_losses[0]
    assert term.trainable_variables == [] and teacher.trainable_variables == []
    trained = {id(v) for v in student.trainable_variables + distiller.adapter_variables}
    assert not trained & {id(v) for v in teacher.weights}
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    x, y = _data(8)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for before, after in zip(teacher_before, teacher.get_weights()):  # BN statistics too: inference mode
        np.testing.assert_array_equal(before, after)
    assert not all(np.array_equal(b, a) for b, a in zip(student_before, student.get_weights()))
    # The cross term from stage1 alone reaches the student's stage-1 weights (through the teacher's stages 2
    # and 3), and none of the student's later weights.
    from kdkeras.models.taps import feature_model

    view = feature_model(student, term.taps)
    with tf.GradientTape() as tape:
        outputs = view(x, training=True)
        loss = tf.reduce_mean(cross_entropy(term.cross_logits(outputs)["stage1"], y))
    variables = student.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    early = [p for p in grads if p.startswith(("stem_conv", "stage1_"))]
    late = [p for p in grads if p.startswith(("stage2_", "stage3_", "head_", "logits"))]
    assert early and late
    assert all(grads[p] is not None and float(tf.reduce_max(tf.abs(grads[p]))) > 0 for p in early), early
    assert all(grads[p] is None for p in late), [p for p in late if grads[p] is not None]
    # The saved student is the plain network alone.
    path = str(tmp_path / "student.keras")
    distiller.save_student(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert len(loaded.weights) == len(student.weights)
    assert not any(isinstance(layer, keras.layers.Add) for layer in loaded.layers)


@pytest.mark.parametrize("kwargs, message", [
    ({"taps": "stage1"}, "`taps` must be a non-empty list"),
    ({"taps": ()}, "`taps` must be a non-empty list"),
    ({"taps": ("all", "stage1")}, "either \\['all'\\] or a list"),
    ({"taps": ("embedding",)}, "must name stages such as 'stage1'"),
    ({"taps": ("stage1", "stage1")}, "repeated tap"),
    ({"floor": 1.5}, "`floor` must be a number in \\[0, 1\\]"),
    ({"floor": True}, "`floor` must be a number in \\[0, 1\\]"),
    ({"decay_epochs": 0}, "`decay_epochs` must be an integer >= 1"),
    ({"decay_epochs": 2.5}, "`decay_epochs` must be an integer >= 1"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(UsageError, match=message) as error:
        RD(**kwargs)
    assert "\n" not in str(error.value)


def test_run_settings_are_checked_from_the_declaration():
    check_run_settings("rd", {"rd_taps": ("stage1",), "rd_floor": 0.0, "rd_decay_epochs": 1, "rd_weight": 2.0})
    with pytest.raises(UsageError, match="rd_floor must be a number >= 0 and <= 1. Received: rd_floor=2.0"):
        check_run_settings("rd", {"rd_floor": 2.0})
    with pytest.raises(UsageError, match="rd_decay_epochs must be an integer >= 1"):
        check_run_settings("rd", {"rd_decay_epochs": 0})
    with pytest.raises(UsageError, match="rd_floor is a setting of method=rd"):
        check_run_settings("kd", {"rd_floor": 0.5})


@pytest.mark.parametrize("student, teacher, taps, message", [
    ("wrn10x1_NR_g2", "wrn10x2_R_g2", ("all",), "both maps must have one shape. Received: student \\(16, 16, 16\\), "
                                                 "teacher \\(16, 16, 32\\)"),
    ("wrn10x1_NR_g2", "wrn10x1_R_g2", ("stage3",), "stages of the student before its last \\(stage1, stage2\\)"),
    ("wrn10x1_NR_g2", "wrn10x1_R_g2", ("stage5",), "stages of the student before its last"),
])
def test_networks_that_do_not_fit_are_one_line_errors(student, teacher, taps, message):
    with pytest.raises(UsageError, match=message) as error:
        Distiller(_model(student), _model(teacher, seed=1), distillation_losses=[RD(taps=taps)])
    assert "\n" not in str(error.value)


def test_it_needs_the_models_and_the_labels():
    term = RD()
    with pytest.raises(UsageError, match="call bind\\(student, teacher\\) first"):
        term.per_example_loss({}, {"logits": np.zeros((2, 3), np.float32)}, labels=np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="needs the labels"):
        term.per_example_loss({}, {"logits": np.zeros((2, 3), np.float32)})
    with pytest.raises(UsageError, match="use kdkeras.distiller.Distiller"):
        term.validate_model_compatibility(None, None)


def test_config_round_trip():
    term = RD(taps=("stage2",), floor=0.1, decay_epochs=7, name="rd_x")
    again = RD.from_config(term.get_config())
    assert again.get_config() == term.get_config() == {"name": "rd_x", "taps": ["stage2"], "floor": 0.1,
                                                        "decay_epochs": 7}
