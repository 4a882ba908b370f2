"""VID: Ahn, Hu, Damianou, Lawrence and Dai, "Variational Information Distillation for Knowledge Transfer" (CVPR 2019).

The negative log-likelihood of the teacher's feature map under a Gaussian
whose mean a regressor predicts from the student's map, with a learnt
variance per teacher channel (see :class:`VID`).
"""

from __future__ import annotations

import dataclasses
import math

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.methods.base import FeatureMethod, as_float32, check_number, check_tap, same_spatial, setting

SOURCE = "Ahn et al. 2019; RepDistiller's VIDLoss and mdistiller's VID config"


@dataclasses.dataclass(frozen=True)
class VIDSettings:
    taps: tuple[str, ...] = setting(("stage1", "stage2", "stage3"), "the stages whose teacher maps are "
                                    "predicted from the student's", source=SOURCE + " (feat[1:-1])")
    init_var: float = setting(5.0, "the initial variance of every teacher channel", minimum=0.0,
                              exclusive_minimum=True, source=SOURCE + " (init_pred_var)")
    eps: float = setting(1e-5, "the floor added to the variance, softplus(alpha) + eps", minimum=0.0,
                         exclusive_minimum=True, source=SOURCE + " (eps)")


def inverse_softplus(y):
    """``x`` with ``softplus(x) = log(1 + exp(x)) = y`` (``y > 0``), without overflow for large ``y``."""
    return y + math.log(-math.expm1(-y))


class VIDHead(keras.layers.Layer):
    """One tap's trainable parts: the regressor of the mean and the variance's parameter.

    The regressor is RepDistiller's: 1x1 conv (student -> mid channels), ReLU,
    1x1 conv (mid -> mid), ReLU, 1x1 conv (mid -> teacher channels), no bias
    and no BatchNormalization, with PyTorch's default ``Conv2d`` initialisation
    (uniform in ``+-1/sqrt(fan_in)``, Keras's ``VarianceScaling(1/3, "fan_in",
    "uniform")``). ``alpha`` has one entry per teacher channel and the
    variance is ``softplus(alpha) + eps``. Float32.
    """

    def __init__(self, student_channels, mid_channels, teacher_channels, init_var=5.0, eps=1e-5, name=None):
        super().__init__(name=name, dtype="float32")
        self.init_var, self.eps = float(init_var), float(eps)
        self.channels = (int(student_channels), int(mid_channels), int(teacher_channels))
        init = keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
        self.convs = [keras.layers.Conv2D(c, 1, use_bias=False, kernel_initializer=init, dtype="float32",
                                          name=f"{self.name}_conv{i + 1}")
                      for i, c in enumerate((self.channels[1], self.channels[1], self.channels[2]))]
        self.alpha = self.add_weight(shape=(self.channels[2],), name="alpha", dtype="float32",
                                     initializer=keras.initializers.Constant(inverse_softplus(init_var - eps)))
        for conv, c in zip(self.convs, (self.channels[0], self.channels[1], self.channels[1])):
            conv.build((None, None, None, c))
        self.built = True

    def mean(self, student_features):
        """``mu``: the regressor on the student's map, float32 ``(B, H, W, C_teacher)``."""
        x = as_float32(student_features)
        x = ops.relu(self.convs[0](x))
        x = ops.relu(self.convs[1](x))
        return self.convs[2](x)

    def variance(self):
        """``sigma^2 = softplus(alpha) + eps``, float32 ``(C_teacher,)``."""
        return ops.softplus(self.alpha) + self.eps

    def call(self, student_features):
        return self.mean(student_features)


