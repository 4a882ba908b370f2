"""Tests for `kdkeras.losses`: the KD loss against independent references.

References: a float64 NumPy implementation written here from the formula, the
golden values in `tests/fixtures/kd_losses.json` (made by that NumPy code), and
Keras's own `keras.distillation.Distiller` + `LogitsDistillation`.

Regenerate the fixture only on purpose: `python tests/test_losses.py --regenerate`.
"""

import json
import pathlib
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.losses import kd_loss, kd_loss_terms
from tests.helpers import relative_error

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "kd_losses.json"
NUM_CLASSES = 10


def kd_atol(temperature):
    """The absolute tolerance of a KD term (or of a loss holding one) computed by other kernels.

    The KD term is T^2 times a KL computed from float32 log-probabilities of size ~log(10): their
    rounding (~1e-7 of that size, in whichever order TensorFlow's kernels for this CPU sum) leaves an
    absolute error of a few 1e-7 * T^2, however small the KL itself is (seen against float64 NumPy:
    2.2e-5 at T = 10, 4.9e-5 at T = 20, i.e. 0.2 and 0.12 of this bound). A missing or doubled T^2 or a
    swapped KL is O(1) off and still fails.
    """
    return 1e-6 * temperature**2


# --------------------------------------------------------------------------
# NumPy float64 reference, written from the formula (no Keras involved).
# --------------------------------------------------------------------------
def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_kl(log_p, log_q):
    """KL(p || q) = sum_k p_k (log p_k - log q_k), per row."""
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


def _np_kd_terms(labels, student_logits, teacher_logits, temperature):
    """(ce, kd) per example; kd = T^2 * KL(softmax(t/T) || softmax(s/T))."""
    labels = np.asarray(labels).reshape(-1)
    log_p_s = _np_log_softmax(student_logits)
    ce = -log_p_s[np.arange(len(labels)), labels]
    kl = _np_kl(
        _np_log_softmax(np.asarray(teacher_logits, np.float64) / temperature),
        _np_log_softmax(np.asarray(student_logits, np.float64) / temperature),
    )
    return ce, temperature**2 * kl


def _np_kd_loss(labels, student_logits, teacher_logits, temperature, alpha):
    ce, kd = _np_kd_terms(labels, student_logits, teacher_logits, temperature)
    return (1.0 - alpha) * ce + alpha * kd


def _random_batch(seed, batch=8, scale=3.0):
    rng = np.random.default_rng(seed)
    student = (scale * rng.standard_normal((batch, NUM_CLASSES))).astype("float32")
    teacher = (scale * rng.standard_normal((batch, NUM_CLASSES))).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=batch)
    return labels, student, teacher


# --------------------------------------------------------------------------
# Against the NumPy reference.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_kd_loss_matches_numpy(temperature, alpha):
    labels, s, t = _random_batch(seed=1)
    got = kd_loss(labels, s, t, temperature=temperature, alpha=alpha)
    assert got.shape == (8,)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    expected = _np_kd_loss(labels, s, t, temperature, alpha)
    # float32 TensorFlow against float64 NumPy: 1e-5 relative, plus the KD term's T^2-scaled rounding.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=kd_atol(temperature))


