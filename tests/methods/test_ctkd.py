"""Tests for CTKD (Li et al., AAAI 2023): KD at a learned, gradient-reversed temperature with a lambda curriculum.

The references are float64 NumPy code written here from the paper's
formulas and the authors' code (zhengli97/CTKD): Hinton KD with the T^2
factor at ``T = t_min + t_range * sigmoid(theta)``, the reversal's
gradient ``-lambda * dL/dtheta`` (against a float64 central difference),
and the cosine schedule of lambda.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras import methods
from kdkeras.distiller import Distiller
from kdkeras.errors import UsageError
from kdkeras.methods import CTKD, KD
from kdkeras.models import build_model

B, C = 6, 10
#: float32 TensorFlow kernels against float64 NumPy through a few operations (softmax, log, a sum over
#: 10 classes, T^2): ~1e-7 relative, as tests/test_methods.py; 1e-5 relative.
RTOL = 1e-5


def kd_atol(temperature):
    """Absolute tolerance of T^2 * KL: the float32 rounding of the log-probabilities (~1e-7 of log(10)) does not
    shrink with the KL, and at the default T ~ 15.6 the KL is ~1e-2: a few 1e-7 * T^2, as tests/test_methods.py."""
    return 1e-6 * temperature**2


def _logits(seed, scale=3.0):
    return (scale * np.random.default_rng(seed).normal(size=(B, C))).astype(np.float32)


# --------------------------------------------------------------------------
# NumPy float64 references.
# --------------------------------------------------------------------------
def _np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_kd(t, s, temperature):
    """Hinton KD per example with the authors' T^2: T^2 * sum_k p_t (log p_t - log p_s)."""
    p_t, p_s = _np_softmax(t / temperature), _np_softmax(s / temperature)
    return temperature**2 * np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)


def _np_temperature(theta, t_min=1.0, t_range=20.0):
    """The authors' ``t_start + t_end * sigmoid(theta)``."""
    return t_min + t_range / (1.0 + np.exp(-np.float64(theta)))


def _np_lambda(epoch, lambda_min=0.0, lambda_max=1.0, epochs=10):
    """The paper's cosine curriculum at the authors' 1-based epoch ``epoch + 1``."""
    n = min(epoch + 1, epochs)
    return lambda_min + 0.5 * (lambda_max - lambda_min) * (1.0 + math.cos((1.0 + n / epochs) * math.pi))


