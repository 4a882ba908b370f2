"""How a method declares its settings: :func:`setting`, :class:`Setting`, :func:`declared_settings`.

These import no Keras, so that a command's flags, a config's validation and
the method manifest (:mod:`kdkeras.methods._manifest`) read the settings
without it; :mod:`kdkeras.methods.base` re-exports them.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing

from kdkeras.errors import UsageError


def setting(default, help, *, minimum=None, maximum=None, exclusive_minimum=False, choices=None, flag=None,
            source=None):
    """A field of a method's settings dataclass, with what its flag and its validation need.

    Args:
        default: the method's default (from its paper, see ``source``).
        help: one line for ``--help`` and docs/methods.md.
        minimum, maximum: the valid range of a number (inclusive;
            ``exclusive_minimum``: ``> minimum``).
        choices: the valid values of a string (or of each item of a tuple).
        flag: the flag and :class:`~kdkeras.config.RunConfig` field name
            (default ``<method>_<field>``).
        source: where the default comes from (a paper or its reference code).
    """
    metadata = {"help": help, "minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum,
                "choices": tuple(choices) if choices is not None else None, "flag": flag, "source": source}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One declared setting of a method, as flags, configs and docs see it."""

    method: str
    field: str
    flag: str
    type: type  # float, int, str, bool or tuple (of str)
    default: typing.Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple | None = None
    source: str | None = None

    def check(self, value):
        """``value`` converted to the setting's type; a one-line :class:`UsageError` when it is not valid."""
        def bad(expected):
            raise UsageError(f"{self.flag} must be {expected}. Received: {self.flag}={value!r}.")

        if self.type is bool:
            if not isinstance(value, bool):
                bad("true or false")
            return value
        if self.type in (int, float):
            integral = self.type is int
            if isinstance(value, bool) or not isinstance(value, numbers.Integral if integral else numbers.Real):
                bad(self._range_text("an integer" if integral else "a number"))
            if (self.minimum is not None and (value < self.minimum or (self.exclusive_minimum
                                                                       and value == self.minimum))) or \
                    (self.maximum is not None and value > self.maximum):
                bad(self._range_text("an integer" if integral else "a number"))
            return int(value) if integral else float(value)
        if self.type is tuple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) and v
                                                                              for v in items):
                bad("a non-empty list of names" + self._choices_text())
            if self.choices and any(v not in self.choices for v in items):
                bad("a list of" + self._choices_text())
            return tuple(items)
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            bad("one of" + self._choices_text() if self.choices else "a string")
        return value

    def _range_text(self, kind):
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        return kind + (" " + " and ".join(parts) if parts else "")

    def _choices_text(self):
        return " " + ", ".join(self.choices) if self.choices else ""


def declared_settings(method_class) -> list[Setting]:
    """The :class:`Setting` of each field of ``method_class.Settings``, in declaration order."""
    out = []
    hints = typing.get_type_hints(method_class.Settings)
    for field in dataclasses.fields(method_class.Settings):
        hint = hints[field.name]
        kind = tuple if typing.get_origin(hint) is tuple else hint
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        meta = field.metadata
        out.append(Setting(method=method_class.method, field=field.name,
                           flag=meta.get("flag") or f"{method_class.method}_{field.name}", type=kind,
                           default=default, help=meta.get("help", ""), minimum=meta.get("minimum"),
                           maximum=meta.get("maximum"), exclusive_minimum=meta.get("exclusive_minimum", False),
                           choices=meta.get("choices"), source=meta.get("source")))
    return out


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a method that has none of its own."""
