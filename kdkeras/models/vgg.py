"""The CIFAR VGGs of the KD literature: ``vgg8``, ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition" (ICLR 2015), in the CIFAR form of RepDistiller's ``models/vgg.py``
(Tian et al., "Contrastive Representation Distillation", ICLR 2020; the same
network in mdistiller): its ``vgg*_bn`` builders, which the CRD benchmark
trains under the names ``vgg8`` ... ``vgg19``. The fully connected layers of
ImageNet VGG are gone: one linear ``classifier`` 512 -> classes.

Five sequential blocks ``block0`` ... ``block4`` of 3x3 convolutions (with
biases, stride 1, padding 1), each followed by BN; a ReLU after each BN, the
block's last one applied outside the block (``F.relu``). Widths 64, 128, 256,
512, 512; convolutions per block (configurations S, A, B, D, E)::

    vgg8  1 1 1 1 1     vgg11 1 1 2 2 2     vgg13 2 2 2 2 2
    vgg16 2 2 3 3 3     vgg19 2 2 4 4 4

A 2x2 max-pool (``pool0`` ... ``pool2``) follows blocks 0 to 2; ``pool3``
follows block 3 only for 64x64 inputs (RepDistiller's ``if h == 64``), so at
32x32 blocks 3 and 4 both run at 4x4. Then global average pooling (``pool4``,
PyTorch's ``AdaptiveAvgPool2d(1)``) and the classifier.

VGG has no skip connection, so its only variant is NR and its names take no
residual token: ``vgg13`` (``vgg13_NR`` is accepted, ``vgg13_R`` is an error).

Every Keras layer is named after its PyTorch module, the ``nn.Sequential``
index included: ``block1.3`` (the second convolution of block 1) ->
``block1_3``, its BN ``block1_4``, the ReLU between ``block1_2``; the ReLU
after a block is ``block{i}_relu``. :func:`kdkeras.models.torch_weights.assign_state_dict`
loads RepDistiller's checkpoints.

Feature taps (RepDistiller's ``feat`` list; shapes at 32x32 inputs)::

    stem            block0_relu               (32, 32, 64)
    stage1          block1_relu               (16, 16, 128)
    stage2          block2_relu               (8, 8, 256)
    stage3          block3_relu               (4, 4, 512)
    stage4          block4_relu               (4, 4, 512)
    stageS_preact   block S's last BN         (same shapes, before the ReLU)

``stage3`` and ``stage4`` share a resolution at 32x32 (block 3 has no pool
after it) but are distinct features of the reference (``feat[3]``,
``feat[4]``), so both are taps; at 64x64 they are 8x8 and 4x4.
"""

from __future__ import annotations

import re

import keras

from kdkeras.models.blocks import batch_norm, torch_conv
from kdkeras.models.registry import register_family, register_net

#: Output channels of every 3x3 convolution, block by block (RepDistiller's ``cfg``).
CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}

_BN_RE = re.compile(r"^block(\d)_(\d+)$")


def apply_vgg_block(x, widths, name):
    """One block: ``[conv, BN, ReLU] * n`` without the last ReLU (an ``nn.Sequential`` of RepDistiller).

    Args:
        x: tensor `(batch, H, W, cin)`.
        widths: output channels of the block's convolutions.
        name: the block's name, e.g. ``"block2"``; layer ``j`` of the sequential is ``{name}_{j}``.

    Returns:
        Tensor `(batch, H, W, widths[-1])`, the last BN's output (before its ReLU).
    """
    index = 0
    for i, filters in enumerate(widths):
        if i:
            x = keras.layers.ReLU(name=f"{name}_{index}")(x)
            index += 1
        x = torch_conv(x, filters, 3, use_bias=True, name=f"{name}_{index}")
        x = batch_norm(x, f"{name}_{index + 1}")
        index += 2
    return x


def cifar_vgg(config, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds RepDistiller's VGG with batch norm from its per-block widths.

    Args:
        config: output channels of the convolutions of each of the five blocks.
        num_classes: number of logits.
        input_shape: `(H, W, C)`; a 64x64 input adds ``pool3`` after block 3, as the reference does.
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits `(batch, num_classes)`.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for block, widths in enumerate(config):
        x = apply_vgg_block(x, widths, f"block{block}")
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
        if block < 3 or (block == 3 and input_shape[0] == 64):
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool4")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
                                 name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def taps(model) -> dict[str, str]:
    """``{tap: layer name}`` of a ``vgg`` network (see the module docstring)."""
    last_bn = {}
    for layer in model.layers:
        match = _BN_RE.match(layer.name)
        if match and isinstance(layer, keras.layers.BatchNormalization):
            block, index = int(match.group(1)), int(match.group(2))
            last_bn[block] = max(last_bn.get(block, 0), index)
    found = {"stem": "block0_relu", **{f"stage{s}": f"block{s}_relu" for s in range(1, 5)}}
    found.update({f"stage{s}_preact": f"block{s}_{last_bn.get(s, 1)}" for s in range(1, 5)})
    return found


register_family("vgg", recipe={"recipe": "crd"}, taps=taps)


def _build(net, spec, num_classes, input_shape, name):
    del spec  # VGG has one variant (NR): nothing to choose
    return cifar_vgg(CONFIGS[net], num_classes=num_classes, input_shape=input_shape, name=name or net)


@register_net(lambda: [], "vgg", name="vgg8", standard=True, residual=("NR",))
def vgg8(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """RepDistiller's ``vgg8_bn`` (configuration S: one convolution per block)."""
    return _build("vgg8", spec, num_classes, input_shape, name)


@register_net(lambda: [], "vgg", name="vgg11", standard=True, residual=("NR",))
def vgg11(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """RepDistiller's ``vgg11_bn`` (configuration A)."""
    return _build("vgg11", spec, num_classes, input_shape, name)


@register_net(lambda: [], "vgg", name="vgg13", standard=True, residual=("NR",))
def vgg13(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """RepDistiller's ``vgg13_bn`` (configuration B, the CRD teacher)."""
    return _build("vgg13", spec, num_classes, input_shape, name)


@register_net(lambda: [], "vgg", name="vgg16", standard=True, residual=("NR",))
def vgg16(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """RepDistiller's ``vgg16_bn`` (configuration D)."""
    return _build("vgg16", spec, num_classes, input_shape, name)


@register_net(lambda: [], "vgg", name="vgg19", standard=True, residual=("NR",))
def vgg19(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """RepDistiller's ``vgg19_bn`` (configuration E)."""
    return _build("vgg19", spec, num_classes, input_shape, name)
