"""Layers shared by the model families.

:class:`GroupedConv2D` is ``keras.layers.Conv2D`` with a fast grouped path.
Keras 3 on the TensorFlow backend runs every grouped convolution through an
XLA-compiled function (``keras/src/backend/tensorflow/nn.py``, ``conv``), which
on CPU is 60-180x slower than TensorFlow's own grouped ``tf.nn.conv2d``
(docs/benchmarks.md, "What makes it fast"). This subclass keeps the ``Conv2D(groups=...)`` interface,
config and weight layout ``(kh, kw, C_in / groups, filters)`` and only swaps
the kernel call.
"""

from __future__ import annotations

import keras

from kdkeras.errors import UsageError

#: Kernel implementations :class:`GroupedConv2D` can use.
CONV_IMPLEMENTATIONS = ("auto", "tf", "depthwise", "keras")


def _has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable(package="kdkeras")
class GroupedConv2D(keras.layers.Conv2D):
    """2D convolution with ``groups`` that runs fast on the TensorFlow backend.

    Same arguments, weights and ``get_config`` as ``keras.layers.Conv2D``,
    plus:

    Args:
        implementation: which kernel runs the convolution.
            ``"auto"`` (default): ``"depthwise"`` when every group has one
            input and one output channel, else ``"tf"``; ``"keras"`` for
            float16/bfloat16 without a GPU (TensorFlow's CPU kernels have no
            low-precision grouped-convolution gradient).
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
            raise UsageError(
                f"Unknown implementation '{implementation}'. Valid choices: "
                f"{', '.join(CONV_IMPLEMENTATIONS)}."
            )
        if self.data_format != "channels_last":
            raise UsageError(
                "GroupedConv2D supports data_format='channels_last' only. "
                f"Received: data_format={self.data_format!r}."
            )
        self.implementation = implementation

    def _resolved_implementation(self, in_channels):
        impl = self.implementation
        if impl == "auto":
            depthwise = self.groups == in_channels == self.filters
            impl = "depthwise" if depthwise and self.groups > 1 else "tf"
            if self.compute_dtype in ("float16", "bfloat16") and not _has_gpu():
                impl = "keras"
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
                raise UsageError(
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


@keras.saving.register_keras_serializable(package="kdkeras")
class FastBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training pass is TensorFlow's fused kernel.

    Keras 3 computes batch statistics and the normalisation as separate ops
    (and their gradients op by op); TensorFlow's ``FusedBatchNormV3`` does the
    forward and backward passes in one kernel each, about 3x faster on CPU for
    CIFAR-sized maps. Same arguments, weights, config and moving-statistics
    update as the parent (the fused kernel's Bessel-corrected batch variance
    is converted back to the biased one Keras tracks). Inference, masks,
    renorm, synchronized BN, other axes or ranks, and other backends use the
    parent's path.
    """

    def _fused_applies(self, inputs, training, mask):
        return (
            training
            and self.trainable
            and mask is None
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.scale
            and self.center
            and not getattr(self, "renorm", False)  # Keras >= 3.13
            and not getattr(self, "synchronized", False)
            and inputs.dtype in ("float32", "float16")
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            tf.cast(self.gamma, "float32"),
            tf.cast(self.beta, "float32"),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The kernel returns the unbiased batch variance; Keras's moving
        # variance follows the biased one (n = batch * H * W values/channel).
        n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], variance.dtype)
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)
