"""RepDistiller's ShuffleNets: ``ShuffleV1`` (family ``shufflenet_v1``) and ``ShuffleV2`` (``shufflenet_v2``).

Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network
for Mobile Devices" (CVPR 2018) and Ma et al., "ShuffleNet V2: Practical
Guidelines for Efficient CNN Architecture Design" (ECCV 2018), in the CIFAR
form the CRD authors use as students (Tian et al., "Contrastive Representation
Distillation", ICLR 2020): RepDistiller's ``models/ShuffleNetv1.py`` and
``models/ShuffleNetv2.py`` (mdistiller's ``mdistiller/models/cifar/`` copies
are the same networks). Exact to that code, so its checkpoints convert with
:func:`kdkeras.models.torch_weights.assign_state_dict`.

**No NR variant** (``residual=("R",)``; ``ShuffleV1_NR`` is a one-line error):
the shortcuts of these nets are concatenations that carry channels (a
downsampling ShuffleV1 unit concatenates the average-pooled input to its
output; a ShuffleV2 unit passes half of its channels through untouched), so
removing them would change the widths of every later layer; the ShuffleV1
identity adds alone are not a meaningful "no skip connection" network.

``ShuffleV1`` (``groups = 3``, ``out_planes`` 240 / 480 / 960, 4 / 8 / 4 blocks):

* stem: 1x1 conv ``3 -> 24`` (no stride), BN, ReLU: 32x32x24;
* stages ``layer1``..``layer3``; every stage's first block has stride 2 and
  ``out_planes - in_planes`` outputs, concatenated with the shortcut
  ``AvgPool2d(3, stride 2, padding 1)`` of its input (padding counted, as
  PyTorch's ``count_include_pad=True``: ``ZeroPadding2D(1)`` +
  ``AveragePooling2D(3, 2)``); the others add their input;
* block: grouped 1x1 conv ``-> mid = out / 4`` (1 group where the input has 24
  channels), BN, ReLU, channel shuffle, depthwise 3x3 (stride s), BN, ReLU,
  grouped 1x1 conv ``-> out``, BN; then ``ReLU(concat([out, shortcut]))`` or
  ``ReLU(out + x)``;
* head: global average pooling (the reference's ``avg_pool2d(4)`` on the 4x4
  map at 32x32 inputs), Dense ``linear``.

``ShuffleV2`` (``net_size = 1``: 116 / 232 / 464 channels, 3 / 7 / 3 basic blocks, head 1024):

* stem: 1x1 conv ``3 -> 24``, BN, ReLU: 32x32x24;
* stages ``layer1``..``layer3``: a ``DownBlock`` (``layer{s}.0``, stride 2)
  then the basic blocks ``layer{s}.1`` ...;
* ``DownBlock(in -> out)``, ``mid = out / 2``: left = depthwise 3x3 stride 2,
  BN, 1x1 ``in -> mid``, BN, ReLU; right = 1x1 ``in -> mid``, BN, ReLU,
  depthwise 3x3 stride 2, BN, 1x1, BN, ReLU; ``shuffle(concat([left, right]))``;
* basic block: split the channels into ``x1`` (the first half) and ``x2``;
  ``x2`` goes through 1x1, BN, ReLU, depthwise 3x3, BN, 1x1, BN (``preact``);
  output ``shuffle(concat([x1, ReLU(preact)]))``. Built here as
  ``shuffle(ReLU(concat([x1, preact])))``: the same numbers (``x1`` is a part
  of the previous unit's output, made only of ReLU outputs, so ``x1 >= 0`` and
  the ReLU leaves it as is; the gradients are the same too), and it makes
  RepDistiller's ``preact`` feature ``concat([x1, preact])`` a layer of the
  model;
* head: 1x1 conv ``464 -> 1024``, BN, ReLU, global average pooling (the
  reference's ``avg_pool2d(4)`` at 32x32 inputs), Dense ``linear``.

No convolution has a bias; every stride-2 3x3 convolution pads one pixel on
every side (``ZeroPadding2D(1)`` + ``"valid"``); the depthwise convolutions and
the grouped 1x1 ones are :class:`~kdkeras.layers.GroupedConv2D`.

Channel order: the channel shuffle (:class:`ChannelShuffle`) and split
(:class:`ChannelSplit`) work on the last (NHWC) axis with the order of
PyTorch's NCHW code: the shuffle with ``g`` groups of ``C`` channels sends
input channel ``i * C / g + j`` to output channel ``j * g + i`` (torch's
``view(N, g, C / g, H, W).permute(0, 2, 1, 3, 4)``); concatenations keep the
reference's operand order.

Layer names follow the reference modules (``conv1``, ``bn1``, ``layer1_0_conv1``,
``layer1_0_bn3``, ``conv2``, ``bn2``, ``linear``); without weights:
``stem_relu``; ShuffleV1 ``layer{s}_{b}_relu1`` / ``_shuffle1`` / ``_pad2`` /
``_relu2`` / ``_shortcut_pad`` / ``_shortcut_0`` (the pool) / ``_cat`` or
``_add`` / ``_out_relu``; ShuffleV2 ``layer{s}_0_pad1`` / ``_relu2`` /
``_relu3`` / ``_pad4`` / ``_relu5`` / ``_cat`` / ``_shuffle`` and
``layer{s}_{b}_split`` / ``_relu1`` / ``_cat`` / ``_out_relu`` / ``_shuffle``;
``conv2_relu``, ``avgpool``.

Feature taps (RepDistiller's ``feat`` list, and with ``preact=True``), 32x32 inputs:

* ShuffleV1: ``stem`` 32x32x24 (``stem_relu``), ``stage1`` 16x16x240,
  ``stage2`` 8x8x480, ``stage3`` 4x4x960 (the last block's ``_out_relu``), then
  ``stage1_preact`` .. ``stage3_preact`` (same shapes, its ``_add``).
* ShuffleV2: ``stem`` 32x32x24, ``stage1`` 16x16x116, ``stage2`` 8x8x232,
  ``stage3`` 4x4x464 (the last block's ``_shuffle``), then ``stage1_preact`` ..
  ``stage3_preact`` (same shapes, its ``_cat``: before the ReLU and, as in the
  reference, before the shuffle).

Parameters (num_classes=100): ShuffleV1 949,258, ShuffleV2 1,355,528.
"""

