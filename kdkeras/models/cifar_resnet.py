"""The CIFAR ResNets of the KD zoo: resnet8 ... resnet110, resnet8x4, resnet32x4 (family ``cifar_resnet``).

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
section 4.2, as implemented by the CRD authors in RepDistiller's
``models/resnet.py`` (Tian et al., "Contrastive Representation
Distillation", ICLR 2020; mdistiller's ``mdistiller/models/cifar/resnet.py``
is the same network). Exact to that code, so its checkpoints convert with
:func:`kdkeras.models.torch_weights.assign_state_dict`:

* stem: 3x3 conv ``3 -> c0`` (stride 1, no bias), BN, ReLU;
* three stages ``layer1``..``layer3`` of ``n = (depth - 2) / 6`` post-activation
  BasicBlocks with ``c1, c2, c3`` channels, strides 1, 2, 2 on each stage's
  first block; ``(c0, c1, c2, c3)`` is ``(16, 16, 32, 64)``, and
  ``(32, 64, 128, 256)`` for the ``x4`` nets;
* block: ``h = BN(conv3x3(ReLU(BN(conv3x3(x, stride s)))))``; R:
  ``out = ReLU(h + shortcut(x))`` with the shortcut ``downsample`` = 1x1 conv
  (stride s) + BN where the shape changes, else the identity; NR:
  ``out = ReLU(h)`` (the add and every ``downsample`` removed);
* head: global average pooling (the reference's ``AvgPool2d(8)``: the same at
  32x32 inputs, where the last stage is 8x8) and the Dense classifier ``fc``.

No convolution has a bias. A stride-2 3x3 convolution pads one pixel on
every side (``ZeroPadding2D(1)`` + ``"valid"``, as PyTorch's ``padding=1``).

Layer names follow the reference modules (``conv1``, ``bn1``,
``layer2_0_conv1``, ``layer2_0_downsample_0``, ``fc``, ...); the layers
without weights are ``stem_relu``, ``layer{s}_{b}_conv1_pad``, ``layer{s}_{b}_relu1``,
``layer{s}_{b}_add``, ``layer{s}_{b}_out_relu`` and ``avgpool``.

Parameters (num_classes=100), R / NR: resnet8 83,892 / 81,140; resnet14
181,108 / 178,356; resnet20 278,324 / 275,572; resnet32 472,756 / 470,004;
resnet44 667,188 / 664,436; resnet56 861,620 / 858,868; resnet110 1,736,564 /
1,733,812; resnet8x4 1,233,540 / 1,189,636; resnet32x4 7,433,860 / 7,389,956.

Feature taps (RepDistiller's ``feat`` list), shapes at 32x32 inputs with
``(c0, c1, c2, c3)`` channels: ``stem`` (``f0``, 32x32xc0, ``stem_relu``),
``stage1`` (``f1``, 32x32xc1), ``stage2`` (``f2``, 16x16xc2), ``stage3``
(``f3``, 8x8xc3), each the ``out_relu`` of the stage's last block, then
``stage1_preact`` .. ``stage3_preact`` (``preact=True``: the same blocks
before their last ReLU, at the ``add`` (R) or at ``bn2`` (NR)).
"""

from __future__ import annotations

import re

import keras

from kdkeras.models.blocks import batch_norm, torch_conv, torch_initializer
from kdkeras.models.registry import register_family, register_net

#: ``net: (depth, (c0, c1, c2, c3))`` of RepDistiller's ``models/resnet.py``.
CONFIGS = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}

_BLOCK_RE = re.compile(r"^layer(\d+)_(\d+)_conv1$")