@keras.saving.register_keras_serializable(package="kdkeras")
class VID(FeatureMethod):
    """Variational information distillation (Ahn et al., CVPR 2019), per example.

    At each tap, a regressor ``r`` (see :class:`VIDHead`) maps the student's
    map ``S`` to the mean ``mu = r(S)`` of a Gaussian over the teacher's map
    ``T`` (both ``(H, W, C_T)`` after ``r``), with one variance per teacher
    channel ``c``,

        sigma_c^2 = softplus(alpha_c) + eps,

    and VID is the negative log-likelihood of ``T`` (the paper's variational
    lower bound on the mutual information, its eq. 6), averaged:

        vid = sum over taps of mean over (H, W, C_T) of
              0.5 * (log sigma_c^2 + (T - mu)^2 / sigma_c^2)

    per example; its batch mean is RepDistiller's and mdistiller's
    ``torch.mean(neg_log_prob)`` summed over the taps. Like them (and the
    authors' code they take it from), the constant ``0.5 * log(2 pi)`` of
    the Gaussian is left out and the paper's sum over positions and channels
    is a mean, so the reference weight applies; the term can be negative.
    The teacher side is under ``stop_gradient``; the regressor and ``alpha``
    train with the student.

    Defaults (RepDistiller's ``VIDLoss`` and CIFAR-100 script, mdistiller's
    ``VID`` config): the taps ``("stage1", "stage2", "stage3")``, every stage
    output of a WRN (``feat[1:-1]`` / ``feats[1:]``); the regressor's middle
    width is the teacher's channel count (``VIDLoss(s, t, t)``); the initial
    variance ``init_var = 5`` (``alpha`` starts at
    ``softplus^-1(init_var - eps)``); ``eps = 1e-5``; weight 1 and
    cross-entropy weight 1 (``-b 1 -r 1``, ``VID.LOSS.FEAT_WEIGHT = 1``).

    Deviation: the reference codes average-pool the larger map to the
    smaller's size; here student and teacher maps at a tap must have the same
    spatial size (a one-line error otherwise), as in kdkeras's other feature
    methods.

    The parts are built by ``build_adapters`` (or on the first call, from the
    tensors' shapes); build them before compiling so that the optimizer sees
    their variables.

    Args:
        taps: the stages, by default ``("stage1", "stage2", "stage3")``.
        init_var: the initial variance, a number > ``eps``. Defaults to 5.
        eps: the variance's floor, a number > 0. Defaults to 1e-5.
        teacher_layer_name, student_layer_name: for Keras's own
            ``keras.distillation.Distiller`` only (one layer per term, so one
            tap).
        name: layer name.
    """

    method = "vid"
    paper = ("Ahn, Hu, Damianou, Lawrence and Dai, Variational Information Distillation for Knowledge Transfer, "
             "CVPR 2019")
    reads = "stage taps"
    parts = "per tap: regressor 1x1 conv-ReLU-1x1 conv-ReLU-1x1 conv, a variance per teacher channel"
    Settings = VIDSettings
    default_weight = 1.0
    default_ce_weight = 1.0

    def __init__(
        self,
        taps=("stage1", "stage2", "stage3"),
        init_var=5.0,
        eps=1e-5,
        teacher_layer_name=None,
        student_layer_name=None,
        name=None,
    ):
        if isinstance(taps, str) or not taps:
            raise UsageError(f"`taps` must be a non-empty list of stage names. Received: taps={taps!r}")
        for tap in taps:
            check_tap("taps", tap)
        if len(set(taps)) != len(taps):
            raise UsageError(f"`taps` has a repeated stage. Received: taps={taps!r}")
        check_number("eps", eps, strict=True)
        check_number("init_var", init_var, minimum=eps, strict=True)
        super().__init__(name=name)
        self.init_feature_taps(tuple(taps), teacher_layer_name, student_layer_name)
        self.init_var = float(init_var)
        self.eps = float(eps)
        self.heads = []

    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates one :class:`VIDHead` per tap from ``{tap: (B, H, W, C)}`` shapes.

        Raises:
            UsageError: if a tap is not a ``(B, H, W, C)`` map or the spatial sizes differ.
            ValueError: if a shape of a tap is missing.
        """
        if self.heads:
            self.built = True
            return
        sizes = []
        for tap in self.taps:
            for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
                if tap not in shapes:
                    raise ValueError(f"VID needs the {side} shape of {tap!r}.")
            s_shape, t_shape = tuple(student_shapes[tap]), tuple(teacher_shapes[tap])
            self.check_maps(tap, s_shape, t_shape)
            if s_shape[-1] is None or t_shape[-1] is None:
                raise UsageError(f"VID needs known channel counts at {tap!r}. "
                                 f"Received: student {s_shape}, teacher {t_shape}")
            sizes.append((s_shape[-1], t_shape[-1]))
        self.heads = [VIDHead(cs, ct, ct, init_var=self.init_var, eps=self.eps, name=f"{self.name}_{tap}")
                      for tap, (cs, ct) in zip(self.taps, sizes)]
        self.built = True

    @property
    def adapters(self):
        return tuple(self.heads)

    def validate_model_compatibility(self, teacher, student):
        """With layer names (Keras's ``Distiller``): checks them, builds the parts."""
        if self.teacher_layer_name is not None:
            student_shapes, teacher_shapes = self.keras_tap_shapes(teacher, student)
            self.build_adapters(student_shapes, teacher_shapes)

    def per_example_loss(
        self, teacher_outputs, student_outputs, labels=None, training=None
    ):
        teacher_outputs = self.read(teacher_outputs, "teacher")
        student_outputs = self.read(student_outputs, "student")
        if not self.heads:
            self.build_adapters({k: tuple(student_outputs[k].shape) for k in self.taps},
                                {k: tuple(teacher_outputs[k].shape) for k in self.taps})
        total = 0.0
        for tap, head in zip(self.taps, self.heads):
            t = ops.stop_gradient(as_float32(teacher_outputs[tap]))
            s = as_float32(student_outputs[tap])
            self.check_maps(tap, tuple(s.shape), tuple(t.shape))
            mu = head.mean(s)
            if tuple(mu.shape[1:]) != tuple(t.shape[1:]) and None not in tuple(mu.shape[1:]) + tuple(t.shape[1:]):
                raise UsageError(f"VID: the prediction at {tap!r} has shape {tuple(mu.shape)}, the teacher's map "
                                 f"{tuple(t.shape)} (the parts were built for other shapes).")
            var = head.variance()
            nll = 0.5 * (ops.log(var) + ops.square(t - mu) / var)
            total = total + ops.mean(nll, axis=(1, 2, 3))
        return total

    def get_config(self):
        return {**super().get_config(), "taps": list(self.taps), "init_var": self.init_var, "eps": self.eps}