def _authors_lambda(epoch, decay_max=0.0, decay_min=-1.0, loops=10):
    """Minus the authors' ``CosineDecay(decay_max, decay_min, loops).get_value(epoch + 1)`` (their GRL scale)."""
    i = min(max(epoch + 1, 0), loops)
    value = (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (decay_max - decay_min) + decay_min
    return -value


def _theta(method):
    return float(np.asarray(method.theta))


def _built(method):
    """``method`` with its variables, as the distiller builds it (``build_adapters`` from the logits' shapes)."""
    method.build_adapters({"logits": (None, C)}, {"logits": (None, C)})
    return method


# --------------------------------------------------------------------------
# The variables.
# --------------------------------------------------------------------------
def test_build_adapters_creates_the_temperature_and_lambda():
    method = CTKD()
    assert method.theta is None and not method.trainable_variables
    _built(method)
    theta, lam = method.theta, method.grl_lambda
    assert method.trainable_variables == [theta] and method.non_trainable_variables == [lam]
    assert theta.shape == () and theta.dtype == "float32" and lam.dtype == "float32"
    _built(method)  # idempotent
    assert method.theta is theta and len(method.variables) == 2
    # Used on its own (outside a distiller), the first use creates them.
    alone = CTKD()
    alone.per_example_loss(_logits(0), _logits(1))
    assert alone.theta is not None and alone.grl_lambda is not None


# --------------------------------------------------------------------------
# The loss.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("initial_temperature", [None, 2.5, 8.0])
def test_loss_is_hinton_kd_at_the_current_temperature(initial_temperature):
    method = _built(CTKD() if initial_temperature is None else CTKD(initial_temperature=initial_temperature))
    t, s = _logits(0), _logits(1)
    temperature = _np_temperature(_theta(method))
    if initial_temperature is None:  # the authors' start: theta = 1
        np.testing.assert_allclose(_theta(method), 1.0, rtol=1e-7)
    else:
        np.testing.assert_allclose(temperature, initial_temperature, rtol=1e-6)  # theta is float32
    got = keras.ops.convert_to_numpy(method.per_example_loss({"logits": t}, {"logits": s}))
    want = _np_kd(t, s, temperature)
    assert got.shape == (B,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=kd_atol(temperature))
    np.testing.assert_allclose(float(method.compute_loss({"logits": t}, {"logits": s})), want.mean(), rtol=RTOL,
                               atol=kd_atol(temperature))
    # The same value as kdkeras's KD at that temperature (one float32 code path: 1e-6).
    kd = keras.ops.convert_to_numpy(KD(temperature=method.current_temperature).per_example_loss(t, s))
    np.testing.assert_allclose(got, kd, rtol=1e-6)
    np.testing.assert_allclose(method.current_temperature, temperature, rtol=1e-6)


def test_loss_is_zero_for_identical_logits_and_its_value_ignores_lambda():
    method = CTKD(lambda_min=0.0, lambda_max=3.0, lambda_epochs=4)
    t, s = _logits(2), _logits(3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(method.per_example_loss(t, t)), 0.0, atol=1e-5)
    values = []
    for epoch in (0, 1, 9):
        method.on_epoch_begin(epoch)
        values.append(keras.ops.convert_to_numpy(method.per_example_loss(t, s)))
    # The reversal layer is the identity forward: bit-identical values whatever lambda.
    np.testing.assert_array_equal(values[0], values[1])
    np.testing.assert_array_equal(values[0], values[2])


# --------------------------------------------------------------------------
# The gradients.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("initial_temperature,epoch", [(None, 0), (None, 5), (3.0, 2), (6.0, 30)])
def test_the_temperature_gets_the_reversed_gradient(initial_temperature, epoch):
    kwargs = {} if initial_temperature is None else {"initial_temperature": initial_temperature}
    method = CTKD(lambda_min=0.2, lambda_max=1.5, lambda_epochs=6, **kwargs)
    method.on_epoch_begin(epoch)
    lam = _np_lambda(epoch, 0.2, 1.5, 6)
    t, s = _logits(4), _logits(5)
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(method.per_example_loss(t, s))
    got = float(tape.gradient(loss, method.theta.value))

    theta, h = _theta(method), 1e-4

    def mean_kd(th):
        return _np_kd(t, s, _np_temperature(th)).mean()

    # Central difference in float64: error ~h^2 * L''' ~ 1e-9 of the derivative.
    derivative = (mean_kd(theta + h) - mean_kd(theta - h)) / (2 * h)
    # A float32 backward pass against float64. dL/dT is a difference of terms of the size of L (2 T KL and
    # T^2 dKL/dT), so its rounding does not shrink with it: seen ~6e-8 * L, up to 1.4e-4 of the derivative at
    # T ~ 15.6 where dL/dT is small. Tolerance: 1e-4 relative, plus 1e-6 * L in dL/dT, times lam * dT/dtheta.
    slope = 20.0 * np.exp(-theta) / (1.0 + np.exp(-theta)) ** 2
    np.testing.assert_allclose(got, -lam * derivative, rtol=1e-4, atol=1e-6 * float(loss) * lam * slope)
    assert got != 0.0 and np.sign(got) == -np.sign(derivative)


def test_a_descent_step_on_the_temperature_raises_the_loss_and_lambda_zero_freezes_it():
    t, s = _logits(6), _logits(7)
    method = CTKD(initial_temperature=4.0)
    method.on_epoch_begin(20)  # lambda = 1
    with tf.GradientTape() as tape:
        before = keras.ops.mean(method.per_example_loss(t, s))
    grad = tape.gradient(before, method.theta.value)
    method.theta.assign(method.theta - 0.5 * grad)  # the optimizer's step: descent on the reversed gradient
    after = keras.ops.mean(method.per_example_loss(t, s))
    assert float(after) > float(before)  # ... climbs the KD loss: the adversarial temperature

    frozen = CTKD(lambda_min=0.0, lambda_max=0.0)
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(frozen.per_example_loss(t, s))
    assert float(tape.gradient(loss, frozen.theta.value)) == 0.0


def test_the_student_gets_plain_kd_gradients_and_the_teacher_none():
    method = CTKD(initial_temperature=5.0)
    method.on_epoch_begin(3)
    t, s = tf.constant(_logits(8)), tf.constant(_logits(9))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([t, s])
        loss = keras.ops.mean(method.per_example_loss({"logits": t}, {"logits": s}))
    temperature = _np_temperature(_theta(method))
    # d/ds of mean_i T^2 KL(p_t || p_s) = T * (p_s - p_t) / B: not reversed, not scaled by lambda.
    want = temperature * (_np_softmax(s.numpy() / temperature) - _np_softmax(t.numpy() / temperature)) / B
    # A float32 gradient of entries ~1e-2 against float64: ~1e-7 of the largest; absolute 1e-7.
    np.testing.assert_allclose(tape.gradient(loss, s).numpy(), want, rtol=1e-4, atol=1e-7)
    assert tape.gradient(loss, t) is None


# --------------------------------------------------------------------------
# The curriculum.
# --------------------------------------------------------------------------
def test_lambda_follows_the_cosine_curriculum_per_epoch():
    method = CTKD()
    np.testing.assert_allclose(method.current_lambda, _np_lambda(0), rtol=1e-6)  # before the first epoch
    for epoch in range(15):
        method.on_epoch_begin(epoch)
        # float32 variable against float64: 1e-6 relative (the first value is ~0.02).
        np.testing.assert_allclose(method.current_lambda, _np_lambda(epoch), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(method.current_lambda, _authors_lambda(epoch), rtol=1e-6, atol=1e-7)
        assert method.lambda_at(epoch) == pytest.approx(_np_lambda(epoch), rel=1e-12)
    assert method.lambda_at(9) == method.lambda_at(100) == 1.0
    assert all(method.lambda_at(e) < method.lambda_at(e + 1) for e in range(9))
    other = CTKD(lambda_min=0.5, lambda_max=2.0, lambda_epochs=3)
    assert [other.lambda_at(e) for e in range(5)] == pytest.approx(
        [_np_lambda(e, 0.5, 2.0, 3) for e in range(5)], rel=1e-12)
    # The authors' CosineDecay with decay_max = -lambda_min and decay_min = -lambda_max is the same schedule.
    assert [other.lambda_at(e) for e in range(5)] == pytest.approx(
        [_authors_lambda(e, -0.5, -2.0, 3) for e in range(5)], rel=1e-12)


# --------------------------------------------------------------------------
# Settings and configuration.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"initial_temperature": 1.0}, "`initial_temperature` must lie strictly between"),
    ({"initial_temperature": 21.0}, "`initial_temperature` must lie strictly between"),
    ({"initial_temperature": 5.0, "min_temperature": 6.0}, "`initial_temperature` must lie strictly between"),
    ({"min_temperature": 0.0}, "`min_temperature` must be a number > 0"),
    ({"temperature_range": -1.0}, "`temperature_range` must be a number > 0"),
    ({"lambda_min": -0.1}, "`lambda_min` must be a number >= 0"),
    ({"lambda_min": 2.0, "lambda_max": 1.0}, "`lambda_max` must be >= lambda_min"),
    ({"lambda_epochs": 0}, "`lambda_epochs` must be an integer >= 1"),
    ({"lambda_epochs": 2.5}, "`lambda_epochs` must be an integer >= 1"),
    ({"lambda_epochs": True}, "`lambda_epochs` must be an integer >= 1"),
])
def test_bad_settings_are_one_line_usage_errors(kwargs, match):
    with pytest.raises(UsageError, match=match) as error:
        CTKD(**kwargs)
    assert "\n" not in str(error.value)


