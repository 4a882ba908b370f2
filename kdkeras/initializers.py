"""Kernel initialisers: Dirac (identity) initialisation of convolutions.

DiracNets (Zagoruyko & Komodakis, "DiracNets: Training Very Deep Neural
Networks Without Skip-Connections", 2017, arXiv:1706.00388) train deep plain
networks by starting every convolution at the identity. :class:`Dirac` is that
initialisation for Keras kernels, with the semantics of PyTorch's
``torch.nn.init.dirac_(tensor, groups)``: in every group, output channel ``d``
of the group copies input channel ``d`` of the group (a 1 at the kernel
centre, ``size // 2`` on every spatial axis) for ``d < min(out_per_group,
in_per_group)``; every other weight is 0. An output channel beyond the
group's inputs therefore starts at zero (the identity is not repeated).

This is the initialisation only: the convolution is an ordinary trainable
one that starts at the identity. The DiracNet parameterisation
(``W = diag(a) I + diag(b) W_norm``) is :class:`kdkeras.models.plain.DiracConv2D`
(``--plain=diracnet``, docs/models.md, "Residual-free rivals").

:func:`initialize_convolutions` applies it after a model is built
(``--init=dirac``, docs/training.md, "Dirac initialisation"): every 3x3
convolution, grouped or not (``keras.layers.Conv2D`` and its subclass
:class:`kdkeras.layers.GroupedConv2D`, depthwise ones included); 1x1
convolutions (shortcuts, pointwise, expansion) and dense layers keep their
initialisation.
"""

from __future__ import annotations

import keras
import numpy as np

from kdkeras.errors import UsageError

#: The kernel initialisations of a run (``--init``): ``he`` is the zoo's
#: ``he_normal`` as built; ``dirac`` re-initialises every 3x3 convolution.
INITS = ("he", "dirac")


def dirac_kernel(shape, groups: int = 1) -> np.ndarray:
    """The Dirac kernel of Keras shape ``(*spatial, in_per_group, out)`` as a float32 array.

    Args:
        shape: the kernel shape: 1 to 3 spatial sizes, then the input
            channels per group, then the output channels.
        groups: the convolution's groups; ``out`` must be divisible by it.

    Returns:
        The array: ``kernel[centre, d, g * out_per_group + d] = 1`` for every
        group ``g`` and ``d < min(out_per_group, in_per_group)``, else 0.
    """
    shape = tuple(int(s) for s in shape)
    if not 3 <= len(shape) <= 5:
        raise UsageError(f"Dirac initialisation needs a convolution kernel of rank 3, 4 or 5 "
                         f"((*spatial, in_per_group, out)). Received: shape={shape}.")
    if not isinstance(groups, int) or groups < 1 or shape[-1] % groups:
        raise UsageError(f"Dirac initialisation needs output channels divisible by groups. "
                         f"Received: shape={shape}, groups={groups!r}.")
    kernel = np.zeros(shape, dtype="float32")
    centre = tuple(s // 2 for s in shape[:-2])
    in_per_group, out_per_group = shape[-2], shape[-1] // groups
    for g in range(groups):
        for d in range(min(out_per_group, in_per_group)):
            kernel[(*centre, d, g * out_per_group + d)] = 1.0
    return kernel


@keras.saving.register_keras_serializable(package="kdkeras")
class Dirac(keras.initializers.Initializer):
    """Dirac (identity) initialiser of convolution kernels (DiracNets; PyTorch's ``dirac_``).

    Zagoruyko & Komodakis, "DiracNets: Training Very Deep Neural Networks
    Without Skip-Connections", 2017 (arXiv:1706.00388). Dirac initialisation
    only; the DiracNet parameterisation (``W = diag(a) I + diag(b) W_norm``)
    is :class:`kdkeras.models.plain.DiracConv2D`.

    Args:
        groups: the groups of the convolution the kernel belongs to (its
            shape is ``(kh, kw, in_channels / groups, filters)``).

    Example::

        keras.layers.Conv2D(64, 3, padding="same", groups=4, kernel_initializer=Dirac(groups=4))
    """

    def __init__(self, groups: int = 1):
        self.groups = groups

    def __call__(self, shape, dtype=None):
        return keras.ops.convert_to_tensor(dirac_kernel(shape, self.groups),
                                           dtype=dtype or keras.config.floatx())

    def get_config(self):
        return {"groups": self.groups}


def _layers(model):
    """Every layer of ``model``, nested models included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def is_dirac_target(layer) -> bool:
    """Whether ``--init=dirac`` re-initialises ``layer``: a 3x3 ``Conv2D`` (``GroupedConv2D`` too)."""
    return isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3)


def initialize_convolutions(model, init: str) -> list[str]:
    """Re-initialises the 3x3 convolution kernels of a built ``model`` with ``init``.

    ``"he"`` (the zoo's ``he_normal``, drawn when the model was built)
    changes nothing; ``"dirac"`` overwrites the kernel of every 3x3
    convolution, grouped or not, with :func:`dirac_kernel` for its groups.
    Biases, 1x1 convolutions, BatchNorm and dense layers keep the values
    drawn at build time, so a Dirac model differs from the ``he`` model of
    the same seed only in its 3x3 kernels. The layers' configs are left as
    they are (a saved model needs no kdkeras initialiser to load).

    Returns:
        The names of the re-initialised layers.
    """
    if init == "he":
        return []
    if init != "dirac":
        raise UsageError(f"Unknown init '{init}'. Valid choices: {', '.join(INITS)}.")
    names = []
    for layer in _layers(model):
        if is_dirac_target(layer):
            kernel = layer.kernel
            layer.kernel.assign(Dirac(groups=layer.groups)(tuple(kernel.shape), dtype=kernel.dtype))
            names.append(layer.name)
    return names
