"""Distillation methods: one file per method in this package, found by name.

Each module here (other than :mod:`~kdkeras.methods.base`) defines one
:class:`~kdkeras.methods.base.Method` subclass and its settings dataclass
(docs/methods.md). That one declaration gives the ``--method`` choice, the
method's flags (``--dkd_beta``, ``--<method>_weight``), their validation, the
run-identity fields, the HParams columns, docs/methods.md's table and
:func:`list_methods`. Adding a method means adding its file, its tests and
its docs line, then ``python -m kdkeras.methods`` (it rewrites
``manifest.json``); nothing here changes.

Importing this package imports no method module and no Keras: the flags and
checks read the settings from ``manifest.json`` (:mod:`kdkeras.methods._manifest`).
A method's class is imported when it is asked for (``methods.get("dkd")``,
``from kdkeras.methods import DKD``); :func:`import_all` imports every one,
which registers them with Keras, as loading a saved object that holds a
method's term needs (a saved ``kdkeras.Distiller`` does it itself; call it
before ``keras.saving.load_model`` of anything else that holds one, such as a
``keras.distillation.Distiller``). A student's ``model.keras`` holds none.

Methods combine: ``--method=kd+at`` trains on the KD term (weighted by
``--alpha``, the cross-entropy by ``1 - alpha``) plus AT (weighted by
``--at_weight``, default 1000).

```python
import kdkeras
kdkeras.list_methods()                     # ['kd', 'dkd', 'fitnets', 'at', ...]
from kdkeras.methods import AT, FitNets     # any method's class, by its class name
```
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from kdkeras.errors import UsageError
from kdkeras.methods._settings import Setting, declared_settings, setting

#: What this package re-exports from :mod:`kdkeras.methods.base`, imported (with Keras) when first used.
_BASE_NAMES = ("EMBEDDING", "LOGITS", "DistillationTerm", "FeatureMethod", "Method")

#: Modules of this package that hold no method.
_NOT_METHODS = frozenset({"base"})
#: The order of the first methods in listings; the others follow by name.
_FIRST = ("kd", "dkd", "fitnets", "at")
#: The separator of combined methods (``--method=kd+at``).
COMBINE = "+"

_registry: dict | None = None
#: ``(registry, its declarations)``: what :func:`_declarations` read from the classes of that registry.
_declared: tuple | None = None


def _discover() -> dict:
    """``{name: Method subclass}`` of every method module in this package, in listing order (imports them)."""
    from kdkeras.methods.base import Method

    global _registry
    if _registry is None:
        found = {}
        for info in pkgutil.iter_modules(__path__):
            if info.name in _NOT_METHODS or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            for value in vars(module).values():
                if isinstance(value, type) and issubclass(value, Method) and value.method \
                        and value.__module__ == module.__name__:
                    if value.method in found:
                        raise RuntimeError(f"Two methods are named {value.method!r}: "
                                           f"{found[value.method].__module__} and {module.__name__}.")
                    found[value.method] = value
        order = sorted(found, key=lambda n: (_FIRST.index(n) if n in _FIRST else len(_FIRST), n))
        _registry = {name: found[name] for name in order}
    return _registry


def import_all() -> None:
    """Imports every method module, which registers its classes with Keras (to load a saved distiller).

    Importing this package alone imports no method (their settings come from
    the manifest); Keras deserializes a method's object only once its class is
    registered.
    """
    _discover()


def _declarations() -> dict:
    """``{name: {"paper", "default_weight", "settings": [Setting, ...]}}`` of every method, in listing order.

    Read from the manifest while it matches this package's files (no Keras
    import: :mod:`kdkeras.methods._manifest`), else from the method classes.
    """
    from kdkeras.methods import _manifest

    global _declared
    if _registry is None:
        found = _manifest.load()
        if found is not None:
            return found
    registry = _discover()
    if _declared is None or _declared[0] is not registry:
        _declared = (registry, {name: {"paper": c.paper, "default_weight": _manifest.default_weight(c),
                                       "settings": declared_settings(c)} for name, c in registry.items()})
    return _declared[1]


def list_methods() -> list[str]:
    """The names of every registered method (the ``--method`` choices), e.g. ``['kd', 'dkd', ...]``."""
    return list(_declarations())


def _check_name(name: str) -> None:
    """A one-line error naming the choices unless ``name`` is a registered method."""
    names = list_methods()
    if name not in names:
        raise UsageError(f"Unknown method '{name}'. Valid choices: {', '.join(names)}.")


def get(name: str) -> type:
    """The :class:`Method` subclass named ``name``; a one-line error naming the choices otherwise."""
    _check_name(name)
    return _discover()[name]


def parse(text) -> tuple[str, ...]:
    """``"kd+at"`` -> ``("kd", "at")``, each a registered method, none twice."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"method must be a method name or names joined by '{COMBINE}' (e.g. kd+at). "
                         f"Received: method={text!r}.")
    names = tuple(part.strip() for part in text.split(COMBINE))
    for name in names:
        _check_name(name)
    if len(set(names)) != len(names):
        raise UsageError(f"method names a method twice. Received: method={text!r}.")
    return names


def weight_setting(method_class) -> Setting | None:
    """The ``--<method>_weight`` setting of a method (KD has none: its weight is ``--alpha``)."""
    return _weight_setting(method_class.method, method_class.paper, method_class.default_weight)


