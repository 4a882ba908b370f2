"""Layers shared by the model families.

:class:`GroupedConv2D` is ``keras.layers.Conv2D`` with a fast grouped path.
Keras 3 on the TensorFlow backend runs every grouped convolution through an
XLA-compiled function (``keras/src/backend/tensorflow/nn.py``, ``conv``), which
on CPU is 60-180x slower than TensorFlow's own grouped ``tf.nn.conv2d``
(docs/benchmarks.md, "What makes it fast"). That kernel has a gradient only
with oneDNN (CPU) or cuDNN (GPU); elsewhere the layer runs a portable form
(docs/benchmarks.md, "CPUs without oneDNN"). This subclass keeps the
``Conv2D(groups=...)`` interface, config and weight layout
``(kh, kw, C_in / groups, filters)`` and only swaps the kernel call.
"""

from __future__ import annotations

import keras

from kdkeras import host
from kdkeras.errors import UsageError

#: Kernel implementations :class:`GroupedConv2D` can use.
CONV_IMPLEMENTATIONS = ("auto", "tf", "split", "depthwise", "dense", "keras")
#: The implementations built only from kernels that every TensorFlow build has, with gradients.
PORTABLE_IMPLEMENTATIONS = ("split", "depthwise", "dense")


def portable_implementation(in_channels: int, groups: int, filters: int, dilated: bool = False) -> str:
    """The fastest portable form for one grouped convolution (measured; docs/benchmarks.md).

    The rule comes from timing the forward and backward pass of every grouped
    3x3 shape of the zoo with TensorFlow's oneDNN off (batch 128, 2-core x86
    CPU): the depthwise form wins when each group is tiny (its intermediate
    tensor is ``C_in/groups`` times the output), one dense convolution with a
    block-diagonal kernel wins on narrow layers (``groups`` times the
    multiply-adds, but one well-blocked kernel), and per-group convolutions
    win on the rest.

    Args:
        in_channels: ``C_in``; groups: the number of groups; filters: ``C_out``.
        dilated: a dilation rate other than 1 (the depthwise kernel takes it
            only at stride 1, so it is left out).
    """
    per_in, per_out = in_channels // groups, filters // groups
    if not dilated and per_in * per_out <= 4:
        return "depthwise"
    if in_channels <= 32:
        return "dense"
    if not dilated and per_in * per_out <= 16:
        return "depthwise"
    return "split"


def _split_conv(tf, inputs, kernel, groups, strides, padding, dilations):
    """One ``tf.nn.conv2d`` per group, concatenated: ``(N, H, W, C_in)`` -> ``(N, Ho, Wo, C_out)``."""
    xs = tf.split(inputs, groups, axis=-1)  # groups x (N, H, W, C_in / groups)
    ks = tf.split(kernel, groups, axis=-1)  # groups x (kh, kw, C_in / groups, C_out / groups)
    return tf.concat([tf.nn.conv2d(x, k, strides, padding, dilations=dilations) for x, k in zip(xs, ks)], -1)


def _depthwise_conv(tf, inputs, kernel, groups, strides, padding, dilation_rate):
    """A depthwise convolution with ``C_out / groups`` outputs per input channel, summed within each group.

    Output channel ``o`` of group ``g`` is ``sum_i conv(x[g * cin_g + i], K[:, :, i, o])``: the
    depthwise kernel gives every input channel ``c = g * cin_g + i`` its ``cout_g`` products at
    channel ``c * cout_g + m``, and summing over ``i`` leaves ``g * cout_g + m``. For a
    depthwise layer (``cin_g == cout_g == 1``) it is ``tf.nn.depthwise_conv2d`` itself.
    """
    kh, kw, cin_g, cout = kernel.shape
    cout_g = cout // groups
    # (kh, kw, cin_g, groups, cout_g) -> (kh, kw, groups, cin_g, cout_g) -> (kh, kw, C_in, cout_g)
    k = tf.transpose(tf.reshape(kernel, (kh, kw, cin_g, groups, cout_g)), (0, 1, 3, 2, 4))
    k = tf.reshape(k, (kh, kw, groups * cin_g, cout_g))
    y = tf.nn.depthwise_conv2d(inputs, k, strides, padding, dilations=dilation_rate)  # (N, Ho, Wo, C_in * cout_g)
    if cin_g == 1:
        return y  # channel g * cout_g + m already
    shape = tf.shape(y)
    y = tf.reshape(y, (shape[0], shape[1], shape[2], groups, cin_g, cout_g))
    return tf.reshape(tf.reduce_sum(y, axis=4), (shape[0], shape[1], shape[2], cout))