def test_alpha_zero_is_hard_target_cross_entropy():
    labels, s, t = _random_batch(seed=2)
    expected = keras.losses.sparse_categorical_crossentropy(labels, s, from_logits=True)
    # Keras's CE against ours: log-softmax of float32 logits of size ~10, ~1e-7 of that each (bit-identical
    # here); 1e-6 relative and 1e-6 absolute (1e-7 of the logits' size) for an example whose CE is near 0.
    np.testing.assert_allclose(
        kd_loss(labels, s, t, alpha=0.0), expected, rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_alpha_one_is_temperature_squared_times_kl(temperature):
    labels, s, t = _random_batch(seed=3)
    kl = _np_kl(_np_log_softmax(t / temperature), _np_log_softmax(s / temperature))
    got = kd_loss(labels, s, t, temperature=temperature, alpha=1.0)
    # float32 against float64 NumPy: 1e-5 relative, plus the KD term's T^2-scaled rounding (kd_atol).
    np.testing.assert_allclose(got, temperature**2 * kl, rtol=1e-5, atol=kd_atol(temperature))
    # With T = 4 the factor 16 is present: dropping it would be 16x smaller.
    if temperature == 4.0:
        assert not np.allclose(got, kl, rtol=0.5)


def test_terms_and_their_combination():
    labels, s, t = _random_batch(seed=4)
    ce, kd = kd_loss_terms(labels, s, t, temperature=4.0)
    np_ce, np_kd = _np_kd_terms(labels, s, t, 4.0)
    # float32 against float64 NumPy: 1e-5 relative; CE's rounding is ~1e-7 of logits of size ~10 (atol 1e-6),
    # the KD term's T^2 times larger (kd_atol).
    np.testing.assert_allclose(ce, np_ce, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kd, np_kd, rtol=1e-5, atol=kd_atol(4.0))
    # The same float32 terms, combined by kd_loss: one multiply-add's rounding.
    np.testing.assert_allclose(
        kd_loss(labels, s, t, temperature=4.0, alpha=0.9),
        0.1 * np.asarray(ce) + 0.9 * np.asarray(kd),
        rtol=1e-6,
    )


def test_teacher_is_the_target_distribution():
    """KL(p_teacher || p_student), not the reverse: the KL is asymmetric."""
    labels, s, t = _random_batch(seed=5)
    _, kd = kd_loss_terms(labels, s, t, temperature=4.0)
    forward = 16.0 * _np_kl(_np_log_softmax(t / 4.0), _np_log_softmax(s / 4.0))
    reverse = 16.0 * _np_kl(_np_log_softmax(s / 4.0), _np_log_softmax(t / 4.0))
    np.testing.assert_allclose(kd, forward, rtol=1e-5, atol=kd_atol(4.0))  # float32 vs float64, as above
    assert np.max(np.abs(forward - reverse)) > 1e-2  # the check can tell them apart
    assert not np.allclose(kd, reverse, rtol=1e-3)


def test_gradients_match_closed_form():
    """d/ds of T^2 KL(softmax(t/T) || softmax(s/T)) is T (softmax(s/T) - softmax(t/T));
    d/ds of CE is softmax(s) - onehot(y). No gradient reaches the teacher."""
    labels, s, t = _random_batch(seed=6)
    temperature = 4.0
    s_var, t_var = tf.Variable(s), tf.Variable(t)
    with tf.GradientTape(persistent=True) as tape:
        ce, kd = kd_loss_terms(labels, s_var, t_var, temperature)
        kd_sum, ce_sum = tf.reduce_sum(kd), tf.reduce_sum(ce)
    soft = lambda z: np.exp(_np_log_softmax(z))  # noqa: E731
    # float32 autodiff against the float64 closed form: gradients of size <= T (KD) and <= 1 (CE), rounded
    # to ~1e-7 of that (seen 1.5e-7 absolute): 1e-4 relative, and 1e-6 absolute for the entries near 0.
    np.testing.assert_allclose(
        tape.gradient(kd_sum, s_var),
        temperature * (soft(s / temperature) - soft(t / temperature)),
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        tape.gradient(ce_sum, s_var),
        soft(s) - np.eye(NUM_CLASSES)[labels],
        rtol=1e-4,
        atol=1e-6,
    )
    assert tape.gradient(kd_sum, t_var) is None


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_are_computed_in_float32(dtype):
    labels, s, t = _random_batch(seed=7)
    s_low = keras.ops.cast(s, dtype)
    t_low = keras.ops.cast(t, dtype)
    got = kd_loss(labels, s_low, t_low)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    # Same value as the float32 computation on the rounded logits.
    expected = kd_loss(
        labels, keras.ops.cast(s_low, "float32"), keras.ops.cast(t_low, "float32")
    )
    # Exact: the cast to float32 is exact and both calls then run the same float32 kernels on the same
    # values in this process (a loss computed in low precision would be ~1e-3 off).
    np.testing.assert_array_equal(got, expected)


def test_extreme_logits_stay_finite():
    labels, s, t = _random_batch(seed=8, scale=300.0)  # softmax underflows to 0
    got = kd_loss(labels, s, t, temperature=4.0, alpha=0.9)
    assert np.all(np.isfinite(got))
    # float32 against float64 NumPy on losses of size ~1e3 (seen 1e-7 relative): 1e-5 relative.
    np.testing.assert_allclose(got, _np_kd_loss(labels, s, t, 4.0, 0.9), rtol=1e-5)


def test_label_shape_batch_by_one_and_probability_inputs():
    labels, s, t = _random_batch(seed=9)
    expected = kd_loss(labels, s, t)
    # The same kernels on the same logits, only the labels' shape differs: bit-identical (rtol 1e-6 to spare).
    np.testing.assert_allclose(kd_loss(labels[:, None], s, t), expected, rtol=1e-6)
    probs_s = np.exp(_np_log_softmax(s)).astype("float32")
    probs_t = np.exp(_np_log_softmax(t)).astype("float32")
    # The log of float32 probabilities (each rounded to ~6e-8 relative) instead of a log-softmax: ~1e-7
    # relative on losses of size ~1-10 (seen 2e-7); 1e-4 relative.
    np.testing.assert_allclose(
        kd_loss(labels, probs_s, probs_t, from_logits=False), expected, rtol=1e-4
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "Received: temperature=0.0"),
        ({"temperature": -1.0}, "Received: temperature=-1.0"),
        ({"temperature": "4"}, "Received: temperature='4'"),
        ({"alpha": 1.5}, "Received: alpha=1.5"),
        ({"alpha": -0.1}, "Received: alpha=-0.1"),
    ],
)
def test_bad_arguments(kwargs, message):
    labels, s, t = _random_batch(seed=10)
    with pytest.raises(ValueError, match=message):
        kd_loss(labels, s, t, **kwargs)


