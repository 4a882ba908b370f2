"""The CIFAR wide residual networks of the KD zoo: ``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``.

Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016), as built by
RepDistiller's ``models/wrn.py`` (Tian et al., "Contrastive Representation
Distillation", ICLR 2020; mdistiller's ``wrn.py`` is the same network). These
are not the paper zoo's ``wrn<d>x<k>`` (:mod:`kdkeras.models.wrn`): plain 3x3
convolutions, no dropout (RepDistiller's ``dropRate=0``), and the projection
shortcut only where the width changes.

WRN-d-k: a 3x3 stem convolution 3 -> 16 (``conv1``), three stages
``block1``/``block2``/``block3`` of ``n = (d - 4) / 6`` pre-activation blocks
(``blockS.layer.i``) with widths 16k, 32k, 64k and strides 1, 2, 2 on each
stage's first block, then BN-ReLU (``bn1``, ``relu``), global average pooling
and the linear classifier ``fc`` (with bias; no convolution has one)::

    a = ReLU(bn1(x))
    h = conv2(ReLU(bn2(conv1(a, stride s))))           # [Dropout between, when dropout > 0]
    R:  out = h + convShortcut(a)      (1x1, stride s)  where cin != cout
        out = h + x                                      otherwise
    NR: out = h                        (no sum, no convShortcut)

Every Keras layer that holds weights is named after the PyTorch module
(``block2.layer.0.convShortcut`` -> ``block2_layer_0_convShortcut``), so
:func:`kdkeras.models.torch_weights.assign_state_dict` loads RepDistiller's
teacher checkpoints. The strided 3x3 convolutions pad symmetrically
(``ZeroPadding2D(1)`` then ``valid``), as PyTorch's ``padding=1``.
RepDistiller pools with ``F.avg_pool2d(out, 8)``, which is global average
pooling at 32x32 inputs (the only size it supports); here it is global at any
input size.

Feature taps (RepDistiller's ``feat`` list; shapes at 32x32 inputs)::

    stem            conv1                           (32, 32, 16)
    stage1          block1's last sum (NR: conv2)   (32, 32, 16k)
    stage2          block2's last sum (NR: conv2)   (16, 16, 32k)
    stage3          block3's last sum (NR: conv2)   (8, 8, 64k)
    stage1_preact   block2_layer_0_bn1              (32, 32, 16k)
    stage2_preact   block3_layer_0_bn1              (16, 16, 32k)
    stage3_preact   bn1                             (8, 8, 64k)

The blocks are pre-activation: a stage's output has no ReLU after its sum,
so ``stageS`` is the sum itself (``feat[S]``). The ``_preact`` taps are
RepDistiller's ``preact=True`` features: the stage output through the BN
that comes next (the next stage's first ``bn1``, or the head's ``bn1``),
before that BN's ReLU.
"""

from __future__ import annotations

import re

import keras

from kdkeras.errors import UsageError
from kdkeras.layers import GlobalBatchDropout
from kdkeras.models.blocks import batch_norm, torch_conv, torch_initializer
from kdkeras.models.registry import register_family, register_net

#: ``wrn_<depth>_<width>`` of RepDistiller.
NETS = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}

_LAYER_RE = re.compile(r"^block(\d)_layer_(\d+)_")


def apply_basic_block(x, filters, strides, residual, dropout, name):
    """One pre-activation block of RepDistiller's ``wrn.py`` (its ``BasicBlock``).

    Args:
        x: tensor `(batch, H, W, cin)`.
        filters: output channels `cout`.
        strides: stride of ``conv1`` and of ``convShortcut``.
        residual: add the skip connection (R) or not (NR).
        dropout: dropout rate between ``relu2`` and ``conv2`` (RepDistiller: 0).
        name: the module's name with ``_`` for ``.``, e.g. ``"block2_layer_0"``.

    Returns:
        Tensor `(batch, H / strides, W / strides, filters)`.
    """
    a = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(x, f"{name}_bn1"))
    h = torch_conv(a, filters, 3, strides, name=f"{name}_conv1")
    h = keras.layers.ReLU(name=f"{name}_relu2")(batch_norm(h, f"{name}_bn2"))
    if dropout:
        h = GlobalBatchDropout(dropout, name=f"{name}_dropout")(h)
    h = torch_conv(h, filters, 3, 1, name=f"{name}_conv2")
    if not residual:
        return h
    shortcut = x if x.shape[-1] == filters else torch_conv(a, filters, 1, strides, name=f"{name}_convShortcut")
    return keras.layers.Add(name=f"{name}_add")([shortcut, h])


