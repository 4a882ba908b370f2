"""The paper's model zoo: WRN, ResNet-18 and MobileNetV2 with grouped convolutions.

Importing this package registers the families (``wrn``, ``resnet``,
``mobilenet_v2``) in :mod:`kdkeras.models.registry`; see docs/models.md.
:mod:`kdkeras.models.taps` finds the feature taps (stem and stage outputs)
of any zoo network. :mod:`kdkeras.models.plain` trains the NR networks of
WRN, ResNet-18 and the CIFAR ResNets the residual-free ways (``--plain``:
RepVGG branches, DiracNet convolutions, annealed skips) and folds them
back into the plain network (:func:`fold`).
"""

from kdkeras.models import mobilenet_v2, resnet, wrn  # noqa: F401  (register the families)
# The standard CIFAR zoo's families, in the order kdkeras.list_standard_models() lists them.
from kdkeras.models import (  # noqa: F401, I001  (register the families)
    cifar_resnet,
    resnet_bottleneck,
    cifar_wrn,
    vgg,
    mobilenet_half,
    shufflenet,
)
from kdkeras.models.registry import (
    ModelSpec,
    build_model,
    family_recipe,
    list_models,
    list_nets,
    list_standard_models,
    parse_model_name,
    register_family,
    register_net,
)
from kdkeras.models.plain import PLAIN_MODES, build_plain, fold
from kdkeras.models.taps import feature_model, feature_taps, make_adapter, tap_layers, tap_names

__all__ = ["ModelSpec", "PLAIN_MODES", "build_model", "build_plain", "family_recipe", "feature_model", "feature_taps",
           "fold", "list_models", "list_nets", "list_standard_models", "make_adapter", "parse_model_name",
           "register_family", "register_net", "tap_layers", "tap_names"]
