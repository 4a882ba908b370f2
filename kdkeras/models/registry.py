"""Model-name grammar and the registry of network families.

A model name is ``<net>_<R|NR>_<g|G><n>`` (docs/models.md), for example
``wrn22x10_NR_G4``, ``resnet18_R_g8`` or ``mobilenetv2_NR_G16``:

* ``net``: a registered network (``wrn22x2``, ``wrn22x10``, ``wrn28x2``,
  ``wrn40x2``, ``resnet18``, ``mobilenetv2``) or any ``wrn<d>x<k>`` with
  ``(d - 4) % 6 == 0``.
* ``R`` keeps every residual connection, ``NR`` removes them all (projection
  shortcuts go with them).
* ``g<n>``: every grouped 3x3 convolution has ``n`` groups; ``G<n>``: every
  grouped 3x3 convolution has ``n`` channels per group (``G1`` is depthwise).
  ``g1`` is a standard convolution.

The standard CIFAR zoo of the KD literature (``resnet56``, ``wrn_40_2``,
``vgg13``, ``ResNet50``, ``MobileNetV2``, ``ShuffleV1``, ...) keeps its
published names: a standard net's name is the net alone, or ``<net>_NR`` for
its variant without skip connections (``<net>_<R|NR>_g1`` is accepted too).

This module owns the parser (:func:`parse_model_name`) and its inverse
(:meth:`ModelSpec.name`), the registry of network entry points
(:func:`register_net`) and families (:func:`register_family`), and
:func:`build_model`. It is a leaf: it imports no other kdkeras module. The
family modules (``wrn.py``, ``resnet.py``, ``mobilenet_v2.py``) register
their networks, their name patterns and their training recipes here; the
package ``kdkeras.models`` imports them, so any import of this module finds
them registered.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Callable

from kdkeras.errors import UsageError


@dataclasses.dataclass(frozen=True)
class NetEntry:
    """A registered network: how to build it and which layers are grouped.

    Attributes:
        builder: ``builder(spec=, num_classes=, input_shape=, name=, **options)``.
        grouped_channels: returns the input channels of every grouped 3x3 conv.
        family: the family it belongs to (``"wrn"``, ``"resnet18"``, ...).
        standard: a network of the standard CIFAR zoo (published
            architecture, standard convolutions only): its names take no
            grouping token (``resnet56``, ``resnet56_NR``; ``_g1`` is accepted).
        residual: the residual tokens it has, the first being the default of
            a standard net's short name (``("NR",)`` for VGG, which has no
            skip connection; ``("R",)`` for a net without an NR variant).
    """

    builder: Callable
    grouped_channels: Callable[[], list[int]]
    family: str
    standard: bool = False
    residual: tuple[str, ...] = ("R", "NR")


@dataclasses.dataclass(frozen=True)
class Family:
    """A registered network family.

    Attributes:
        name: e.g. ``"wrn"``.
        recipe: the paper's training settings of the family (its learning-rate
            schedule, and ``distill_epochs`` when KD students train longer);
            :mod:`kdkeras.recipes` adds the settings common to all families.
        resolve: ``resolve(net)`` returns a :class:`NetEntry` for a net name
            outside the registered ones (``wrn<d>x<k>``), ``None`` when the
            name is not of this family; raises ``ValueError`` for a name of
            the family with bad values.
        pattern: how such names look, for error messages.
        taps: ``taps(model) -> {tap name: layer name}``, the family's feature
            taps in order (``stem``, ``stage1``, ...), declared in the family's
            own module (:mod:`kdkeras.models.taps` calls it); ``None``: the
            taps are inferred from the ``stage{s}_block{b}_*`` layer names.
    """

    name: str
    recipe: dict
    resolve: Callable[[str], "NetEntry | None"] | None = None
    pattern: str | None = None
    taps: Callable | None = None


_NETS: dict[str, NetEntry] = {}
_FAMILIES: dict[str, Family] = {}

#: The groupings of the paper's Tables 1-9, in the paper's column order.
PAPER_GROUPINGS = ("g2", "g4", "g8", "g16", "G1", "G2", "G4", "G8", "G16")
#: The networks of the paper, in the row order of Tables 8 and 9.
PAPER_NETS = ("wrn22x2", "wrn22x10", "wrn28x2", "wrn40x2", "resnet18", "mobilenetv2")

_GROUPING_RE = re.compile(r"^([gG])(\d+)$")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A parsed model name.

    Attributes:
        net: network name, e.g. ``"wrn22x10"`` or ``"resnet18"``.
        residual: ``True`` for ``R``, ``False`` for ``NR``.
        group_mode: ``"g"`` (fixed number of groups) or ``"G"`` (fixed
            channels per group).
        group_value: the ``n`` of ``g<n>`` / ``G<n>``.
    """

    net: str
    residual: bool
    group_mode: str
    group_value: int

    @property
    def grouping(self) -> str:
        """The grouping token, e.g. ``"g4"`` or ``"G16"``."""
        return f"{self.group_mode}{self.group_value}"

    @property
    def name(self) -> str:
        """The canonical model name (inverse of :func:`parse_model_name`).

        A standard-zoo net's name is its short form: the net alone for its
        default residual token (``resnet56``, ``vgg13``), else ``<net>_NR``.
        """
        res = "R" if self.residual else "NR"
        entry = _NETS.get(self.net)
        if entry is not None and entry.standard:
            return self.net if res == entry.residual[0] else f"{self.net}_{res}"
        return f"{self.net}_{res}_{self.grouping}"

    @property
    def standard(self) -> bool:
        """Whether the net belongs to the standard CIFAR zoo (no grouped units)."""
        entry = _NETS.get(self.net)
        return entry is not None and entry.standard

    def groups_for(self, channels: int) -> int:
        """Number of groups of a grouped 3x3 conv over ``channels`` channels.

        Raises:
            ValueError: if the grouping does not divide ``channels``.
        """
        if channels % self.group_value:
            what = "groups" if self.group_mode == "g" else "channels per group"
            raise UsageError(
                f"Grouping '{self.grouping}' ({self.group_value} {what}) does not "
                f"divide a grouped convolution with {channels} channels in "
                f"'{self.name}'. Valid groupings for {self.net} divide every "
                f"grouped layer's channels: {', '.join(valid_groupings(self.net))}."
            )
        if self.group_mode == "g":
            return self.group_value
        return channels // self.group_value