def _weight_setting(name: str, paper: str, default_weight) -> Setting | None:
    if name == "kd":
        return None
    return Setting(method=name, field="weight", flag=f"{name}_weight", type=float, default=default_weight,
                   help="weight of the method's term", minimum=0.0, source=paper)


def settings_of(name: str) -> list[Setting]:
    """Every setting of method ``name``: its declared ones, then its weight."""
    _check_name(name)
    entry = _declarations()[name]
    weight = _weight_setting(name, entry["paper"], entry["default_weight"])
    return list(entry["settings"]) + ([weight] if weight else [])


def all_settings() -> list[Setting]:
    """Every setting of every method, in listing order (one flag each)."""
    out, flags = [], {}
    for name in list_methods():
        for item in settings_of(name):
            if item.flag in flags:
                raise RuntimeError(f"Methods {flags[item.flag]} and {name} both declare the flag {item.flag}.")
            flags[item.flag] = name
            out.append(item)
    return out


def check_run_settings(method_text, values: dict) -> None:
    """Validates a run's method and method settings (``{flag: value}``, ``None`` = not set)."""
    names = parse(method_text)
    for item in all_settings():
        value = values.get(item.flag)
        if value is None:
            continue
        if item.method not in names:
            raise UsageError(f"{item.flag} is a setting of method={item.method}. Received: method={method_text}, "
                             f"{item.flag}={value!r}.")
        item.check(value)


@dataclasses.dataclass
class Objective:
    """What a run's distiller computes: its methods, their weights and the cross-entropy's.

    ``alpha`` is set when KD is among the methods: the KD term is weighted by
    ``alpha`` and the cross-entropy by ``1 - alpha`` (the paper's loss), and
    ``weights`` holds ``None`` for KD.
    """

    terms: list
    weights: list
    ce_weight: float | None
    alpha: float | None


def objective(config, *, temperature=None, alpha=None) -> Objective:
    """The :class:`Objective` of a :class:`kdkeras.config.RunConfig` (``temperature`` / ``alpha``: a trial's own)."""
    names = parse(config.method)
    temperature = config.temperature if temperature is None else temperature
    alpha = config.alpha if alpha is None else alpha
    terms, weights = [], []
    for name in names:
        method_class = get(name)
        values = {s.field: s.check(getattr(config, s.flag)) for s in declared_settings(method_class)
                  if getattr(config, s.flag, None) is not None}
        terms.append(method_class.from_settings(method_class.Settings(**values), temperature=temperature))
        if name == "kd":
            weights.append(None)
            continue
        weight = getattr(config, f"{name}_weight", None)
        if weight is None and len(names) == 1:
            weight = config.method_weight
        weights.append(method_class.default_weight if weight is None else float(weight))
    if "kd" in names:
        return Objective(terms, weights, None, float(alpha))
    defaults = {type(t).default_ce_weight for t in terms}
    return Objective(terms, weights, defaults.pop() if len(defaults) == 1 else 1.0, None)


def _default_text(value):
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def docs_table() -> str:
    """The markdown table of every method (docs/methods.md holds it; a test checks it is current).

    ``python -c "import kdkeras.methods as m; print(m.docs_table())"`` prints it.
    """
    rows = ["| method | paper | reads | trainable parts | weight (CE weight) | settings: flag = default |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, method_class in _discover().items():
        weight = ("`--alpha` = 0.9 (1 - alpha)" if name == "kd" else
                  f"{_default_text(float(method_class.default_weight))} "
                  f"({_default_text(float(method_class.default_ce_weight))})")
        if method_class.warmup_epochs:
            weight += f", {method_class.warmup_epochs}-epoch warm-up"
        settings = [f"`--{s.flag}`={_default_text(s.default)}" for s in declared_settings(method_class)]
        if method_class.uses_temperature:
            settings.insert(0, "`--temperature`")
        rows.append(f"| `{name}` | {method_class.paper} | {method_class.reads} | {method_class.parts or '—'} | "
                    f"{weight} | {', '.join(settings) or '—'} |")
    return "\n".join(rows)


def __getattr__(name):
    """Any method's class by its class name (``from kdkeras.methods import RKD``), the base's names and
    ``TERMS`` (``{name: Method subclass}``, the old name of the registry): imported when first asked for."""
    if name in {info.name for info in pkgutil.iter_modules(__path__)}:  # a module of the package (``methods.dkd``)
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("_"):
        raise AttributeError(f"module 'kdkeras.methods' has no attribute {name!r}")
    if name in _BASE_NAMES:
        from kdkeras.methods import base

        return getattr(base, name)
    if name == "TERMS":
        return dict(_discover())
    for method_class in _discover().values():
        if method_class.__name__ == name:
            return method_class
    raise AttributeError(f"module 'kdkeras.methods' has no attribute {name!r}")

__all__ = ["AT", "COMBINE", "DKD", "EMBEDDING", "KD", "LOGITS", "TERMS", "DistillationTerm", "FeatureMethod",
           "FitNets", "Method", "Objective", "Setting", "all_settings", "check_run_settings", "docs_table", "get",
           "import_all", "list_methods", "objective", "parse", "setting", "settings_of", "weight_setting"]
