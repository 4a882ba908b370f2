"""Tests for `kdkeras.methods.reviewkd`: ReviewKD (Chen, Liu, Zhao and Jia, CVPR 2021) against NumPy.

The references are float64 NumPy code written here from the paper and the
authors' code: the hierarchical context loss with PyTorch's adaptive average
pooling bins, and the attention-based fusion computed from the ABF modules'
own weights read back.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras.distiller import Distiller
from kdkeras.errors import UsageError
from kdkeras.methods import get, list_methods, settings_of
from kdkeras.methods.reviewkd import ReviewKD, hcl, nearest_resize

B = 4
#: float32 TensorFlow kernels (convolutions, BatchNorm, sigmoid, means) against float64 NumPy through a
#: few operations, on losses of size ~1-20 that are sums of squares (no cancellation): ~1e-7 relative
#: (seen <= 1.7e-7 over 20 random draws); 1e-5 relative.
RTOL = 1e-5
EPSILON = 1e-5  # the BN epsilon of kdkeras's zoo (PyTorch's)

#: (student shapes, teacher shapes) of the levels: the same sizes, and a student level smaller than the
#: teacher's (its fused map is resized up to the teacher's size before the 3x3 convolution).
SHAPES = {
    "same_sizes": ({"stage1": (8, 8, 3), "stage2": (4, 4, 4), "stage3": (2, 2, 5), "embedding": (6,)},
                   {"stage1": (8, 8, 5), "stage2": (4, 4, 6), "stage3": (2, 2, 7), "embedding": (8,)}),
    "student_smaller": ({"stage1": (8, 8, 3), "stage2": (4, 4, 4), "embedding": (6,)},
                        {"stage1": (8, 8, 5), "stage2": (8, 8, 6), "embedding": (8,)}),
}


def _outputs(shapes, seed):
    rng = np.random.default_rng(seed)
    return {tap: rng.normal(size=(B, *shape)).astype(np.float32) for tap, shape in shapes.items()}


def _with_batch(shapes):
    return {tap: (None, *shape) for tap, shape in shapes.items()}


# --------------------------------------------------------------------------
# NumPy float64 references
# --------------------------------------------------------------------------
def _np_adaptive_avg_pool(x, k):
    """PyTorch's adaptive_avg_pool2d (bins [floor(i H / k), ceil((i + 1) H / k))) of (B, H, W, C)."""
    h, w = x.shape[1:3]
    out = np.zeros((x.shape[0], k, k, x.shape[3]))
    for i in range(k):
        for j in range(k):
            rows = slice(i * h // k, -(-(i + 1) * h // k))
            cols = slice(j * w // k, -(-(j + 1) * w // k))
            out[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    return out


def _np_hcl(s, t):
    """The authors' hcl for one level, per example: sizes 4, 2, 1 below H, weights halving from 1."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    loss = ((s - t) ** 2).mean(axis=(1, 2, 3))
    cnt = tot = 1.0
    for k in (4, 2, 1):
        if k >= s.shape[1]:
            continue
        cnt /= 2.0
        loss = loss + cnt * ((_np_adaptive_avg_pool(s, k) - _np_adaptive_avg_pool(t, k)) ** 2).mean(axis=(1, 2, 3))
        tot += cnt
    return loss / tot


def _np_nearest(x, height, width):
    h, w = x.shape[1:3]
    rows = np.floor(np.arange(height) * h / height).astype(int)
    cols = np.floor(np.arange(width) * w / width).astype(int)
    return x[:, rows][:, :, cols]


def _np_bn(z, bn, training):
    if training:
        mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
    else:
        mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    return (z - mean) / np.sqrt(var + EPSILON) * bn.gamma.numpy() + bn.beta.numpy()


def _np_conv3x3(x, kernel):
    """A 'same' 3x3 cross-correlation of (B, H, W, C) with a (3, 3, C, D) kernel."""
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(np.einsum("bhwc,cd->bhwd", padded[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
               for dy in range(3) for dx in range(3))


def _np_abf(abf, x, residual, teacher_hw, training):
    """The ABF of Chen et al. from the module's own weights: (output, residual), float64."""
    def layer(suffix):
        return abf.get_layer(f"{abf.name}_{suffix}")

    x = _np_bn(np.einsum("bhwc,cd->bhwd", x, layer("conv1").kernel.numpy()[0, 0]), layer("bn1"), training)
    if residual is not None:
        r = _np_nearest(residual, *x.shape[1:3])
        att = layer("attention")
        logits = np.einsum("bhwc,cd->bhwd", np.concatenate([x, r], -1), att.kernel.numpy()[0, 0]) + att.bias.numpy()
        a = 1.0 / (1.0 + np.exp(-logits))
        x = x * a[..., 0:1] + r * a[..., 1:2]
    x = _np_nearest(x, *teacher_hw)
    return _np_bn(_np_conv3x3(x, layer("conv2").kernel.numpy()), layer("bn2"), training), x


def _np_map(v):
    """A tap as a float64 (B, H, W, C) map; the (B, D) embedding as (B, 1, 1, D)."""
    v = np.asarray(v, np.float64)
    return v.reshape(B, 1, 1, -1) if v.ndim == 2 else v


def _np_reviewkd(term, teacher, student, training):
    """The sum over the levels of hcl(ABF output, teacher map), the review going from the deepest level."""
    total, residual = np.zeros(B), None
    for tap, abf in reversed(list(zip(term.taps, term.abfs))):
        t = _np_map(teacher[tap])
        y, residual = _np_abf(abf, _np_map(student[tap]), residual, t.shape[1:3], training)
        total += _np_hcl(y, t)
    return total


def _randomise(term, seed=0):
    """Random BN statistics and affine parameters, so that no part is trivial (the attention bias is random already)."""
    rng = np.random.default_rng(seed)
    for abf in term.abfs:
        for layer in abf.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                c = layer.gamma.shape[0]
                layer.gamma.assign(rng.uniform(0.5, 1.5, c))
                layer.beta.assign(rng.normal(size=c))
                layer.moving_mean.assign(rng.normal(size=c))
                layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))


# --------------------------------------------------------------------------
# HCL and its helpers
# --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 8, 4, 2, 1])
def test_hcl_matches_numpy(size):
    rng = np.random.default_rng(size)
    s = rng.normal(size=(B, size, size, 3)).astype(np.float32)
    t = rng.normal(size=(B, size, size, 3)).astype(np.float32)
    got = hcl(s, t).numpy()
    np.testing.assert_allclose(got, _np_hcl(s, t), rtol=RTOL)  # float32 means of squares (size ~1) vs float64
    np.testing.assert_allclose(got.mean(), _np_hcl(s, t).mean(), rtol=RTOL)  # the authors' batch loss


@pytest.mark.parametrize("size, weight_sum", [(8, 1.875), (4, 1.75), (2, 1.5)])
def test_hcl_weights_and_normalisation(size, weight_sum):
    t = np.random.default_rng(0).normal(size=(B, size, size, 3)).astype(np.float32)
    # Identical maps: exactly 0. A constant offset c at every position: c^2 at every level, so c^2 after the
    # normalisation by the weights' sum.
    np.testing.assert_array_equal(hcl(t, t).numpy(), np.zeros(B))
    np.testing.assert_allclose(hcl(t + 0.5, t).numpy(), np.full(B, 0.25), rtol=RTOL)
    # A checkerboard offset +-c averages to 0 in every pooled cell: only the full-resolution term is left,
    # c^2 divided by the weights used (1 + 1/2 + 1/4 + 1/8 for 8x8, 1 + 1/2 + 1/4 for 4x4, 1 + 1/2 for 2x2).
    board = np.where(np.add.outer(np.arange(size), np.arange(size)) % 2, 0.5, -0.5)[None, :, :, None]
    np.testing.assert_allclose(hcl(t + board.astype(np.float32), t).numpy(), np.full(B, 0.25 / weight_sum),
                               rtol=RTOL)


def test_nearest_resize_is_pytorchs():
    x = np.arange(2 * 3 * 2 * 1, dtype=np.float32).reshape(2, 3, 2, 1)
    for size in [(6, 4), (3, 2), (7, 5), (1, 1)]:
        np.testing.assert_array_equal(nearest_resize(x, *size), _np_nearest(x, *size))


# --------------------------------------------------------------------------
# The full loss, with the ABF modules' weights
# --------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(SHAPES))
@pytest.mark.parametrize("training", [False, True])
def test_loss_matches_numpy_with_the_abf_weights(case, training):
    s_shapes, t_shapes = SHAPES[case]
    term = ReviewKD(taps=tuple(s_shapes))
    term.build_adapters(_with_batch(s_shapes), _with_batch(t_shapes))
    _randomise(term)
    student, teacher = _outputs(s_shapes, 1), _outputs(t_shapes, 2)
    teacher["logits"] = np.zeros((B, 10), np.float32)  # extra entries are ignored
    got = term.per_example_loss(teacher, student, training=training).numpy()
    expected = _np_reviewkd(term, teacher, student, training)
    assert got.shape == (B,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    np.testing.assert_allclose(got.mean(), expected.mean(), rtol=RTOL)


def test_abf_modules_from_shapes():
    s_shapes, t_shapes = SHAPES["same_sizes"]
    term = ReviewKD()
    assert not term.built and term.adapters == ()
    term.build_adapters(_with_batch(s_shapes), _with_batch(t_shapes))
    assert [abf.name for abf in term.adapters] == [f"{term.name}_abf_{tap}" for tap in term.taps]
    mid = 6  # min(512, the embedding's 6 channels)
    for abf, tap in zip(term.abfs, term.taps):
        y, residual = abf.outputs
        t = t_shapes[tap] if len(t_shapes[tap]) == 3 else (1, 1, *t_shapes[tap])
        assert tuple(y.shape[1:]) == t and tuple(residual.shape[1:]) == (*t[:2], mid)
        assert all(v.dtype == "float32" for v in abf.weights)
        assert all(layer.synchronized for layer in abf.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert len(term.abfs[-1].inputs) == 1 and all(len(abf.inputs) == 2 for abf in term.abfs[:-1])
    # conv1, bn1 (2), attention (2), conv2, bn2 (2) per fusing level; no attention at the deepest.
    assert len(term.trainable_weights) == 3 * 8 + 6
    assert {id(v) for v in term.trainable_weights} == {id(v) for a in term.adapters for v in a.trainable_weights}
    narrow = ReviewKD(max_mid_channels=4)
    narrow.build_adapters(_with_batch(s_shapes), _with_batch(t_shapes))
    assert narrow.abfs[0].outputs[1].shape[-1] == 4


def test_abf_weights_save_and_load_with_a_holding_model(tmp_path):
    s_shapes, t_shapes = SHAPES["student_smaller"]

    class Holder(keras.Model):  # as the distiller holds its methods: their parts save with it
        def __init__(self, terms):
            super().__init__()
            self.terms = terms
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    holders = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        term = ReviewKD(taps=tuple(s_shapes))
        term.build_adapters(_with_batch(s_shapes), _with_batch(t_shapes))
        holder = Holder([term])
        holder(np.zeros((1, 3), np.float32))
        assert {id(v) for v in term.weights} <= {id(v) for v in holder.weights}
        holders.append(holder)
    path = str(tmp_path / "holder.weights.h5")
    holders[0].save_weights(path)
    holders[1].load_weights(path)
    for a, b in zip(holders[0].terms[0].weights, holders[1].terms[0].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # saved and loaded byte for byte


def test_builds_lazily_from_the_tensors():
    s_shapes, t_shapes = SHAPES["same_sizes"]
    term = ReviewKD()
    loss = term.per_example_loss(_outputs(t_shapes, 2), _outputs(s_shapes, 1))
    assert term.built and len(term.adapters) == 4 and np.all(np.isfinite(loss))


def test_gradient_reaches_the_student_and_the_abfs_not_the_teacher():
    s_shapes, t_shapes = SHAPES["same_sizes"]
    term = ReviewKD()
    term.build_adapters(_with_batch(s_shapes), _with_batch(t_shapes))
    student = {k: tf.Variable(v) for k, v in _outputs(s_shapes, 1).items()}
    teacher = {k: tf.Variable(v) for k, v in _outputs(t_shapes, 2).items()}
    with tf.GradientTape(persistent=True) as tape:
        loss = term.compute_loss(teacher, student, training=True)
    assert all(tape.gradient(loss, v) is None for v in teacher.values())
    assert all(tape.gradient(loss, v) is not None for v in student.values())
    assert all(g is not None for g in tape.gradient(loss, term.trainable_weights))


# --------------------------------------------------------------------------
# Settings, errors, config
# --------------------------------------------------------------------------
def test_defaults_and_settings():
    term = ReviewKD()
    assert term.taps == ("stage1", "stage2", "stage3", "embedding")
    assert (term.max_mid_channels, term.warmup_epochs) == (512, 20)
    assert (ReviewKD.default_weight, ReviewKD.default_ce_weight, ReviewKD.needs_labels) == (5.0, 1.0, False)
    assert term.warmup_factor(0) == pytest.approx(1 / 20) and term.warmup_factor(19) == 1.0
    assert get("reviewkd") is ReviewKD and "reviewkd" in list_methods()
    flags = {s.flag: s for s in settings_of("reviewkd")}
    assert set(flags) == {"reviewkd_taps", "reviewkd_max_mid_channels", "reviewkd_warmup", "reviewkd_weight"}
    assert flags["reviewkd_taps"].check("stage2,stage3") == ("stage2", "stage3")
    made = ReviewKD.from_settings(ReviewKD.Settings(taps=("stage2", "stage3"), max_mid_channels=64, warmup=0))
    assert (made.taps, made.max_mid_channels, made.warmup_epochs) == (("stage2", "stage3"), 64, 0)


@pytest.mark.parametrize("kwargs", [
    {"taps": ()}, {"taps": "stage1"}, {"taps": ("stage1", "logits")}, {"taps": ("stage1", "stage1")},
    {"taps": ("embedding", "stage3")}, {"max_mid_channels": 0}, {"max_mid_channels": 8.0},
    {"warmup_epochs": -1}, {"warmup_epochs": 1.5}, {"warmup_epochs": True},
])
def test_bad_arguments_are_one_line_usage_errors(kwargs):
    with pytest.raises(UsageError) as error:
        ReviewKD(**kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("student, teacher, match", [
    ({"stage1": (None, 6, 6, 3), "stage2": (None, 3, 3, 4)},
     {"stage1": (None, 6, 6, 3), "stage2": (None, 3, 3, 4)}, "divisible by 4"),
    ({"stage1": (None, 4, 4, 3), "stage2": (None, 8, 8, 4)},
     {"stage1": (None, 4, 4, 3), "stage2": (None, 8, 8, 4)}, "shallow to deep"),
    ({"stage1": (None, 8, 8, 3), "stage2": (None, 4, 4)},
     {"stage1": (None, 8, 8, 3), "stage2": (None, 4, 4, 4)}, "maps"),
])
def test_bad_shapes_are_one_line_usage_errors(student, teacher, match):
    with pytest.raises(UsageError, match=match) as error:
        ReviewKD(taps=("stage1", "stage2")).build_adapters(student, teacher)
    assert "\n" not in str(error.value)


def test_missing_outputs_are_named():
    with pytest.raises(ValueError, match=r"student shapes of \['stage2', 'stage3', 'embedding'\]"):
        ReviewKD().build_adapters({"stage1": (None, 8, 8, 3)}, {"stage1": (None, 8, 8, 3)})
    s_shapes, t_shapes = SHAPES["same_sizes"]
    student = {k: v for k, v in _outputs(s_shapes, 1).items() if k != "stage2"}
    with pytest.raises(ValueError, match="stage2"):
        ReviewKD().per_example_loss(_outputs(t_shapes, 2), student)


@pytest.mark.parametrize("term", [ReviewKD(), ReviewKD(taps=["stage2", "stage3"], max_mid_channels=32,
                                                       warmup_epochs=0, name="rk")])
def test_config_round_trips(term):
    config = term.get_config()
    assert ReviewKD.from_config(config).get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is ReviewKD and again.get_config() == config


# --------------------------------------------------------------------------
# In the distiller: the ABF modules train with the student
# --------------------------------------------------------------------------
def test_abf_modules_train_in_the_distiller():
    keras.utils.set_random_seed(0)
    student = kdkeras.build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
    teacher = kdkeras.build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
    term = ReviewKD()
    distiller = Distiller(student, teacher, distillation_losses=[term])
    assert len(term.adapters) == 4 and term.abfs[0].outputs[1].shape[-1] == 64  # min(512, 64 features)
    assert {id(v) for v in distiller.adapter_variables} == {id(v) for v in term.trainable_weights}
    before = [v.numpy().copy() for v in term.trainable_weights]
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 16)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert float(distiller.term_factor_variables[0].numpy()) == pytest.approx(1 / 20)  # epoch 0 of the warm-up
    assert all(np.isfinite(history.history[key][-1]) for key in ("loss", "reviewkd"))
    assert history.history["reviewkd"][-1] > 0
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, term.trainable_weights)]
    assert all(changed), [v.path for v, c in zip(term.trainable_weights, changed) if not c]
