"""Tests for `kdkeras.methods`: each distillation term against an independent NumPy reference.

The references are float64 NumPy code written here from each paper's formula
(Hinton et al. 2015; Zhao et al. 2022; Romero et al. 2015; Zagoruyko and
Komodakis 2017), plus the identities the papers state and Keras's own
`keras.distillation.Distiller`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.errors import UsageError
from kdkeras.losses import kd_loss_terms
from kdkeras.methods import AT, DKD, KD, TERMS, DistillationTerm, FitNets

B, C = 6, 10
#: float32 TensorFlow kernels (whose sums and exp/log differ with the CPU: oneDNN or Eigen, AVX-512 or
#: AVX2) against float64 NumPy through a few operations: ~1e-7 relative (seen <= 7e-7); 1e-5 relative.
RTOL = 1e-5


def kd_atol(temperature):
    """Absolute tolerance of a KL-based term: T^2 times a KL of float32 log-probabilities of size ~log(10),
    whose rounding (~1e-7 of that size) does not shrink with the KL itself: a few 1e-7 * T^2 (DKD's TCKD,
    a difference of two terms of size ~1, shows it when it is near 0)."""
    return 1e-6 * temperature**2


def _logits(seed, scale=3.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(B, C))).astype(np.float32)


def _labels(seed=7):
    return np.random.default_rng(seed).integers(0, C, B)


def _features(seed, h=8, w=8, c=5):
    return np.random.default_rng(seed).normal(size=(B, h, w, c)).astype(np.float32)


# --------------------------------------------------------------------------
# NumPy float64 references, written from the papers' formulas.
# --------------------------------------------------------------------------
def _np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_kl(p, q):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(np.where(p > 0, q, 1))), 0.0),
                  axis=-1)


def _np_kd(t, s, temperature):
    return temperature**2 * _np_kl(_np_softmax(t / temperature), _np_softmax(s / temperature))


def _np_dkd_terms(t, s, y, temperature):
    """TCKD and NCKD of Zhao et al. (2022), eqs. 2-4, times T^2."""
    p_t, p_s = _np_softmax(t / temperature), _np_softmax(s / temperature)
    rows = np.arange(len(y))
    b_t = np.stack([p_t[rows, y], 1.0 - p_t[rows, y]], axis=-1)
    b_s = np.stack([p_s[rows, y], 1.0 - p_s[rows, y]], axis=-1)
    keep = np.ones_like(p_t, bool)
    keep[rows, y] = False
    hat_t = np.where(keep, p_t, 0.0) / np.where(keep, p_t, 0.0).sum(-1, keepdims=True)
    hat_s = np.where(keep, p_s, 0.0) / np.where(keep, p_s, 0.0).sum(-1, keepdims=True)
    return temperature**2 * _np_kl(b_t, b_s), temperature**2 * _np_kl(hat_t, hat_s)


def _np_attention(a, p=2.0):
    q = np.mean(np.abs(np.asarray(a, np.float64)) ** p, axis=-1).reshape(len(a), -1)
    return q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)


def _np_at(teacher, student, taps, p=2.0):
    return sum(np.mean((_np_attention(student[k], p) - _np_attention(teacher[k], p)) ** 2, axis=-1) for k in taps)


def _np_fitnets(teacher_map, student_map, kernel, gamma, beta, mean, var, eps=1e-5):
    z = np.einsum("bhwc,cd->bhwd", np.asarray(student_map, np.float64), np.asarray(kernel, np.float64)[0, 0])
    z = (z - mean) / np.sqrt(var + eps) * gamma + beta
    return np.mean((z - teacher_map) ** 2, axis=(1, 2, 3))


# --------------------------------------------------------------------------
# KD
# --------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_numpy_and_kdkeras_losses(temperature):
    t, s, y = _logits(1), _logits(2), _labels()
    got = KD(temperature).per_example_loss({"logits": t}, {"logits": s})
    assert got.dtype == "float32" and tuple(got.shape) == (B,)
    np.testing.assert_allclose(got, _np_kd(t, s, temperature), rtol=RTOL, atol=kd_atol(temperature))  # vs float64
    _, kd = kd_loss_terms(y, s, t, temperature)
    np.testing.assert_allclose(got, kd, rtol=RTOL)  # the same code as kdkeras.losses: the same kernels, bit-identical
    np.testing.assert_allclose(KD(temperature).compute_loss(t, s), np.mean(_np_kd(t, s, temperature)),
                               rtol=RTOL)  # a mean of values of size ~1-10: relative


# --------------------------------------------------------------------------
# DKD
# --------------------------------------------------------------------------
@pytest.mark.parametrize("alpha, beta, temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.0, 3.0)])
def test_dkd_matches_numpy(alpha, beta, temperature):
    t, s, y = _logits(3), _logits(4), _labels()
    term = DKD(alpha=alpha, beta=beta, temperature=temperature)
    tckd, nckd = _np_dkd_terms(t, s, y, temperature)
    got_tckd, got_nckd = term.per_example_terms({"logits": t}, {"logits": s}, y)
    # TCKD is a difference of two terms of size ~1: float32 log-probabilities
    # (error ~1e-7 each) leave ~1e-7 * T^2 absolute error when it is near 0.
    atol = kd_atol(temperature)
    np.testing.assert_allclose(got_tckd, tckd, rtol=RTOL, atol=atol)
    np.testing.assert_allclose(got_nckd, nckd, rtol=RTOL, atol=atol)
    got = term.per_example_loss({"logits": t}, {"logits": s}, labels=y[:, None])  # (B, 1) labels too
    np.testing.assert_allclose(got, alpha * tckd + beta * nckd, rtol=RTOL, atol=alpha * atol)
    np.testing.assert_allclose(term.compute_loss(t, s, labels=y), np.mean(alpha * tckd + beta * nckd), rtol=RTOL)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_reformulates_kd(temperature):
    """Zhao et al., eq. 1: KD = TCKD + (1 - p_t^T) NCKD, at any temperature."""
    t, s, y = _logits(5), _logits(6), _labels()
    tckd, nckd = DKD(temperature=temperature).per_example_terms(t, s, y)
    p_target = _np_softmax(t / temperature)[np.arange(B), y]
    kd = KD(temperature).per_example_loss(t, s)
    # Two float32 computations of the same quantity (and a float64 p_t): RTOL, plus the KL terms' T^2-scaled
    # rounding.
    np.testing.assert_allclose(kd, np.asarray(tckd) + (1.0 - p_target) * np.asarray(nckd), rtol=RTOL,
                               atol=kd_atol(temperature))


def test_dkd_is_stable_for_confident_logits():
    t, s, y = _logits(8, scale=60.0), _logits(9, scale=60.0), _labels()
    with tf.GradientTape() as tape:
        s_var = tf.Variable(s)
        loss = DKD().compute_loss(t, s_var, labels=y)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(tape.gradient(loss, s_var)))


def test_dkd_needs_the_labels():
    t, s = _logits(1), _logits(2)
    with pytest.raises(ValueError, match="labels"):
        DKD().per_example_loss(t, s)
    with pytest.raises(ValueError, match="keras.distillation.Distiller"):
        DKD().compute_loss(t, s)


def test_dkd_warmup_factor():
    term = DKD()  # mdistiller: min(epoch / 20, 1), epochs from 1
    assert term.warmup_epochs == 20
    assert [term.warmup_factor(e) for e in (0, 9, 19, 20, 100)] == [0.05, 0.5, 1.0, 1.0, 1.0]
    assert DKD(warmup_epochs=0).warmup_factor(0) == 1.0
    assert KD().warmup_factor(0) == 1.0 and AT().warmup_factor(0) == 1.0


# --------------------------------------------------------------------------
# FitNets
# --------------------------------------------------------------------------
def _randomise_bn(term, seed=11):
    rng = np.random.default_rng(seed)
    bn = term.adapter.get_layer(f"{term.name}_adapter_bn")
    c = bn.gamma.shape[0]
    bn.gamma.assign(rng.uniform(0.5, 1.5, c))
    bn.beta.assign(rng.normal(size=c))
    bn.moving_mean.assign(rng.normal(size=c))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, c))
    return bn


def test_fitnets_matches_numpy_in_inference_and_training_mode():
    student, teacher = {"stage2": _features(1, c=4)}, {"stage2": _features(2, c=6)}
    term = FitNets()
    term.build_adapters({"stage2": (None, 8, 8, 4)}, {"stage2": (None, 8, 8, 6)})
    bn = _randomise_bn(term)
    kernel = term.adapter.get_layer(f"{term.name}_adapter_conv").kernel.numpy()
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    got = term.per_example_loss(teacher, student, training=False)
    expected = _np_fitnets(teacher["stage2"], student["stage2"], kernel, gamma, beta,
                           bn.moving_mean.numpy(), bn.moving_variance.numpy())
    # A float32 1x1 convolution and BatchNorm against float64: RTOL on mean squared errors of size ~1-3.
    np.testing.assert_allclose(got, expected, rtol=RTOL)

    z = np.einsum("bhwc,cd->bhwd", student["stage2"].astype(np.float64), kernel[0, 0])
    expected = _np_fitnets(teacher["stage2"], student["stage2"], kernel, gamma, beta,
                           z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2)))
    np.testing.assert_allclose(term.per_example_loss(teacher, student, training=True), expected,
                               rtol=RTOL)  # the same, with the batch's statistics


def test_fitnets_adapter_shape_trainable_and_tracked(tmp_path):
    term = FitNets(hint_tap="stage3")
    assert term.taps == ("stage3",) and not term.built
    term.build_adapters({"stage3": (None, 4, 4, 8)}, {"stage3": (None, 4, 4, 16)})
    (adapter,) = term.adapters
    assert tuple(adapter(_features(1, 4, 4, 8)).shape) == (B, 4, 4, 16)
    names = sorted(v.path.split("/")[-1] for v in term.trainable_weights)
    assert names == ["beta", "gamma", "kernel"]
    assert len(term.non_trainable_weights) == 2  # BN moving statistics

    class Holder(keras.Model):  # any model holding the term tracks and saves its adapter
        def __init__(self, terms):
            super().__init__()
            self.terms = terms
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    holder = Holder([term])
    holder(np.zeros((1, 3), np.float32))
    assert {id(v) for v in term.weights} <= {id(v) for v in holder.weights}
    path = str(tmp_path / "holder.weights.h5")
    holder.save_weights(path)
    other = FitNets(hint_tap="stage3")
    other.build_adapters({"stage3": (None, 4, 4, 8)}, {"stage3": (None, 4, 4, 16)})
    copy = Holder([other])
    copy(np.zeros((1, 3), np.float32))
    copy.load_weights(path)
    for a, b in zip(term.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # saved and loaded byte for byte


def test_fitnets_builds_lazily_and_skips_the_adapter_if_asked():
    student, teacher = {"stage2": _features(1, c=5)}, {"stage2": _features(2, c=5)}
    lazy = FitNets()
    lazy.per_example_loss(teacher, student)
    assert lazy.built and len(lazy.adapters) == 1
    plain = FitNets(adapter="if_needed")
    got = plain.per_example_loss(teacher, student)
    assert plain.adapters == ()
    np.testing.assert_allclose(got, np.mean((student["stage2"] - teacher["stage2"]) ** 2, axis=(1, 2, 3)),
                               rtol=RTOL)  # a float32 mean of 320 squares (size ~2) against NumPy's float32


def test_fitnets_rejects_different_spatial_sizes():
    with pytest.raises(UsageError, match="spatial"):
        FitNets().build_adapters({"stage2": (None, 8, 8, 4)}, {"stage2": (None, 4, 4, 4)})
    with pytest.raises(UsageError, match="spatial"):
        FitNets().per_example_loss({"stage2": _features(1, 4, 4)}, {"stage2": _features(2)})


# --------------------------------------------------------------------------
# AT
# --------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2.0, 1.0])
def test_at_matches_numpy(p):
    taps = ("stage1", "stage2", "stage3")
    sizes = {"stage1": (8, 3, 4), "stage2": (4, 5, 8), "stage3": (2, 7, 16)}  # (HxW, student C, teacher C)
    student = {k: _features(i, h, h, cs) for i, (k, (h, cs, _)) in enumerate(sizes.items())}
    teacher = {k: _features(10 + i, h, h, ct) for i, (k, (h, _, ct)) in enumerate(sizes.items())}
    teacher["logits"] = _logits(1)  # extra entries are ignored
    term = AT(taps=taps, p=p)
    # float32 against float64: RTOL on normalised maps (size <= 1) and on the loss, a sum of squares (no cancellation).
    np.testing.assert_allclose(term.per_example_loss(teacher, student), _np_at(teacher, student, taps, p), rtol=RTOL)
    np.testing.assert_allclose(term.attention_map(student["stage2"]), _np_attention(student["stage2"], p), rtol=RTOL)


def test_at_is_zero_for_identical_maps_and_scale_invariant():
    term = AT(taps=("stage1", "stage2"))
    f = {"stage1": _features(1), "stage2": _features(2, 4, 4, 8)}
    np.testing.assert_allclose(term.per_example_loss(f, f), np.zeros(B), atol=1e-12)  # the same maps: exactly 0
    g = {"stage1": _features(3, c=7), "stage2": _features(4, 4, 4, 3)}
    scaled = {k: 3.7 * v for k, v in g.items()}
    # The maps of 3.7 g and g, normalised, differ by float32 rounding (~1e-7 of maps of size <= 1): the losses
    # by ~1e-7 relative (RTOL), and their squared difference, the loss of one against the other, by ~1e-14.
    np.testing.assert_allclose(term.per_example_loss(f, scaled), term.per_example_loss(f, g), rtol=RTOL)
    np.testing.assert_allclose(term.per_example_loss(g, scaled), np.zeros(B), atol=1e-12)


def test_at_rejects_different_spatial_sizes():
    with pytest.raises(UsageError, match="spatial size"):
        AT(taps=("stage1",)).per_example_loss({"stage1": _features(1, 4, 4)}, {"stage1": _features(2)})


# --------------------------------------------------------------------------
# All terms: the interface
# --------------------------------------------------------------------------
@pytest.mark.parametrize("term", [
    KD(), KD(temperature=2.0),
    DKD(), DKD(alpha=0.5, beta=6.0, temperature=2.0, warmup_epochs=5),
    FitNets(), FitNets(hint_tap="stage3", adapter="if_needed", teacher_layer_name="t", student_layer_name="s"),
    AT(), AT(taps=["stage2"], p=4.0),
], ids=lambda term: repr(term.get_config()))
def test_config_round_trips(term):
    config = term.get_config()
    assert type(term).from_config(config).get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is type(term) and again.get_config() == config
    assert isinstance(term, keras.distillation.DistillationLoss) and isinstance(term, DistillationTerm)


def test_defaults_and_taps():
    assert {k: TERMS[k] for k in ("kd", "dkd", "fitnets", "at")} == {"kd": KD, "dkd": DKD, "fitnets": FitNets, "at": AT}
    assert (KD().temperature, KD.default_weight, KD.default_ce_weight) == (4.0, 0.9, pytest.approx(0.1))
    dkd = DKD()
    assert (dkd.alpha, dkd.beta, dkd.temperature, dkd.warmup_epochs, dkd.taps) == (1.0, 8.0, 4.0, 20, ())
    assert FitNets().taps == ("stage2",) and FitNets.default_weight == 100.0
    assert AT().taps == ("stage1", "stage2", "stage3") and AT().p == 2.0 and AT.default_weight == 1000.0
    assert KD().taps == () and DKD.needs_labels and not KD.needs_labels


@pytest.mark.parametrize("make", [
    lambda: KD(temperature=0), lambda: DKD(beta=-1.0), lambda: DKD(warmup_epochs=1.5),
    lambda: FitNets(hint_tap="logits"), lambda: FitNets(adapter="never"),
    lambda: FitNets(teacher_layer_name="t"), lambda: AT(taps=()), lambda: AT(taps="stage1"),
    lambda: AT(p=0), lambda: AT(taps=("stage1", "stage1")),
    lambda: AT(teacher_layer_name="t", student_layer_name="s"),  # three taps, one layer
])
def test_bad_arguments_are_usage_errors(make):
    with pytest.raises(UsageError):
        make()


def test_missing_outputs_are_named():
    with pytest.raises(ValueError, match="stage2"):
        AT().per_example_loss({"stage1": _features(1)}, {"stage1": _features(1)})
    with pytest.raises(ValueError, match="dict"):
        AT().per_example_loss(_features(1), _features(2))
    with pytest.raises(ValueError, match="logits"):
        KD().validate_outputs({"stage1": _features(1)}, {"logits": _logits(1)})


def test_no_gradient_reaches_the_teacher():
    t, s, y = _logits(1), _logits(2), _labels()
    tf_t, tf_s = tf.Variable(t), tf.Variable(s)
    ft, fs = tf.Variable(_features(1, c=6)), tf.Variable(_features(2, c=6))
    for term, teacher, student, kwargs in [
        (KD(), tf_t, tf_s, {}), (DKD(), tf_t, tf_s, {"labels": y}),
        (FitNets(), {"stage2": ft}, {"stage2": fs}, {}), (AT(taps=("stage2",)), {"stage2": ft}, {"stage2": fs}, {}),
    ]:
        with tf.GradientTape(persistent=True) as tape:
            loss = term.compute_loss(teacher, student, **kwargs)
        t_var = teacher if isinstance(teacher, tf.Variable) else teacher["stage2"]
        s_var = student if isinstance(student, tf.Variable) else student["stage2"]
        assert tape.gradient(loss, t_var) is None, term.method
        assert tape.gradient(loss, s_var) is not None, term.method


# --------------------------------------------------------------------------
# Keras's own keras.distillation.Distiller
# --------------------------------------------------------------------------
def _tiny(name, channels, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", name=f"{name}_stage1")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(C, name=f"{name}_logits")(x), name=name)


def _batch():
    rng = np.random.default_rng(0)
    return rng.random((B, 8, 8, 3), dtype=np.float32), rng.integers(0, C, B)


def _keras_distiller(teacher, student, term, weight=1.0, student_loss_weight=0.5):
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=[term],
        distillation_loss_weights=[weight], student_loss_weight=student_loss_weight,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return distiller


def test_kd_in_keras_distiller():
    teacher, student = _tiny("teacher", 6, 1), _tiny("student", 4, 2)
    x, y = _batch()
    distiller = _keras_distiller(teacher, student, KD(4.0), student_loss_weight=0.1)
    s = student(x, training=False)
    got = distiller.compute_loss(x=x, y=y, y_pred=s, training=False)
    ce, _ = kd_loss_terms(y, s, teacher(x, training=False))
    kd = _np_kd(np.asarray(teacher(x, training=False)), np.asarray(s), 4.0)
    # Keras's Distiller (float32) against float64 NumPy on the same logits: RTOL, plus the KD term's T^2-scaled
    # rounding (seen 6e-7 on a loss of 0.27).
    np.testing.assert_allclose(got, 0.1 * np.mean(ce) + 0.9 * np.mean(kd), rtol=RTOL, atol=kd_atol(4.0))


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras's own: its extractor's input structure; the unused head
def test_feature_terms_in_keras_distiller_by_layer_name():
    """One layer per term, chosen by name; FitNets' adapter is built, tracked and trained."""
    teacher, student = _tiny("teacher", 6, 1), _tiny("student", 4, 2)
    x, y = _batch()
    fitnets = FitNets(hint_tap="stage1", teacher_layer_name="teacher_stage1", student_layer_name="student_stage1")
    at = AT(taps=("stage1",), teacher_layer_name="teacher_stage1", student_layer_name="student_stage1")
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=[fitnets, at],
        distillation_loss_weights=[1.0, 1000.0], student_loss_weight=0.0,
    )
    assert fitnets.built and {id(v) for v in fitnets.trainable_weights} <= {
        id(v) for v in distiller.trainable_weights}
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")

    t_map = keras.Model(teacher.input, teacher.get_layer("teacher_stage1").output)(x)
    s_map = keras.Model(student.input, student.get_layer("student_stage1").output)(x)
    expected = (fitnets.compute_loss({"stage1": t_map}, {"stage1": s_map})
                + 1000.0 * at.compute_loss({"stage1": t_map}, {"stage1": s_map}))
    got = distiller.compute_loss(x=x, y=y, y_pred=student(x), training=False)
    # Keras's feature extractor and our views run the same layers (bit-identical here); RTOL admits another
    # float32 summation order in the terms.
    np.testing.assert_allclose(got, expected, rtol=RTOL)

    kernel = fitnets.adapter.get_layer(f"{fitnets.name}_adapter_conv").kernel.numpy()
    teacher_weights = [w.numpy() for w in teacher.weights]
    distiller.fit(x, y, batch_size=B, epochs=1, verbose=0)
    assert not np.allclose(kernel, fitnets.adapter.get_layer(f"{fitnets.name}_adapter_conv").kernel.numpy())
    for before, after in zip(teacher_weights, teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())  # never written: bit-identical


def test_dkd_does_not_fit_keras_distiller():
    """Keras's Distiller calls compute_loss(teacher, student) with no labels."""
    teacher, student = _tiny("teacher", 6, 1), _tiny("student", 4, 2)
    x, y = _batch()
    distiller = _keras_distiller(teacher, student, DKD())
    with pytest.raises(ValueError, match="labels"):
        distiller.compute_loss(x=x, y=y, y_pred=student(x), training=False)
