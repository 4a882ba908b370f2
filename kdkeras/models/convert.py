"""Converting between kdkeras's fast layers and plain Keras, and the raw-image front of saved models.

Models built by :func:`kdkeras.build_model` use
:class:`kdkeras.layers.GroupedConv2D` and
:class:`kdkeras.layers.FastBatchNormalization` (and WRN
:class:`kdkeras.layers.GlobalBatchDropout`). Saved models use plain
``keras.layers.Conv2D(groups=...)``, ``BatchNormalization`` and ``Dropout`` instead
(:func:`to_plain_keras`) and carry no compile state (no optimizer), so a
``.keras`` file from kdkeras loads anywhere, in safe mode, without kdkeras.

The networks take images normalised per channel, ``(x / 255 - mean) / std``,
as kdkeras's data pipelines feed them. The ``model.keras`` of a run folder
adds that normalisation in front (:func:`add_preprocessing`), so the file
takes raw images (``uint8`` or float, 0..255)::

    <network name>           the saved model (a functional keras.Model)
        raw_image            Input, float32 (uint8 images are cast)
        kdkeras_preprocess   keras.Sequential: standard Keras layers only
            rescale_0_255_to_0_1      Rescaling(1 / 255)
            normalize_<dataset>       Normalization(mean, variance = std**2)
        <network name>       the network itself (takes normalised images)

The front has no trainable weights and no multiply-accumulates, so
:func:`kdkeras.profiling.profile` counts the network alone either way.

:func:`load_model` reads a file, removes the front when there is one
(:func:`strip_preprocessing`: files saved before the front existed are the
network itself) and swaps the fast layers back in (:func:`to_fast_keras`);
configs and weights are the same.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from kdkeras.layers import FastBatchNormalization, GlobalBatchDropout, GroupedConv2D

#: Name of the nested model in front of the network of a saved model (:func:`add_preprocessing`).
PREPROCESS_NAME = "kdkeras_preprocess"
#: Name of the front's ``Rescaling`` layer (``x / 255``).
RESCALE_NAME = "rescale_0_255_to_0_1"
#: The front's ``Normalization`` layer is named this prefix plus the dataset name.
NORMALIZE_PREFIX = "normalize_"
#: Name of the saved model's input (raw images).
RAW_INPUT_NAME = "raw_image"


def _swap_convs(model, to_fast: bool):
    def clone(layer):
        config = layer.get_config()
        if to_fast and type(layer) is keras.layers.Conv2D and layer.groups > 1:
            return GroupedConv2D.from_config(config)
        if to_fast and type(layer) is keras.layers.BatchNormalization:
            return FastBatchNormalization.from_config(config)
        if to_fast and type(layer) is keras.layers.Dropout:
            return GlobalBatchDropout.from_config(config)
        if not to_fast and isinstance(layer, GroupedConv2D):
            config.pop("implementation", None)
            return keras.layers.Conv2D.from_config(config)
        if not to_fast and isinstance(layer, FastBatchNormalization):
            return keras.layers.BatchNormalization.from_config(config)
        if not to_fast and isinstance(layer, GlobalBatchDropout):
            return keras.layers.Dropout.from_config(config)
        return layer.__class__.from_config(config)

    network = strip_preprocessing(model)
    converted = keras.models.clone_model(network, clone_function=clone)
    converted.set_weights(network.get_weights())
    if converted.compiled:  # clone_model copies the compile state: the copy carries none
        converted = keras.Model(_single(converted.inputs), _single(converted.outputs), name=converted.name)
    if network is not model:
        return add_preprocessing(converted, preprocessing_of(model))
    return converted


def _single(tensors):
    """The only tensor of a one-element list (a functional model's structure), else the list."""
    return tensors[0] if len(tensors) == 1 else tensors


def to_plain_keras(model):
    """An uncompiled copy of ``model`` with plain Keras ``Conv2D`` / ``BatchNormalization`` / ``Dropout`` layers.

    A model with the raw-image front (:func:`add_preprocessing`) keeps it.
    """
    return _swap_convs(model, to_fast=False)


def to_fast_keras(model):
    """An uncompiled copy of ``model`` with kdkeras's layers: ``GroupedConv2D``, ``FastBatchNormalization``, ``GlobalBatchDropout``.

    A model with the raw-image front (:func:`add_preprocessing`) keeps it.
    """
    return _swap_convs(model, to_fast=True)


def _normalization_stats(dataset) -> dict:
    """``{"dataset", "mean", "std"}`` of a dataset name, a ``DatasetInfo`` or such a dict."""
    if isinstance(dataset, str):
        from kdkeras.data import dataset_info

        dataset = dataset_info(dataset)
    if isinstance(dataset, dict):
        name, mean, std = dataset["dataset"], dataset["mean"], dataset["std"]
    else:
        name, mean, std = dataset.name, dataset.mean, dataset.std
    return {"dataset": str(name), "mean": tuple(float(m) for m in mean), "std": tuple(float(s) for s in std)}


def add_preprocessing(network, dataset):
    """``network`` behind a front of standard Keras layers that normalises raw images.

    The returned functional model takes images of ``network``'s input shape
    with values 0..255 (``uint8`` or float) and computes
    ``network((x / 255 - mean) / std)``; its name is ``network``'s. The front
    is a ``keras.Sequential`` named :data:`PREPROCESS_NAME`: ``Rescaling(1 / 255)``
    and ``Normalization(mean, variance=std**2)`` named
    ``normalize_<dataset>``, float32 whatever the global dtype policy.
    ``network`` itself is used as is (not copied).

    Args:
        network: a functional model taking normalised images.
        dataset: a dataset name of :data:`kdkeras.data.DATASETS`, a
            :class:`kdkeras.data.DatasetInfo` (its ``name``, ``mean`` and
            ``std``) or a dict as returned by :func:`preprocessing_of`.

    Raises:
        ValueError: ``network`` already has the front, or the statistics do
            not match its input channels.
    """
    if has_preprocessing(network):
        raise ValueError(f"Model '{network.name}' already has the '{PREPROCESS_NAME}' front.")
    stats = _normalization_stats(dataset)
    image_shape = tuple(network.input_shape[1:])
    if len(stats["mean"]) != image_shape[-1] or len(stats["std"]) != image_shape[-1]:
        raise ValueError(f"Dataset '{stats['dataset']}' has {len(stats['mean'])} channel statistics, but model "
                         f"'{network.name}' takes inputs of shape {image_shape}.")
    tag = re.sub(r"[^0-9A-Za-z_]", "_", stats["dataset"]) or "dataset"
    front = keras.Sequential([
        keras.Input(shape=image_shape, dtype="float32"),
        keras.layers.Rescaling(1.0 / 255.0, name=RESCALE_NAME, dtype="float32"),
        keras.layers.Normalization(axis=-1, mean=list(stats["mean"]), variance=[s * s for s in stats["std"]],
                                   name=NORMALIZE_PREFIX + tag, dtype="float32"),
    ], name=PREPROCESS_NAME)
    inputs = keras.Input(shape=image_shape, dtype="float32", name=RAW_INPUT_NAME)
    return keras.Model(inputs, network(front(inputs)), name=network.name)


def _front_and_network(model):
    """``(front, network)`` of a model with the raw-image front, else ``None``.

    A model has the front when its only layers are an input, a nested model
    named :data:`PREPROCESS_NAME` and a nested model (the network), in this
    order.
    """
    layers = getattr(model, "layers", None)
    if not isinstance(model, keras.Model) or not layers:
        return None
    names = [layer.name for layer in layers]
    if PREPROCESS_NAME not in names:
        return None
    inner = [layer for layer in layers if not isinstance(layer, keras.layers.InputLayer)]
    if (len(inner) != 2 or inner[0].name != PREPROCESS_NAME or not isinstance(inner[0], keras.Model)
            or not isinstance(inner[1], keras.Model)):
        raise ValueError(f"Model '{model.name}' has a layer named '{PREPROCESS_NAME}' but not the layout of a "
                         f"kdkeras model (input, '{PREPROCESS_NAME}', network): cannot find its network.")
    return inner[0], inner[1]


def has_preprocessing(model) -> bool:
    """Whether ``model`` has the raw-image front of :func:`add_preprocessing`."""
    return _front_and_network(model) is not None


def strip_preprocessing(model):
    """The network behind the raw-image front of ``model``; ``model`` itself when it has none.

    Files saved before the front existed load as the network itself, so
    ``strip_preprocessing(keras.saving.load_model(path))`` is the network
    (taking normalised images) for every kdkeras file.
    """
    parts = _front_and_network(model)
    return model if parts is None else parts[1]


def preprocessing_of(model) -> dict | None:
    """``{"dataset", "mean", "std"}`` recorded in ``model``'s raw-image front (``None``: no front)."""
    parts = _front_and_network(model)
    if parts is None:
        return None
    front = parts[0]
    normalize = [layer for layer in front.layers if layer.name.startswith(NORMALIZE_PREFIX)]
    if len(normalize) != 1 or not isinstance(normalize[0], keras.layers.Normalization):
        raise ValueError(f"The '{PREPROCESS_NAME}' front of model '{model.name}' has no "
                         f"'{NORMALIZE_PREFIX}<dataset>' Normalization layer.")
    config = normalize[0].get_config()
    mean = [float(m) for m in np.asarray(config["mean"], dtype="float64").reshape(-1)]
    std = [float(v) ** 0.5 for v in np.asarray(config["variance"], dtype="float64").reshape(-1)]
    return {"dataset": normalize[0].name[len(NORMALIZE_PREFIX):], "mean": tuple(mean), "std": tuple(std)}


def _needs_conversion(model) -> bool:
    """Whether ``model`` (or a model nested in it) has a fast layer or compile state."""
    if model.compiled:
        return True
    for layer in model.layers:
        if isinstance(layer, (GroupedConv2D, FastBatchNormalization, GlobalBatchDropout)):
            return True
        if isinstance(layer, keras.Model) and _needs_conversion(layer):
            return True
    return False


def save_model(model, filepath, dataset=None):
    """Saves ``model`` as a plain-Keras ``.keras`` file (loadable without kdkeras, no optimizer).

    Args:
        model: the network (fast or plain layers), or a model with the
            raw-image front (:func:`add_preprocessing`).
        filepath: path ending in ``.keras``.
        dataset: add the raw-image front with this dataset's normalisation
            (see :func:`add_preprocessing`); ``None``: save ``model`` as it is
            (with its front if it has one), which takes what ``model`` takes.
    """
    if dataset is not None:
        model = add_preprocessing(to_plain_keras(model), dataset)
    elif _needs_conversion(model):
        model = to_plain_keras(model)
    model.save(filepath)


def load_model(filepath, fast=True, raw_images=False):
    """Loads a ``.keras`` model in safe mode, with the fast grouped convolution if ``fast``.

    Args:
        filepath: a ``.keras`` file.
        fast: swap in kdkeras's fast layers (:func:`to_fast_keras`).
        raw_images: keep the raw-image front of a run's ``model.keras``.
            Default: return the network, which takes normalised images (as
            kdkeras's data pipelines feed them), whether or not the file has
            the front (files saved before the front existed have none).
    """
    model = keras.saving.load_model(filepath, compile=False, safe_mode=True)
    if not raw_images:
        model = strip_preprocessing(model)
    return to_fast_keras(model) if fast else model
