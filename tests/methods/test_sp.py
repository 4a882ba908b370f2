"""Tests for `kdkeras.methods.sp`: SP against a float64 NumPy reference written from Tung and Mori (2019)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras import build_model
from kdkeras.distiller import Distiller
from kdkeras.errors import UsageError
from kdkeras.methods import check_run_settings, get
from kdkeras.methods.sp import SP

B = 6
#: float32 TensorFlow kernels against float64 NumPy: Gram matrices (sums of H*W*C products, ~1e-7 relative),
#: rows normalised to unit norm (entries <= 1), squared differences of entries of size ~0.1-1 that differ by
#: ~0.1 on random maps (little cancellation), summed: seen <= 1e-6 relative; 1e-5 relative.
RTOL = 1e-5


def _features(seed, h=4, w=4, c=5, n=B):
    return np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)


def _np_similarity(f):
    """The paper's G: Q Q^T of the flattened maps Q (B x chw), each row divided by its L2 norm."""
    q = np.asarray(f, np.float64).reshape(len(f), -1)
    g = q @ q.T
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


def _np_sp(teacher, student, taps):
    """Per example i: row i of ||G_T - G_S||_F^2 / B^2 times B, summed over the taps (their mean is L_SP)."""
    return sum(np.sum((_np_similarity(teacher[k]) - _np_similarity(student[k])) ** 2, axis=-1) / B for k in taps)


def test_sp_matches_numpy():
    taps = ("stage2", "stage3")
    student = {"stage2": _features(1, 8, 8, 3), "stage3": _features(2, 4, 4, 7)}
    teacher = {"stage2": _features(3, 4, 4, 16), "stage3": _features(4, 2, 2, 9),  # any shapes: G is B x B
               "logits": np.zeros((B, 3), np.float32)}
    expected = _np_sp(teacher, student, taps)
    got = SP(taps=taps).per_example_loss(teacher, student)
    assert got.dtype == "float32" and tuple(got.shape) == (B,)
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    # The paper's batch loss, eq. 4: sum over the taps of ||G_T - G_S||_F^2 / B^2.
    paper = sum(np.sum((_np_similarity(teacher[k]) - _np_similarity(student[k])) ** 2) / B**2 for k in taps)
    np.testing.assert_allclose(float(SP(taps=taps).compute_loss(teacher, student)), paper, rtol=RTOL)
    np.testing.assert_allclose(SP.similarity(student["stage3"]), _np_similarity(student["stage3"]), rtol=RTOL,
                               atol=5e-7)  # entries near 0 keep the ~1e-7 absolute error of the row (seen 1.3e-7)
    one = SP()  # bare tensors: the default tap's maps
    np.testing.assert_allclose(one.per_example_loss(teacher["stage3"], student["stage3"]),
                               _np_sp(teacher, student, ("stage3",)), rtol=RTOL)


def test_sp_identities():
    term = SP(taps=("stage3",))
    f, g = _features(5, c=6), _features(6, 2, 2, 9)
    # Identical maps: the same float32 G on both sides, exactly 0.
    np.testing.assert_array_equal(term.per_example_loss({"stage3": f}, {"stage3": f}), np.zeros(B))
    base = term.per_example_loss({"stage3": f}, {"stage3": g})
    # G depends on the maps only through Q Q^T: scaling the student's maps, permuting their features or
    # reshaping them changes nothing beyond float32 rounding.
    order = np.random.default_rng(7).permutation(2 * 2 * 9)
    for h in (4.2 * g, g.reshape(B, -1)[:, order].reshape(B, 2, 2, 9), g.reshape(B, 6, 6, 1)):
        np.testing.assert_allclose(term.per_example_loss({"stage3": f}, {"stage3": h}), base, rtol=RTOL)
    # A relation of the batch: permuting the examples of both sides permutes the per-example losses.
    rows = np.random.default_rng(8).permutation(B)
    np.testing.assert_allclose(term.per_example_loss({"stage3": f[rows]}, {"stage3": g[rows]}),
                               np.asarray(base)[rows], rtol=RTOL)
    # Rows of unit norm: each example's share is at most (1/B) * ||G_T,i - G_S,i||^2 <= 4 / B.
    assert np.all((np.asarray(base) > 0) & (np.asarray(base) <= 4.0 / B))


def test_sp_gradient_reaches_the_student_only_and_stays_finite():
    t = tf.Variable(_features(9))
    s_np = _features(10, c=3)
    s_np[3] = 0.0  # an all-zero map: a zero row of the Gram matrix, whose norm is floored
    s = tf.Variable(s_np)
    with tf.GradientTape(persistent=True) as tape:
        loss = SP().compute_loss({"stage3": t}, {"stage3": s})
    assert tape.gradient(loss, t) is None
    grad = tape.gradient(loss, s)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize("make", [
    lambda: SP(taps=()), lambda: SP(taps="stage3"), lambda: SP(taps=("logits",)),
    lambda: SP(taps=("stage3", "stage3")), lambda: SP(teacher_layer_name="t"),
    lambda: SP(taps=("stage2", "stage3"), teacher_layer_name="t", student_layer_name="s"),
])
def test_sp_bad_arguments_are_usage_errors(make):
    with pytest.raises(UsageError) as error:
        make()
    assert "\n" not in str(error.value)


def test_sp_settings_flags_and_config():
    assert get("sp") is SP
    assert (SP.default_weight, SP.default_ce_weight, SP().taps) == (3000.0, 1.0, ("stage3",))
    assert SP.from_settings(SP.Settings(taps=("stage1", "stage3"))).taps == ("stage1", "stage3")
    with pytest.raises(UsageError, match="sp_taps"):
        check_run_settings("sp", {"sp_taps": ""})
    config = SP(taps=["stage1", "stage2"], name="s").get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(SP.from_config(config)))
    assert type(again) is SP and again.get_config() == config


def test_sp_trains_in_the_distiller():
    keras.utils.set_random_seed(0)
    student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
    teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
    distiller = Distiller(student, teacher, distillation_losses=[SP()])
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 16)
    before = [w.copy() for w in student.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["sp"][0]) and history["sp"][0] > 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
