"""Building blocks shared by the families: the grouped unit ``U`` of the paper.

The paper replaces every 3x3 convolution of a residual block with a "3x3
grouped convolution followed by a 1x1 convolution" (appendix A.2, Figure 3b).
docs/models.md ("The grouped unit") fixes the unit as::

    U(cin -> cout, s) = GConv3x3(cin -> cin, stride s, groups) -> BN(cin) -> Conv1x1(cin -> cout)
"""

from __future__ import annotations

import keras

from kdkeras.layers import FastBatchNormalization, GroupedConv2D

#: BatchNormalization settings of the PyTorch lineage of the paper's code
#: (momentum 0.1 there is 0.9 here; eps 1e-5).
BN_KWARGS = {"momentum": 0.9, "epsilon": 1e-5}


def batch_norm(x, name):
    """BatchNormalization over the channel axis with PyTorch's defaults (fused kernel)."""
    return FastBatchNormalization(name=name, **BN_KWARGS)(x)


def conv(x, filters, kernel_size, strides=1, groups=1, use_bias=False, name=None):
    """A 'same'-padded convolution, grouped through :class:`GroupedConv2D`.

    Args:
        x: tensor `(batch, H, W, C_in)`.
        filters: output channels.
        kernel_size: int kernel size.
        strides: int stride.
        groups: number of groups (1 = standard convolution).
        use_bias: whether the convolution has a bias.
        name: layer name.

    Returns:
        Tensor `(batch, H / strides, W / strides, filters)`.
    """
    layer_cls = GroupedConv2D if groups > 1 else keras.layers.Conv2D
    return layer_cls(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        groups=groups,
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def apply_grouped_unit(x, filters, strides, spec, use_bias=False, name=None):
    """The unit ``U(cin -> filters, strides)``: grouped 3x3 -> BN -> 1x1.

    Args:
        x: tensor `(batch, H, W, cin)`.
        filters: output channels of the 1x1 convolution.
        strides: stride of the grouped 3x3 convolution.
        spec: the :class:`~kdkeras.models.registry.ModelSpec` fixing the grouping.
        use_bias: whether both convolutions have biases.
        name: prefix of the layer names (``{name}_gconv``, ``{name}_bn``,
            ``{name}_pconv``).

    Returns:
        Tensor `(batch, H / strides, W / strides, filters)`.
    """
    cin = x.shape[-1]
    x = conv(x, cin, 3, strides, spec.groups_for(cin), use_bias, name=f"{name}_gconv")
    x = batch_norm(x, name=f"{name}_bn")
    return conv(x, filters, 1, 1, 1, use_bias, name=f"{name}_pconv")


def torch_initializer(init: str = "fan_out"):
    """A fresh kernel initializer of PyTorch's reference code.

    ``fan_out``: ``normal(0, sqrt(2 / (k * k * C_out)))``, the
    ``kaiming_normal_(mode="fan_out")`` of RepDistiller's ResNets, WRNs, VGGs
    and MobileNetV2. ``torch_default``: PyTorch's own default for
    ``Conv2d`` / ``Linear`` (``kaiming_uniform_(a=sqrt(5))``:
    ``uniform(+-1 / sqrt(fan_in))``), which RepDistiller's ShuffleNets keep.
    """
    if init == "fan_out":
        return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    if init == "torch_default":
        return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")
    raise ValueError(f"Unknown init {init!r}. Valid choices: fan_out, torch_default.")


def torch_conv(x, filters, kernel_size, strides=1, groups=1, use_bias=False, name=None, pad_name=None,
               init="fan_out"):
    """A convolution padded as PyTorch's ``padding=kernel_size // 2`` (the standard zoo's convolutions).

    Stride 1 is ``"same"`` (symmetric, as PyTorch's padding); a strided
    convolution wider than 1x1 gets ``ZeroPadding2D(kernel_size // 2)`` on
    every side (named ``pad_name``, default ``{name}_pad``) and ``"valid"``,
    since Keras's ``"same"`` pads a strided convolution on the bottom and
    right only. ``groups > 1``: :class:`~kdkeras.layers.GroupedConv2D`.

    Args:
        x: tensor `(batch, H, W, C_in)`.
        filters: output channels.
        kernel_size: int kernel size (odd).
        strides: int stride.
        groups: number of groups.
        use_bias: whether the convolution has a bias (zero-initialised).
        name: the layer name (the reference module's path, ``.`` -> ``_``).
        pad_name: the padding layer's name.
        init: the kernel initializer, see :func:`torch_initializer`.

    Returns:
        Tensor `(batch, ceil(H / strides), ceil(W / strides), filters)`.
    """
    padding = "same"
    if strides != 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=pad_name or f"{name}_pad")(x)
        padding = "valid"
    layer_cls = GroupedConv2D if groups > 1 else keras.layers.Conv2D
    return layer_cls(filters, kernel_size, strides=strides, padding=padding, groups=groups, use_bias=use_bias,
                     kernel_initializer=torch_initializer(init), name=name)(x)
