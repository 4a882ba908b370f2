"""Tests for `kdkeras.methods.ls`: logit standardisation (Sun et al., CVPR 2024), alone and in DKD.

The references are float64 NumPy code written here from the paper's
definition: z-scores of each example's logits (the authors' sample standard
deviation plus 1e-7), then Hinton KD at the base temperature, or DKD
(Zhao et al. 2022, eqs. 2-4).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.errors import UsageError
from kdkeras.methods import get, list_methods
from kdkeras.methods.dkd import DKD
from kdkeras.methods.ls import LS, standardize

B, C = 6, 10
#: float32 TensorFlow kernels (oneDNN or Eigen, AVX-512 or AVX2) against float64 NumPy through a few
#: operations (mean, std, exp, log): ~1e-7 relative (seen <= 5e-7); 1e-5 relative.
RTOL = 1e-5


def kd_atol(temperature):
    """A KL of float32 log-probabilities of size ~log(C) keeps their rounding (~1e-7 of that size) when it is
    near 0: a few 1e-7, times T^2."""
    return 1e-6 * temperature**2


def _logits(seed, scale=3.0, shape=(B, C)):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _labels(seed=7):
    return np.random.default_rng(seed).integers(0, C, B)


# --------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------
def _np_standardize(z):
    z = np.asarray(z, np.float64)
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)


def _np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_kl(p, q):
    """KL(p || q) per row, 0 * log 0 = 0 (NCKD's target entry)."""
    safe_p, safe_q = np.where(p > 0, p, 1.0), np.where(p > 0, q, 1.0)
    return np.sum(np.where(p > 0, p * (np.log(safe_p) - np.log(safe_q)), 0.0), axis=-1)


def _np_ls(t, s, temperature):
    p_t = _np_softmax(_np_standardize(t) / temperature)
    p_s = _np_softmax(_np_standardize(s) / temperature)
    return temperature**2 * _np_kl(p_t, p_s)


def _np_dkd_terms(t, s, y, temperature):
    """TCKD and NCKD of Zhao et al. (2022), eqs. 2-4, times T^2."""
    p_t, p_s = _np_softmax(np.asarray(t, np.float64) / temperature), _np_softmax(np.asarray(s, np.float64) /
                                                                                  temperature)
    rows = np.arange(len(y))
    b_t = np.stack([p_t[rows, y], 1.0 - p_t[rows, y]], axis=-1)
    b_s = np.stack([p_s[rows, y], 1.0 - p_s[rows, y]], axis=-1)
    keep = np.ones_like(p_t, bool)
    keep[rows, y] = False
    hat_t = np.where(keep, p_t, 0.0) / np.where(keep, p_t, 0.0).sum(-1, keepdims=True)
    hat_s = np.where(keep, p_s, 0.0) / np.where(keep, p_s, 0.0).sum(-1, keepdims=True)
    return temperature**2 * _np_kl(b_t, b_s), temperature**2 * _np_kl(hat_t, hat_s)


# --------------------------------------------------------------------------
# standardize
# --------------------------------------------------------------------------
def test_standardize_matches_numpy_sample_std():
    z = _logits(1, scale=5.0) + 2.0
    got = standardize(z)
    assert got.dtype == "float32" and tuple(got.shape) == (B, C)
    # z-scores of size ~1: float32 against float64, RTOL plus an absolute floor for values near 0.
    np.testing.assert_allclose(got, _np_standardize(z), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(np.mean(got, -1), np.zeros(B), atol=1e-6)
    np.testing.assert_allclose(np.std(np.asarray(got, np.float64), -1, ddof=1), np.ones(B), rtol=1e-6)
    # The sample std, not the population one: they differ by sqrt(C / (C - 1)) ~ 5% for C = 10.
    assert np.std(np.asarray(got, np.float64), -1).mean() < 0.96


def test_standardize_of_equal_logits_is_zero_with_a_finite_gradient():
    z = tf.Variable(np.full((2, C), 3.0, np.float32))
    with tf.GradientTape() as tape:
        out = standardize(z)
        loss = tf.reduce_sum(out * np.arange(C, dtype=np.float32))
    np.testing.assert_array_equal(out, np.zeros((2, C)))
    assert np.all(np.isfinite(tape.gradient(loss, z)))


# --------------------------------------------------------------------------
# LS
# --------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [2.0, 1.0, 4.0])
def test_ls_matches_numpy(temperature):
    t, s = _logits(2, scale=4.0), _logits(3, scale=1.5)
    term = LS(temperature=temperature)
    got = term.per_example_loss({"logits": t}, {"logits": s})
    assert got.dtype == "float32" and tuple(got.shape) == (B,)
    expected = _np_ls(t, s, temperature)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=kd_atol(temperature))
    np.testing.assert_allclose(term.compute_loss(t, s), np.mean(expected), rtol=RTOL)  # values of size ~0.1-1


def test_ls_is_invariant_to_each_examples_shift_and_positive_scale():
    """The paper's point: only the logits' relations matter, not their range or offset."""
    t, s = _logits(4), _logits(5)
    term = LS()
    base = term.per_example_loss(t, s)
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.2, 5.0, (B, 1)).astype(np.float32)
    shift = rng.normal(size=(B, 1)).astype(np.float32) * 10.0
    # Equal up to float32 rounding of the z-scores (~1e-7 relative) and the 1e-7 added to std values of
    # ~0.6-15 (<= 2e-7 relative): RTOL, plus the KL's rounding floor.
    np.testing.assert_allclose(term.per_example_loss(scale * t + shift, s), base, rtol=RTOL, atol=kd_atol(2.0))
    np.testing.assert_allclose(term.per_example_loss(t, scale * s - shift), base, rtol=RTOL, atol=kd_atol(2.0))
    # A student whose logits are a positive affine map of the teacher's has loss 0 (plain KD would not).
    np.testing.assert_allclose(term.per_example_loss(t, 0.3 * t + 2.0), np.zeros(B), atol=kd_atol(2.0))