# --------------------------------------------------------------------------
# Golden values.
# --------------------------------------------------------------------------
_GOLDEN_CASES = [(4.0, 0.9), (4.0, 0.0), (4.0, 1.0), (1.0, 0.5), (20.0, 0.9)]


def _golden_entry(labels, student, teacher):
    cases = []
    for temperature, alpha in _GOLDEN_CASES:
        ce, kd = _np_kd_terms(labels, student, teacher, temperature)
        loss = (1.0 - alpha) * ce + alpha * kd
        cases.append(
            {
                "temperature": temperature,
                "alpha": alpha,
                "ce": ce.tolist(),
                "kd": kd.tolist(),
                "loss": loss.tolist(),
                "mean_loss": float(loss.mean()),
            }
        )
    return {
        "labels": [int(v) for v in labels],
        "student_logits": student.astype(np.float64).tolist(),  # exact float32
        "teacher_logits": teacher.astype(np.float64).tolist(),
        "cases": cases,
    }


def _regenerate_fixture():
    golden = {
        "_meta": {
            "description": "KD loss (1-alpha)*CE + alpha*T^2*KL(softmax(t/T) || "
            "softmax(s/T)), per example, from the float64 NumPy reference in "
            "tests/test_losses.py. Logits are float32 values.",
            "regenerate": "python tests/test_losses.py --regenerate",
            "rtol": 1e-5,
            "atol": 1e-6,
        }
    }
    for key, seed, scale in [
        ("kd/random_student_from_random_teacher", 0, 3.0),
        ("kd/confident_student_from_confident_teacher", 1, 40.0),
    ]:
        labels, student, teacher = _random_batch(seed=seed, batch=4, scale=scale)
        golden[key] = {"seed": seed, "scale": scale}
        golden[key].update(_golden_entry(labels, student, teacher))
    text = json.dumps(golden, indent=1)
    # One line per innermost list of numbers, so the file stays readable.
    text = re.sub(
        r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(text + "\n")


def _golden_params():
    if not FIXTURE.exists():  # reported by the test itself, not at collection
        return [pytest.param(None, None, None, id="missing-fixture")]
    golden = json.loads(FIXTURE.read_text())
    return [
        pytest.param(key, entry, case, id=f"{key}-T{case['temperature']}-a{case['alpha']}")
        for key, entry in golden.items()
        if key.startswith("kd/")
        for case in entry["cases"]
    ]


@pytest.mark.parametrize("key, entry, case", _golden_params())
def test_golden_values(key, entry, case):
    assert entry is not None, f"missing {FIXTURE}; see _regenerate_fixture"
    tol = json.loads(FIXTURE.read_text())["_meta"]
    labels = np.asarray(entry["labels"])
    s = np.asarray(entry["student_logits"], np.float32)
    t = np.asarray(entry["teacher_logits"], np.float32)
    ce, kd = kd_loss_terms(labels, s, t, temperature=case["temperature"])
    loss = kd_loss(labels, s, t, case["temperature"], case["alpha"])
    # float32 against the float64 golden values: the fixture's rtol (1e-5) and atol (1e-6, for CE), the
    # atol grown to the KD term's T^2-scaled rounding (kd_atol; up to 4e-4 at T = 20, seen 4.9e-5).
    atol = max(tol["atol"], kd_atol(case["temperature"]))
    for got, name in [(ce, "ce"), (kd, "kd"), (loss, "loss")]:
        np.testing.assert_allclose(
            got, case[name], rtol=tol["rtol"], atol=atol, err_msg=f"{key} {name}"
        )
    np.testing.assert_allclose(np.mean(loss), case["mean_loss"], rtol=tol["rtol"], atol=atol)


# --------------------------------------------------------------------------
# Against Keras's own distillation API.
# --------------------------------------------------------------------------
def _tiny_model(name, width, batchnorm, seed):
    """Conv2D(width) [+BN] + ReLU + GlobalAveragePooling + Dense(10), 8x8x3 inputs."""
    init = lambda: keras.initializers.GlorotNormal(seed=seed)  # noqa: E731
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer=init())(inputs)
    if batchnorm:
        h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(NUM_CLASSES, kernel_initializer=init())(h)
    return keras.Model(inputs, outputs, name=name)


