"""Feature taps: the named outputs of the stem and of every stage of a zoo network.

Feature-level distillation (FitNets, AT) compares intermediate feature maps of
a student and a teacher. A *tap* is one such map, named after where it is
taken (docs/models.md, "Feature taps"):

* ``stem``: the output of the stem, the input of the first block;
* ``stage1``, ``stage2``, ...: the output of the last block of each stage,
  where a stage is a run of blocks at one resolution (a new stage starts at
  every block that downsamples).

A family may declare its own taps in its module (``register_family(...,
taps=fn)``, ``fn(model) -> {tap: layer name}``): the standard CIFAR zoo's
families do (``stem``, ``stage1``..., and ``stage<s>_preact`` before a
block's last ReLU; docs/models.md). For the paper's families, which declare
none, the taps are found from the layer names the builders have always used
(``stage{s}_block{b}_...``), so a model built now, a model loaded through
:func:`kdkeras.models.convert.load_model` and a ``.keras`` file saved before
this module existed all have them; the builders add no layer for them, so the
parameter and MAC counts of Tables 8 and 9 are untouched.

Where each tap is taken:

* WRN (pre-activation blocks): the block's output as the next block takes it,
  before that block's (or the head's) BN-ReLU: the sum ``stage{s}_block{B}_add``
  (R) or the last 1x1 convolution ``stage{s}_block{B}_unit2_pconv`` (NR).
  ``stem`` is ``stem_conv``. These are the group outputs the AT paper's
  reference code transfers on WRN; the last stage is taken before the head's
  BN-ReLU (some toolkits take it after).
* ResNet-18 (post-activation blocks): ``stage{s}_block2_out_relu``, the ReLU
  after the sum (R) or after the last BN (NR); ``stem`` is ``stem_relu``.
* MobileNetV2: the builder's seven ``stage{g}`` groups (one per ``(t, c, n, s)``
  row) form four resolution levels at 32x32 inputs: 34x34 (group 1), 17x17
  (group 2), 9x9 (group 3) and 5x5 (groups 4 to 7). ``stage1`` to ``stage4``
  are the ends of these levels: ``stage1_block1``, ``stage2_block2``,
  ``stage3_block3`` and ``stage7_block1``, each at its ``_add`` (R, where the
  block has its identity) or its ``_project_bn``. ``stem`` is ``stem_relu``;
  the head's 1x1 convolution comes after ``stage4``.

:func:`feature_model` builds a multi-output view ``{"logits": ..., tap: ...}``
that shares the model's layers and weights, so one forward pass gives the
logits and the features; :func:`tail_model` the network after a stage tap
(from the tap's map to the logits, RD's teacher stages). :func:`make_adapter` builds the 1x1 conv + BN that
maps a student's channels to a teacher's (FitNets' regressor); it is a model
of its own, outside the student.
"""

from __future__ import annotations

import re

import keras

from kdkeras.errors import UsageError
from kdkeras.models.blocks import BN_KWARGS
from kdkeras.models.convert import PREPROCESS_NAME, RAW_INPUT_NAME, has_preprocessing, strip_preprocessing

#: Name of the stem tap.
STEM = "stem"
#: Key of the logits in :func:`feature_model`'s outputs.
LOGITS = "logits"
#: Name of the embedding tap: the pooled features the classifier reads (the input of the ``logits`` layer).
EMBEDDING = "embedding"
#: The stem's last layer, first match wins (ResNet-18 and MobileNetV2, then WRN).
STEM_LAYERS = ("stem_relu", "stem_conv")
#: A block's output layer is ``stage{s}_block{b}_<suffix>`` with the first of these suffixes the block has:
#: ``out_relu`` (ResNet-18), ``add`` (R WRN, R MobileNetV2 with an identity), ``unit2_pconv`` (NR WRN),
#: ``project_bn`` (MobileNetV2 without an identity).
BLOCK_OUTPUT_SUFFIXES = ("out_relu", "add", "unit2_pconv", "project_bn")

_BLOCK_RE = re.compile(r"^stage(\d+)_block(\d+)_(.+)$")


