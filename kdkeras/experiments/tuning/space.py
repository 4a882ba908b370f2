"""The search space of a tuning run: which settings are tuned, their ranges and sampling."""

from __future__ import annotations

import dataclasses
import math
import numbers

from kdkeras.errors import UsageError


#: Search algorithms: KerasTuner's ``BayesianOptimization`` and ``Hyperband``.
TUNERS = ("bayesian", "hyperband")
#: The tuned settings (names of :class:`kdkeras.config.RunConfig` fields).
TUNED = ("temperature", "alpha", "lr")


#: Default ranges: ``T`` around the paper's 4, all of ``alpha``, lr around 0.1.
DEFAULT_RANGES = {"temperature": (1.0, 20.0), "alpha": (0.0, 1.0), "lr": (0.02, 0.5)}


#: How each range is sampled.
SAMPLING = {"temperature": "log", "alpha": "linear", "lr": "log"}
#: How a tuned setting is written in progress lines.
LABELS = {"temperature": "T", "alpha": "alpha", "lr": "lr"}


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The values a search may give ``temperature``, ``alpha`` and ``lr``.

    Each attribute is either a ``(min, max)`` range, which is tuned (``T``
    and ``lr`` sampled on a log scale, ``alpha`` linearly), or one number,
    which fixes that setting for every trial.

    Attributes:
        temperature: range or value of the KD temperature (> 0).
        alpha: range or value of the KD weight, within ``[0, 1]``.
        lr: range or value of the initial learning rate (> 0).

    Raises:
        ValueError: on a bad range (``min >= max``, out of bounds, not two
            numbers) or when every setting is fixed.
    """

    temperature: float | tuple[float, float] = DEFAULT_RANGES["temperature"]
    alpha: float | tuple[float, float] = DEFAULT_RANGES["alpha"]
    lr: float | tuple[float, float] = DEFAULT_RANGES["lr"]

    def __post_init__(self):
        for name in TUNED:
            object.__setattr__(self, name, _check_space_entry(name, getattr(self, name)))
        if not self.tuned:
            raise UsageError("Nothing to tune: temperature, alpha and lr are all fixed; give at least "
                             "one of them a MIN,MAX range.")

    @property
    def tuned(self) -> tuple[str, ...]:
        """Names of the settings that the search varies."""
        return tuple(name for name in TUNED if isinstance(getattr(self, name), tuple))

    def to_dict(self) -> dict:
        """``{name: {"min", "max", "sampling"}}`` for ranges, ``{name: {"fixed": v}}`` otherwise."""
        out = {}
        for name in TUNED:
            value = getattr(self, name)
            if isinstance(value, tuple):
                out[name] = {"min": value[0], "max": value[1], "sampling": SAMPLING[name]}
            else:
                out[name] = {"fixed": value}
        return out


def _check_space_entry(name, value):
    """A validated range (tuple of two floats) or fixed value (float)."""
    positive = name != "alpha"
    bounds = "> 0" if positive else "in [0, 1]"

    def ok(v):
        return v > 0 if positive else 0 <= v <= 1

    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(_is_number(v) for v in value):
            raise UsageError(f"{name} range must be two numbers MIN,MAX. Received: {name}={value!r}.")
        low, high = float(value[0]), float(value[1])
        if not (ok(low) and ok(high)):
            raise UsageError(f"{name} range must lie {bounds}. Received: {name}={low:g},{high:g}.")
        if low >= high:
            raise UsageError(f"{name} range needs MIN < MAX (give one value to fix it). "
                             f"Received: {name}={low:g},{high:g}.")
        return (low, high)
    if not _is_number(value):
        raise UsageError(f"{name} must be a number or a MIN,MAX range. Received: {name}={value!r}.")
    if not ok(value):
        raise UsageError(f"{name} must be {bounds}. Received: {name}={value!r}.")
    return float(value)


def parse_range(text: str | None, name: str):
    """Parses a ``--<name>_range`` flag: ``"MIN,MAX"`` (tuned) or ``"VALUE"`` (fixed).

    Args:
        text: the flag's text; ``None`` gives the default range.
        name: ``temperature``, ``alpha`` or ``lr``.

    Returns:
        A ``(min, max)`` tuple or a float, validated as in :class:`SearchSpace`.

    Raises:
        ValueError: one line naming the flag.
    """
    if name not in TUNED:
        raise UsageError(f"Unknown tuned setting '{name}'. Valid choices: {', '.join(TUNED)}.")
    if text is None:
        return DEFAULT_RANGES[name]
    parts = [p.strip() for p in str(text).split(",")]
    try:
        numbers_ = [float(p) for p in parts]
    except ValueError:
        numbers_ = None
    if numbers_ is None or len(numbers_) not in (1, 2) or not all(math.isfinite(v) for v in numbers_):
        raise UsageError(f"--{name}_range must be MIN,MAX (or one value to fix it). Received: '{text}'.")
    try:
        return _check_space_entry(name, tuple(numbers_) if len(numbers_) == 2 else numbers_[0])
    except ValueError as err:
        raise UsageError(f"--{name}_range: {err}")


def check_search_settings(tuner: str, max_trials, executions_per_trial) -> None:
    """Raises a one-line ``ValueError`` for an unknown tuner or a bad trial count."""
    if tuner not in TUNERS:
        raise UsageError(f"Unknown tuner '{tuner}'. Valid choices: {', '.join(TUNERS)}.")
    for name, value in (("max_trials", max_trials), ("executions_per_trial", executions_per_trial)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive integer. Received: {name}={value!r}.")
