"""Converting between kdkeras's fast layers and plain Keras.

Models built by :func:`kdkeras.build_model` use
:class:`kdkeras.layers.GroupedConv2D` and
:class:`kdkeras.layers.FastBatchNormalization`. Run folders store models with
plain ``keras.layers.Conv2D(groups=...)`` and ``BatchNormalization`` instead
(:func:`to_plain_keras`), so a ``.keras`` file from kdkeras loads anywhere, in
safe mode, without kdkeras. :func:`load_model` reads such a file and swaps
the fast layers back in (:func:`to_fast_keras`); configs and weights are the
same.
"""

from __future__ import annotations

import keras

from kdkeras.layers import FastBatchNormalization, GroupedConv2D


def _swap_convs(model, to_fast: bool):
    def clone(layer):
        config = layer.get_config()
        if to_fast and type(layer) is keras.layers.Conv2D and layer.groups > 1:
            return GroupedConv2D.from_config(config)
        if to_fast and type(layer) is keras.layers.BatchNormalization:
            return FastBatchNormalization.from_config(config)
        if not to_fast and isinstance(layer, GroupedConv2D):
            config.pop("implementation", None)
            return keras.layers.Conv2D.from_config(config)
        if not to_fast and isinstance(layer, FastBatchNormalization):
            return keras.layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    converted = keras.models.clone_model(model, clone_function=clone)
    converted.set_weights(model.get_weights())
    return converted


def to_plain_keras(model):
    """A copy of ``model`` with plain Keras ``Conv2D`` / ``BatchNormalization`` layers."""
    return _swap_convs(model, to_fast=False)


def to_fast_keras(model):
    """A copy of ``model`` with ``GroupedConv2D`` for grouped convs and ``FastBatchNormalization``."""
    return _swap_convs(model, to_fast=True)


def save_model(model, filepath):
    """Saves ``model`` as a plain-Keras ``.keras`` file (loadable without kdkeras)."""
    to_plain_keras(model).save(filepath)


def load_model(filepath, fast=True):
    """Loads a ``.keras`` model in safe mode, with the fast grouped convolution if ``fast``."""
    model = keras.saving.load_model(filepath, compile=False, safe_mode=True)
    return to_fast_keras(model) if fast else model