def _network(model, what):
    """``model`` if it is a bare zoo network; a one-line ``UsageError`` otherwise."""
    if not isinstance(model, keras.Model):
        raise UsageError(f"{what} takes a Keras model of the kdkeras zoo. Received: {type(model).__name__}.")
    if has_preprocessing(model):
        raise UsageError(
            f"Model '{model.name}' has the raw-image front ('{PREPROCESS_NAME}'): take the taps of the network "
            f"behind it, kdkeras.models.convert.strip_preprocessing(model), or use feature_model(model, taps), "
            f"which keeps the front."
        )
    return model


def _blocks(model):
    """``{builder stage: {block: {suffix: layer}}}`` from the ``stage{s}_block{b}_...`` layer names."""
    stages: dict[int, dict[int, dict[str, keras.layers.Layer]]] = {}
    for layer in model.layers:
        match = _BLOCK_RE.match(layer.name)
        if match:
            stage, block, suffix = int(match.group(1)), int(match.group(2)), match.group(3)
            stages.setdefault(stage, {}).setdefault(block, {})[suffix] = layer
    return stages


def _downsamples(layers) -> bool:
    """Whether any convolution among ``layers`` has a stride above 1."""
    return any(
        isinstance(layer, keras.layers.Conv2D) and max(layer.strides) > 1 for layer in layers.values()
    )


def tap_layers(model) -> dict[str, str]:
    """``{tap name: layer name}`` of a zoo network, in order (``stem``, ``stage1``, ...).

    Each tap is the output of the named layer (see the module docstring for
    where each family's taps are).

    Args:
        model: a zoo network built by :func:`kdkeras.build_model` or loaded by
            :func:`kdkeras.models.convert.load_model` (R or NR, any grouping),
            without the raw-image front.

    Raises:
        UsageError: ``model`` has the raw-image front, or is not a zoo network
            (no ``stem_*`` layer or no ``stage{s}_block{b}_*`` layers).
    """
    model = _network(model, "tap_layers")
    declared = _family_taps(model)
    if declared is not None:
        return declared
    names = {layer.name for layer in model.layers}
    stem = next((name for name in STEM_LAYERS if name in names), None)
    stages = _blocks(model)
    if stem is None or not stages:
        raise UsageError(
            f"Model '{model.name}' is not a kdkeras zoo network: it has no "
            f"{'stem layer (' + ' or '.join(STEM_LAYERS) + ')' if stem is None else 'stage<s>_block<b>_* layers'}."
        )
    order = sorted(stages)
    if order != list(range(1, len(order) + 1)):
        raise UsageError(f"Model '{model.name}' has stages {order}, not 1..{len(order)}: not a kdkeras zoo network.")

    taps = {STEM: stem}
    level = 0
    for stage in order:
        blocks = stages[stage]
        if level == 0 or _downsamples(blocks[min(blocks)]):
            level += 1  # a new resolution: a new tap stage
        last = blocks[max(blocks)]
        suffix = next((s for s in BLOCK_OUTPUT_SUFFIXES if s in last), None)
        if suffix is None:
            raise UsageError(
                f"Model '{model.name}': block stage{stage}_block{max(blocks)} has none of the output layers "
                f"{', '.join('_' + s for s in BLOCK_OUTPUT_SUFFIXES)}: not a kdkeras zoo network."
            )
        taps[f"stage{level}"] = last[suffix].name  # a later builder stage at this resolution overrides
    return taps


def _family_taps(model) -> dict[str, str] | None:
    """The taps a model's family declares in its own module (found from the model's name); ``None``: infer them."""
    from kdkeras.models.registry import family_of, parse_model_name

    try:
        family = family_of(parse_model_name(model.name).net)
    except UsageError:
        return None
    if family.taps is None:
        return None
    taps = dict(family.taps(model))
    names = {layer.name for layer in model.layers}
    missing = [layer for layer in taps.values() if layer not in names]
    if missing:
        raise UsageError(f"Model '{model.name}' lacks the layers {', '.join(missing)} of its family's taps: "
                         "not a kdkeras zoo network of that name.")
    return taps


def tap_names(model) -> list[str]:
    """The valid tap names of a zoo network, e.g. ``["stem", "stage1", "stage2", "stage3"]`` for WRN."""
    return list(tap_layers(model))


