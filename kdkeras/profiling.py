"""Parameter and multiply-accumulate counts of built Keras models.

Conventions of the paper's Tables 8 and 9 (docs/models.md, "Counting"):

* params: every trainable weight (kernels, biases, BN gamma/beta). BN moving
  statistics are not counted (``count_params()`` would count them).
* MACs ("FLOPs" in the paper): multiply-accumulates of convolution and dense
  layers only, for one image:
  ``kh * kw * (C_in / groups) * C_out * H_out * W_out`` per convolution and
  ``in * out`` per dense layer. BN, activations, adds and pooling count 0.

Both are read from the built layers, not from a formula of the architecture.
"""

from __future__ import annotations

import dataclasses
import math

import keras


@dataclasses.dataclass(frozen=True)
class Profile:
    """Counts of one model: ``params`` (trainable weights) and ``macs`` (per image)."""

    name: str
    params: int
    macs: int


def count_params(model) -> int:
    """Number of trainable parameters of ``model``."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def _iter_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _iter_layers(layer)
        else:
            yield layer


def layer_macs(layer) -> int:
    """Multiply-accumulates of one built conv / dense layer for one example (0 otherwise)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, cin, multiplier = layer.kernel.shape
        _, h, w, _ = layer.output.shape
        return kh * kw * cin * multiplier * h * w
    if isinstance(layer, keras.layers.Conv2D):
        # Kernel layout (kh, kw, C_in / groups, C_out) already has the 1/groups.
        kh, kw, cin_per_group, cout = layer.kernel.shape
        _, h, w, _ = layer.output.shape
        return kh * kw * cin_per_group * cout * h * w
    if isinstance(layer, keras.layers.Dense):
        fan_in, fan_out = layer.kernel.shape
        positions = math.prod(layer.output.shape[1:-1])  # 1 for (batch, units)
        return fan_in * fan_out * positions
    return 0


def count_macs(model) -> int:
    """Multiply-accumulates of conv and dense layers for one input example."""
    return int(sum(layer_macs(layer) for layer in _iter_layers(model)))


def profile(model) -> Profile:
    """:class:`Profile` (params, MACs) of a built functional ``model``."""
    return Profile(model.name, count_params(model), count_macs(model))
