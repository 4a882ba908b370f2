"""Tests for `kdkeras.methods.pkt`: PKT against a float64 NumPy reference written from Passalis and Tefas (2018)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras import build_model
from kdkeras.distiller import Distiller
from kdkeras.errors import UsageError
from kdkeras.methods import get
from kdkeras.methods.pkt import PKT

B = 6
EPS = 1e-7
#: float32 TensorFlow kernels against float64 NumPy: cosine kernels and probabilities of size ~1/B, seen
#: <= 2e-7 relative; 1e-5 relative.
RTOL = 1e-5
#: A row of the loss is (1 / B) * sum_j p_j * (log(p_j + eps) - log(q_j + eps)), a KL divergence of two close
#: distributions: its terms of both signs cancel, but each logarithm (size ~2) is rounded at ~1e-7 and each
#: probability at ~2e-7 relative, so the row keeps ~(a few 1e-7) / B absolute error whatever its size (seen
#: 2.3e-7 / B over 100 random draws, on rows >= 4.5e-4); 1e-6 / B absolute, plus RTOL.
ATOL = 1e-6 / B


def _embeddings(seed, d=10, n=B):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _np_probabilities(x):
    """The cosine kernel K = (cos + 1) / 2 of the paper, rows normalised to conditional probabilities."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    x = x / (np.linalg.norm(x, axis=-1, keepdims=True) + EPS)
    kernel = (x @ x.T + 1.0) / 2.0
    return kernel / kernel.sum(axis=-1, keepdims=True)


def _np_pkt(teacher, student):
    """Per example i: its row of p log((p + eps) / (q + eps)), the batch loss being the mean over B^2 entries."""
    p, q = _np_probabilities(teacher), _np_probabilities(student)
    return np.sum(p * np.log((p + EPS) / (q + EPS)), axis=-1) / len(p)


def test_pkt_matches_numpy():
    t, s = _embeddings(1, d=12), np.maximum(_embeddings(2, d=7), 0.0)  # sizes may differ; ReLU-like student
    term = PKT()
    got = term.per_example_loss({"embedding": t, "logits": np.zeros((B, 3), np.float32)}, {"embedding": s})
    assert got.dtype == "float32" and tuple(got.shape) == (B,)
    expected = _np_pkt(t, s)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(term.probabilities(s), _np_probabilities(s), rtol=RTOL)
    p, q = _np_probabilities(t), _np_probabilities(s)
    batch = np.mean(p * np.log((p + EPS) / (q + EPS)))  # the authors' batch loss
    # Bare tensors are the embeddings.
    np.testing.assert_allclose(float(term.compute_loss(t, s)), batch, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.mean(expected), batch, rtol=1e-12)  # the reference's rows add up to it


def test_pkt_identities():
    term = PKT()
    t, s = _embeddings(3), _embeddings(4)
    # Identical embeddings: the same float32 probabilities on both sides, exactly 0.
    np.testing.assert_array_equal(term.per_example_loss(t, t), np.zeros(B))
    # The cosine kernel ignores each embedding's length and any rotation of the space: the loss changes by
    # float32 rounding (and eps = 1e-7 against norms >= 0.4) only: ATOL.
    base = term.per_example_loss(t, s)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(10, 10)))
    lengths = np.linspace(0.2, 5.0, B).astype(np.float32)[:, None]
    for moved in (lengths * s, (s @ rotation).astype(np.float32)):
        np.testing.assert_allclose(term.per_example_loss(t, moved), base, rtol=RTOL, atol=ATOL)
    # A relation of the batch: permuting the examples of both sides permutes the per-example losses.
    order = np.random.default_rng(6).permutation(B)
    np.testing.assert_allclose(term.per_example_loss(t[order], s[order]), np.asarray(base)[order], rtol=RTOL,
                               atol=ATOL)
    # Each row is a KL divergence: >= 0 (eps shifts it by ~1e-7 at most).
    assert np.all(np.asarray(base) > 0)


def test_pkt_gradient_reaches_the_student_only_and_stays_finite():
    t = tf.Variable(_embeddings(8))
    s_np = _embeddings(9)
    s_np[2] = 0.0  # a zero embedding (all of a ReLU's inputs negative): its norm's square root at 0
    s = tf.Variable(s_np)
    with tf.GradientTape(persistent=True) as tape:
        loss = PKT().compute_loss(t, s)
    assert tape.gradient(loss, t) is None
    grad = tape.gradient(loss, s)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(grad != 0)
    np.testing.assert_allclose(PKT().per_example_loss(t.numpy(), s_np), _np_pkt(t.numpy(), s_np), rtol=RTOL,
                               atol=ATOL)


@pytest.mark.parametrize("make", [
    lambda: PKT(eps=0.0), lambda: PKT(eps="1e-7"), lambda: PKT(student_layer_name="s"),
])
def test_pkt_bad_arguments_are_usage_errors(make):
    with pytest.raises(UsageError) as error:
        make()
    assert "\n" not in str(error.value)


def test_pkt_settings_and_config():
    assert get("pkt") is PKT
    assert (PKT.default_weight, PKT.default_ce_weight, PKT().taps, PKT().eps) == (30000.0, 1.0, ("embedding",), EPS)
    assert PKT.from_settings(PKT.Settings()).eps == EPS  # no settings of its own: only --pkt_weight
    config = PKT(eps=1e-6, name="p").get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(PKT.from_config(config)))
    assert type(again) is PKT and again.get_config() == config


def test_pkt_trains_in_the_distiller():
    keras.utils.set_random_seed(0)
    student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
    teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
    distiller = Distiller(student, teacher, distillation_losses=[PKT()])
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 16)
    before = [w.copy() for w in student.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["pkt"][0]) and history["pkt"][0] > 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