def feature_taps(model) -> dict[str, keras.KerasTensor]:
    """``{tap name: symbolic tensor}`` of a zoo network: the outputs of its stem and stages.

    The tensors belong to ``model``'s own graph (``model.input`` to
    ``model.output``), so ``keras.Model(model.input, feature_taps(model)["stage2"])``
    is a sub-model sharing its weights.

    Args:
        model: a bare zoo network (see :func:`tap_layers`).

    Raises:
        UsageError: ``model`` has the raw-image front (strip it with
            :func:`kdkeras.models.convert.strip_preprocessing`, or use
            :func:`feature_model`, which keeps it), or is not a zoo network.
    """
    return {tap: model.get_layer(layer).output for tap, layer in tap_layers(model).items()}


def _check_taps(model, taps) -> list[str]:
    if taps is None:
        return tap_names(model)
    if isinstance(taps, str):
        taps = [taps]
    valid = tap_names(model) + [EMBEDDING]
    chosen = []
    for tap in taps:
        if tap == LOGITS:
            continue
        if tap not in valid:
            raise UsageError(f"Unknown feature tap {tap!r} for model '{model.name}'. Valid taps: {', '.join(valid)}.")
        if tap not in chosen:
            chosen.append(tap)
    return chosen


def feature_model(model, taps=None) -> keras.Model:
    """A multi-output view of a zoo network: ``{"logits": ..., tap: ...}``, sharing its layers and weights.

    The view is a functional model over ``model``'s own layers (nothing is
    copied), so one call gives the logits and the chosen feature maps, and
    training the view trains ``model``. Its logits equal ``model``'s output.

    Args:
        model: a zoo network, R or NR, any grouping (see :func:`tap_layers`).
            A model with the raw-image front (a run's ``model.keras`` loaded
            with ``raw_images=True``) keeps it: the view then takes raw images
            too, and its taps are those of the network behind the front.
        taps: tap names (a list, or one name); ``None``: every stage tap.
            ``"logits"`` may be listed; it is always an output.
            ``"embedding"``: the pooled features the classifier reads,
            ``(batch, features)``.

    Returns:
        A ``keras.Model`` whose call returns a dict with the key ``"logits"``
        and one key per chosen tap.

    Raises:
        UsageError: an unknown tap name (the message lists the model's valid
            taps), or ``model`` is not a zoo network.
    """
    if isinstance(model, keras.Model) and has_preprocessing(model):
        network = strip_preprocessing(model)
        view = feature_model(network, taps)
        front = model.get_layer(PREPROCESS_NAME)
        inputs = keras.Input(shape=tuple(model.input_shape[1:]), dtype="float32", name=RAW_INPUT_NAME)
        return keras.Model(inputs, view(front(inputs)), name=f"{model.name}_features")
    model = _network(model, "feature_model")
    chosen = _check_taps(model, taps)
    if len(model.outputs) != 1:
        raise UsageError(f"Model '{model.name}' has {len(model.outputs)} outputs; a zoo network has one (the logits).")
    found = feature_taps(model)
    if EMBEDDING in chosen:
        found[EMBEDDING] = _embedding(model)
    outputs = {LOGITS: model.outputs[0], **{tap: found[tap] for tap in chosen}}
    return keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, outputs,
                       name=f"{model.name}_features")


def tail_model(model, tap) -> keras.Model:
    """The part of a zoo network after a stage tap: a model from that tap's map to the logits, sharing its layers.

    In the zoo's families a stage boundary is a single tensor: every layer
    after the tap reads the tap's map or what is computed from it (a WRN's
    next block reads it through its BN-ReLU, its projection shortcut too; a
    post-activation ResNet's next block reads the ReLU output in both its
    branch and its shortcut). The tail is therefore the functional graph
    from the tap's tensor to the logits, built once and nothing copied, so
    ``tail_model(model, tap)(head(x)) == model(x)`` with
    ``head = keras.Model(model.input, feature_taps(model)[tap])``. Freezing
    or training ``model`` freezes or trains the tail.

    Args:
        model: a zoo network (see :func:`tap_layers`); a raw-image front is
            skipped (the taps are behind it).
        tap: a tap name of ``model``, e.g. ``"stage1"``.

    Returns:
        A ``keras.Model`` from a ``(batch, H, W, C)`` map, the tap's shape, to
        the logits ``(batch, classes)``.

    Raises:
        UsageError: ``tap`` is not one of ``model``'s taps, or a layer after
            it reads an earlier tensor (the tap is not a stage boundary).
    """
    network = strip_preprocessing(model) if isinstance(model, keras.Model) and has_preprocessing(model) else model
    network = _network(network, "tail_model")
    taps = feature_taps(network)
    if tap not in taps:
        raise UsageError(f"Unknown feature tap {tap!r} for model '{network.name}'. Valid taps: {', '.join(taps)}.")
    try:
        return keras.Model(taps[tap], network.outputs[0], name=f"{network.name}_after_{tap}")
    except ValueError:  # Keras: "Output ... is not connected to `inputs`"
        raise UsageError(f"Model '{network.name}': layers after the tap {tap!r} read earlier tensors, so the "
                         f"network has no part that starts at {tap!r} alone.") from None


