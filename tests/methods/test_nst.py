"""Tests for `kdkeras.methods.nst`: NST against a float64 NumPy reference written from Huang and Wang (2017)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.errors import UsageError
from kdkeras.methods import get
from kdkeras.methods.nst import NST

B = 4
#: float32 TensorFlow kernels against float64 NumPy: normalised channels (entries <= 1), Gram matrices of
#: dot products of unit vectors (sums of ~N products, ~1e-7 relative), squared and averaged; the MMD, a
#: difference of three such means of size ~0.1-1 whose result is of the same size (no strong
#: cancellation on random maps): ~1e-7 relative, seen 3.4e-7; 1e-5 relative.
RTOL = 1e-5
#: An MMD that is 0 in exact arithmetic, in float32: three means of size ~1/C minus each other, each
#: rounded at ~1e-7 of its size; 1e-6 absolute.
ZERO_ATOL = 1e-6


def _features(seed, h=8, w=8, c=5):
    return np.random.default_rng(seed).normal(size=(B, h, w, c)).astype(np.float32)


def _np_channels(f):
    """The paper's samples: each channel's map over the H*W positions, L2-normalised; (B, C, N)."""
    f = np.asarray(f, np.float64)
    f = f.reshape(len(f), -1, f.shape[-1]).transpose(0, 2, 1)
    return f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)


def _np_mmd(t, s):
    """MMD^2 with k(x, y) = (x.y)^2 between the channel samples of t and s, per example, by explicit sums."""
    ft, fs = _np_channels(t), _np_channels(s)
    out = []
    for b in range(len(ft)):
        k = lambda a, c: np.mean([[np.dot(x, y) ** 2 for y in c] for x in a])  # noqa: E731
        out.append(k(ft[b], ft[b]) + k(fs[b], fs[b]) - 2.0 * k(fs[b], ft[b]))
    return np.array(out)


def _np_nst(teacher, student, taps):
    return sum(_np_mmd(teacher[tap], student[tap]) for tap in taps)


def test_nst_matches_numpy():
    taps = ("stage1", "stage2", "stage3")
    sizes = {"stage1": (8, 3, 4), "stage2": (4, 5, 8), "stage3": (2, 7, 16)}  # (HxW, student C, teacher C)
    student = {k: _features(i, h, h, cs) for i, (k, (h, cs, _)) in enumerate(sizes.items())}
    teacher = {k: _features(10 + i, h, h, ct) for i, (k, (h, _, ct)) in enumerate(sizes.items())}
    teacher["logits"] = np.zeros((B, 10), np.float32)  # extra entries are ignored
    expected = _np_nst(teacher, student, taps)
    got = NST(taps=taps).per_example_loss(teacher, student)
    assert got.shape == (B,) and got.dtype == "float32"
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    np.testing.assert_allclose(float(NST(taps=taps).compute_loss(teacher, student)), expected.mean(), rtol=RTOL)
    one = NST(taps=("stage2",))
    np.testing.assert_allclose(one.mmd(teacher["stage2"], student["stage2"]),
                               _np_mmd(teacher["stage2"], student["stage2"]), rtol=RTOL)


def test_nst_identities():
    term = NST(taps=("stage1",))
    f, g = _features(1, c=6), _features(2, c=9)
    # Identical maps: 0 (up to float32 rounding of the three means).
    np.testing.assert_allclose(term.per_example_loss({"stage1": f}, {"stage1": f}), np.zeros(B), atol=ZERO_ATOL)
    base = term.per_example_loss({"stage1": f}, {"stage1": g})
    # A distance between distributions of channels: permuting the student's channels or rescaling each
    # by a positive number (the normalisation removes it) changes nothing beyond float32 rounding.
    scales = np.linspace(0.3, 4.0, 9).astype(np.float32)
    for h in (g[..., ::-1], g * scales):
        np.testing.assert_allclose(term.per_example_loss({"stage1": f}, {"stage1": h}), base, rtol=RTOL)
    # With k = (x.y)^2, MMD^2 = || T^T T / C_T - S^T S / C_S ||_F^2 (N x N Gram matrices over positions).
    ft, fs = _np_channels(f), _np_channels(g)
    gram = lambda c: np.einsum("bcn,bcm->bnm", c, c) / c.shape[1]  # noqa: E731
    frobenius = np.sum((gram(ft) - gram(fs)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(base, frobenius, rtol=RTOL)
    assert np.all(np.asarray(base) > 0)


def test_nst_gradient_reaches_the_student_only():
    term = NST(taps=("stage2",))
    s = tf.Variable(_features(3, 4, 4, 3))
    t = tf.Variable(_features(4, 4, 4, 8))
    with tf.GradientTape(persistent=True) as tape:
        loss = term.compute_loss({"stage2": t}, {"stage2": s})
    assert tape.gradient(loss, t) is None
    grad = tape.gradient(loss, s)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(np.asarray(grad) != 0)


def test_nst_all_zero_channel_has_finite_gradient():
    f = _features(5, 4, 4, 3)
    f[..., 1] = 0.0  # a dead channel: its sample is 0 (F.normalize's floor), its gradient finite
    s = tf.Variable(f)
    with tf.GradientTape() as tape:
        loss = NST(taps=("stage1",)).compute_loss({"stage1": _features(6, 4, 4, 5)}, {"stage1": s})
    assert np.isfinite(float(loss)) and np.all(np.isfinite(tape.gradient(loss, s)))


@pytest.mark.parametrize("kwargs", [
    {"taps": ()}, {"taps": "stage1"}, {"taps": ("logits",)}, {"taps": ("stage1", "stage1")},
    {"taps": ("stage1", "stage2"), "teacher_layer_name": "t", "student_layer_name": "s"},
    {"taps": ("stage1",), "teacher_layer_name": "t"},
])
def test_nst_bad_settings(kwargs):
    with pytest.raises(UsageError) as info:
        NST(**kwargs)
    assert "\n" not in str(info.value)


def test_nst_rejects_different_spatial_sizes():
    with pytest.raises(UsageError, match="same spatial size") as info:
        NST(taps=("stage1",)).per_example_loss({"stage1": _features(1, 4, 4)}, {"stage1": _features(2)})
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="same spatial size"):
        NST(taps=("stage1",)).build_adapters({"stage1": (None, 8, 8, 3)}, {"stage1": (None, 4, 4, 3)})


def test_nst_registry_settings_and_config():
    assert get("nst") is NST
    assert NST.default_weight == 50.0 and NST.default_ce_weight == 1.0  # RepDistiller -b 50 -r 1; mdistiller
    assert NST().taps == ("stage1", "stage2", "stage3")
    term = NST.from_settings(NST.Settings(taps=("stage3",)))
    assert term.taps == ("stage3",)
    config = term.get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is NST and again.get_config() == config


def test_nst_in_the_distiller():
    from kdkeras import build_model
    from kdkeras.distiller import Distiller

    keras.utils.set_random_seed(0)
    shape = (16, 16, 3)
    student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=shape, dropout=0.0)
    teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=shape, dropout=0.0)
    distiller = Distiller(student, teacher, distillation_losses=[NST()], loss_weights=[NST.default_weight])
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x, y = rng.random((8, *shape), dtype=np.float32), np.arange(8) % 10
    logs = distiller.train_step((x, y))
    assert np.isfinite(float(logs["nst"])) and float(logs["nst"]) > 0