from __future__ import annotations

import functools

import keras

from kdkeras.models.blocks import batch_norm, torch_conv, torch_initializer
from kdkeras.models.registry import register_family, register_net

#: RepDistiller's ShuffleNets keep PyTorch's default initialisation.
_conv = functools.partial(torch_conv, init="torch_default")

RECIPE = {"recipe": "crd", "crd_lr": 0.01}

#: ``ShuffleV1``'s ``cfg``.
V1_OUT_PLANES = (240, 480, 960)
V1_BLOCKS = (4, 8, 4)
V1_GROUPS = 3
#: ``ShuffleV2`` = ``configs[1]``: the stages' channels, the head's, and the basic blocks per stage.
V2_CHANNELS = (116, 232, 464)
V2_HEAD = 1024
V2_BLOCKS = (3, 7, 3)
STEM_CHANNELS = 24


@keras.saving.register_keras_serializable(package="kdkeras")
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle on the channel (last) axis, in PyTorch's channel order.

    ``(N, H, W, C)``: channel ``i * C / groups + j`` goes to ``j * groups + i``,
    as RepDistiller's NCHW ``x.view(N, g, C / g, H, W).permute(0, 2, 1, 3, 4)``.

    Args:
        groups: ``g``; must divide the channels. ``groups=1`` is the identity.
    """

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, inputs):
        if self.groups == 1:
            return inputs
        channels = inputs.shape[-1]
        shape = keras.ops.shape(inputs)
        x = keras.ops.reshape(inputs, (-1, self.groups, channels // self.groups))
        return keras.ops.reshape(keras.ops.transpose(x, (0, 2, 1)), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="kdkeras")
class ChannelSplit(keras.layers.Layer):
    """ShuffleNetV2's ``SplitBlock``: ``[x[..., :c], x[..., c:]]`` with ``c = int(C * ratio)``.

    Args:
        ratio: the fraction of channels in the first part.
    """

    def __init__(self, ratio=0.5, **kwargs):
        super().__init__(**kwargs)
        self.ratio = float(ratio)

    def call(self, inputs):
        c = int(inputs.shape[-1] * self.ratio)
        return [inputs[..., :c], inputs[..., c:]]

    def compute_output_shape(self, input_shape):
        c = int(input_shape[-1] * self.ratio)
        return [(*input_shape[:-1], c), (*input_shape[:-1], input_shape[-1] - c)]

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


def _stem(inputs):
    x = _conv(inputs, STEM_CHANNELS, 1, name="conv1")
    return keras.layers.ReLU(name="stem_relu")(batch_norm(x, "bn1"))


# ----------------------------------------------------------------------------------------------- ShuffleV1


def apply_v1_bottleneck(x, out_planes, strides, groups, name):
    """RepDistiller's ShuffleNet ``Bottleneck`` (``name``: its module path, e.g. ``layer2_0``).

    Args:
        x: tensor `(batch, H, W, in_planes)`.
        out_planes: channels of the residual branch (a stride-2 block's output
            has ``out_planes + in_planes`` channels after the concatenation).
        strides: 1 (add the input) or 2 (concatenate the pooled input).
        groups: groups of the 1x1 convolutions.
        name: layer-name prefix.

    Returns:
        Tensor `(batch, H / strides, W / strides, C)`.
    """
    in_planes = x.shape[-1]
    mid = int(out_planes / 4)
    g = 1 if in_planes == STEM_CHANNELS else groups
    h = _conv(x, mid, 1, groups=g, name=f"{name}_conv1")
    h = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(h, f"{name}_bn1"))
    h = ChannelShuffle(g, name=f"{name}_shuffle1")(h)
    h = _conv(h, mid, 3, strides, groups=mid, name=f"{name}_conv2", pad_name=f"{name}_pad2")
    h = keras.layers.ReLU(name=f"{name}_relu2")(batch_norm(h, f"{name}_bn2"))
    h = _conv(h, out_planes, 1, groups=groups, name=f"{name}_conv3")
    h = batch_norm(h, f"{name}_bn3")
    if strides == 2:
        res = keras.layers.ZeroPadding2D(1, name=f"{name}_shortcut_pad")(x)
        res = keras.layers.AveragePooling2D(3, strides=2, padding="valid", name=f"{name}_shortcut_0")(res)
        preact = keras.layers.Concatenate(name=f"{name}_cat")([h, res])
    else:
        preact = keras.layers.Add(name=f"{name}_add")([h, x])
    return keras.layers.ReLU(name=f"{name}_out_relu")(preact)


def shufflenet_v1(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds RepDistiller's ``ShuffleV1``.

    Args:
        spec: :class:`~kdkeras.models.registry.ModelSpec` (always R).
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits `(batch, num_classes)`.
    """
    del spec  # R only
    inputs = keras.Input(shape=input_shape, name="images")
    x = _stem(inputs)
    in_planes = STEM_CHANNELS
    for stage, (out_planes, blocks) in enumerate(zip(V1_OUT_PLANES, V1_BLOCKS), start=1):
        for block in range(blocks):
            cat_planes = in_planes if block == 0 else 0
            x = apply_v1_bottleneck(x, out_planes - cat_planes, 2 if block == 0 else 1, V1_GROUPS,
                                    name=f"layer{stage}_{block}")
            in_planes = out_planes
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=torch_initializer("torch_default"), name="linear")(x)
    return keras.Model(inputs, outputs, name=name or "ShuffleV1")


