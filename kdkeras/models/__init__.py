"""The paper's model zoo: WRN, ResNet-18 and MobileNetV2 with grouped convolutions.

Importing this package registers the families (``wrn``, ``resnet``,
``mobilenet_v2``) in :mod:`kdkeras.models.registry`; see docs/models.md.
"""

from kdkeras.models import mobilenet_v2, resnet, wrn  # noqa: F401  (register the families)
from kdkeras.models.registry import (
    ModelSpec,
    build_model,
    family_recipe,
    list_models,
    list_nets,
    parse_model_name,
    register_family,
    register_net,
)

__all__ = ["ModelSpec", "build_model", "family_recipe", "list_models", "list_nets", "parse_model_name",
           "register_family", "register_net"]