def test_flags_defaults_and_config():
    assert "ctkd" in methods.list_methods()
    flags = {s.flag: s for s in methods.settings_of("ctkd")}
    assert set(flags) == {"ctkd_initial_temperature", "ctkd_min_temperature", "ctkd_temperature_range",
                          "ctkd_lambda_min", "ctkd_lambda_max", "ctkd_lambda_epochs", "ctkd_weight"}
    assert flags["ctkd_initial_temperature"].default == pytest.approx(1.0 + 20.0 / (1.0 + math.exp(-1.0)))
    assert flags["ctkd_lambda_epochs"].default == 10 and flags["ctkd_weight"].default == 0.9
    assert CTKD.default_ce_weight == 0.1 and not CTKD.uses_temperature and CTKD.has_epoch_state
    with pytest.raises(UsageError, match="ctkd_lambda_epochs must be an integer >= 1"):
        methods.check_run_settings("ctkd", {"ctkd_lambda_epochs": 0})
    method = CTKD(initial_temperature=3.0, lambda_max=2.0, lambda_epochs=5, name="c")
    config = method.get_config()
    assert CTKD.from_config(config).get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert isinstance(again, CTKD) and again.get_config() == config


# --------------------------------------------------------------------------
# In the distiller.
# --------------------------------------------------------------------------
def _pair(seed):
    keras.utils.set_random_seed(seed)
    student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
    teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
    return student, teacher


def test_distiller_trains_the_temperature_sets_lambda_per_epoch_and_checkpoints_both(tmp_path):
    method = CTKD()
    distiller = Distiller(*_pair(0), distillation_losses=[method])
    assert distiller.ce_weight == pytest.approx(0.1) and distiller.term_weights == [pytest.approx(0.9)]
    assert [v.path for v in distiller.adapter_variables] == [method.theta.path]  # trained with the student
    assert method.grl_lambda in method.non_trainable_variables
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 32, 32, 3)).astype("float32"), rng.integers(0, 10, 16)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(method.current_lambda)

    theta = _theta(method)
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[Record()]).history
    assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(history["ctkd"]))
    assert _theta(method) != theta  # the temperature moved
    # Two steps per epoch, each with its epoch's lambda (float32 variable: 1e-6).
    np.testing.assert_allclose(seen, [_np_lambda(0)] * 2 + [_np_lambda(1)] * 2, rtol=1e-6)

    path = str(tmp_path / "d.weights.h5")
    distiller.save_weights(path)
    fresh_method = CTKD()
    fresh = Distiller(*_pair(1), distillation_losses=[fresh_method])
    assert _theta(fresh_method) != _theta(method) and fresh_method.current_lambda != method.current_lambda
    fresh.load_weights(path)
    assert _theta(fresh_method) == _theta(method)
    assert fresh_method.current_lambda == method.current_lambda == pytest.approx(_np_lambda(1), rel=1e-6)
    assert fresh_method.current_temperature == method.current_temperature
