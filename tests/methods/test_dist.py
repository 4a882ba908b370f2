"""Tests for `kdkeras.methods.dist`: DIST (Huang et al., NeurIPS 2022) against a float64 NumPy reference.

The reference is written here from the paper's definition (Pearson
correlations of the class probabilities, per example and per class across the
batch), with the authors' 1e-8 in the denominator and their T^2.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.errors import UsageError
from kdkeras.methods import get, list_methods
from kdkeras.methods.dist import DIST

B, C = 8, 10
#: float32 softmax, means and sums of products (TensorFlow's CPU kernels: oneDNN or Eigen, AVX-512 or AVX2)
#: against float64 NumPy through a few operations: ~1e-7 relative on correlations of size ~0.1-1 and on
#: losses of size ~1 (seen <= 1e-6 after the T^2 = 16); 1e-5 relative.
RTOL = 1e-5
#: Absolute floor for values near 0 (a per-example intra share can be): a few float32 roundings of terms
#: of size ~1, times T^2.
ATOL = 1e-6 * 16


def _logits(seed, scale=3.0, shape=(B, C)):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _np_softmax(z, temperature):
    z = np.asarray(z, np.float64) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_pearson(u, v, eps=1e-8):
    """rho of each row pair: the authors' cosine of centred vectors with 1e-8 in the denominator."""
    u, v = u - u.mean(-1, keepdims=True), v - v.mean(-1, keepdims=True)
    return (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + eps)


def _np_dist_batch(t, s, beta, gamma, temperature):
    """The paper's batch loss: T^2 (beta (1 - mean_i rho(rows)) + gamma (1 - mean_c rho(columns)))."""
    y_t, y_s = _np_softmax(t, temperature), _np_softmax(s, temperature)
    inter = 1.0 - np.mean(_np_pearson(y_s, y_t))
    intra = 1.0 - np.mean(_np_pearson(y_s.T, y_t.T))
    return temperature**2 * (beta * inter + gamma * intra), inter, intra


def _np_dist_per_example(t, s, beta, gamma, temperature):
    """Each example's inter term and its share of every class's correlation (B / C * a_ic b_ic / den_c)."""
    y_t, y_s = _np_softmax(t, temperature), _np_softmax(s, temperature)
    inter = 1.0 - _np_pearson(y_s, y_t)
    a, b = y_s - y_s.mean(0), y_t - y_t.mean(0)
    den = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0) + 1e-8
    intra = 1.0 - len(t) / t.shape[-1] * np.sum(a * b / den, axis=-1)
    return temperature**2 * (beta * inter + gamma * intra), inter, intra


@pytest.mark.parametrize("beta, gamma, temperature", [(1.0, 1.0, 4.0), (2.0, 0.5, 1.0), (0.0, 3.0, 2.0)])
def test_dist_matches_numpy_per_example_and_in_the_mean(beta, gamma, temperature):
    t, s = _logits(1), _logits(2)
    term = DIST(beta=beta, gamma=gamma, temperature=temperature)
    got = term.per_example_loss({"logits": t}, {"logits": s})
    assert got.dtype == "float32" and tuple(got.shape) == (B,)
    expected, inter, intra = _np_dist_per_example(t, s, beta, gamma, temperature)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    got_inter, got_intra = term.per_example_terms({"logits": t}, {"logits": s})
    np.testing.assert_allclose(got_inter, inter, rtol=RTOL, atol=1e-6)  # without T^2
    np.testing.assert_allclose(got_intra, intra, rtol=RTOL, atol=1e-6)
    # The mean is the paper's batch loss, written independently (columns' correlations directly).
    batch, batch_inter, batch_intra = _np_dist_batch(t, s, beta, gamma, temperature)
    np.testing.assert_allclose(np.mean(expected), batch, rtol=1e-12)  # the two float64 references agree
    np.testing.assert_allclose(term.compute_loss(t, s), batch, rtol=RTOL)  # a mean of values of size ~1
    np.testing.assert_allclose(np.mean(got_intra), batch_intra, rtol=RTOL)
    np.testing.assert_allclose(np.mean(got_inter), batch_inter, rtol=RTOL)