def test_the_gradient_reaches_the_student_only():
    t, s = tf.Variable(_logits(6)), tf.Variable(_logits(7))
    with tf.GradientTape(persistent=True) as tape:
        loss = LS().compute_loss({"logits": t}, {"logits": s})
    assert tape.gradient(loss, t) is None
    grad = tape.gradient(loss, s)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(np.asarray(grad) != 0)
    # Standardisation removes each row's offset and scale: the gradient has no component along them.
    np.testing.assert_allclose(np.sum(grad, -1), np.zeros(B), atol=1e-6)
    np.testing.assert_allclose(np.sum(grad * s, -1), np.zeros(B), atol=1e-5)


def test_ls_settings_registration_and_config():
    assert "ls" in list_methods() and get("ls") is LS
    assert (LS.default_weight, LS.default_ce_weight, LS.uses_temperature) == (9.0, 0.1, False)
    assert LS.Settings().temperature == 2.0
    term = LS.from_settings(LS.Settings(), temperature=4.0)  # the run's temperature is not LS's
    assert term.temperature == 2.0
    term = LS.from_settings(LS.Settings(temperature=3.0), temperature=4.0)
    config = term.get_config()
    assert config["temperature"] == 3.0 and LS.from_config(config).get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is LS and again.get_config() == config


@pytest.mark.parametrize("make", [lambda: LS(temperature=0), lambda: LS(temperature=-2.0),
                                  lambda: LS(temperature="2"), lambda: DKD(logit_standardization=1),
                                  lambda: DKD(logit_standardization="yes")])
def test_bad_arguments_are_one_line_usage_errors(make):
    with pytest.raises(UsageError) as error:
        make()
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------
# DKD with logit standardisation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("alpha, beta, temperature", [(1.0, 8.0, 2.0), (0.5, 2.0, 4.0)])
def test_dkd_with_ls_matches_numpy(alpha, beta, temperature):
    t, s, y = _logits(8, scale=4.0), _logits(9), _labels()
    term = DKD(alpha=alpha, beta=beta, temperature=temperature, logit_standardization=True)
    tckd, nckd = _np_dkd_terms(_np_standardize(t), _np_standardize(s), y, temperature)
    got_tckd, got_nckd = term.per_example_terms({"logits": t}, {"logits": s}, y)
    # TCKD is a difference of two terms of size ~1: ~1e-7 * T^2 absolute error near 0.
    np.testing.assert_allclose(got_tckd, tckd, rtol=RTOL, atol=kd_atol(temperature))
    np.testing.assert_allclose(got_nckd, nckd, rtol=RTOL, atol=kd_atol(temperature))
    got = term.per_example_loss(t, s, labels=y)
    np.testing.assert_allclose(got, alpha * tckd + beta * nckd, rtol=RTOL, atol=(alpha + beta) * kd_atol(temperature))
    # Invariant to each example's positive scale: the raw logits' range no longer matters.
    np.testing.assert_allclose(term.per_example_loss(t, 7.0 * s + 1.0, labels=y), got, rtol=RTOL,
                               atol=(alpha + beta) * kd_atol(temperature))


def test_dkd_without_ls_is_unchanged():
    t, s, y = _logits(10), _logits(11), _labels()
    off, default = DKD(logit_standardization=False), DKD()
    assert default.logit_standardization is False and DKD.Settings().ls is False
    for a, b in zip(off.per_example_terms(t, s, y), default.per_example_terms(t, s, y)):
        np.testing.assert_array_equal(a, b)  # the same code path: bit-identical
    tckd, nckd = _np_dkd_terms(t, s, y, 4.0)  # on the raw logits, as before
    np.testing.assert_allclose(off.per_example_loss(t, s, labels=y), tckd + 8.0 * nckd, rtol=RTOL,
                               atol=9 * kd_atol(4.0))
    on = DKD(logit_standardization=True).per_example_loss(t, s, labels=y)
    assert np.max(np.abs(np.asarray(on) - (tckd + 8.0 * nckd))) > 1e-2  # standardising changes it


def test_dkd_ls_setting_flag_and_config():
    from kdkeras.methods import declared_settings

    (item,) = [i for i in declared_settings(DKD) if i.field == "ls"]
    assert (item.flag, item.type, item.default) == ("dkd_ls", bool, False) and item.help and item.source
    term = DKD.from_settings(DKD.Settings(beta=6.0, ls=True), temperature=2.0)
    assert (term.alpha, term.beta, term.temperature, term.warmup_epochs, term.logit_standardization) == (
        1.0, 6.0, 2.0, 20, True)
    assert DKD.from_settings(DKD.Settings(), temperature=4.0).logit_standardization is False
    config = term.get_config()
    assert DKD.from_config(config).get_config() == config
    old = {k: v for k, v in config.items() if k != "logit_standardization"}  # a config saved before the field
    assert DKD.from_config(old).logit_standardization is False
    # DKD's other declarations are as before.
    assert (DKD.method, DKD.uses_temperature, DKD.needs_labels, DKD.default_weight, DKD.default_ce_weight) == (
        "dkd", True, True, 1.0, 1.0)


def test_dkd_with_ls_gradient_reaches_the_student_only():
    t, s, y = tf.Variable(_logits(12)), tf.Variable(_logits(13)), _labels()
    with tf.GradientTape(persistent=True) as tape:
        loss = DKD(temperature=2.0, logit_standardization=True).compute_loss(t, s, labels=y)
    assert tape.gradient(loss, t) is None
    grad = tape.gradient(loss, s)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(np.asarray(grad) != 0)
