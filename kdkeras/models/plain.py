"""Residual-free rivals (``--plain``): train with branches or fading skips, deploy the plain (NR) network.

Three ways of training a network without skip connections at deployment,
each built from the registered NR network ``<net>_NR_<grouping>``
(:func:`build_plain`) and folded back into that exact network by
:func:`fold` (docs/models.md, "Residual-free rivals"):

* ``repvgg`` (Ding et al., "RepVGG: Making VGG-style ConvNets Great Again",
  CVPR 2021, section 3): every 3x3 convolution, grouped ones
  included, trains as the sum of three branches, 3x3 conv + BN, 1x1 conv + BN
  (same stride and groups) and, where the stride is 1 and ``cin == cout``,
  an identity + BN (:class:`RepConv2D`). Folded: one 3x3 kernel and a bias
  (each BN folded into its kernel, the 1x1 kernel padded to 3x3, the identity
  as a Dirac kernel), as the authors' ``repvgg.py`` (``_fuse_bn_tensor``,
  ``get_equivalent_kernel_bias``) does.
* ``diracnet`` (Zagoruyko & Komodakis, "DiracNets: Training Very Deep Neural
  Networks Without Skip-Connections", 2017, arXiv:1706.00388, section 3):
  every 3x3 convolution uses ``W_hat = diag(a) I + diag(b) W_norm``,
  ``W_norm`` each output filter of ``W`` scaled to unit L2 norm, ``I`` the
  Dirac (identity) kernel, ``a`` and ``b`` learned per output channel,
  initialised to 1 and 0.1 as the authors' code (``diracconv.py``,
  ``DiracConv.init_params``) does (:class:`DiracConv2D`). The stem's 3x3
  convolution is parameterised too, as in ``repvgg`` (the authors' networks
  keep an ordinary stem convolution). Folded: the kernel ``W_hat``.
* ``anneal``: the R network, every skip (identity and projection shortcut)
  multiplied by ``lambda`` (:class:`ScaledSkipAdd`), ``lambda`` falling from
  1 to 0 over the first part of training (:func:`anneal_scale`,
  :class:`SkipAnneal`): the phasing out of skip connections of Monti,
  Tootoonian & Cao ("Avoiding Degradation in Deep Feed-Forward Networks by
  Phasing Out Skip-Connections", ICANN 2018), who drive the skips' weight to
  0 with Lagrange multipliers; the fixed linear schedule here is kdkeras's
  choice. Folded: the skips and projection shortcuts dropped, exact once
  ``lambda`` is 0.

The folded model is the registry's NR build (same layer names, exactly its
parameter count, no ``Add`` layer) holding the trained weights; in inference
mode its outputs equal the trained network's up to float rounding
(``tests/models/test_plain.py``). Where an NR convolution has no bias and
RepVGG's fold gives it one, the bias goes into the moving mean of the
BatchNorm that reads the convolution (``BN(z + b)`` with mean ``m`` is
``BN(z)`` with mean ``m - b``), so no parameter is added.

The families: the paper's WRNs (``wrn<d>x<k>``, every grouping), ResNet-18
and the standard zoo's CIFAR ResNets (``resnet8`` ... ``resnet110``,
``resnet8x4``, ``resnet32x4``): their NR networks read every 3x3
convolution's output with a BatchNorm, and their R networks add the skip as
the second input of a ``{block}_add`` layer, with the NR network's layers
a subset of the R network's, name for name.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

from kdkeras.choices import DEFAULT_ANNEAL_FRACTION, PLAIN_MODES  # noqa: F401  (--plain's choices, its default)
from kdkeras.errors import UsageError
from kdkeras.initializers import dirac_kernel
from kdkeras.layers import FastBatchNormalization, GroupedConv2D, nested_layers
from kdkeras.models.blocks import BN_KWARGS
from kdkeras.models.registry import ModelSpec, build_model, net_entry, parse_model_name

#: The families whose networks :func:`build_plain` and :func:`fold` handle (see the module docstring).
PLAIN_FAMILIES = ("wrn", "resnet18", "cifar_resnet")
#: DiracNets' initial ``a`` and ``b`` (the authors' ``diracconv.py``, ``DiracConv.init_params``).
DIRAC_ALPHA_INIT, DIRAC_BETA_INIT = 1.0, 0.1
#: PyTorch's ``F.normalize`` floor on a filter's norm (a zero filter stays zero).
_NORM_EPSILON = 1e-12


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------


def _centre_slice(size: int, stride: int, padding: str) -> slice:
    """The input positions at the centres of a 3x3 window's outputs along one axis.

    TensorFlow's ``"same"`` pads ``max((out - 1) * s + 3 - n, 0)`` pixels, the
    smaller half before; ``"valid"`` pads none. A 1x1 convolution (or the
    identity) read at these positions is the 3x3 convolution's centre tap.
    """
    if padding == "same":
        out = -(-size // stride)
        start = 1 - max((out - 1) * stride + 3 - size, 0) // 2
    else:
        out = (size - 3) // stride + 1
        start = 1
    return slice(start, start + (out - 1) * stride + 1, stride)


def _fuse_bn(kernel: np.ndarray, bn) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel * t, beta - mean * t)``, ``t = gamma / sqrt(var + eps)``: a conv and its BN (inference) as one conv."""
    gamma, beta, mean, var = (ops.convert_to_numpy(w).astype("float64")
                              for w in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    scale = gamma / np.sqrt(var + bn.epsilon)
    return kernel * scale, beta - mean * scale


@keras.saving.register_keras_serializable(package="kdkeras")
class RepConv2D(GroupedConv2D):
    """RepVGG's training-time 3x3 convolution: 3x3 conv + BN, 1x1 conv + BN and identity + BN, summed.

    Ding et al., "RepVGG: Making VGG-style ConvNets Great Again" (CVPR 2021),
    section 3: ``y = BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x)``, the identity
    branch only where the stride is 1 and ``cin == filters``. Both
    convolutions have the layer's stride and groups; the 1x1 one reads the
    input at the 3x3 windows' centres, so it is the 3x3 kernel's centre tap
    for ``"same"`` and ``"valid"`` padding alike. :meth:`equivalent_kernel_bias`
    folds the three (inference mode) into one 3x3 kernel and a bias.

    The layer is a :class:`~kdkeras.layers.GroupedConv2D` (same arguments;
    its ``kernel`` is the 3x3 branch's), so code that reads a network's
    convolutions (strides, MAC counts, taps) sees the 3x3 convolution it
    folds into. The branches' BatchNorms are
    :class:`~kdkeras.layers.FastBatchNormalization` sublayers
    (``dense_bn``, ``pointwise_bn``, ``identity_bn``), the 1x1 convolution a
    :class:`~kdkeras.layers.GroupedConv2D` sublayer (``pointwise``).

    Args:
        filters: output channels.
        kernel_size: 3 (or ``(3, 3)``).
        bn_momentum, bn_epsilon: the branches' BatchNorm settings (default:
            the zoo's, PyTorch's momentum 0.1 and eps 1e-5).
        **kwargs: ``GroupedConv2D``'s (``strides``, ``padding`` ``"same"`` or
            ``"valid"``, ``groups``, ``use_bias``, ``kernel_initializer``, ...;
            dilation 1, no activation).

    Input: tensor `(batch, H, W, cin)` with static ``H`` and ``W``. Output:
    tensor `(batch, H_out, W_out, filters)`, the 3x3 convolution's shape.
    """

    def __init__(self, filters, kernel_size=3, *, bn_momentum=BN_KWARGS["momentum"],
                 bn_epsilon=BN_KWARGS["epsilon"], **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if tuple(self.kernel_size) != (3, 3) or tuple(self.dilation_rate) != (1, 1):
            raise ValueError(f"RepConv2D is a 3x3 convolution without dilation. Received: "
                             f"kernel_size={self.kernel_size}, dilation_rate={self.dilation_rate}.")
        if self.padding not in ("same", "valid") or self.activation is not keras.activations.linear:
            raise ValueError(f"RepConv2D needs padding 'same' or 'valid' and no activation. Received: "
                             f"padding={self.padding!r}, activation={keras.activations.serialize(self.activation)!r}.")
        self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
        bn = {"momentum": bn_momentum, "epsilon": bn_epsilon}
        self.dense_bn = FastBatchNormalization(name="dense_bn", **bn)
        initializer = keras.initializers.get(keras.initializers.serialize(self.kernel_initializer))
        self.pointwise = GroupedConv2D(filters, 1, groups=self.groups, use_bias=False, kernel_initializer=initializer,
                                       implementation=self.implementation, name="pointwise")
        self.pointwise_bn = FastBatchNormalization(name="pointwise_bn", **bn)
        self.identity_bn = None  # built where the stride is 1 and cin == filters

    def build(self, input_shape):
        super().build(input_shape)
        batch, height, width, channels = input_shape
        if height is None or width is None:
            raise ValueError(f"RepConv2D '{self.name}' needs a static input height and width. "
                             f"Received: input_shape={tuple(input_shape)}.")
        self._centres = (_centre_slice(height, self.strides[0], self.padding),
                         _centre_slice(width, self.strides[1], self.padding))
        if self._centres == (slice(0, height, 1), slice(0, width, 1)):
            self._centres = None  # stride 1, "same": every input pixel is a window's centre
        out_shape = tuple(self.compute_output_shape(input_shape))
        self.dense_bn.build(out_shape)
        self.pointwise.build((batch, out_shape[1], out_shape[2], channels))
        self.pointwise_bn.build(out_shape)
        if tuple(self.strides) == (1, 1) and channels == self.filters:
            self.identity_bn = FastBatchNormalization(name="identity_bn", momentum=self.bn_momentum,
                                                      epsilon=self.bn_epsilon)
            self.identity_bn.build(out_shape)

    @property
    def layers(self) -> list:
        """The branches' sublayers (``pointwise`` and the BatchNorms).

        Walks over nested layers (precise BN, batch-statistics accuracy,
        synchronized BN across replicas) follow ``layers``, and so reach the
        branches' BatchNorms.
        """
        return [layer for layer in (self.pointwise, self.dense_bn, self.pointwise_bn, self.identity_bn)
                if layer is not None]

    def call(self, inputs, training=None):
        centres = inputs if self._centres is None else inputs[:, self._centres[0], self._centres[1], :]
        # centres: (batch, H_out, W_out, cin)
        outputs = self.dense_bn(self.convolution_op(inputs, self.kernel), training=training)
        outputs = outputs + self.pointwise_bn(self.pointwise(centres), training=training)
        if self.identity_bn is not None:
            outputs = outputs + self.identity_bn(centres, training=training)
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs

    def equivalent_kernel_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """The one 3x3 convolution this layer computes in inference mode.

        Returns:
            ``(kernel, bias)``: float32 arrays `(3, 3, cin / groups, filters)` and
            `(filters,)` (RepVGG's ``get_equivalent_kernel_bias``).
        """
        kernel = ops.convert_to_numpy(self.kernel).astype("float64")
        total, bias = _fuse_bn(kernel, self.dense_bn)
        pointwise = np.zeros_like(kernel)
        pointwise[1:2, 1:2] = ops.convert_to_numpy(self.pointwise.kernel)  # the 1x1 kernel at the 3x3 centre
        k, b = _fuse_bn(pointwise, self.pointwise_bn)
        total, bias = total + k, bias + b
        if self.identity_bn is not None:
            k, b = _fuse_bn(dirac_kernel(kernel.shape, self.groups).astype("float64"), self.identity_bn)
            total, bias = total + k, bias + b
        if self.use_bias:
            bias = bias + ops.convert_to_numpy(self.bias)
        return total.astype("float32"), bias.astype("float32")

    def get_config(self):
        config = super().get_config()
        config.update({"bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon})
        return config


@keras.saving.register_keras_serializable(package="kdkeras")
class DiracConv2D(GroupedConv2D):
    """A convolution with the DiracNet parameterisation ``W_hat = diag(a) I + diag(b) W_norm``.

    Zagoruyko & Komodakis, "DiracNets: Training Very Deep Neural Networks
    Without Skip-Connections" (2017, arXiv:1706.00388), section 3:
    ``I`` is the Dirac kernel (:func:`kdkeras.initializers.dirac_kernel`, per
    group: output channel ``d`` of a group copies the group's input channel
    ``d``), ``W_norm`` is ``W`` with every output filter scaled to unit L2
    norm, ``a`` and ``b`` are learned per output channel, initialised to 1
    and 0.1 (the authors' ``diracconv.py``). The convolution runs with
    ``W_hat`` (:meth:`effective_kernel`), which is what :func:`fold` writes
    into the plain network.

    Same arguments as :class:`~kdkeras.layers.GroupedConv2D`. Weights:
    ``kernel`` (``W``), ``bias`` if any, ``alpha`` (``a``) and ``beta`` (``b``).
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.alpha = self.add_weight(name="alpha", shape=(self.filters,),
                                     initializer=keras.initializers.Constant(DIRAC_ALPHA_INIT))
        self.beta = self.add_weight(name="beta", shape=(self.filters,),
                                    initializer=keras.initializers.Constant(DIRAC_BETA_INIT))
        self._delta = dirac_kernel(tuple(self._kernel.shape), self.groups)

    def effective_kernel(self, kernel=None):
        """``W_hat = a * I + b * W / max(||W_o||, 1e-12)``, `(kh, kw, cin / groups, filters)` (``kernel``: ``W``)."""
        kernel = self.kernel if kernel is None else kernel
        norm = ops.sqrt(ops.sum(ops.square(kernel), axis=(0, 1, 2), keepdims=True))  # (1, 1, 1, filters)
        delta = ops.convert_to_tensor(self._delta, dtype=kernel.dtype)
        alpha, beta = ops.cast(self.alpha, kernel.dtype), ops.cast(self.beta, kernel.dtype)
        return alpha * delta + beta * kernel / ops.maximum(norm, _NORM_EPSILON)

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, self.effective_kernel(kernel))

    # Keras's convolutions save and load their kernel and bias only (BaseConv.save_own_variables):
    # a and b follow them in the layer's own store.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built:
            first = 2 if self.use_bias else 1
            store[str(first)], store[str(first + 1)] = self.alpha, self.beta

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            first = 2 if self.use_bias else 1
            self.alpha.assign(store[str(first)])
            self.beta.assign(store[str(first + 1)])


@keras.saving.register_keras_serializable(package="kdkeras")
class ScaledSkipAdd(keras.layers.Layer):
    """``h + lambda * skip``: a residual add whose skip is scaled by a non-trainable ``skip_scale``.

    The ``anneal`` mode's add (see the module docstring); :class:`SkipAnneal`
    sets ``skip_scale`` before every training step. Inputs: ``[h, skip]``,
    tensors of one shape `(batch, H, W, C)`; output: that shape.
    """

    def build(self, input_shape):
        self.skip_scale = self.add_weight(name="skip_scale", shape=(), initializer="ones", trainable=False)

    def call(self, inputs):
        h, skip = inputs
        return h + ops.cast(self.skip_scale, h.dtype) * skip

    def compute_output_shape(self, input_shape):
        return input_shape[0]


# --------------------------------------------------------------------------
# The anneal schedule
# --------------------------------------------------------------------------


def anneal_scale(step: int, total_steps: int, fraction: float = DEFAULT_ANNEAL_FRACTION) -> float:
    """The skip weight ``lambda`` of training step ``step`` (0-based) of ``total_steps``.

    ``lambda = max(0, 1 - step / T)`` with ``T = fraction * (total_steps - 1)``:
    1 at the first step, falling linearly, exactly 0 from step ``ceil(T)`` on,
    so at least the last step (with ``fraction = 1``), and the last half of
    training by default, trains the network without skips.
    """
    end = fraction * (total_steps - 1)
    return 0.0 if step >= end else 1.0 - step / end


def skip_layers(model) -> list:
    """Every :class:`ScaledSkipAdd` of ``model``, nested models (a distiller's student) included."""
    return nested_layers(model, ScaledSkipAdd)


class SkipAnneal(keras.callbacks.Callback):
    """Sets every :class:`ScaledSkipAdd`'s ``lambda`` to :func:`anneal_scale` of the step about to run.

    The step is ``epoch * steps_per_epoch + batch``, from ``fit``'s own epoch
    and batch indices, so a run resumed at epoch ``k`` continues the anneal
    where the uninterrupted run is. With ``steps_per_execution = n`` Keras
    calls back once per n steps; ``lambda`` is then set for the n steps at
    once, to its value at the last of them, so the anneal still ends at 0.
    Each epoch's logs get ``skip_scale``, the value of its last step.

    Args:
        steps_per_epoch: training steps per epoch.
        epochs: the run's epochs (``total_steps = epochs * steps_per_epoch``).
        fraction: the anneal's part of training (``--anneal_fraction``).
    """

    def __init__(self, steps_per_epoch: int, epochs: int, fraction: float = DEFAULT_ANNEAL_FRACTION):
        super().__init__()
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = int(epochs) * self.steps_per_epoch
        self.fraction = fraction
        self._epoch, self._value = 0, None

    def scale_at(self, step: int) -> float:
        return anneal_scale(step, self.total_steps, self.fraction)

    def on_train_begin(self, logs=None):
        self._layers = skip_layers(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        last = min(batch + int(getattr(self.model, "steps_per_execution", 1) or 1) - 1, self.steps_per_epoch - 1)
        value = self.scale_at(self._epoch * self.steps_per_epoch + last)
        if value != self._value:
            for layer in self._layers:
                layer.skip_scale.assign(value)
            self._value = value

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._value is not None:
            logs["skip_scale"] = self._value


# --------------------------------------------------------------------------
# Build and fold
# --------------------------------------------------------------------------


def plain_unavailable(model: str, plain: str) -> str | None:
    """Why ``plain`` does not apply to the family of the model name ``model``, or ``None`` if it does."""
    family = net_entry(parse_model_name(model).net).family
    if family in PLAIN_FAMILIES:
        return None
    return (f"plain={plain} is not available for {model} (family {family}): it applies to the WRN family "
            f"(wrn<d>x<k>), ResNet-18 and the CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4).")


def check_plain(model: str, plain: str) -> None:
    """Raises a one-line :class:`UsageError` unless ``plain`` applies to the model name ``model``.

    ``plain`` must be one of :data:`PLAIN_MODES`; other than ``none``, ``model``
    must be the NR network of a family of :data:`PLAIN_FAMILIES` (the network
    the run deploys; ``anneal`` trains its R structure).
    """
    if plain not in PLAIN_MODES:
        raise UsageError(f"Unknown plain '{plain}'. Valid choices: {', '.join(PLAIN_MODES)}.")
    if plain == "none":
        return
    spec = parse_model_name(model)
    unavailable = plain_unavailable(model, plain)
    if unavailable:
        raise UsageError(unavailable)
    if spec.residual:
        nr = ModelSpec(spec.net, False, spec.group_mode, spec.group_value).name
        what = "anneal trains its R structure and deploys it" if plain == "anneal" else "it deploys it"
        raise UsageError(f"plain={plain} takes the NR model name: --model={nr} ({what} without skips). "
                         f"Received: model={model}.")


def _rebuilt(model, replace, name):
    """``model``'s graph with fresh layers, ``replace(layer)`` (or a copy of it) for each, named ``name``."""
    def clone(layer):
        new = replace(layer)
        return new if new is not None else layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    return keras.Model(copy.inputs[0], copy.outputs[0], name=name)


def _branched(layer):
    """The :class:`RepConv2D` of a 3x3 convolution, else ``None``."""
    if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3):
        return RepConv2D.from_config(layer.get_config())
    return None


def _dirac(layer):
    """The :class:`DiracConv2D` of a 3x3 convolution, else ``None``."""
    if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3):
        return DiracConv2D.from_config(layer.get_config())
    return None


def _scaled_add(layer):
    """The :class:`ScaledSkipAdd` of a residual ``Add``, else ``None``."""
    if isinstance(layer, keras.layers.Add):
        return ScaledSkipAdd(name=layer.name)
    return None


_REPLACE = {"repvgg": _branched, "diracnet": _dirac, "anneal": _scaled_add}


def build_plain(name: str, plain: str, num_classes: int = 100, input_shape=(32, 32, 3), **options):
    """The training-time network of ``--plain=<plain>`` for the NR model ``name``.

    Args:
        name: an NR model name of a family of :data:`PLAIN_FAMILIES`, e.g.
            ``"wrn16x1_NR_g2"`` or ``"resnet20_NR"``.
        plain: ``repvgg``, ``diracnet`` or ``anneal`` (``none``: the network itself).
        num_classes, input_shape, **options: as :func:`kdkeras.models.build_model`
            (e.g. WRN's ``dropout``).

    Returns:
        A functional ``keras.Model`` named ``name``: the NR network with every
        3x3 convolution a :class:`RepConv2D` (``repvgg``) or :class:`DiracConv2D`
        (``diracnet``), or the R network with every residual add a
        :class:`ScaledSkipAdd` (``anneal``); every other layer keeps its name.
        :func:`fold` turns it into the NR network.
    """
    check_plain(name, plain)
    if plain == "none":
        return build_model(name, num_classes=num_classes, input_shape=input_shape, **options)
    spec = parse_model_name(name)
    source = spec.name if plain != "anneal" else ModelSpec(spec.net, True, spec.group_mode, spec.group_value).name
    model = build_model(source, num_classes=num_classes, input_shape=input_shape, **options)
    return _rebuilt(model, _REPLACE[plain], spec.name)


def _consumers(model, layer) -> list:
    """The layers of the functional ``model`` that read ``layer``'s output."""
    # Keras keeps a functional graph's edges in each layer's inbound nodes (node.parent_nodes: the nodes whose
    # outputs it reads); there is no public accessor for a layer's readers.
    return [other for other in model.layers for node in other._inbound_nodes
            if any(parent.operation is layer for parent in node.parent_nodes)]


def fold(model, warn: bool = True):
    """The plain (NR) network of a :func:`build_plain` model, holding its trained weights.

    The network is the registry's build of the NR name (``model.name``), with
    ``model``'s classes, input shape and WRN dropout: the same layer names,
    exactly its parameter count, no ``Add`` layer. Layers of the same name
    get ``model``'s weights, except the 3x3 convolutions of ``repvgg``
    (:meth:`RepConv2D.equivalent_kernel_bias`; a bias the NR convolution
    lacks is subtracted from the moving mean of the BatchNorm reading it) and
    ``diracnet`` (:meth:`DiracConv2D.effective_kernel`); ``anneal``'s skips,
    projection shortcuts and their BatchNorms are dropped. In inference mode
    the result computes what ``model`` does (``anneal``: once its
    ``lambda`` is 0). A model without plain layers folds to a copy of itself.

    Args:
        model: a :func:`build_plain` model (or one loaded from its ``.keras``).
        warn: warn when ``anneal``'s skips still carry a weight (the folded
            network then differs from ``model``).

    Returns:
        A new functional ``keras.Model``.
    """
    try:
        spec = parse_model_name(model.name)
    except UsageError:
        raise UsageError(f"fold() needs a model built by build_plain: its name is its NR model name. "
                         f"Received a model named {model.name!r}.") from None
    if spec.residual or net_entry(spec.net).family not in PLAIN_FAMILIES:
        raise UsageError(f"fold() folds the NR networks of the families {', '.join(PLAIN_FAMILIES)}. "
                         f"Received: {model.name}.")
    sources = {layer.name: layer for layer in model.layers}
    if warn:
        scales = sorted({float(ops.convert_to_numpy(layer.skip_scale)) for layer in skip_layers(model)})
        if scales and scales[-1] != 0.0:
            warnings.warn(f"fold({model.name}): the skips still carry weight lambda={scales[-1]:g}; the folded NR "
                          f"network differs from the model until lambda is 0.")
    options = {}
    if net_entry(spec.net).family == "wrn":
        rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
        options["dropout"] = rates[0] if rates else 0.0
    plain = build_model(spec.name, num_classes=int(model.output_shape[-1]), input_shape=tuple(model.input_shape[1:]),
                        **options)
    biases = []
    for layer in plain.layers:
        if not layer.weights:
            continue
        source = sources.get(layer.name)
        if source is None:
            raise ValueError(f"fold({model.name}): the model has no layer '{layer.name}' of the NR network.")
        if isinstance(source, RepConv2D):
            kernel, bias = source.equivalent_kernel_bias()
            layer.set_weights([kernel, bias] if layer.use_bias else [kernel])
            if not layer.use_bias:
                biases.append((layer, bias))
        elif isinstance(source, DiracConv2D):
            weights = [ops.convert_to_numpy(source.effective_kernel())]
            layer.set_weights(weights + ([ops.convert_to_numpy(source.bias)] if layer.use_bias else []))
        else:
            layer.set_weights(source.get_weights())
    for layer, bias in biases:
        readers = _consumers(plain, layer)
        if len(readers) != 1 or not isinstance(readers[0], keras.layers.BatchNormalization):
            raise ValueError(f"fold({model.name}): '{layer.name}' has no bias and is not read by one BatchNorm "
                             f"(read by {[r.name for r in readers]}), so its folded bias has no place.")
        bn = readers[0]
        bn.moving_mean.assign(ops.convert_to_numpy(bn.moving_mean) - bias)
    return plain

