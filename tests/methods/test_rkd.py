"""Tests for `kdkeras.methods.rkd`: RKD against a float64 NumPy reference written from Park et al. (2019)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras import build_model
from kdkeras.distiller import Distiller
from kdkeras.errors import UsageError
from kdkeras.methods import check_run_settings, get
from kdkeras.methods.rkd import RKD

B = 6
#: float32 TensorFlow kernels against float64 NumPy: distances and unit vectors of random embeddings
#: (~1e-7 relative), Huber losses of differences of potentials of size ~1 (differences ~0.1-1 on random
#: embeddings, so no strong cancellation), summed over <= B^2 terms: ~1e-7 relative, seen <= 1.2e-6 over 40
#: random draws (squared distances the most); 1e-5 relative.
RTOL = 1e-5


def _embeddings(seed, d=10, n=B):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _huber(x):
    a = np.abs(x)
    return np.where(a < 1.0, 0.5 * x**2, a - 0.5)


def _np_potentials(e, squared=False):
    """The paper's potentials by explicit loops: psi_D over distinct pairs, psi_A at each vertex i."""
    e = np.asarray(e, np.float64).reshape(len(e), -1)
    n = len(e)
    dist = np.zeros((n, n))
    for i, j in itertools.permutations(range(n), 2):
        dist[i, j] = np.sum((e[i] - e[j]) ** 2) if squared else np.linalg.norm(e[i] - e[j])
    mu = dist.sum() / (n * (n - 1))  # the mean over distinct pairs
    angle = np.zeros((n, n, n))
    for i, j, k in itertools.product(range(n), repeat=3):
        if j != i and k != i:
            u = (e[j] - e[i]) / np.linalg.norm(e[j] - e[i])
            v = (e[k] - e[i]) / np.linalg.norm(e[k] - e[i])
            angle[i, j, k] = u @ v
    return dist / mu, angle


def _np_rkd_terms(teacher, student, squared=False):
    """Per example i: its pairs (i, j) and the triplets with vertex i, as means over B^2 and B^3 in the batch."""
    t_d, t_a = _np_potentials(teacher, squared)
    s_d, s_a = _np_potentials(student, squared)
    n = len(t_d)
    return _huber(s_d - t_d).sum(axis=1) / n, _huber(s_a - t_a).sum(axis=(1, 2)) / n**2


@pytest.mark.parametrize("squared", [False, True])
def test_rkd_matches_numpy(squared):
    t, s = _embeddings(1, d=12), _embeddings(2, d=7)  # the two models' embedding sizes may differ
    term = RKD(distance_weight=25.0, angle_weight=50.0, squared=squared)
    distance, angle = _np_rkd_terms(t, s, squared)
    got_d, got_a = term.per_example_terms({"embedding": t}, {"embedding": s})
    np.testing.assert_allclose(got_d, distance, rtol=RTOL)
    np.testing.assert_allclose(got_a, angle, rtol=RTOL)
    got = term.per_example_loss({"embedding": t, "logits": np.zeros((B, 3), np.float32)}, {"embedding": s})
    assert got.dtype == "float32" and tuple(got.shape) == (B,)
    np.testing.assert_allclose(got, 25.0 * distance + 50.0 * angle, rtol=RTOL)
    # The batch loss: 25 * mean over the B^2 pairs + 50 * mean over the B^3 triplets (the paper's sums over
    # distinct pairs and triplets divided by B^2 and B^3; degenerate ones are 0).
    t_d, t_a = _np_potentials(t, squared)
    s_d, s_a = _np_potentials(s, squared)
    batch = 25.0 * np.mean(_huber(s_d - t_d)) + 50.0 * np.mean(_huber(s_a - t_a))
    np.testing.assert_allclose(float(term.compute_loss(t, s)), batch, rtol=RTOL)  # bare tensors: the embedding


def test_rkd_identities():
    term = RKD()
    t, s = _embeddings(3), _embeddings(4)
    # Identical embeddings: the same float32 potentials on both sides, exactly 0.
    np.testing.assert_array_equal(term.per_example_loss(t, t), np.zeros(B))
    # Both potentials are invariant to scaling, translating and rotating the student's embedding space: the
    # loss changes by float32 rounding only (RTOL).
    base = term.per_example_loss(t, s)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(10, 10)))
    for moved in (3.7 * s, s + 2.5, (s @ rotation).astype(np.float32)):
        np.testing.assert_allclose(term.per_example_loss(t, moved), base, rtol=RTOL)
    # A relation of the batch: permuting the examples of both sides permutes the per-example losses.
    order = np.random.default_rng(6).permutation(B)
    np.testing.assert_allclose(term.per_example_loss(t[order], s[order]), np.asarray(base)[order], rtol=RTOL)
    # Feature maps are flattened to vectors.
    maps = np.random.default_rng(7).normal(size=(B, 2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(term.per_example_loss(t, maps), term.per_example_loss(t, maps.reshape(B, -1)),
                               rtol=RTOL)


def test_rkd_gradient_reaches_the_student_only_and_stays_finite():
    t = tf.Variable(_embeddings(8))
    s_np = _embeddings(9)
    s_np[1] = s_np[0]  # two identical student embeddings: a zero distance and a zero difference to normalise
    s = tf.Variable(s_np)
    with tf.GradientTape(persistent=True) as tape:
        loss = RKD().compute_loss(t, s)
    assert tape.gradient(loss, t) is None
    grad = tape.gradient(loss, s)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(grad != 0)
    one = RKD().per_example_loss(_embeddings(1, n=1), _embeddings(2, n=1))  # one example: no pairs
    np.testing.assert_array_equal(one, [0.0])


@pytest.mark.parametrize("make", [
    lambda: RKD(distance_weight=-1.0), lambda: RKD(angle_weight="50"), lambda: RKD(squared=1),
    lambda: RKD(eps=0.0), lambda: RKD(teacher_layer_name="t"),
])
def test_rkd_bad_arguments_are_usage_errors(make):
    with pytest.raises(UsageError) as error:
        make()
    assert "\n" not in str(error.value)


def test_rkd_settings_flags_and_config():
    assert get("rkd") is RKD
    assert (RKD.default_weight, RKD.default_ce_weight, RKD().taps) == (1.0, 1.0, ("embedding",))
    term = RKD.from_settings(RKD.Settings())
    assert (term.distance_weight, term.angle_weight, term.squared, term.eps) == (25.0, 50.0, False, 1e-12)
    with pytest.raises(UsageError, match="rkd_angle_weight"):
        check_run_settings("rkd", {"rkd_angle_weight": -2.0})
    with pytest.raises(UsageError, match="rkd_squared"):
        check_run_settings("rkd", {"rkd_squared": "yes"})
    config = RKD(10.0, 20.0, True, name="r").get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(RKD.from_config(config)))
    assert type(again) is RKD and again.get_config() == config


def test_rkd_trains_in_the_distiller():
    keras.utils.set_random_seed(0)
    student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
    teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
    distiller = Distiller(student, teacher, distillation_losses=[RKD()])
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 16)
    before = [w.copy() for w in student.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["rkd"][0]) and history["rkd"][0] > 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