def _embedding(model):
    """The symbolic input of a zoo network's classifier (the layer that gives its logits): ``(batch, features)``."""
    layer = model.outputs[0]._keras_history.operation if len(model.outputs) == 1 else None
    if not isinstance(layer, keras.layers.Dense) or len(layer.input.shape) != 2:
        raise UsageError(f"Model '{model.name}' does not end in a Dense classifier over pooled features, so it "
                         f"has no {EMBEDDING!r} tap: not a kdkeras zoo network.")
    return layer.input


def _feature_shape(shape, what):
    """``(H, W, C)`` of a feature-map shape given with or without the batch axis."""
    shape = tuple(None if d is None else int(d) for d in shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or shape[-1] is None:
        raise UsageError(f"{what} must be a feature-map shape (H, W, C) or (batch, H, W, C) with known C. "
                         f"Received: {shape}.")
    return shape


def make_adapter(student_shape, teacher_shape, name) -> keras.Model:
    """A 1x1 convolution + BatchNorm mapping a student's feature map to a teacher's channels.

    The FitNets regressor, as a small functional model of its own (not part
    of the student, so the student is saved as a plain zoo model without it).
    The convolution has no bias (the BN has one) and He-normal weights; the
    BN uses the zoo's settings (PyTorch's momentum and epsilon) and is
    synchronized across replicas, so its statistics are the global batch's
    under ``MirroredStrategy``. Both layers compute in float32 whatever the
    dtype policy (the loss is float32 arithmetic). It adds no
    resize: feature maps taken at the same tap of two zoo networks of the same
    family and input size have the same spatial size.

    Args:
        student_shape: the student tap's shape, ``(H, W, C_s)`` or
            ``(batch, H, W, C_s)`` (e.g. ``feature_taps(student)[tap].shape``).
        teacher_shape: the teacher tap's shape, ``(H, W, C_t)`` or with a
            batch axis.
        name: the adapter's name; its layers are ``{name}_conv`` and ``{name}_bn``.

    Returns:
        A built ``keras.Model`` taking ``(batch, H, W, C_s)`` and returning
        ``(batch, H, W, C_t)``.

    Raises:
        UsageError: the spatial sizes differ (pick taps at the same
            resolution), or a shape is not a feature-map shape.
    """
    student = _feature_shape(student_shape, "student_shape")
    teacher = _feature_shape(teacher_shape, "teacher_shape")
    if student[:2] != teacher[:2]:
        raise UsageError(
            f"Adapter '{name}': the student's feature map is {student[0]}x{student[1]} but the teacher's is "
            f"{teacher[0]}x{teacher[1]}; an adapter maps channels only: pick taps at the same resolution."
        )
    inputs = keras.Input(shape=student, name=f"{name}_input")
    x = keras.layers.Conv2D(teacher[-1], 1, use_bias=False, kernel_initializer="he_normal", dtype="float32",
                            name=f"{name}_conv")(inputs)
    # Synchronized: under a distribution strategy the statistics are the global batch's, so the
    # adapter (and the FitNets loss) is the same on one device and on many. Identical on one device.
    outputs = keras.layers.BatchNormalization(name=f"{name}_bn", synchronized=True, dtype="float32",
                                              **BN_KWARGS)(x)
    return keras.Model(inputs, outputs, name=name)