def register_family(name: str, *, recipe: dict, resolve=None, pattern: str | None = None, taps=None) -> Family:
    """Registers a network family (see :class:`Family`); registering a name twice warns."""
    if name in _FAMILIES:
        warnings.warn(f"Family '{name}' is registered twice; the later one wins.")
    _FAMILIES[name] = Family(name, dict(recipe), resolve, pattern, taps)
    return _FAMILIES[name]


def family_of(net: str) -> Family:
    """The registered :class:`Family` of the network ``net``."""
    return _FAMILIES[net_entry(net).family]


def register_net(grouped_channels: Callable[[], list[int]], family: str, name: str | None = None, *,
                 standard: bool = False, residual: tuple[str, ...] = ("R", "NR")):
    """Decorator registering a network entry point under ``name`` (default: its name).

    Args:
        grouped_channels: returns the channel count of every grouped 3x3
            convolution of the network, so a grouping can be validated before
            anything is built.
        family: the registered family of the network.
        name: registry key; defaults to the function's name.
        standard: a network of the standard CIFAR zoo (see :class:`NetEntry`).
        residual: its residual tokens, the default first (see :class:`NetEntry`).

    The entry point is called as ``fn(spec=, num_classes=, input_shape=,
    name=, **options)`` and returns a ``keras.Model``. Registering a name
    twice warns and replaces the earlier entry.
    """

    def decorator(f):
        key = name or f.__name__
        if key in _NETS:
            warnings.warn(f"Network '{key}' is registered twice; the later one wins.")
        if not residual or set(residual) - {"R", "NR"}:
            raise ValueError(f"residual must be a non-empty tuple of 'R' / 'NR'. Received: {residual!r}.")
        _NETS[key] = NetEntry(f, grouped_channels, family, standard, tuple(residual))
        return f

    return decorator