def shufflenet_v1_taps(model):
    """``{tap: layer}`` of ShuffleV1: ``stem``, ``stage1``..``stage3``, ``stage1_preact``..``stage3_preact``."""
    del model  # one architecture
    last = [f"layer{s}_{n - 1}" for s, n in enumerate(V1_BLOCKS, start=1)]
    taps = {"stem": "stem_relu"}
    taps.update({f"stage{s}": f"{block}_out_relu" for s, block in enumerate(last, start=1)})
    taps.update({f"stage{s}_preact": f"{block}_add" for s, block in enumerate(last, start=1)})
    return taps


register_family("shufflenet_v1", recipe=RECIPE, taps=shufflenet_v1_taps)


@register_net(lambda: [], "shufflenet_v1", name="ShuffleV1", standard=True, residual=("R",))
def shufflev1(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """RepDistiller's ``ShuffleV1`` (groups 3; no NR variant)."""
    return shufflenet_v1(spec, num_classes, input_shape, name)


# ----------------------------------------------------------------------------------------------- ShuffleV2


def apply_v2_down_block(x, out_channels, name):
    """RepDistiller's ShuffleNetV2 ``DownBlock`` (stride 2; ``name``: e.g. ``layer1_0``).

    Returns:
        Tensor `(batch, H / 2, W / 2, out_channels)`.
    """
    in_channels = x.shape[-1]
    mid = out_channels // 2
    left = _conv(x, in_channels, 3, 2, groups=in_channels, name=f"{name}_conv1", pad_name=f"{name}_pad1")
    left = batch_norm(left, f"{name}_bn1")
    left = _conv(left, mid, 1, name=f"{name}_conv2")
    left = keras.layers.ReLU(name=f"{name}_relu2")(batch_norm(left, f"{name}_bn2"))
    right = _conv(x, mid, 1, name=f"{name}_conv3")
    right = keras.layers.ReLU(name=f"{name}_relu3")(batch_norm(right, f"{name}_bn3"))
    right = _conv(right, mid, 3, 2, groups=mid, name=f"{name}_conv4", pad_name=f"{name}_pad4")
    right = batch_norm(right, f"{name}_bn4")
    right = _conv(right, mid, 1, name=f"{name}_conv5")
    right = keras.layers.ReLU(name=f"{name}_relu5")(batch_norm(right, f"{name}_bn5"))
    out = keras.layers.Concatenate(name=f"{name}_cat")([left, right])
    return ChannelShuffle(2, name=f"{name}_shuffle")(out)


def apply_v2_basic_block(x, name):
    """RepDistiller's ShuffleNetV2 ``BasicBlock`` (split ratio 0.5; ``name``: e.g. ``layer1_1``).

    The input must be non-negative (the output of a ShuffleNetV2 unit): the
    ReLU is applied to ``concat([x1, preact])``, which equals the reference's
    ``concat([x1, ReLU(preact)])`` there (module docstring).

    Returns:
        Tensor of the input's shape.
    """
    x1, x2 = ChannelSplit(0.5, name=f"{name}_split")(x)
    channels = x2.shape[-1]
    h = _conv(x2, channels, 1, name=f"{name}_conv1")
    h = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(h, f"{name}_bn1"))
    h = _conv(h, channels, 3, 1, groups=channels, name=f"{name}_conv2")
    h = batch_norm(h, f"{name}_bn2")
    h = _conv(h, channels, 1, name=f"{name}_conv3")
    h = batch_norm(h, f"{name}_bn3")
    preact = keras.layers.Concatenate(name=f"{name}_cat")([x1, h])
    out = keras.layers.ReLU(name=f"{name}_out_relu")(preact)
    return ChannelShuffle(2, name=f"{name}_shuffle")(out)


