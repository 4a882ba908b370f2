"""Tests for `kdkeras.methods.mlkd`: MLKD (Jin, Wang and Lin, CVPR 2023) against float64 NumPy references.

Two references are written here. The batch one follows the paper's three
levels as the authors' code reduces them (instance KD at each temperature
with T^2, the B x B and C x C alignments, each batch value multiplied by its
confidence mask and averaged, `np.percentile(..., 50)` thresholds, and the two
unmasked KD terms at T = 2 and 6); the per-example one splits it by rows and
shares, and its mean must equal the batch reference.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.errors import UsageError
from kdkeras.methods import declared_settings, get, list_methods
from kdkeras.methods.mlkd import MLKD, fraction_at_or_below_median

B, C = 8, 10
#: float32 softmax, matrix products and KL (TensorFlow's CPU kernels: oneDNN or Eigen, AVX-512 or AVX2)
#: against float64 NumPy through a few operations: ~1e-7 relative on terms of size ~1-100 (seen <= 1e-6);
#: 1e-5 relative.
RTOL = 1e-5
#: Absolute floor for values near 0 (a class-level share can be): it is a difference of two float32 terms
#: of size ~0.1-1, summed over five temperatures (seen ~5e-8).
ATOL = 1e-6


def _logits(seed, scale=3.0, shape=(B, C)):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# --------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------
def _np_softmax(z, temperature=1.0):
    z = np.asarray(z, np.float64) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_standardize(z):
    z = np.asarray(z, np.float64)
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)


def _np_kd(t, s, temperature):
    """T^2 KL(softmax(t/T) || softmax(s/T)) per row."""
    p_t, p_s = _np_softmax(t, temperature), _np_softmax(s, temperature)
    return temperature**2 * np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)


def _np_masks(t):
    """The code's boolean masks: confidence <= its 50th percentile, class sums <= theirs."""
    p = _np_softmax(t)
    confidence, class_confidence = p.max(axis=1), p.sum(axis=0)
    return confidence <= np.percentile(confidence, 50), class_confidence <= np.percentile(class_confidence, 50)


def _np_mlkd_batch(t, s, base, ls=False):
    """The one-view batch loss as the authors' code computes it (without their KD_WEIGHT)."""
    mask, class_mask = _np_masks(t)
    t_kd, s_kd = (_np_standardize(t), _np_standardize(s)) if ls else (t, s)
    loss = 0.0
    for T in (base, 3.0, 5.0, 2.0, 6.0):
        kd = np.mean(_np_kd(t_kd, s_kd, T))  # their kd_loss (reduce=True): a batch mean
        p_t, p_s = _np_softmax(t, T), _np_softmax(s, T)
        cc = np.sum((p_t.T @ p_t - p_s.T @ p_s) ** 2) / t.shape[1]  # cc_loss
        bc = np.sum((p_t @ p_t.T - p_s @ p_s.T) ** 2) / t.shape[0]  # bc_loss
        loss += np.mean(kd * mask) + np.mean(cc * class_mask) + np.mean(bc * mask)
    # The two terms of their strong-view sum that read the weak view's logits (unmasked).
    loss += np.mean(_np_kd(t_kd, s_kd, 2.0)) + np.mean(_np_kd(t_kd, s_kd, 6.0))
    return loss


def _np_mlkd_per_example(t, s, base, ls=False):
    """(instance, batch, class) per example: rows of the B x B level, shares of the C x C level."""
    mask, class_mask = _np_masks(t)
    f, g = mask.mean(), class_mask.mean()
    t_kd, s_kd = (_np_standardize(t), _np_standardize(s)) if ls else (t, s)
    batch_size, classes = t.shape
    instance = _np_kd(t_kd, s_kd, 2.0) + _np_kd(t_kd, s_kd, 6.0)
    bc = np.zeros(batch_size)
    cc = np.zeros(batch_size)
    for T in (base, 3.0, 5.0, 2.0, 6.0):
        instance = instance + f * _np_kd(t_kd, s_kd, T)
        p_t, p_s = _np_softmax(t, T), _np_softmax(s, T)
        bc += f * np.sum((p_t @ p_t.T - p_s @ p_s.T) ** 2, axis=1)
        d = p_t.T @ p_t - p_s.T @ p_s
        cc += g * batch_size / classes * (np.einsum("ic,cd,id->i", p_t, d, p_t) - np.einsum("ic,cd,id->i", p_s, d, p_s))
    return instance, bc, cc


# --------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------
@pytest.mark.parametrize("base, ls", [(4.0, False), (2.0, True), (4.0, True)])
def test_mlkd_matches_numpy_per_example_and_in_the_mean(base, ls):
    t, s = _logits(1, scale=4.0), _logits(2)
    term = MLKD(temperature=base, logit_standardization=ls)
    got = term.per_example_loss({"logits": t}, {"logits": s})
    assert got.dtype == "float32" and tuple(got.shape) == (B,)
    instance, bc, cc = _np_mlkd_per_example(t, s, base, ls)
    np.testing.assert_allclose(got, instance + bc + cc, rtol=RTOL, atol=ATOL)
    for got_level, level in zip(term.per_example_terms(t, s), (instance, bc, cc)):
        np.testing.assert_allclose(got_level, level, rtol=RTOL, atol=ATOL)
    # The mean of the split is the authors' batch loss, written independently (their reductions and masks).
    batch = _np_mlkd_batch(t, s, base, ls)
    np.testing.assert_allclose(np.mean(instance + bc + cc), batch, rtol=1e-12)  # two float64 references
    np.testing.assert_allclose(term.compute_loss(t, s), batch, rtol=RTOL)  # a mean of values of size ~10