def list_nets(standard: bool | None = None) -> list[str]:
    """Registered network names (the ``<net>`` part of a model name).

    Args:
        standard: ``None``: all; ``False``: the paper's grouped-unit zoo;
            ``True``: the standard CIFAR zoo.
    """
    return [net for net, entry in _NETS.items() if standard is None or entry.standard == standard]


def list_standard_models() -> list[str]:
    """The canonical names of the standard CIFAR zoo, each net then its other residual variant.

    E.g. ``resnet56``, ``resnet56_NR``, ..., ``vgg13``, ..., ``ShuffleV1``.
    """
    names = []
    for net in list_nets(standard=True):
        for res in _NETS[net].residual:
            names.append(ModelSpec(net, res == "R", "g", 1).name)
    return names


def family_recipe(net: str) -> dict:
    """The registered recipe of the family of ``net`` (a copy).

    Raises:
        ValueError: ``net`` is not a network of a registered family.
    """
    return dict(_FAMILIES[net_entry(net).family].recipe)


def list_models(include_standard: bool = False) -> list[str]:
    """Every model name of the paper's zoo: each net x R/NR x the paper's groupings.

    The standard CIFAR zoo is :func:`list_standard_models`.

    Args:
        include_standard: also list the ``g1`` (standard convolution) variants.
    """
    groupings = PAPER_GROUPINGS + (("g1",) if include_standard else ())
    return [
        f"{net}_{res}_{grouping}"
        for net in list_nets(standard=False)
        for res in ("R", "NR")
        for grouping in groupings
    ]


def net_entry(net: str) -> NetEntry:
    """The :class:`NetEntry` of ``net``: a registered network or a family's pattern.

    Raises:
        ValueError: naming the registered networks and the families' patterns.
    """
    if net in _NETS:
        return _NETS[net]
    for family in _FAMILIES.values():
        entry = family.resolve(net) if family.resolve else None
        if entry is not None:
            return entry
    patterns = [f.pattern for f in _FAMILIES.values() if f.pattern]
    raise UsageError(
        f"Unknown network '{net}'. Valid networks: {', '.join(list_nets())}"
        + (f", or any {' or any '.join(patterns)}." if patterns else ".")
    )


def parse_model_name(name: str) -> ModelSpec:
    """Parses ``<net>_<R|NR>_<g|G><n>`` into a :class:`ModelSpec`.

    Raises:
        ValueError: naming the part that does not parse and the valid choices.
    """
    if not isinstance(name, str) or not name:
        raise UsageError(f"Model name must be a non-empty string. Received: {name!r}.")
    standard = _parse_standard(name)
    if standard is not None:
        return standard
    parts = name.split("_")
    if len(parts) == 2 and parts[1] in ("R", "NR") and _is_net(parts[0]):
        raise UsageError(
            f"Model name '{name}' lacks its grouping: add '_g<n>' (n groups) or '_G<n>' (n channels per "
            f"group), e.g. '{name}_g2'; '_g1' is standard convolutions."
        )
    if len(parts) != 3:
        raise UsageError(
            f"Unknown model '{name}'.{_did_you_mean(name)} A model name is the paper's "
            f"'<net>_<R|NR>_<g|G><n>' (e.g. 'wrn22x10_NR_G4', 'resnet18_R_g8') or a network of the standard "
            f"CIFAR zoo: {', '.join(list_nets(standard=True))} ('<net>_NR': without skips)."
        )
    net, res, grouping = parts
    try:
        net_entry(net)  # validates the net part
    except UsageError as err:
        raise UsageError(f"{err}{_did_you_mean(name)}") from None
    if res not in ("R", "NR"):
        raise UsageError(
            f"Bad residual token '{res}' in model name '{name}'. Valid choices: "
            f"R (residual), NR (no residual connections)."
        )
    match = _GROUPING_RE.match(grouping)
    if not match or int(match.group(2)) < 1:
        raise UsageError(
            f"Bad grouping '{grouping}' in model name '{name}'. Valid choices: "
            f"g<n> (n groups) or G<n> (n channels per group) with n >= 1, "
            f"e.g. {', '.join(PAPER_GROUPINGS)}."
        )
    spec = ModelSpec(net, res == "R", match.group(1), int(match.group(2)))
    for channels in grouped_channels(net):
        spec.groups_for(channels)  # raises if the grouping does not divide
    return spec


