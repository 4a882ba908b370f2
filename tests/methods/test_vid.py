"""Tests for `kdkeras.methods.vid`: VID against a float64 NumPy reference written from Ahn et al. (2019).

The reference reads the regressors' actual weights back, so it checks the
loss the method computes with the parts it built, and the parts train in a
few `Distiller` steps.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.errors import UsageError
from kdkeras.methods import get
from kdkeras.methods.vid import VID, VIDHead, inverse_softplus

B = 4
#: float32 TensorFlow kernels against float64 NumPy: three 1x1 convolutions (sums of <= 16 products, ~1e-7
#: relative each), a squared error divided by a variance, plus a log, averaged over positions and channels
#: (terms of one sign on these maps, no strong cancellation): ~1e-7 relative, seen 1.0e-7; 1e-5 relative.
RTOL = 1e-5

SIZES = {"stage1": (8, 3, 4), "stage2": (4, 5, 8), "stage3": (2, 7, 16)}  # (HxW, student C, teacher C)


def _features(seed, h=8, w=8, c=5):
    return np.random.default_rng(seed).normal(size=(B, h, w, c)).astype(np.float32)


def _maps():
    student = {k: _features(i, h, h, cs) for i, (k, (h, cs, _)) in enumerate(SIZES.items())}
    teacher = {k: _features(10 + i, h, h, ct) for i, (k, (h, _, ct)) in enumerate(SIZES.items())}
    return teacher, student


def _shapes(maps):
    return {k: (None, *v.shape[1:]) for k, v in maps.items()}


def _np_softplus(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


def _np_vid(term, teacher, student):
    """Ahn et al.'s negative log-likelihood per example: for each tap, the mean over (H, W, C_T) of
    0.5 * (log sigma_c^2 + (t - mu)^2 / sigma_c^2), with mu the regressor (1x1 conv, ReLU, 1x1 conv, ReLU,
    1x1 conv) and sigma_c^2 = softplus(alpha_c) + eps, from the weights read back; summed over the taps."""
    total = np.zeros(B)
    for tap, head in zip(term.taps, term.heads):
        w1, w2, w3 = (np.asarray(conv.kernel, np.float64)[0, 0] for conv in head.convs)
        x = np.asarray(student[tap], np.float64)
        mu = np.maximum(np.maximum(x @ w1, 0.0) @ w2, 0.0) @ w3
        var = _np_softplus(np.asarray(head.alpha)) + term.eps
        nll = 0.5 * (np.log(var) + (np.asarray(teacher[tap], np.float64) - mu) ** 2 / var)
        total += nll.mean(axis=(1, 2, 3))
    return total


def _built(taps=("stage1", "stage2", "stage3"), **kwargs):
    keras.utils.set_random_seed(0)
    teacher, student = _maps()
    term = VID(taps=taps, **kwargs)
    term.build_adapters(_shapes(student), _shapes(teacher))
    return term, teacher, student


def test_vid_builds_its_parts_from_shapes():
    term, teacher, student = _built()
    assert len(term.adapters) == 3 and all(isinstance(h, VIDHead) for h in term.adapters)
    for head, (_, cs, ct) in zip(term.heads, SIZES.values()):
        # RepDistiller's regressor: no bias, no BN, mid channels = teacher channels; one alpha per channel.
        assert [tuple(c.kernel.shape) for c in head.convs] == [(1, 1, cs, ct), (1, 1, ct, ct), (1, 1, ct, ct)]
        assert all(not c.use_bias for c in head.convs)
        assert tuple(head.alpha.shape) == (ct,)
        # The variance starts at init_var = 5 (float32 rounding of softplus(softplus^-1(5 - eps)) + eps).
        np.testing.assert_allclose(head.variance(), np.full(ct, 5.0), rtol=1e-6)
    assert len(term.trainable_weights) == 12 and not term.non_trainable_weights
    again = VID()
    again.per_example_loss(teacher, student)  # or built on the first call, from the tensors
    assert [tuple(w.shape) for w in again.trainable_weights] == [tuple(w.shape) for w in term.trainable_weights]


def test_inverse_softplus():
    for y in (1e-3, 0.5, 5.0 - 1e-5, 50.0, 800.0):
        x = inverse_softplus(y)
        assert math.isfinite(x)
        assert float(_np_softplus(x)) == pytest.approx(y, rel=1e-12)


def test_vid_matches_numpy_with_the_regressors_weights():
    term, teacher, student = _built()
    rng = np.random.default_rng(3)
    for head in term.heads:  # distinct variances per channel, so a wrong broadcast shows
        head.alpha.assign(rng.normal(size=head.alpha.shape).astype(np.float32))
    expected = _np_vid(term, teacher, student)
    got = term.per_example_loss(teacher, student)
    assert got.shape == (B,) and got.dtype == "float32"
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    np.testing.assert_allclose(float(term.compute_loss(teacher, student)), expected.mean(), rtol=RTOL)


def test_vid_at_init_and_the_maximum_likelihood_variance():
    term, teacher, student = _built(taps=("stage2",))
    head = term.heads[0]
    mu = np.asarray(head.mean(student["stage2"]), np.float64)
    err = (np.asarray(teacher["stage2"], np.float64) - mu) ** 2
    # At the start every sigma^2 is init_var: 0.5 * (log 5 + mean (t - mu)^2 / 5).
    np.testing.assert_allclose(term.per_example_loss(teacher, student),
                               0.5 * (math.log(5.0) + err.mean(axis=(1, 2, 3)) / 5.0), rtol=RTOL)
    # The batch loss is least in sigma_c^2 where sigma_c^2 = mean over (B, H, W) of (t - mu)^2: there its
    # gradient in alpha is 0. float32 rounding leaves ~1e-7 of the gradient's terms (~0.5 / C); at init
    # it is ~1e-2, so 1e-6 absolute is far below it and far above rounding.
    with tf.GradientTape() as tape:
        at_init = term.compute_loss(teacher, student)
    grad_init = np.asarray(tape.gradient(at_init, head.alpha))
    assert np.min(np.abs(grad_init)) > 1e-3
    best = err.mean(axis=(0, 1, 2))
    head.alpha.assign(np.array([inverse_softplus(v - term.eps) for v in best], np.float32))
    with tf.GradientTape() as tape:
        loss = term.compute_loss(teacher, student)
    np.testing.assert_allclose(tape.gradient(loss, head.alpha), np.zeros_like(best), atol=1e-6)


def test_vid_gradient_reaches_the_student_and_the_parts_not_the_teacher():
    term, teacher, student = _built(taps=("stage2",))
    s = tf.Variable(student["stage2"])
    t = tf.Variable(teacher["stage2"])
    with tf.GradientTape(persistent=True) as tape:
        loss = term.compute_loss({"stage2": t}, {"stage2": s})
    assert tape.gradient(loss, t) is None
    for grad in [tape.gradient(loss, s)] + tape.gradient(loss, term.trainable_variables):
        assert grad is not None and np.all(np.isfinite(grad)) and np.any(np.asarray(grad) != 0)


@pytest.mark.parametrize("kwargs", [
    {"taps": ()}, {"taps": "stage1"}, {"taps": ("logits",)}, {"taps": ("stage1", "stage1")},
    {"eps": 0.0}, {"eps": -1.0}, {"eps": True}, {"init_var": 0.0}, {"init_var": 1e-6}, {"init_var": "5"},
    {"taps": ("stage1", "stage2"), "teacher_layer_name": "t", "student_layer_name": "s"},
])
def test_vid_bad_settings(kwargs):
    with pytest.raises(UsageError) as info:
        VID(**kwargs)
    assert "\n" not in str(info.value)


def test_vid_rejects_different_spatial_sizes():
    with pytest.raises(UsageError, match="same spatial size") as info:
        VID(taps=("stage1",)).build_adapters({"stage1": (None, 8, 8, 3)}, {"stage1": (None, 4, 4, 3)})
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="same spatial size"):
        VID(taps=("stage1",)).per_example_loss({"stage1": _features(1, 4, 4)}, {"stage1": _features(2)})


def test_vid_registry_settings_and_config():
    assert get("vid") is VID
    assert VID.default_weight == 1.0 and VID.default_ce_weight == 1.0  # RepDistiller -b 1 -r 1; mdistiller
    term = VID()
    assert (term.taps, term.init_var, term.eps) == (("stage1", "stage2", "stage3"), 5.0, 1e-5)
    term = VID.from_settings(VID.Settings(taps=("stage3",), init_var=2.0, eps=1e-4))
    assert (term.taps, term.init_var, term.eps) == (("stage3",), 2.0, 1e-4)
    config = term.get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is VID and again.get_config() == config


def test_vid_parts_train_in_the_distiller(tmp_path):
    from kdkeras import build_model
    from kdkeras.distiller import Distiller

    def distiller():
        keras.utils.set_random_seed(0)
        student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
        teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
        d = Distiller(student, teacher, distillation_losses=[VID()], loss_weights=[VID.default_weight])
        d.compile(optimizer=keras.optimizers.SGD(0.01))
        return d

    d = distiller()
    (term,) = d.distillation_losses
    assert len(term.heads) == 3  # built by the distiller from the taps' shapes
    assert {id(v) for v in term.trainable_variables} <= {id(v) for v in d.adapter_variables}
    before = [np.array(v) for v in term.trainable_variables]
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 32, 32, 3), dtype=np.float32), np.arange(16) % 10
    history = d.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["vid"][0]) and np.isfinite(history.history["loss"][0])
    after = [np.array(v) for v in term.trainable_variables]
    for head in term.heads:  # every conv kernel and every alpha moved
        for v in head.trainable_variables:
            i = next(k for k, w in enumerate(term.trainable_variables) if w is v)
            assert not np.allclose(before[i], after[i]), v.path
    path = str(tmp_path / "d.weights.h5")  # the parts are in the distiller's checkpoint
    d.save_weights(path)
    restored = distiller()
    restored.load_weights(path)
    for a, b in zip(restored.distillation_losses[0].trainable_variables, term.trainable_variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))
