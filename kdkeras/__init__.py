"""kdkeras: knowledge-distillation research toolkit for Keras 3 / TensorFlow."""

__version__ = "0.1.0"
