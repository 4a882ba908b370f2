"""ResNet50 of the KD zoo (family ``resnet_bottleneck``).

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), the
50-layer bottleneck network in its CIFAR form, as implemented by the CRD
authors in RepDistiller's ``models/resnetv2.py`` (Tian et al., "Contrastive
Representation Distillation", ICLR 2020; the ImageNet stem's 7x7 stride-2
conv and max-pool are a 3x3 stride-1 conv). Exact to that code, so its
checkpoints convert with :func:`kdkeras.models.torch_weights.assign_state_dict`:

* stem: 3x3 conv ``3 -> 64`` (stride 1, no bias), BN, ReLU;
* four stages ``layer1``..``layer4`` of 3, 4, 6, 3 Bottleneck blocks with
  ``planes`` 64, 128, 256, 512 (outputs ``4 * planes``), strides 1, 2, 2, 2 on
  each stage's first block;
* block: ``h = BN(conv1x1(ReLU(BN(conv3x3(ReLU(BN(conv1x1(x))), stride s)))))``
  (``conv1``/``bn1``, ``conv2``/``bn2``, ``conv3``/``bn3``); R:
  ``out = ReLU(h + shortcut(x))`` with the ``shortcut`` = 1x1 conv (stride s) +
  BN on each stage's first block (the channels change there), else the
  identity; NR: ``out = ReLU(h)`` (the add and every projection shortcut removed);
* head: global average pooling and the Dense classifier ``linear``.

No convolution has a bias. The stride-2 3x3 convolutions pad one pixel on
every side (``ZeroPadding2D(1)`` + ``"valid"``, as PyTorch's ``padding=1``).

Layer names follow the reference modules (``conv1``, ``bn1``,
``layer2_0_conv2``, ``layer2_0_shortcut_0``, ``linear``, ...); the layers
without weights are ``stem_relu``, ``layer{s}_{b}_pad2``, ``layer{s}_{b}_relu1``,
``layer{s}_{b}_relu2``, ``layer{s}_{b}_add``, ``layer{s}_{b}_out_relu`` and ``avgpool``.

Parameters (num_classes=100): R 23,705,252; NR 20,928,676.

Feature taps (RepDistiller's ``feat`` list), shapes at 32x32 inputs:
``stem`` (``f0``, 32x32x64, ``stem_relu``), ``stage1`` (``f1``, 32x32x256),
``stage2`` (``f2``, 16x16x512), ``stage3`` (``f3``, 8x8x1024), ``stage4``
(``f4``, 4x4x2048), each the ``out_relu`` of the stage's last block, then
``stage1_preact`` .. ``stage4_preact`` (``preact=True``: the same blocks before
their last ReLU, at the ``add`` (R) or at ``bn3`` (NR)).
"""

from __future__ import annotations

import keras

from kdkeras.models.blocks import batch_norm, torch_conv, torch_initializer
from kdkeras.models.cifar_resnet import stage_taps
from kdkeras.models.registry import register_family, register_net

#: ``(planes, blocks, stride)`` of each stage of RepDistiller's ``ResNet50``.
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
#: Output channels of a Bottleneck block per ``planes``.
EXPANSION = 4


def apply_bottleneck_block(x, planes, strides, residual, name):
    """RepDistiller's ``Bottleneck`` of ``models/resnetv2.py``, R or NR.

    Args:
        x: tensor `(batch, H, W, cin)`.
        planes: channels of the 1x1 and 3x3 convolutions; the block outputs ``4 * planes``.
        strides: stride of ``conv2`` (the 3x3) and of the ``shortcut``.
        residual: add the shortcut (R) or not (NR).
        name: the block's module path, e.g. ``layer2_0``.

    Returns:
        Tensor `(batch, H / strides, W / strides, 4 * planes)`.
    """
    filters = EXPANSION * planes
    h = torch_conv(x, planes, 1, 1, name=f"{name}_conv1")
    h = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(h, f"{name}_bn1"))
    h = torch_conv(h, planes, 3, strides, name=f"{name}_conv2")
    h = keras.layers.ReLU(name=f"{name}_relu2")(batch_norm(h, f"{name}_bn2"))
    h = torch_conv(h, filters, 1, 1, name=f"{name}_conv3")
    h = batch_norm(h, f"{name}_bn3")
    if residual:
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = torch_conv(x, filters, 1, strides, name=f"{name}_shortcut_0")
            shortcut = batch_norm(shortcut, f"{name}_shortcut_1")
        h = keras.layers.Add(name=f"{name}_add")([h, shortcut])
    return keras.layers.ReLU(name=f"{name}_out_relu")(h)


def resnet_bottleneck(stages, spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds a bottleneck ResNet of RepDistiller's ``models/resnetv2.py``.

    Args:
        stages: ``(planes, blocks, stride)`` per stage.
        spec: :class:`~kdkeras.models.registry.ModelSpec` (``spec.residual``: R or NR).
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits `(batch, num_classes)`.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = torch_conv(inputs, 64, 3, name="conv1")
    x = keras.layers.ReLU(name="stem_relu")(batch_norm(x, "bn1"))
    for stage, (planes, blocks, strides) in enumerate(stages, start=1):
        for block in range(blocks):
            x = apply_bottleneck_block(x, planes, strides if block == 0 else 1, spec.residual,
                                       name=f"layer{stage}_{block}")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=torch_initializer("torch_default"), name="linear")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet_bottleneck_taps(model):
    """``{tap: layer}`` of ResNet50: ``stem``, ``stage1``..``stage4``, ``stage1_preact``..``stage4_preact``."""
    return stage_taps(model, "bn3")


register_family("resnet_bottleneck", recipe={"recipe": "crd"}, taps=resnet_bottleneck_taps)


@register_net(lambda: [], "resnet_bottleneck", name="ResNet50", standard=True, residual=("R", "NR"))
def ResNet50(spec, num_classes=100, input_shape=(32, 32, 3), name=None):  # noqa: N802  (the reference's name)
    """RepDistiller's ``ResNet50`` (R, or NR without skip connections)."""
    return resnet_bottleneck(RESNET50_STAGES, spec, num_classes, input_shape, name or "ResNet50")
