"""ReviewKD: Chen, Liu, Zhao and Jia, "Distilling Knowledge via Knowledge Review" (CVPR 2021).

The student's features of every level, fused from the deepest to the
shallowest by attention-based fusion (ABF) modules, are compared with the
teacher's features of the same level by the hierarchical context loss (HCL)
(see :class:`ReviewKD`). The authors' code (dvlab-research/ReviewKD) and
mdistiller's ``ReviewKD`` define the details followed here.

The file reads top to bottom: the settings, the three tensor helpers (nearest
resize, average pooling, HCL), the ABF module, then the method.
"""

from __future__ import annotations

import dataclasses
import numbers

import keras
import numpy as np
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.methods.base import EMBEDDING, Method, as_float32, check_tap, setting
from kdkeras.models.blocks import BN_KWARGS

SOURCE = "Chen et al. 2021; the authors' code and mdistiller's CIFAR-100 ReviewKD"
#: The stage outputs of a three-stage WRN, then the pooled embedding as a 1x1 map (the authors' levels).
DEFAULT_TAPS = ("stage1", "stage2", "stage3", EMBEDDING)
#: The pooled sizes of HCL after the full resolution; level ``k`` is used only where ``k < H``.
POOL_SIZES = (4, 2, 1)
#: The authors' ``mid_channel = min(512, channels of the deepest student level)``.
MAX_MID_CHANNELS = 512


@dataclasses.dataclass(frozen=True)
class ReviewKDSettings:
    taps: tuple[str, ...] = setting(DEFAULT_TAPS, "the levels, shallowest first; 'embedding' (the pooled "
                                    "features as a 1x1 map) may only be the last", source=SOURCE)
    max_mid_channels: int = setting(MAX_MID_CHANNELS, "the ABF width is min(this, the deepest student level's "
                                    "channels)", minimum=1, source=SOURCE)
    warmup: int = setting(20, "epochs of linear warm-up of the term's weight (0: none)", minimum=0,
                          source=SOURCE)