def _tiny_pair_and_batch():
    """A student, a teacher and one batch ``(x, y)``, all seeded."""
    keras.utils.set_random_seed(0)
    student = _tiny_model("student", 4, batchnorm=False, seed=1)
    teacher = _tiny_model("teacher", 8, batchnorm=True, seed=2)
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, NUM_CLASSES, 8)
    return student, teacher, x, y


def _keras_distiller(student, teacher, temperature, alpha, distillation_loss=None):
    """Keras 3's Distiller configured to compute our loss.

    Keras's objective is
        w * CE + (1 - w) * T^2 * mean_batch KL(softmax(t/T) || softmax(s/T))
    with w = `student_loss_weight`, so w = 1 - alpha. The KL branch of
    `LogitsDistillation.compute_loss` (softmax, then the T^2 factor) runs only
    for a `keras.losses.KLDivergence` *instance*: the default `loss=
    "kl_divergence"` resolves to the bare function, which Keras 3.15 applies to
    the temperature-scaled logits themselves, without softmax and without T^2.
    `KLDivergence` clips both distributions to [1e-7, 1]; the logits used here
    keep every probability far above 1e-7, so the clip is inactive.
    """
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=distillation_loss or keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=1.0 - alpha,
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


@pytest.mark.parametrize(
    "temperature, alpha", [(4.0, 0.9), (1.0, 0.3), (2.0, 1.0), (4.0, 0.0)]
)
def test_matches_keras_logits_distillation(temperature, alpha):
    student, teacher, x, y = _tiny_pair_and_batch()
    reference = _keras_distiller(student, teacher, temperature, alpha)
    student_logits = student(x, training=False)
    teacher_logits = teacher(x, training=False)
    assert np.min(keras.ops.softmax(student_logits / temperature)) > 1e-4
    assert np.min(keras.ops.softmax(teacher_logits / temperature)) > 1e-4

    expected = reference.compute_loss(
        x=x, y=y, y_pred=student_logits, training=False
    )
    got = keras.ops.mean(kd_loss(y, student_logits, teacher_logits, temperature, alpha))
    # Keras's KLDivergence (clipped probabilities, their log-ratio) against our log-softmax: float32 rounding
    # in other operations, absolute on the KD term (seen 1e-6 at T = 4, 6e-6 of a loss of 0.035 at T = 2):
    # 1e-5 relative plus kd_atol.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=kd_atol(temperature))