def _is_net(net: str) -> bool:
    try:
        net_entry(net)
    except UsageError:
        return False
    return True


def _did_you_mean(name: str) -> str:
    """`` Did you mean 'resnet56'?`` for a near miss of a model name (its case or a typo), else ``""``."""
    import difflib

    known = list_standard_models() + list_models()
    by_case = [k for k in known if k.lower() == name.lower()]
    close = by_case or difflib.get_close_matches(name, known, n=3, cutoff=0.75)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _parse_standard(name: str) -> ModelSpec | None:
    """A standard-zoo name: ``<net>`` or ``<net>_<R|NR>`` or ``<net>_<R|NR>_g1``; ``None`` if not one."""
    nets = sorted((n for n in list_nets(standard=True) if name == n or name.startswith(n + "_")), key=len)
    if not nets:
        return None
    net = nets[-1]
    entry = _NETS[net]
    rest = name[len(net) + 1:].split("_") if name != net else []
    choices = ", ".join(ModelSpec(net, r == "R", "g", 1).name for r in entry.residual)
    if len(rest) > 2 or (rest and rest[0] not in entry.residual) or (len(rest) == 2 and rest[1] != "g1"):
        why = ("it has no skip connection to remove or keep" if entry.residual == ("NR",)
               else "it has no NR variant" if entry.residual == ("R",) else "a standard-zoo net has no grouping")
        raise UsageError(
            f"Bad model name '{name}': {net} is a network of the standard CIFAR zoo and {why}. "
            f"Valid names: {choices} (optionally with '_g1')."
        )
    return ModelSpec(net, (rest[0] if rest else entry.residual[0]) == "R", "g", 1)


def grouped_channels(net: str) -> list[int]:
    """Input channel counts of every grouped 3x3 convolution of ``net``."""
    return list(net_entry(net).grouped_channels())


def valid_groupings(net: str, max_value: int = 64) -> list[str]:
    """Groupings (``g<n>``, ``G<n>``, n <= max_value) that fit every layer of ``net``."""
    channels = grouped_channels(net)
    values = [n for n in range(1, max_value + 1) if all(c % n == 0 for c in channels)]
    return [f"g{n}" for n in values] + [f"G{n}" for n in values]


def build_model(
    name: str,
    num_classes: int = 100,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    **kwargs,
):
    """Builds a registered network from its name.

    Args:
        name: model name ``<net>_<R|NR>_<g|G><n>``, e.g. ``"wrn22x10_NR_G4"``.
        num_classes: number of output logits.
        input_shape: ``(H, W, C)`` of one image.
        **kwargs: family-specific options (e.g. ``dropout`` for WRN);
            ``None`` values are dropped so the family defaults survive.

    Returns:
        A functional ``keras.Model`` named after ``name``, mapping images
        ``(batch, H, W, C)`` to logits ``(batch, num_classes)``.
    """
    spec = parse_model_name(name)
    entry = net_entry(spec.net)
    options = {k: v for k, v in kwargs.items() if v is not None}
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer. Received: {num_classes!r}.")
    return entry.builder(
        spec=spec,
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        name=spec.name,
        **options,
    )
