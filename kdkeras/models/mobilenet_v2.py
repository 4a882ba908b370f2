"""MobileNetV2 (Sandler et al., 2018), CIFAR layout, with grouped 3x3 convs.

docs/models.md, "Architectures": the depthwise 3x3 convolution of every inverted-residual block
is replaced by a grouped 3x3 convolution; all convolutions have biases.

* Stem: ZeroPadding(1) then 1x1 conv 3 -> 32 (so the maps are 34x34), BN, ReLU6.
* Blocks (t, c, n, s): (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1)
  (6,160,3,1) (6,320,1,1); spatial size 34 -> 34 -> 17 -> 9 -> 5 -> 5 -> 5 -> 5.
* Block: 1x1 cin -> cin*t, BN, ReLU6, grouped 3x3 (stride s), BN, ReLU6,
  1x1 -> c, BN. The expansion 1x1 exists even when t = 1. R adds the input
  only when s = 1 and cin = c (no projection), so R and NR have the same
  parameter and FLOP counts.
* Head: 1x1 320 -> 1280, BN, ReLU6, global average pool, Dense.
"""

from __future__ import annotations

import keras

from kdkeras.models.blocks import batch_norm, conv
from kdkeras.models.registry import register_family, register_net

#: The paper's MobileNetV2 schedule (section 5): lr x 0.98 after every epoch;
#: KD students train for 300 epochs instead of 120.
RECIPE = {"lr_schedule": "exponential", "lr_milestones": (), "lr_gamma": 0.98, "distill_epochs": 300}
register_family("mobilenetv2", recipe=RECIPE)

#: (expansion t, output channels c, repeats n, first stride s)
_BLOCK_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 1),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


def mobilenet_v2_grouped_channels():
    """Channels of every grouped 3x3 conv of MobileNetV2 (cin * t), in order."""
    channels, cin = [], _STEM_CHANNELS
    for t, c, n, _ in _BLOCK_SETTINGS:
        for _ in range(n):
            channels.append(cin * t)
            cin = c
    return channels


def apply_inverted_residual_block(x, expansion, filters, strides, spec, residual, name):
    """One inverted-residual block with a grouped 3x3 convolution.

    Args:
        x: tensor `(batch, H, W, cin)`.
        expansion: expansion factor t.
        filters: output channels c.
        strides: stride of the grouped 3x3 convolution.
        spec: the model's :class:`~kdkeras.models.registry.ModelSpec`.
        residual: add the identity (only applied when s = 1 and cin = c).
        name: layer-name prefix.

    Returns:
        Tensor `(batch, ceil(H / strides), ceil(W / strides), filters)`.
    """
    cin = x.shape[-1]
    hidden = cin * expansion
    h = conv(x, hidden, 1, use_bias=True, name=f"{name}_expand_conv")
    h = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(batch_norm(h, f"{name}_expand_bn"))
    h = conv(h, hidden, 3, strides, spec.groups_for(hidden), True, name=f"{name}_gconv")
    h = keras.layers.ReLU(6.0, name=f"{name}_gconv_relu")(batch_norm(h, f"{name}_gconv_bn"))
    h = conv(h, filters, 1, use_bias=True, name=f"{name}_project_conv")
    h = batch_norm(h, f"{name}_project_bn")
    if residual and strides == 1 and cin == filters:
        h = keras.layers.Add(name=f"{name}_add")([h, x])
    return h


def mobilenet_v2(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds the CIFAR MobileNetV2 with the grouping and residual flag of ``spec``.

    Args:
        spec: :class:`~kdkeras.models.registry.ModelSpec`.
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits
        `(batch, num_classes)`.
    """
    for channels in mobilenet_v2_grouped_channels():
        spec.groups_for(channels)  # validate before building anything
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.ZeroPadding2D(1, name="stem_pad")(inputs)  # 32x32 -> 34x34
    x = conv(x, _STEM_CHANNELS, 1, use_bias=True, name="stem_conv")
    x = keras.layers.ReLU(6.0, name="stem_relu")(batch_norm(x, "stem_bn"))
    for stage, (t, c, n, s) in enumerate(_BLOCK_SETTINGS, start=1):
        for block in range(1, n + 1):
            x = apply_inverted_residual_block(
                x, t, c, s if block == 1 else 1, spec, spec.residual,
                name=f"stage{stage}_block{block}",
            )
    x = conv(x, _HEAD_CHANNELS, 1, use_bias=True, name="head_conv")
    x = keras.layers.ReLU(6.0, name="head_relu")(batch_norm(x, "head_bn"))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or "mobilenetv2")


@register_net(mobilenet_v2_grouped_channels, "mobilenetv2")
def mobilenetv2(**kwargs):
    """MobileNetV2 for CIFAR (paper Table 2)."""
    return mobilenet_v2(**kwargs)
