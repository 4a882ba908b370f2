"""ResNet-18 for CIFAR (He et al., 2016) with grouped units.

docs/models.md, "Architectures": post-activation BasicBlocks; stem 3x3 conv 3 -> 64, stride 1,
BN, ReLU, no max-pool; stages 64/128/256/512 x 2 blocks with strides
1/2/2/2; no convolution biases. Each 3x3 convolution of a block is replaced
by the grouped unit ``U`` (paper appendix A.2)::

    h = BN(U(ReLU(BN(U(x, cin -> cout, s))), cout -> cout, 1))
    R:  out = ReLU(h + BN(Conv1x1(stride s)(x)))   on the 3 downsampling blocks
        out = ReLU(h + x)                          elsewhere
    NR: out = ReLU(h)
"""

from __future__ import annotations

import keras

from kdkeras.models.blocks import apply_grouped_unit, batch_norm, conv
from kdkeras.models.registry import register_family, register_net

#: The paper's ResNet-18 schedule (section 5): lr / 10 at epochs 30, 60 and 90 of 120.
RECIPE = {"lr_schedule": "step", "lr_milestones": (30, 60, 90), "lr_gamma": 0.1}
register_family("resnet18", recipe=RECIPE)

_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))
_BLOCKS_PER_STAGE = 2


def resnet18_grouped_channels():
    """Input channels of every grouped 3x3 conv of ResNet-18, in order."""
    channels, cin = [], 64
    for cout, _ in _STAGES:
        for _ in range(_BLOCKS_PER_STAGE):
            channels += [cin, cout]
            cin = cout
    return channels


def apply_basic_block(x, filters, strides, spec, residual, name):
    """One post-activation BasicBlock of two grouped units.

    Args:
        x: tensor `(batch, H, W, cin)`.
        filters: output channels.
        strides: stride of the first unit and of the projection shortcut.
        spec: the model's :class:`~kdkeras.models.registry.ModelSpec`.
        residual: add the shortcut (R) or not (NR).
        name: layer-name prefix.

    Returns:
        Tensor `(batch, H / strides, W / strides, filters)`.
    """
    h = apply_grouped_unit(x, filters, strides, spec, name=f"{name}_unit1")
    h = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(h, f"{name}_bn1"))
    h = apply_grouped_unit(h, filters, 1, spec, name=f"{name}_unit2")
    h = batch_norm(h, f"{name}_bn2")
    if residual:
        if strides != 1 or x.shape[-1] != filters:
            shortcut = conv(x, filters, 1, strides, name=f"{name}_shortcut_conv")
            shortcut = batch_norm(shortcut, f"{name}_shortcut_bn")
        else:
            shortcut = x
        h = keras.layers.Add(name=f"{name}_add")([h, shortcut])
    return keras.layers.ReLU(name=f"{name}_out_relu")(h)


def resnet(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds the CIFAR ResNet-18 with the grouping and residual flag of ``spec``.

    Args:
        spec: :class:`~kdkeras.models.registry.ModelSpec`.
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits
        `(batch, num_classes)`.
    """
    for channels in resnet18_grouped_channels():
        spec.groups_for(channels)  # validate before building anything
    inputs = keras.Input(shape=input_shape, name="images")
    x = conv(inputs, 64, 3, name="stem_conv")
    x = keras.layers.ReLU(name="stem_relu")(batch_norm(x, "stem_bn"))
    for stage, (filters, strides) in enumerate(_STAGES, start=1):
        for block in range(1, _BLOCKS_PER_STAGE + 1):
            x = apply_basic_block(
                x,
                filters,
                strides if block == 1 else 1,
                spec,
                spec.residual,
                name=f"stage{stage}_block{block}",
            )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or "resnet18")


@register_net(resnet18_grouped_channels, "resnet18")
def resnet18(**kwargs):
    """ResNet-18 for CIFAR (paper Table 1)."""
    return resnet(**kwargs)
