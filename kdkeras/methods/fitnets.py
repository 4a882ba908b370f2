"""FitNets: Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

Regression of one teacher feature map (the hint) from the student's, through
an adapter (see :class:`FitNets`).
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.methods.base import FeatureMethod, as_float32, check_tap, same_spatial, setting

SOURCE = "Romero et al. 2015; mdistiller's CIFAR config (HINT_LAYER 2)"


@dataclasses.dataclass(frozen=True)
class FitNetsSettings:
    hint_tap: str = setting("stage2", "the stage of the hint, e.g. stage2", flag="hint_tap", source=SOURCE)
    adapter: str = setting("always", "always: a 1x1 conv + BN regressor (Romero et al.); if_needed: none when "
                           "the channel counts match", choices=("always", "if_needed"), source=SOURCE)


@keras.saving.register_keras_serializable(package="kdkeras")
class FitNets(FeatureMethod):
    """Hint regression of FitNets (Romero et al., ICLR 2015), per example.

    With the student's feature map ``S`` and the teacher's ``T`` at the hint
    tap, both ``(B, H, W, C)``, and the adapter ``r`` (Romero et al.'s
    regressor: a 1x1 convolution to the teacher's channels, then
    BatchNormalization):

        fitnets = mean over (H, W, C_teacher) of (r(S) - T)^2

    whose batch mean is mdistiller's ``F.mse_loss(r(S), T)``. Defaults: the
    hint at ``"stage2"`` (the middle stage of a three-stage WRN, mdistiller's
    ``HINT_LAYER = 2``), weight 100 and cross-entropy weight 1 (mdistiller's
    CIFAR config, ``FITNET.LOSS.FEAT_WEIGHT``). Romero et al. train the hint
    in a separate first stage; mdistiller and kdkeras add it to the
    student's objective in one stage.

    The adapter is :func:`kdkeras.models.make_adapter`: 1x1 conv (no bias)
    + BatchNormalization (PyTorch's momentum and epsilon, synchronized
    across replicas), float32; unlike mdistiller's ``ConvReg`` it has no
    ReLU, because the stage outputs of pre-activation nets (WRN) are not
    rectified. Student and teacher maps must have the same spatial size. It
    is built by ``build_adapters`` (or on the first call, from the tensors'
    shapes) and is not part of the student; build it before compiling so
    that the optimizer sees its variables.

    Args:
        hint_tap: the stage of the hint. Defaults to ``"stage2"``.
        adapter: ``"always"`` (default: Romero et al. always regress) or
            ``"if_needed"`` (no adapter when the channel counts match).
        teacher_layer_name, student_layer_name: for Keras's own
            ``keras.distillation.Distiller`` only, which extracts one layer
            output per term by layer name; kdkeras's distiller uses the tap.
        name: layer name.
    """

    method = "fitnets"
    paper = "Romero, Ballas, Kahou, Chassang, Gatta and Bengio, FitNets: Hints for Thin Deep Nets, ICLR 2015"
    reads = "one stage tap"
    parts = "adapter: 1x1 conv + BN"
    Settings = FitNetsSettings
    default_weight = 100.0
    default_ce_weight = 1.0
    ADAPTER_MODES = ("always", "if_needed")

    def __init__(
        self,
        hint_tap="stage2",
        adapter="always",
        teacher_layer_name=None,
        student_layer_name=None,
        name=None,
    ):
        check_tap("hint_tap", hint_tap)
        if adapter not in self.ADAPTER_MODES:
            raise UsageError(
                f"`adapter` must be one of {self.ADAPTER_MODES}. "
                f"Received: adapter={adapter!r}"
            )
        super().__init__(name=name)
        self.init_feature_taps((hint_tap,), teacher_layer_name, student_layer_name)
        self.hint_tap = hint_tap
        self.adapter_mode = adapter
        self.adapter = None

    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates the adapter from ``{hint_tap: (B, H, W, C)}`` shapes.

        Raises:
            UsageError: if the spatial sizes differ.
            ValueError: if a shape of the hint tap is missing.
        """
        tap = self.hint_tap
        for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
            if tap not in shapes:
                raise ValueError(f"FitNets needs the {side} shape of {tap!r}.")
        s_shape, t_shape = tuple(student_shapes[tap]), tuple(teacher_shapes[tap])
        if len(s_shape) != 4 or len(t_shape) != 4:
            raise UsageError(
                f"FitNets hints are (B, H, W, C) maps. Received: student "
                f"{s_shape}, teacher {t_shape} at {tap!r}"
            )
        if not same_spatial(s_shape, t_shape):
            raise UsageError(
                f"FitNets needs the same spatial size for student and teacher at "
                f"{tap!r}. Received: student {s_shape}, teacher {t_shape}"
            )
        if self.adapter is not None:
            self.built = True
            return
        if self.adapter_mode == "if_needed" and s_shape[-1] == t_shape[-1]:
            self.built = True
            return
        from kdkeras.models.taps import make_adapter

        adapter = make_adapter(s_shape, t_shape, name=f"{self.name}_adapter")
        self.adapter = adapter
        self.built = True

    @property
    def adapters(self):
        return () if self.adapter is None else (self.adapter,)

    def validate_model_compatibility(self, teacher, student):
        """With layer names (Keras's ``Distiller``): checks them, builds the adapter."""
        if self.teacher_layer_name is not None:
            student_shapes, teacher_shapes = self.keras_tap_shapes(teacher, student)
            self.build_adapters(student_shapes, teacher_shapes)

    def per_example_loss(
        self, teacher_outputs, student_outputs, labels=None, training=None
    ):
        tap = self.hint_tap
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[tap]))
        s = as_float32(self.read(student_outputs, "student")[tap])
        if not self.built:
            self.build_adapters({tap: tuple(s.shape)}, {tap: tuple(t.shape)})
        if self.adapter is not None:
            s = self.adapter(s, training=training)
        if tuple(s.shape[1:]) != tuple(t.shape[1:]) and None not in tuple(s.shape[1:]) + tuple(t.shape[1:]):
            raise UsageError(
                f"FitNets: the student hint at {tap!r} has shape {tuple(s.shape)} "
                f"(after the adapter), the teacher's {tuple(t.shape)}."
            )
        return ops.mean(ops.square(s - t), axis=(1, 2, 3))

    def get_config(self):
        return {
            **super().get_config(),
            "hint_tap": self.hint_tap,
            "adapter": self.adapter_mode,
        }
