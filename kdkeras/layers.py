"""Layers shared by the model families.

:class:`GroupedConv2D` is ``keras.layers.Conv2D`` with a fast grouped path.
Keras 3 on the TensorFlow backend runs every grouped convolution through an
XLA-compiled function (``keras/src/backend/tensorflow/nn.py``, ``conv``), which
on CPU is 60-180x slower than TensorFlow's own grouped ``tf.nn.conv2d``
(SPEC section 5). This subclass keeps the ``Conv2D(groups=...)`` interface,
config and weight layout ``(kh, kw, C_in / groups, filters)`` and only swaps
the kernel call.
"""

from __future__ import annotations

import keras

#: Kernel implementations :class:`GroupedConv2D` can use.
CONV_IMPLEMENTATIONS = ("auto", "tf", "depthwise", "keras")


@keras.saving.register_keras_serializable(package="kdkeras")
class GroupedConv2D(keras.layers.Conv2D):
    """2D convolution with ``groups`` that runs fast on the TensorFlow backend.

    Same arguments, weights and ``get_config`` as ``keras.layers.Conv2D``,
    plus:

    Args:
        implementation: which kernel runs the convolution.
            ``"auto"`` (default): ``"depthwise"`` when every group has one
            input and one output channel, else ``"tf"``.
            ``"tf"``: ``tf.nn.conv2d`` with the grouped kernel (oneDNN on
            CPU, cuDNN on GPU handle groups natively).
            ``"depthwise"``: ``tf.nn.depthwise_conv2d`` (only for
            ``groups == C_in == filters``).
            ``"keras"``: Keras's own ``ops.conv`` (the XLA path; the reference).
            On other backends than TensorFlow, Keras's own path is always used.
    """

    def __init__(self, *args, implementation="auto", **kwargs):
        super().__init__(*args, **kwargs)
        if implementation not in CONV_IMPLEMENTATIONS:
            raise ValueError(
                f"Unknown implementation '{implementation}'. Valid choices: "
                f"{', '.join(CONV_IMPLEMENTATIONS)}."
            )
        if self.data_format != "channels_last":
            raise ValueError(
                "GroupedConv2D supports data_format='channels_last' only. "
                f"Received: data_format={self.data_format!r}."
            )
        self.implementation = implementation

    def _resolved_implementation(self, in_channels):
        impl = self.implementation
        if impl == "auto":
            depthwise = self.groups == in_channels == self.filters
            impl = "depthwise" if depthwise and self.groups > 1 else "tf"
        if keras.backend.backend() != "tensorflow":
            impl = "keras"
        return impl

    def convolution_op(self, inputs, kernel):
        impl = self._resolved_implementation(inputs.shape[-1])
        if impl == "keras" or self.groups == 1:
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        strides = (1, *self.strides, 1)
        dilations = (1, *self.dilation_rate, 1)
        padding = self.padding.upper()
        if impl == "depthwise":
            if not self.groups == inputs.shape[-1] == self.filters:
                raise ValueError(
                    "implementation='depthwise' needs groups == input channels == "
                    f"filters. Received: groups={self.groups}, input channels="
                    f"{inputs.shape[-1]}, filters={self.filters}."
                )
            # (kh, kw, 1, C) grouped layout -> (kh, kw, C, 1) depthwise layout.
            depthwise_kernel = tf.transpose(kernel, (0, 1, 3, 2))
            return tf.nn.depthwise_conv2d(
                inputs, depthwise_kernel, strides, padding, dilations=self.dilation_rate
            )
        return tf.nn.conv2d(inputs, kernel, strides, padding, dilations=dilations)

    def get_config(self):
        config = super().get_config()
        config["implementation"] = self.implementation
        return config
