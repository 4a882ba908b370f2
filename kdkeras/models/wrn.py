"""Wide residual networks (Zagoruyko & Komodakis, 2016) with grouped units.

WRN-d x k (docs/models.md, "Architectures"): (d - 4) / 6 pre-activation blocks per stage,
widths 16k, 32k, 64k, strides 1, 2, 2 on each stage's first block, dropout 0.3
between the two units of a block, no convolution biases.

Block (pre-activation)::

    a = ReLU(BN(x))
    h = U(a, cin -> cout, s)
    h = U(Dropout(ReLU(BN(h))), cout -> cout, 1)
    R:  out = h + Conv1x1(cin -> cout, stride s)(a)   if the shape changes
        out = h + x                                    otherwise
    NR: out = h
"""

from __future__ import annotations

import re

import keras

from kdkeras.errors import UsageError
from kdkeras.layers import GlobalBatchDropout
from kdkeras.models.blocks import apply_grouped_unit, batch_norm, conv
from kdkeras.models.registry import NetEntry, register_family, register_net

#: The paper's WRN schedule (section 5): lr / 5 at epochs 30, 60 and 90 of 120.
RECIPE = {"lr_schedule": "step", "lr_milestones": (30, 60, 90), "lr_gamma": 0.2}
_WRN_RE = re.compile(r"^wrn(\d+)x(\d+)$")


def _check_depth_width(depth, width):
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise UsageError(
            "WRN depth must satisfy (depth - 4) % 6 == 0 and depth >= 10 "
            f"(10, 16, 22, 28, 34, 40, ...). Received: depth={depth!r}."
        )
    if not isinstance(width, int) or width < 1:
        raise UsageError(f"WRN width must be a positive integer. Received: width={width!r}.")


def wrn_grouped_channels(depth, width):
    """Input channels of every grouped 3x3 conv of WRN-depth x width, in order."""
    _check_depth_width(depth, width)
    blocks = (depth - 4) // 6
    channels, cin = [], 16
    for cout in (16 * width, 32 * width, 64 * width):
        for _ in range(blocks):
            channels += [cin, cout]
            cin = cout
    return channels


def apply_wrn_block(x, filters, strides, spec, residual, dropout, name):
    """One pre-activation WRN block of two grouped units.

    Args:
        x: tensor `(batch, H, W, cin)`.
        filters: output channels `cout`.
        strides: stride of the first unit (and of the projection shortcut).
        spec: the model's :class:`~kdkeras.models.registry.ModelSpec`.
        residual: add the skip connection (R) or not (NR).
        dropout: dropout rate between the two units.
        name: layer-name prefix, e.g. ``"stage2_block1"``.

    Returns:
        Tensor `(batch, H / strides, W / strides, filters)`.
    """
    a = keras.layers.ReLU(name=f"{name}_preact_relu")(batch_norm(x, f"{name}_preact_bn"))
    h = apply_grouped_unit(a, filters, strides, spec, name=f"{name}_unit1")
    h = keras.layers.ReLU(name=f"{name}_mid_relu")(batch_norm(h, f"{name}_mid_bn"))
    if dropout:
        h = GlobalBatchDropout(dropout, name=f"{name}_dropout")(h)
    h = apply_grouped_unit(h, filters, 1, spec, name=f"{name}_unit2")
    if not residual:
        return h
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(a, filters, 1, strides, name=f"{name}_shortcut_conv")
    else:
        shortcut = x
    return keras.layers.Add(name=f"{name}_add")([h, shortcut])


def wide_resnet(
    spec,
    depth,
    width,
    num_classes=100,
    input_shape=(32, 32, 3),
    dropout=0.3,
    name=None,
):
    """Builds WRN-depth x width with the grouping and residual flag of ``spec``.

    Args:
        spec: :class:`~kdkeras.models.registry.ModelSpec` (grouping, R/NR).
        depth: total depth d, with (d - 4) % 6 == 0.
        width: widening factor k.
        num_classes: number of logits.
        input_shape: `(H, W, C)`.
        dropout: dropout rate inside each block (paper: 0.3).
        name: model name.

    Returns:
        A functional ``keras.Model``: images `(batch, H, W, C)` -> logits
        `(batch, num_classes)`.
    """
    _check_depth_width(depth, width)
    if not 0.0 <= dropout < 1.0:
        raise UsageError(f"dropout must be in [0, 1). Received: dropout={dropout!r}.")
    for channels in wrn_grouped_channels(depth, width):
        spec.groups_for(channels)  # validate before building anything
    blocks = (depth - 4) // 6

    inputs = keras.Input(shape=input_shape, name="images")
    x = conv(inputs, 16, 3, name="stem_conv")
    for stage, (filters, strides) in enumerate(
        [(16 * width, 1), (32 * width, 2), (64 * width, 2)], start=1
    ):
        for block in range(1, blocks + 1):
            x = apply_wrn_block(
                x,
                filters,
                strides if block == 1 else 1,
                spec,
                spec.residual,
                dropout,
                name=f"stage{stage}_block{block}",
            )
    x = keras.layers.ReLU(name="head_relu")(batch_norm(x, "head_bn"))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"wrn{depth}x{width}")


def entry(depth, width):
    """Registry entry for an arbitrary ``wrn<depth>x<width>``."""

    def builder(**kwargs):
        return wide_resnet(**{"depth": depth, "width": width, **kwargs})

    return NetEntry(builder, lambda: wrn_grouped_channels(depth, width), "wrn")


def resolve(net):
    """The entry of any ``wrn<d>x<k>`` name; ``None`` for a name of another family."""
    match = _WRN_RE.match(net)
    if not match:
        return None
    depth, width = int(match.group(1)), int(match.group(2))
    if (depth - 4) % 6 or depth < 10 or width < 1:
        raise UsageError(
            f"Unknown WRN depth/width in '{net}': depth d must satisfy "
            f"(d - 4) % 6 == 0 and d >= 10 (10, 16, 22, 28, 34, 40, ...) and "
            f"width k >= 1. Received: depth={depth}, width={width}."
        )
    return entry(depth, width)


register_family("wrn", recipe=RECIPE, resolve=resolve, pattern="wrn<d>x<k> with (d - 4) % 6 == 0")


@register_net(lambda: wrn_grouped_channels(22, 2), "wrn")
def wrn22x2(**kwargs):
    """WRN-22x2 (paper Table 3)."""
    return wide_resnet(**{"depth": 22, "width": 2, **kwargs})


@register_net(lambda: wrn_grouped_channels(22, 10), "wrn")
def wrn22x10(**kwargs):
    """WRN-22x10 (paper Table 4)."""
    return wide_resnet(**{"depth": 22, "width": 10, **kwargs})


@register_net(lambda: wrn_grouped_channels(28, 2), "wrn")
def wrn28x2(**kwargs):
    """WRN-28x2 (paper Table 5)."""
    return wide_resnet(**{"depth": 28, "width": 2, **kwargs})


@register_net(lambda: wrn_grouped_channels(40, 2), "wrn")
def wrn40x2(**kwargs):
    """WRN-40x2 (paper Table 6)."""
    return wide_resnet(**{"depth": 40, "width": 2, **kwargs})