@pytest.mark.parametrize("temperature, alpha", [(4.0, 0.9), (1.0, 0.3), (2.0, 1.0)])
def test_hinton_kd_in_keras_distiller_is_the_papers_loss(temperature, alpha):
    """``HintonKD`` in Keras's own Distiller gives kdkeras's KD loss (and the default KL does not)."""
    from kdkeras.distiller import Distiller
    from kdkeras.losses import HintonKD

    student, teacher, x, y = _tiny_pair_and_batch()
    theirs = _keras_distiller(student, teacher, temperature, alpha, HintonKD(temperature))
    student_logits = student(x, training=False)
    got = theirs.compute_loss(x=x, y=y, y_pred=student_logits, training=False)

    ours = Distiller(student, teacher, temperature=temperature, alpha=alpha)
    ours.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    expected = ours.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["loss"]  # kdkeras's Distiller
    # Keras's Distiller (eager logits) against ours (evaluate's graph kernels): the same loss through other
    # float32 operations (seen 2e-7 relative): 1e-5 relative plus the KD term's rounding (kd_atol).
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=kd_atol(temperature))
    teacher_logits = teacher(x, training=False)
    np.testing.assert_allclose(got, keras.ops.mean(kd_loss(y, student_logits, teacher_logits, temperature, alpha)),
                               rtol=1e-5, atol=kd_atol(temperature))

    # Keras's default: KL of the scaled logits themselves, without softmax or T^2.
    default = _keras_distiller(student, teacher, temperature, alpha,
                               keras.distillation.LogitsDistillation(temperature=temperature))
    if alpha > 0:
        assert abs(float(default.compute_loss(x=x, y=y, y_pred=student_logits, training=False))
                   - float(expected)) > 1e-3


def test_hinton_kd_rejects_a_bad_temperature():
    from kdkeras.losses import HintonKD

    with pytest.raises(ValueError, match="temperature"):
        HintonKD(0)


def test_one_sgd_step_matches_keras_distiller():
    """Same loss, hence the same SGD update as Keras's Distiller."""
    from kdkeras.distiller import Distiller

    keras.utils.set_random_seed(0)
    teacher = _tiny_model("teacher", 8, batchnorm=True, seed=2)
    ours = _tiny_model("student", 4, batchnorm=False, seed=1)
    theirs = _tiny_model("student_ref", 4, batchnorm=False, seed=1)
    theirs.set_weights(ours.get_weights())
    initial = ours.get_weights()
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, NUM_CLASSES, 8)

    reference = _keras_distiller(theirs, teacher, temperature=4.0, alpha=0.9)
    reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    distiller = Distiller(ours, teacher, temperature=4.0, alpha=0.9)
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)

    for got, expected, before in zip(
        ours.get_weights(), theirs.get_weights(), initial
    ):
        assert not np.allclose(got, before)  # the step did move the weights
        # The same loss through Keras's operations and ours, then one SGD step: float32 rounding, seen
        # 8e-7 of each array's scale (kernels ~0.5, biases ~0.005); 1e-5 of it.
        assert relative_error(got, expected) < 1e-5


if __name__ == "__main__":
    if "--regenerate" in sys.argv:
        _regenerate_fixture()
        print(f"wrote {FIXTURE}")