def test_dist_matches_numpy_on_cifar100_sized_logits_in_a_graph_with_unknown_batch():
    t, s = _logits(3, shape=(64, 100)), _logits(4, shape=(64, 100))
    term = DIST()
    spec = tf.TensorSpec((None, 100), tf.float32)
    fn = tf.function(lambda a, b: term.per_example_loss(a, b), input_signature=[spec, spec])
    expected, _, _ = _np_dist_per_example(t, s, 1.0, 1.0, 4.0)
    np.testing.assert_allclose(fn(t, s), expected, rtol=RTOL, atol=ATOL)  # batch size read at run time
    np.testing.assert_allclose(np.mean(fn(t, s)), _np_dist_batch(t, s, 1.0, 1.0, 4.0)[0], rtol=RTOL)


def test_dist_is_zero_when_the_relations_match():
    """Identical predictions, and the teacher's predictions blended with the uniform (where KL is not 0)."""
    t = _logits(5)
    term = DIST(temperature=4.0)
    y_t = _np_softmax(t, 4.0)
    blended = 0.6 * y_t + 0.4 / C
    s = (4.0 * np.log(blended)).astype(np.float32)  # softmax(s / 4) = blended
    assert np.all(np.sum(y_t * np.log(y_t / blended), axis=-1) > 1e-2)  # KD would not be 0
    for student in (t, s):
        inter, intra = term.per_example_terms(t, student)
        # 1 - rho with rho = n / (n + 1e-8), n ~ 1e-2 (squared norms of centred probabilities): ~1e-6, plus
        # float32 rounding of terms of size ~1: atol 5e-6 (times T^2 = 16 for the loss).
        np.testing.assert_allclose(inter, np.zeros(B), atol=5e-6)  # every example's own relation
        # Each example's share of the class correlations is not 0; their mean, the batch's intra term, is.
        assert np.max(np.abs(intra)) > 0.1
        np.testing.assert_allclose(np.mean(intra), 0.0, atol=5e-6)
        np.testing.assert_allclose(term.compute_loss(t, student), 0.0, atol=16 * 1e-5)


def test_dist_shift_invariance_and_permutations():
    t, s = _logits(6), _logits(7)
    term = DIST()
    base = np.asarray(term.per_example_loss(t, s))
    shift = np.random.default_rng(0).normal(size=(B, 1)).astype(np.float32) * 5.0
    # softmax(s + c) equals softmax(s) up to float32 rounding (~1e-7 relative): RTOL, ATOL.
    np.testing.assert_allclose(term.per_example_loss(t + shift, s - shift), base, rtol=RTOL, atol=ATOL)
    rows = np.random.default_rng(1).permutation(B)
    np.testing.assert_allclose(term.per_example_loss(t[rows], s[rows]), base[rows], rtol=RTOL, atol=ATOL)
    cols = np.random.default_rng(2).permutation(C)
    np.testing.assert_allclose(term.per_example_loss(t[:, cols], s[:, cols]), base, rtol=RTOL, atol=ATOL)


def test_dist_intra_of_a_single_example_is_one_without_gradient():
    t, s = _logits(8, shape=(1, C)), tf.Variable(_logits(9, shape=(1, C)))
    term = DIST(beta=0.0)
    with tf.GradientTape() as tape:
        loss = term.compute_loss(t, s)
    np.testing.assert_allclose(loss, 16.0, rtol=1e-6)  # T^2 * (1 - 0): centred columns are all 0
    np.testing.assert_array_equal(tape.gradient(loss, s), np.zeros((1, C)))


def test_the_gradient_reaches_the_student_only():
    t, s = tf.Variable(_logits(10)), tf.Variable(_logits(11))
    with tf.GradientTape(persistent=True) as tape:
        loss = DIST().compute_loss({"logits": t}, {"logits": s})
    assert tape.gradient(loss, t) is None
    grad = tape.gradient(loss, s)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(np.asarray(grad) != 0)


@pytest.mark.parametrize("make", [lambda: DIST(beta=-1.0), lambda: DIST(gamma="1"), lambda: DIST(temperature=0),
                                  lambda: DIST(beta=True)])
def test_bad_arguments_are_one_line_usage_errors(make):
    with pytest.raises(UsageError) as error:
        make()
    assert "\n" not in str(error.value)


def test_registration_settings_and_config():
    assert "dist" in list_methods() and get("dist") is DIST
    assert (DIST.default_weight, DIST.default_ce_weight, DIST.uses_temperature) == (2.0, 1.0, True)
    term = DIST.from_settings(DIST.Settings(), temperature=4.0)
    assert (term.beta, term.gamma, term.temperature) == (1.0, 1.0, 4.0)
    term = DIST.from_settings(DIST.Settings(beta=2.0, gamma=0.5), temperature=1.0)
    config = term.get_config()
    assert DIST.from_config(config).get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is DIST and again.get_config() == config