def test_mlkd_matches_numpy_on_cifar100_sized_logits_in_a_graph_with_unknown_batch():
    # 63 examples: an odd batch, whose median is its middle value (32 of 63 kept).
    t, s = _logits(3, shape=(63, 100)), _logits(4, shape=(63, 100))
    term = MLKD()
    spec = tf.TensorSpec((None, 100), tf.float32)
    fn = tf.function(lambda a, b: term.per_example_loss(a, b), input_signature=[spec, spec])
    got = fn(t, s)
    np.testing.assert_allclose(got, sum(_np_mlkd_per_example(t, s, 4.0)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.mean(got), _np_mlkd_batch(t, s, 4.0), rtol=RTOL)
    f, g = term.confidence_fractions(t)
    np.testing.assert_allclose([f, g], [32 / 63, 0.5])


def test_mask_fraction_is_numpys_percentile():
    rng = np.random.default_rng(5)
    for values in (rng.random(8), rng.random(7), rng.random(100), np.array([0.3, 0.3, 0.3, 0.1, 0.9, 0.3]),
                   np.array([2.0]), np.array([1.0, 1.0])):
        values = values.astype(np.float32)
        expected = np.mean(values <= np.percentile(values, 50))
        assert float(fraction_at_or_below_median(values)) == pytest.approx(expected)
    assert float(fraction_at_or_below_median(np.arange(8, dtype=np.float32))) == 0.5
    assert float(fraction_at_or_below_median(np.arange(7, dtype=np.float32))) == pytest.approx(4 / 7)


def test_mlkd_is_zero_for_identical_logits_with_and_without_ls():
    t = _logits(6)
    for ls in (False, True):
        term = MLKD(logit_standardization=ls)
        for level in term.per_example_terms(t, t):
            # Identical float32 inputs give identical predictions: the KL, the B x B and C x C differences are
            # exactly 0 up to the rounding of the log-softmax (~1e-7 of log(C), times T^2 <= 36).
            np.testing.assert_allclose(level, np.zeros(B), atol=1e-5)


def test_ls_changes_only_the_instance_level():
    t, s = _logits(7, scale=4.0), _logits(8)
    off, on = MLKD(), MLKD(logit_standardization=True)
    assert MLKD().logit_standardization is False and MLKD.Settings().ls is False
    (i_off, b_off, c_off), (i_on, b_on, c_on) = off.per_example_terms(t, s), on.per_example_terms(t, s)
    np.testing.assert_array_equal(b_off, b_on)  # the same code path on the raw logits: bit-identical
    np.testing.assert_array_equal(c_off, c_on)
    assert np.max(np.abs(np.asarray(i_on) - np.asarray(i_off))) > 1e-2
    # With LS, a student whose logits are a positive affine map of the teacher's has instance level ~0 (the
    # 1e-7 of the standardisation), while the batch and class levels, on raw logits, are not 0.
    i_aff, b_aff, c_aff = on.per_example_terms(t, 0.5 * t + 2.0)
    np.testing.assert_allclose(i_aff, np.zeros(B), atol=1e-5)  # seen ~2e-6: T^2 <= 36 times ~5e-8
    assert np.mean(b_aff) > 1e-3 and np.mean(c_aff) > 1e-3


def test_mlkd_permutations():
    t, s = _logits(9), _logits(10)
    term = MLKD()
    base = np.asarray(term.per_example_loss(t, s))
    rows = np.random.default_rng(1).permutation(B)
    np.testing.assert_allclose(term.per_example_loss(t[rows], s[rows]), base[rows], rtol=RTOL, atol=ATOL)
    cols = np.random.default_rng(2).permutation(C)
    np.testing.assert_allclose(term.per_example_loss(t[:, cols], s[:, cols]), base, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("ls", [False, True])
def test_the_gradient_reaches_the_student_only(ls):
    t, s = tf.Variable(_logits(11)), tf.Variable(_logits(12))
    with tf.GradientTape(persistent=True) as tape:
        loss = MLKD(logit_standardization=ls).compute_loss({"logits": t}, {"logits": s})
    assert tape.gradient(loss, t) is None
    grad = tape.gradient(loss, s)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(np.asarray(grad) != 0)


# --------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: MLKD(temperature=0), lambda: MLKD(temperature="4"),
                                  lambda: MLKD(temperature=-1.0), lambda: MLKD(logit_standardization=1),
                                  lambda: MLKD(logit_standardization="yes")])
def test_bad_arguments_are_one_line_usage_errors(make):
    with pytest.raises(UsageError) as error:
        make()
    assert "\n" not in str(error.value)


def test_registration_settings_and_config():
    assert "mlkd" in list_methods() and get("mlkd") is MLKD
    assert (MLKD.default_weight, MLKD.default_ce_weight, MLKD.uses_temperature, MLKD.needs_labels,
            MLKD.warmup_epochs) == (0.9, 0.1, True, False, 0)
    (item,) = declared_settings(MLKD)
    assert (item.flag, item.type, item.default) == ("mlkd_ls", bool, False) and item.help and item.source
    term = MLKD.from_settings(MLKD.Settings(), temperature=4.0)
    assert (term.temperature, term.logit_standardization, term.temperatures) == (4.0, False, (4.0, 3.0, 5.0, 2.0,
                                                                                              6.0))
    term = MLKD.from_settings(MLKD.Settings(ls=True), temperature=2.0)  # the authors' MLKD+LS recipe
    assert (term.logit_standardization, term.temperatures) == (True, (2.0, 3.0, 5.0, 2.0, 6.0))
    config = term.get_config()
    assert MLKD.from_config(config).get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is MLKD and again.get_config() == config