def cifar_wide_resnet(spec, depth, width, num_classes=100, input_shape=(32, 32, 3), dropout=0.0, name=None):
    """Builds RepDistiller's WRN-depth-width (R or NR after ``spec``).

    Args:
        spec: :class:`~kdkeras.models.registry.ModelSpec` (its ``residual``).
        depth: total depth, ``(depth - 4) % 6 == 0``.
        width: widening factor.
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        dropout: dropout rate inside each block (RepDistiller: 0, no dropout layer).
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits `(batch, num_classes)`.
    """
    if not 0.0 <= dropout < 1.0:
        raise UsageError(f"dropout must be in [0, 1). Received: dropout={dropout!r}.")
    blocks = (depth - 4) // 6
    inputs = keras.Input(shape=input_shape, name="images")
    x = torch_conv(inputs, 16, 3, 1, name="conv1")
    for stage, (filters, strides) in enumerate(((16 * width, 1), (32 * width, 2), (64 * width, 2)), start=1):
        for i in range(blocks):
            x = apply_basic_block(x, filters, strides if i == 0 else 1, spec.residual, dropout,
                                  name=f"block{stage}_layer_{i}")
    x = keras.layers.ReLU(name="relu")(batch_norm(x, "bn1"))
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=torch_initializer("torch_default"), name="fc")(x)
    return keras.Model(inputs, outputs, name=name or f"wrn_{depth}_{width}")


def taps(model) -> dict[str, str]:
    """``{tap: layer name}`` of a ``cifar_wrn`` network (see the module docstring)."""
    names = [layer.name for layer in model.layers]
    last = {}
    for layer_name in names:
        match = _LAYER_RE.match(layer_name)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            last[stage] = max(last.get(stage, 0), index)
    found = {"stem": "conv1"}
    for stage in (1, 2, 3):
        prefix = f"block{stage}_layer_{last.get(stage, 0)}"
        found[f"stage{stage}"] = f"{prefix}_add" if f"{prefix}_add" in names else f"{prefix}_conv2"
    found.update({"stage1_preact": "block2_layer_0_bn1", "stage2_preact": "block3_layer_0_bn1",
                  "stage3_preact": "bn1"})
    return found


register_family("cifar_wrn", recipe={"recipe": "crd"}, taps=taps)


def _build(net, spec, num_classes, input_shape, name, dropout):
    depth, width = NETS[net]
    return cifar_wide_resnet(spec, depth, width, num_classes=num_classes, input_shape=input_shape,
                             dropout=dropout, name=name or net)


@register_net(lambda: [], "cifar_wrn", name="wrn_16_1", standard=True, residual=("R", "NR"))
def wrn_16_1(spec, num_classes=100, input_shape=(32, 32, 3), name=None, dropout=0.0):
    """RepDistiller's ``wrn_16_1`` (WRN-16-1); ``wrn_16_1_NR`` without skip connections."""
    return _build("wrn_16_1", spec, num_classes, input_shape, name, dropout)


@register_net(lambda: [], "cifar_wrn", name="wrn_16_2", standard=True, residual=("R", "NR"))
def wrn_16_2(spec, num_classes=100, input_shape=(32, 32, 3), name=None, dropout=0.0):
    """RepDistiller's ``wrn_16_2`` (WRN-16-2); ``wrn_16_2_NR`` without skip connections."""
    return _build("wrn_16_2", spec, num_classes, input_shape, name, dropout)


@register_net(lambda: [], "cifar_wrn", name="wrn_40_1", standard=True, residual=("R", "NR"))
def wrn_40_1(spec, num_classes=100, input_shape=(32, 32, 3), name=None, dropout=0.0):
    """RepDistiller's ``wrn_40_1`` (WRN-40-1); ``wrn_40_1_NR`` without skip connections."""
    return _build("wrn_40_1", spec, num_classes, input_shape, name, dropout)


@register_net(lambda: [], "cifar_wrn", name="wrn_40_2", standard=True, residual=("R", "NR"))
def wrn_40_2(spec, num_classes=100, input_shape=(32, 32, 3), name=None, dropout=0.0):
    """RepDistiller's ``wrn_40_2`` (WRN-40-2, the CRD teacher); ``wrn_40_2_NR`` without skip connections."""
    return _build("wrn_40_2", spec, num_classes, input_shape, name, dropout)