def apply_basic_block(x, filters, strides, residual, name):
    """RepDistiller's CIFAR ``BasicBlock`` (post-activation), R or NR.

    Args:
        x: tensor `(batch, H, W, cin)`.
        filters: output channels.
        strides: stride of ``conv1`` and of the ``downsample`` shortcut.
        residual: add the shortcut (R) or not (NR).
        name: the block's module path, e.g. ``layer2_0``.

    Returns:
        Tensor `(batch, H / strides, W / strides, filters)`.
    """
    h = torch_conv(x, filters, 3, strides, name=f"{name}_conv1")
    h = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(h, f"{name}_bn1"))
    h = torch_conv(h, filters, 3, 1, name=f"{name}_conv2")
    h = batch_norm(h, f"{name}_bn2")
    if residual:
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = torch_conv(x, filters, 1, strides, name=f"{name}_downsample_0")
            shortcut = batch_norm(shortcut, f"{name}_downsample_1")
        h = keras.layers.Add(name=f"{name}_add")([h, shortcut])
    return keras.layers.ReLU(name=f"{name}_out_relu")(h)


def cifar_resnet(depth, channels, spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds a CIFAR ResNet of RepDistiller's ``models/resnet.py``.

    Args:
        depth: ``6n + 2``.
        channels: ``(c0, c1, c2, c3)``: the stem's and the three stages' widths.
        spec: :class:`~kdkeras.models.registry.ModelSpec` (``spec.residual``: R or NR).
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits `(batch, num_classes)`.
    """
    blocks = (depth - 2) // 6
    inputs = keras.Input(shape=input_shape, name="images")
    x = torch_conv(inputs, channels[0], 3, name="conv1")
    x = keras.layers.ReLU(name="stem_relu")(batch_norm(x, "bn1"))
    for stage, (filters, strides) in enumerate(zip(channels[1:], (1, 2, 2)), start=1):
        for block in range(blocks):
            x = apply_basic_block(x, filters, strides if block == 0 else 1, spec.residual,
                                  name=f"layer{stage}_{block}")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=torch_initializer("torch_default"), name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def stage_taps(model, last_bn):
    """Taps of a ResNet whose stages are ``layer{s}`` of blocks ``layer{s}_{b}`` ending in ``_out_relu``.

    Args:
        model: the network.
        last_bn: the name of a block's last BN (``bn2``; ``bn3`` for bottlenecks),
            the pre-ReLU output of an NR block.

    Returns:
        ``{"stem": "stem_relu", "stage1": ..., "stage1_preact": ...}``.
    """
    names = {layer.name for layer in model.layers}
    last = {}
    for layer_name in names:
        match = _BLOCK_RE.match(layer_name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            last[stage] = max(last.get(stage, 0), block)
    stages = sorted(last)
    taps = {"stem": "stem_relu"}
    taps.update({f"stage{s}": f"layer{s}_{last[s]}_out_relu" for s in stages})
    for s in stages:
        block = f"layer{s}_{last[s]}"
        taps[f"stage{s}_preact"] = f"{block}_add" if f"{block}_add" in names else f"{block}_{last_bn}"
    return taps


def cifar_resnet_taps(model):
    """``{tap: layer}`` of a CIFAR ResNet: ``stem``, ``stage1``..``stage3``, ``stage1_preact``..``stage3_preact``."""
    return stage_taps(model, "bn2")


register_family("cifar_resnet", recipe={"recipe": "crd"}, taps=cifar_resnet_taps)


def _register(net):
    depth, channels = CONFIGS[net]

    def build(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
        return cifar_resnet(depth, channels, spec, num_classes, input_shape, name or net)

    build.__name__ = build.__qualname__ = net
    build.__doc__ = (f"RepDistiller's ``{net}``: depth {depth}, widths {channels} (R, or NR without skip "
                     "connections).")
    register_net(lambda: [], "cifar_resnet", name=net, standard=True, residual=("R", "NR"))(build)
    return build


resnet8 = _register("resnet8")
resnet14 = _register("resnet14")
resnet20 = _register("resnet20")
resnet32 = _register("resnet32")
resnet44 = _register("resnet44")
resnet56 = _register("resnet56")
resnet110 = _register("resnet110")
resnet8x4 = _register("resnet8x4")
resnet32x4 = _register("resnet32x4")