def shufflenet_v2(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """Builds RepDistiller's ``ShuffleV2`` (``net_size = 1``).

    Args:
        spec: :class:`~kdkeras.models.registry.ModelSpec` (always R).
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits `(batch, num_classes)`.
    """
    del spec  # R only
    inputs = keras.Input(shape=input_shape, name="images")
    x = _stem(inputs)
    for stage, (channels, blocks) in enumerate(zip(V2_CHANNELS, V2_BLOCKS), start=1):
        x = apply_v2_down_block(x, channels, name=f"layer{stage}_0")
        for block in range(1, blocks + 1):
            x = apply_v2_basic_block(x, name=f"layer{stage}_{block}")
    x = _conv(x, V2_HEAD, 1, name="conv2")
    x = keras.layers.ReLU(name="conv2_relu")(batch_norm(x, "bn2"))
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=torch_initializer("torch_default"), name="linear")(x)
    return keras.Model(inputs, outputs, name=name or "ShuffleV2")


def shufflenet_v2_taps(model):
    """``{tap: layer}`` of ShuffleV2: ``stem``, ``stage1``..``stage3``, ``stage1_preact``..``stage3_preact``."""
    del model  # one architecture
    last = [f"layer{s}_{n}" for s, n in enumerate(V2_BLOCKS, start=1)]
    taps = {"stem": "stem_relu"}
    taps.update({f"stage{s}": f"{block}_shuffle" for s, block in enumerate(last, start=1)})
    taps.update({f"stage{s}_preact": f"{block}_cat" for s, block in enumerate(last, start=1)})
    return taps


register_family("shufflenet_v2", recipe=RECIPE, taps=shufflenet_v2_taps)


@register_net(lambda: [], "shufflenet_v2", name="ShuffleV2", standard=True, residual=("R",))
def shufflev2(spec, num_classes=100, input_shape=(32, 32, 3), name=None):
    """RepDistiller's ``ShuffleV2`` (``net_size = 1``; no NR variant)."""
    return shufflenet_v2(spec, num_classes, input_shape, name)