# ------------------------------------------------------------------ tensor helpers
def nearest_resize(x, height, width):
    """``x`` ``(B, h, w, C)`` resized to ``(B, height, width, C)`` by PyTorch's ``interpolate(mode="nearest")``.

    Output row ``i`` copies input row ``floor(i * h / height)`` (and columns alike),
    for any sizes; an unchanged size returns ``x`` itself.
    """
    h, w = int(x.shape[1]), int(x.shape[2])
    if (h, w) != (height, width):
        x = ops.take(x, np.arange(height) * h // height, axis=1)
        x = ops.take(x, np.arange(width) * w // width, axis=2)
    return x


def average_pool(x, k):
    """Adaptive average pooling of ``x`` ``(B, H, W, C)`` to ``(B, k, k, C)``, for ``H`` and ``W`` divisible by ``k``.

    With ``H = k * a`` and ``W = k * b`` every output cell is the mean of one ``a x b``
    block: PyTorch's ``adaptive_avg_pool2d`` for these sizes.
    """
    h, w, c = (int(d) for d in x.shape[1:])
    blocks = ops.reshape(x, (-1, k, h // k, k, w // k, c))
    return ops.mean(blocks, axis=(2, 4))


def pool_sizes(height):
    """The pooled sizes HCL uses on maps of ``height`` rows: those of :data:`POOL_SIZES` below it."""
    return tuple(k for k in POOL_SIZES if k < height)


def hcl(student, teacher):
    """The hierarchical context loss of one level, per example: float32 ``(B,)``.

    With ``d(a, b)`` the mean over all positions and channels of ``(a - b)^2``
    and ``pool_k`` the average pooling to ``k x k``:

        hcl = (d(S, T) + sum_j w_j * d(pool_kj(S), pool_kj(T))) / (1 + sum_j w_j)

    over the sizes ``k_j`` of (4, 2, 1) below the map's height, with weights
    1/2, 1/4, 1/8 in that order (the authors' ``hcl``: a size at or above the
    height is skipped and the next used size takes its weight).
    """
    loss = ops.mean(ops.square(student - teacher), axis=(1, 2, 3))
    weight, total = 1.0, 1.0
    for k in pool_sizes(int(teacher.shape[1])):
        weight /= 2.0
        loss = loss + weight * ops.mean(ops.square(average_pool(student, k) - average_pool(teacher, k)),
                                        axis=(1, 2, 3))
        total += weight
    return loss / total


# ------------------------------------------------------------------ the ABF module
def make_abf(name, student_shape, mid_channels, teacher_shape, residual_shape=None):
    """One attention-based fusion module, a functional ``keras.Model`` of its own (float32).

    From the student's map ``x`` ``(h, w, C_s)`` and, except at the deepest
    level, the deeper level's residual ``r`` (``mid_channels`` wide):

        x' = BN(conv1x1(x))                                  (mid_channels)
        a  = sigmoid(conv1x1_bias(concat[x', up(r)]))        (2 maps; up: nearest to h x w)
        x' = x' * a[0] + up(r) * a[1]                        (fusion; the deepest level has none)
        x' = nearest resize of x' to the teacher's H x W     (a no-op where the sizes agree)
        y  = BN(conv3x3(x'))                                 (C_t: compared with the teacher)

    and returns ``[y, x']``: ``x'`` is the residual the next shallower level
    fuses. The convolutions before BN have no bias; their kernels are
    initialised like the authors' ``kaiming_uniform_(a=1)`` (LeCun uniform),
    the attention convolution like PyTorch's default (uniform in
    ``+-1/sqrt(fan_in)``, bias too). BN: PyTorch's momentum and epsilon,
    synchronized across replicas.

    Args:
        name: the module's name; its layers are ``{name}_conv1``, ``_bn1``,
            ``_attention``, ``_conv2`` and ``_bn2``.
        student_shape: ``(h, w, C_s)``.
        mid_channels: the width of ``x'``.
        teacher_shape: ``(H, W, C_t)``.
        residual_shape: ``(h_r, w_r, mid_channels)`` of the deeper residual,
            or ``None`` at the deepest level.
    """
    def conv(filters, size, suffix):
        return keras.layers.Conv2D(filters, size, padding="same", use_bias=False, kernel_initializer="lecun_uniform",
                                   dtype="float32", name=f"{name}_{suffix}")

    def batch_norm(suffix):
        return keras.layers.BatchNormalization(synchronized=True, dtype="float32", name=f"{name}_{suffix}",
                                               **BN_KWARGS)

    h, w, _ = student_shape
    height, width, teacher_channels = teacher_shape
    features = keras.Input(shape=tuple(student_shape), dtype="float32", name=f"{name}_features")
    inputs = [features]
    x = batch_norm("bn1")(conv(mid_channels, 1, "conv1")(features))
    if residual_shape is not None:
        residual = keras.Input(shape=tuple(residual_shape), dtype="float32", name=f"{name}_residual")
        inputs.append(residual)
        r = nearest_resize(residual, h, w)
        bound = 1.0 / np.sqrt(2 * mid_channels)
        attention = keras.layers.Conv2D(
            2, 1, activation="sigmoid", kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in",
                                                                                              "uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound), dtype="float32",
            name=f"{name}_attention")(ops.concatenate([x, r], axis=-1))
        x = x * attention[..., 0:1] + r * attention[..., 1:2]
    x = nearest_resize(x, height, width)
    y = batch_norm("bn2")(conv(teacher_channels, 3, "conv2")(x))
    return keras.Model(inputs, [y, x], name=name)


# ------------------------------------------------------------------ the method
@keras.saving.register_keras_serializable(package="kdkeras")
class ReviewKD(Method):
    """Knowledge review (Chen, Liu, Zhao and Jia, CVPR 2021), per example.

    With the student's maps ``S_1 .. S_n`` and the teacher's ``T_1 .. T_n`` at
    the taps, shallowest first (the ``"embedding"``, ``(B, D)``, is read as a
    ``(B, 1, 1, D)`` map), the ABF modules (:func:`make_abf`) review the
    student's levels from the deepest to the shallowest:

        (Y_n, R_n) = ABF_n(S_n)
        (Y_i, R_i) = ABF_i(S_i, R_{i+1})        for i = n-1 .. 1
        reviewkd   = sum over i of hcl(Y_i, T_i)

    with :func:`hcl` the hierarchical context loss: the mean squared error at
    the full resolution and after average pooling to 4x4, 2x2 and 1x1 (the
    sizes below the map's height), weighted 1, 1/2, 1/4, 1/8 and divided by
    the sum of the weights used. Its batch mean is the authors' (and
    mdistiller's) ``hcl_loss`` of the fused student features against the
    teacher's.

    Defaults (the authors' CIFAR-100 recipe, which mdistiller repeats): the
    three stage outputs of a WRN plus the pooled embedding; ABF width
    ``min(512, C)`` with ``C`` the deepest student level's channels (64 for
    WRN-x-1, 128 for WRN-x-2 students); weight 5 (the authors' script for the
    WRN-40-2 pairs and ResNet32x4 -> ResNet8x4, mdistiller's
    ``configs/cifar100/reviewkd.yaml``; mdistiller's built-in fallback is 1),
    cross-entropy weight 1, and a linear warm-up of the weight over 20 epochs
    (mdistiller's ``min(epoch / 20, 1)``, epochs from 1; the distiller applies
    it through :meth:`warmup_factor`).

    Deviations from the authors' code: (1) the teacher's stage maps are the
    stage outputs as kdkeras taps them (before the next BN-ReLU); the
    authors' WRN passes them through the next block's BN first (their
    ``preact`` features). kdkeras's taps offer no post-BN map. The student's
    maps and both embeddings are the authors'. (2) Pooling requires the
    teacher's sizes to be divisible by each pooled size used (WRN's 32, 16, 8
    are); other sizes raise a ``UsageError`` instead of PyTorch's
    overlapping adaptive bins. (3) Taps must be ordered from shallow to deep,
    the student's spatial size never growing along them.

    The ABF modules are float32 Keras models of their own, built by
    :meth:`build_adapters` (or on the first call) and trained with the
    student; they are not part of the student's ``.keras``.

    Args:
        taps: the levels, shallowest first, each a stage tap or (last only)
            ``"embedding"``. Defaults to ``("stage1", "stage2", "stage3",
            "embedding")``.
        max_mid_channels: a positive integer: the ABF width is
            ``min(max_mid_channels, C)``. Defaults to 512.
        warmup_epochs: epochs of the linear warm-up, an integer >= 0.
            Defaults to 20.
        name: layer name.
    """

    method = "reviewkd"
    paper = "Chen, Liu, Zhao and Jia, Distilling Knowledge via Knowledge Review, CVPR 2021"
    reads = "stage taps, embedding"
    parts = "one ABF per level: 1x1 conv + BN, attention 1x1 conv, 3x3 conv + BN"
    Settings = ReviewKDSettings
    default_weight = 5.0
    default_ce_weight = 1.0

    def __init__(self, taps=DEFAULT_TAPS, max_mid_channels=MAX_MID_CHANNELS, warmup_epochs=20, name=None):
        if isinstance(taps, str) or not isinstance(taps, (list, tuple)) or not taps:
            raise UsageError(f"`taps` must be a non-empty list of tap names. Received: taps={taps!r}")
        for tap in taps:
            check_tap("taps", tap)
        if len(set(taps)) != len(taps):
            raise UsageError(f"`taps` has a repeated tap. Received: taps={taps!r}")
        if EMBEDDING in taps[:-1]:
            raise UsageError(f"'{EMBEDDING}' is the deepest level: list it last in `taps`. Received: taps={taps!r}")
        for arg_name, value, minimum in (("max_mid_channels", max_mid_channels, 1),
                                         ("warmup_epochs", warmup_epochs, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise UsageError(f"`{arg_name}` must be an integer >= {minimum}. Received: {arg_name}={value!r}")
        super().__init__(name=name)
        self.taps = tuple(taps)
        self.max_mid_channels = int(max_mid_channels)
        self.warmup_epochs = int(warmup_epochs)
        self.abfs = []

    @classmethod
    def from_settings(cls, settings, temperature=None):
        return cls(taps=settings.taps, max_mid_channels=settings.max_mid_channels, warmup_epochs=settings.warmup)

    # ----------------------------------------------------------- parts
    def _map_shape(self, tap, shape, side):
        """``(H, W, C)`` of a tap's shape (the embedding ``(B, D)`` as ``(1, 1, D)``)."""
        shape = tuple(None if d is None else int(d) for d in shape)
        if tap == EMBEDDING and len(shape) == 2:
            shape = (shape[0], 1, 1, shape[1])
        if len(shape) != 4 or None in shape[1:]:
            raise UsageError(f"ReviewKD reads (B, H, W, C) maps of known size (or the (B, D) embedding). "
                             f"Received: {side} {tap!r} of shape {shape}.")
        return shape[1:]

    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates one ABF module per level from ``{tap: shape}`` of both models.

        Raises:
            UsageError: a shape is not a map's, the student's sizes grow from
                one tap to the next, or a teacher map's size is not divisible
                by a pooled size HCL uses.
            ValueError: a tap's shape is missing.
        """
        for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
            missing = [tap for tap in self.taps if tap not in shapes]
            if missing:
                raise ValueError(f"ReviewKD needs the {side} shapes of {missing!r}.")
        levels = []
        for tap in self.taps:
            levels.append((tap, self._map_shape(tap, student_shapes[tap], "student"),
                           self._map_shape(tap, teacher_shapes[tap], "teacher")))
        for (tap, s_shape, _), (deeper, d_shape, _) in zip(levels, levels[1:]):
            if d_shape[0] > s_shape[0] or d_shape[1] > s_shape[1]:
                raise UsageError(f"ReviewKD's taps go from shallow to deep: the student's {deeper!r} "
                                 f"({d_shape[0]}x{d_shape[1]}) is larger than its {tap!r} ({s_shape[0]}x{s_shape[1]}).")
        for tap, _, (height, width, _) in levels:
            for k in pool_sizes(height):
                if height % k or width % k:
                    raise UsageError(f"ReviewKD pools the teacher's {tap!r} ({height}x{width}) to {k}x{k}: "
                                     f"its size must be divisible by {k}.")
        if self.abfs:
            self.built = True
            return
        mid_channels = min(self.max_mid_channels, levels[-1][1][-1])
        abfs, residual_shape = [], None
        for tap, s_shape, t_shape in reversed(levels):  # the review: deepest first
            abfs.insert(0, make_abf(f"{self.name}_abf_{tap}", s_shape, mid_channels, t_shape, residual_shape))
            residual_shape = (t_shape[0], t_shape[1], mid_channels)
        self.abfs = abfs  # in the order of `taps`
        self.built = True

    @property
    def adapters(self):
        return tuple(self.abfs)

    # ----------------------------------------------------------- the loss
    def _maps(self, outputs, side):
        """The float32 ``(B, H, W, C)`` maps of the taps, in the order of ``taps``."""
        outputs = self.read(outputs, side)
        maps = []
        for tap in self.taps:
            x = as_float32(outputs[tap])
            if tap == EMBEDDING and len(x.shape) == 2:
                x = ops.reshape(x, (-1, 1, 1, int(x.shape[-1])))
            maps.append(x)
        return maps

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None):
        teacher = [ops.stop_gradient(t) for t in self._maps(teacher_outputs, "teacher")]
        student = self._maps(student_outputs, "student")
        if not self.built:
            self.build_adapters({tap: tuple(s.shape) for tap, s in zip(self.taps, student)},
                                {tap: tuple(t.shape) for tap, t in zip(self.taps, teacher)})
        total, residual = 0.0, None
        for abf, s, t in reversed(list(zip(self.abfs, student, teacher))):  # deepest first
            fused, residual = abf([s] if residual is None else [s, residual], training=training)
            total = total + hcl(fused, t)
        return total

    def get_config(self):
        return {**super().get_config(), "taps": list(self.taps), "max_mid_channels": self.max_mid_channels,
                "warmup_epochs": self.warmup_epochs}
