"""RepDistiller's MobileNetV2 ``mobile_half``: net ``MobileNetV2`` (family ``mobilenetv2_half``).

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
(CVPR 2018), in the CIFAR form the CRD authors use as a student
(Tian et al., "Contrastive Representation Distillation", ICLR 2020):
RepDistiller's ``models/mobilenetv2.py``, ``mobile_half`` = expansion
``T = 6``, width multiplier 0.5 (mdistiller's
``mdistiller/models/cifar/mobilenetv2.py`` is the same network). Exact to that
code, so its checkpoints convert with
:func:`kdkeras.models.torch_weights.assign_state_dict`.

This is not the paper zoo's ``mobilenetv2`` (:mod:`kdkeras.models.mobilenet_v2`,
width 1, 1x1 stem, ReLU6, biases, grouped 3x3 convolutions); the two differ in
every stage. The standard-zoo name is ``MobileNetV2`` (R) / ``MobileNetV2_NR``.

* stem ``conv1``: 3x3 conv ``3 -> 16``, stride 2, BN, ReLU (32x32 -> 16x16);
* 7 groups ``blocks.0`` .. ``blocks.6`` of inverted-residual blocks, rows
  ``(t, c, n, s)`` = (1, 8, 1, 1) (6, 12, 2, 1) (6, 16, 3, 2) (6, 32, 4, 2)
  (6, 48, 3, 1) (6, 80, 3, 2) (6, 160, 1, 1) (the reference's channels times 0.5);
* block: 1x1 conv ``cin -> cin t``, BN, ReLU; depthwise 3x3 (stride s), BN,
  ReLU; 1x1 conv ``-> c``, BN (linear bottleneck; the expansion conv is there
  even when ``t = 1``). R adds the input where ``s = 1`` and ``cin = c``
  (no projection shortcut anywhere), NR never: R and NR have the same
  parameters (812,836 at 100 classes) and MACs;
* head ``conv2``: 1x1 conv ``160 -> 1280``, BN, ReLU; global average pooling
  (the reference's ``AvgPool2d(input_size // 16, ceil_mode=True)``, global at
  the input sizes it accepts, multiples of 32); Dense ``classifier.0``.

ReLU, not ReLU6; no convolution has a bias. Every strided 3x3 convolution pads
one pixel on every side (``ZeroPadding2D(1)`` + ``"valid"``, PyTorch's
``padding=1``); the depthwise convolutions are
:class:`~kdkeras.layers.GroupedConv2D` with ``groups = channels``.

Layer names follow the reference modules: ``conv1_0`` / ``conv1_1`` (stem conv
/ BN), ``blocks_{g}_{b}_conv_{k}`` with ``k`` = 0, 1 (expansion conv, BN),
3, 4 (depthwise, BN), 6, 7 (projection, BN), ``conv2_0`` / ``conv2_1``,
``classifier_0``; without weights: ``conv1_pad``, ``stem_relu``,
``blocks_{g}_{b}_relu1`` / ``_pad`` / ``_relu2`` / ``_add``, ``conv2_relu``,
``avgpool``.

Feature taps (RepDistiller's ``feat`` list ``f0``..``f4``), at 32x32 inputs:
``stem`` 16x16x16 (``stem_relu``), ``stage1`` 16x16x12 (end of ``blocks.1``),
``stage2`` 8x8x16 (``blocks.2``), ``stage3`` 4x4x48 (``blocks.4``),
``stage4`` 2x2x160 (``blocks.6``): the last block's ``_add`` where it has its
identity (R), else its last BN ``_conv_7``. No ``_preact`` taps: a block ends
in its BN (linear bottleneck), with no ReLU after the sum.
"""

from __future__ import annotations

import keras

from kdkeras.models.blocks import batch_norm, torch_conv
from kdkeras.models.registry import register_family, register_net

FAMILY = "mobilenetv2_half"
#: RepDistiller's rows ``(t, c, n, s)`` of ``interverted_residual_setting`` (width 1).
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
#: ``mobile_half``: expansion of the rows with ``t > 1`` and width multiplier.
EXPANSION = 6
WIDTH = 0.5
LAST_CHANNELS = 1280
#: The groups whose last block's output is a feature tap (RepDistiller's ``f1``..``f4``).
TAP_GROUPS = (1, 2, 4, 6)


def apply_inverted_residual(x, filters, strides, expansion, residual, name):
    """RepDistiller's ``InvertedResidual`` (``name`` is its module path, e.g. ``blocks_2_0``).

    Args:
        x: tensor `(batch, H, W, cin)`.
        filters: output channels.
        strides: stride of the depthwise convolution.
        expansion: ``t``.
        residual: add the input where ``strides == 1`` and ``cin == filters`` (R).
        name: layer-name prefix.

    Returns:
        Tensor `(batch, H / strides, W / strides, filters)`.
    """
    cin = x.shape[-1]
    hidden = cin * expansion
    h = torch_conv(x, hidden, 1, name=f"{name}_conv_0")
    h = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(h, f"{name}_conv_1"))
    h = torch_conv(h, hidden, 3, strides, groups=hidden, name=f"{name}_conv_3", pad_name=f"{name}_pad")
    h = keras.layers.ReLU(name=f"{name}_relu2")(batch_norm(h, f"{name}_conv_4"))
    h = torch_conv(h, filters, 1, name=f"{name}_conv_6")
    h = batch_norm(h, f"{name}_conv_7")
    if residual and strides == 1 and cin == filters:
        h = keras.layers.Add(name=f"{name}_add")([x, h])
    return h


def mobilenet_half(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds RepDistiller's ``mobile_half`` (R, or NR without the identity adds).

    Args:
        spec: :class:`~kdkeras.models.registry.ModelSpec` (``spec.residual``).
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits `(batch, num_classes)`.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    cin = int(32 * WIDTH)
    x = torch_conv(inputs, cin, 3, 2, name="conv1_0", pad_name="conv1_pad")
    x = keras.layers.ReLU(name="stem_relu")(batch_norm(x, "conv1_1"))
    for group, (t, c, n, s) in enumerate(SETTINGS):
        t = EXPANSION if t > 1 else t
        for block in range(n):
            x = apply_inverted_residual(x, int(c * WIDTH), s if block == 0 else 1, t, spec.residual,
                                        name=f"blocks_{group}_{block}")
    x = torch_conv(x, LAST_CHANNELS, 1, name="conv2_0")
    x = keras.layers.ReLU(name="conv2_relu")(batch_norm(x, "conv2_1"))
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
                                 name="classifier_0")(x)
    return keras.Model(inputs, outputs, name=name or "MobileNetV2")


def mobilenet_half_taps(model):
    """``{tap: layer}``: ``stem``, ``stage1``..``stage4`` (RepDistiller's ``f0``..``f4``; see the module docstring)."""
    names = {layer.name for layer in model.layers}
    taps = {"stem": "stem_relu"}
    for stage, group in enumerate(TAP_GROUPS, start=1):
        block = f"blocks_{group}_{SETTINGS[group][2] - 1}"
        taps[f"stage{stage}"] = f"{block}_add" if f"{block}_add" in names else f"{block}_conv_7"
    return taps


register_family(FAMILY, recipe={"recipe": "crd", "crd_lr": 0.01}, taps=mobilenet_half_taps)


@register_net(lambda: [], FAMILY, name="MobileNetV2", standard=True, residual=("R", "NR"))
def mobilenetv2_half(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """RepDistiller's ``mobile_half`` (``MobileNetV2``; ``MobileNetV2_NR`` without the identity adds)."""
    return mobilenet_half(spec, num_classes, input_shape, name)
