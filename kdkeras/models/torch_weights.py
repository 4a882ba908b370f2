"""PyTorch weights into a kdkeras network: RepDistiller / mdistiller teacher checkpoints.

The standard CIFAR zoo (docs/models.md) names every Keras layer that holds
weights after the module that holds them in the reference PyTorch code, with
``.`` replaced by ``_``: the ``state_dict`` entry ``layer1.0.conv1.weight`` is
the kernel of the Keras layer ``layer1_0_conv1``. So one generic mapping
converts every family:

* convolution ``weight`` ``(out, in / groups, kh, kw)`` -> kernel ``(kh, kw, in / groups, out)``
  (a ``DepthwiseConv2D`` kernel is ``(kh, kw, in, 1)``), ``bias`` -> bias;
* batch norm ``weight, bias, running_mean, running_var`` -> ``gamma, beta,
  moving_mean, moving_variance`` (``num_batches_tracked`` is dropped);
* linear ``weight`` ``(out, in)`` -> kernel ``(in, out)``, ``bias`` -> bias.

Every weight of the Keras model must be given and every tensor of the
checkpoint used; anything else is a one-line error naming the entries.
Reading a ``.pth`` file needs PyTorch (``pip install "kdkeras[torch]"``);
:func:`assign_state_dict` takes NumPy arrays and does not.
"""

from __future__ import annotations

import keras
import numpy as np

from kdkeras.errors import UsageError

#: ``state_dict`` entries that carry no weight of the Keras model.
IGNORED_SUFFIXES = ("num_batches_tracked",)
#: Keys under which training scripts nest the ``state_dict`` in a checkpoint (RepDistiller: ``model``).
NESTED_KEYS = ("model", "state_dict", "net")


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """The ``state_dict`` of a PyTorch checkpoint file as NumPy arrays.

    Accepts a bare ``state_dict`` or one nested under ``model`` (RepDistiller),
    ``state_dict`` or ``net``; a ``module.`` prefix (``DataParallel``) is removed.

    Raises:
        UsageError: PyTorch is not installed, the file does not exist or holds no ``state_dict``.
    """
    import os

    if not os.path.exists(path):
        raise UsageError(f"Checkpoint file '{path}' does not exist.")
    try:
        import torch
    except ImportError:
        raise UsageError('Reading a PyTorch checkpoint needs PyTorch: pip install "kdkeras[torch]" '
                         "(or pip install torch).") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (not a checkpoint: say so in one line)
        raise UsageError(f"Cannot read PyTorch checkpoint '{path}': {type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}") from None
    return state_dict_arrays(loaded, where=path)


def state_dict_arrays(loaded, where: str = "checkpoint") -> dict[str, np.ndarray]:
    """``{name: np.ndarray}`` from a loaded checkpoint: a ``state_dict``, or one nested (:func:`read_checkpoint`)."""
    for key in NESTED_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded:
        raise UsageError(f"{where} holds no state_dict (a dict of tensors, possibly under "
                         f"{', '.join(repr(k) for k in NESTED_KEYS)}).")
    arrays = {}
    for name, value in loaded.items():
        if not hasattr(value, "shape"):
            continue
        name = name[len("module."):] if name.startswith("module.") else name
        arrays[name] = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    return arrays


def _keras_values(layer, params: dict[str, np.ndarray], module: str) -> list[np.ndarray]:
    """The values of ``layer.weights``, in order, from one module's tensors ``{"weight": ..., "bias": ...}``."""
    def take(key):
        if key not in params:
            raise UsageError(f"Checkpoint has no '{module}.{key}' for the Keras layer '{layer.name}'.")
        return params.pop(key)

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        values = [np.transpose(take("weight"), (2, 3, 0, 1))]
        return values + ([take("bias")] if layer.use_bias else [])
    if isinstance(layer, keras.layers.Conv2D):
        values = [np.transpose(take("weight"), (2, 3, 1, 0))]
        return values + ([take("bias")] if layer.use_bias else [])
    if isinstance(layer, keras.layers.Dense):
        values = [np.transpose(take("weight"))]
        return values + ([take("bias")] if layer.use_bias else [])
    if isinstance(layer, keras.layers.BatchNormalization):
        values = []
        if layer.scale:
            values.append(take("weight"))
        if layer.center:
            values.append(take("bias"))
        return values + [take("running_mean"), take("running_var")]
    raise UsageError(f"Keras layer '{layer.name}' ({type(layer).__name__}) has weights but no PyTorch "
                     "counterpart kdkeras knows how to convert.")


def assign_state_dict(model, state_dict: dict[str, np.ndarray]):
    """Sets every weight of ``model`` from a PyTorch ``state_dict`` of the same architecture.

    Args:
        model: a network of the standard CIFAR zoo (its layers are named
            after the reference modules, see the module docstring).
        state_dict: ``{name: array}`` (:func:`read_checkpoint` or
            :func:`state_dict_arrays`).

    Returns:
        ``model``, with its weights set.

    Raises:
        UsageError: a tensor is missing, left over, or of another shape.
    """
    modules: dict[str, dict[str, np.ndarray]] = {}
    for name, value in state_dict.items():
        module, _, kind = name.rpartition(".")
        if kind in IGNORED_SUFFIXES:
            continue
        modules.setdefault(module.replace(".", "_"), {})[kind] = (np.asarray(value), name)
    assigned = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in modules:
            raise UsageError(f"Checkpoint has no module for the Keras layer '{layer.name}' (expected entries "
                             f"'{layer.name.replace('_', '.')}.*' or similar): not a checkpoint of "
                             f"'{model.name}'.")
        entry = modules.pop(layer.name)
        params = {kind: value for kind, (value, _) in entry.items()}
        module = next(iter(entry.values()))[1].rpartition(".")[0]
        values = _keras_values(layer, params, module)
        if params:
            raise UsageError(f"Checkpoint entries {', '.join(f'{module}.{k}' for k in params)} have no "
                             f"place in the Keras layer '{layer.name}'.")
        for weight, value in zip(layer.weights, values):
            if tuple(weight.shape) != value.shape:
                raise UsageError(f"Shape mismatch for '{layer.name}/{weight.name}': the model has "
                                 f"{tuple(weight.shape)}, the checkpoint gives {value.shape} "
                                 f"(after transposing to Keras's layout).")
        assigned.append((layer, values))
    if modules:
        left = sorted(next(iter(entry.values()))[1].rpartition(".")[0] for entry in modules.values())
        raise UsageError(f"Checkpoint modules {', '.join(left[:8])}{' ...' if len(left) > 8 else ''} have no "
                         f"layer in '{model.name}': not a checkpoint of this network.")
    for layer, values in assigned:
        layer.set_weights([v.astype(w.dtype) for w, v in zip(layer.weights, values)])
    return model