def _dense_conv(tf, inputs, kernel, groups, strides, padding, dilations):
    """One standard convolution with the block-diagonal ``(kh, kw, C_in, C_out)`` kernel (zeros across groups)."""
    kh, kw, cin_g, cout = kernel.shape
    cout_g = cout // groups
    k = tf.reshape(kernel, (kh, kw, 1, cin_g, groups, cout_g))
    mask = tf.reshape(tf.eye(groups, dtype=kernel.dtype), (1, 1, groups, 1, groups, 1))
    full = tf.reshape(k * mask, (kh, kw, groups * cin_g, cout))  # [.., g * cin_g + i, h * cout_g + m]: 0 for g != h
    return tf.nn.conv2d(inputs, full, strides, padding, dilations=dilations)


@keras.saving.register_keras_serializable(package="kdkeras")
class GroupedConv2D(keras.layers.Conv2D):
    """2D convolution with ``groups`` that runs fast on the TensorFlow backend.

    Same arguments, weights and ``get_config`` as ``keras.layers.Conv2D``,
    plus:

    Args:
        implementation: which kernel runs the convolution.
            ``"auto"`` (default): ``"depthwise"`` when every group has one
            input and one output channel; else ``"tf"`` where TensorFlow's
            grouped kernel trains in this process (a GPU, or oneDNN on a CPU:
            :func:`kdkeras.host.grouped_conv_kernel`), and otherwise the
            fastest portable form for the layer's shape
            (:func:`portable_implementation`); ``"keras"`` for
            float16/bfloat16 without a GPU (TensorFlow's CPU kernels have no
            low-precision grouped-convolution gradient).
            ``"tf"``: ``tf.nn.conv2d`` with the grouped kernel (oneDNN on
            CPU, cuDNN on GPU handle groups natively).
            ``"split"``: one ``tf.nn.conv2d`` per group, concatenated.
            ``"depthwise"``: ``tf.nn.depthwise_conv2d`` with ``C_out / groups``
            outputs per input channel, summed within each group.
            ``"dense"``: one ``tf.nn.conv2d`` with a block-diagonal kernel.
            ``"keras"``: Keras's own ``ops.conv`` (the XLA path; the reference).
            The three portable forms and ``"keras"`` train on every CPU. On
            other backends than TensorFlow, Keras's own path is always used.
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
        if keras.backend.backend() != "tensorflow":
            return "keras"
        impl = self.implementation
        if impl == "auto":
            if self.groups == in_channels == self.filters:
                impl = "depthwise"
            elif host.grouped_conv_kernel():
                impl = "tf"
            else:
                impl = portable_implementation(in_channels, self.groups, self.filters,
                                               dilated=any(d != 1 for d in self.dilation_rate))
            if self.compute_dtype in ("float16", "bfloat16") and not host.has_gpu():
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
            return _depthwise_conv(tf, inputs, kernel, self.groups, strides, padding, self.dilation_rate)
        if impl == "split":
            return _split_conv(tf, inputs, kernel, self.groups, strides, padding, dilations)
        if impl == "dense":
            return _dense_conv(tf, inputs, kernel, self.groups, strides, padding, dilations)
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


@keras.saving.register_keras_serializable(package="kdkeras")
class GlobalBatchDropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` whose masks under several replicas are those of one device.

    Keras's layer draws, on every replica, the mask of that replica's part of
    the batch from the same seed, so replica 1 reuses replica 0's mask and
    the step differs from the single-device step on the same global batch.
    This layer draws the mask of the whole global batch on every replica
    (the same stateless draw one device makes; its first ``n`` values do not
    depend on the shape's batch size) and keeps the rows of its own examples,
    found from every replica's batch size (an ``all_gather``, so a ragged
    last batch splits correctly). With one replica, or a ``noise_shape``, it
    is Keras's layer, bit for bit. The cost: each replica draws the random
    numbers of the global batch for this layer (docs/distributed.md).
    """

    def call(self, inputs, training=False):
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if (not training or self.rate <= 0 or self.noise_shape is not None or context is None
                or context.num_replicas_in_sync <= 1 or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training)
        local = tf.shape(inputs, out_type=tf.int64)
        sizes = context.all_gather(local[:1], axis=0)  # every replica's rows, in replica order
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
        offset = tf.reduce_sum(tf.where(tf.range(tf.size(sizes, out_type=tf.int64)) < replica, sizes, 0))
        shape = tf.concat([tf.reduce_sum(sizes, keepdims=True), local[1:]], axis=0)
        uniform = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        begin = tf.concat([tf.reshape(offset, [1]), tf.zeros_like(local[1:])], axis=0)
        keep = tf.slice(uniform, begin, local) >= self.rate
        scale = tf.constant(1.0 / (1.0 - self.rate), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros((), inputs.dtype))


def nested_layers(model, kind) -> list:
    """Every layer of ``model`` that is a ``kind``, nested models and sublayer lists included, in layer order."""
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, kind):
            found.append(layer)
        for child in getattr(layer, "layers", ()) or ():
            visit(child)

    visit(model)
    return found
