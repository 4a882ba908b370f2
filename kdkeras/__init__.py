"""kdkeras: knowledge-distillation research toolkit for Keras 3 / TensorFlow.

Reproduces "On the Demystification of Knowledge Distillation: A Residual
Network Perspective": the paper's model zoo (WRN, ResNet-18, MobileNetV2 with
grouped convolutions, residual or not), Hinton knowledge distillation and the
paper's experiment grid.

Public names are imported lazily so that ``import kdkeras`` stays cheap until
a model or a training function is used. Importing kdkeras before TensorFlow
turns TensorFlow's oneDNN kernels on unless ``TF_ENABLE_ONEDNN_OPTS`` is set
(docs/training.md, "CPUs and oneDNN").
"""

import importlib

from kdkeras import host as _host

# Before TensorFlow is imported: its oneDNN kernels on (they hold the grouped convolutions' gradient on CPUs
# where TensorFlow leaves them off), unless the user set TF_ENABLE_ONEDNN_OPTS. See kdkeras/host.py.
_host.enable_onednn()

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "kdkeras.models.registry",
    "parse_model_name": "kdkeras.models.registry",
    "list_models": "kdkeras.models.registry",
    "list_nets": "kdkeras.models.registry",
    "list_standard_models": "kdkeras.models.registry",
    "register_net": "kdkeras.models.registry",
    "ModelSpec": "kdkeras.models.registry",
    "GroupedConv2D": "kdkeras.layers",
    "profile": "kdkeras.profiling",
    "count_params": "kdkeras.profiling",
    "count_macs": "kdkeras.profiling",
    "Profile": "kdkeras.profiling",
    "Distiller": "kdkeras.distiller",
    "list_methods": "kdkeras.methods",
    "HintonKD": "kdkeras.losses",
    "kd_loss": "kdkeras.losses",
    "kd_loss_terms": "kdkeras.losses",
    "PyTorchSGD": "kdkeras.optimizers",
    "FastBatchNormalization": "kdkeras.layers",
    "feature_model": "kdkeras.models.taps",
    "Dirac": "kdkeras.initializers",
    "load_model": "kdkeras.models.convert",
    "save_model": "kdkeras.models.convert",
    "make_datasets": "kdkeras.data",
    "RunConfig": "kdkeras.config",
    "train_and_evaluate": "kdkeras.training",
    "UsageError": "kdkeras.errors",
}

_SUBMODULES = ("callbacks", "cli", "config", "data", "distiller", "layers", "losses", "models",
               "optimizers", "paper", "profiling", "recipes", "training", "tuning", "analysis", "grid",
               "tables", "io_utils", "batchnorm", "errors", "claims", "commands", "hparams", "initializers",
               "methods", "plotting", "host", "experiments", "runtime", "throughput", "gpu_check", "choices")

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"kdkeras.{name}")
    raise AttributeError(f"module 'kdkeras' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
