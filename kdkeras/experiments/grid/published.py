"""Published numbers that a pair grid's ``comparison.md`` sets beside its runs.

The numbers live in a data file shipped with the configs
(``configs/benchmarks/published_cifar100.yaml``), never in code. Its keys:

* ``dataset``: the dataset of the numbers (``cifar100``);
* ``metric``: what they are (e.g. top-1 test accuracy in percent);
* ``sources``: ``{key: {citation, url, transcribed_from, names, measure}}``,
  one per paper: the full citation, where the numbers were copied from,
  the paper's method names mapped to kdkeras's (``FitNet: fitnets``), and
  what the source's code reports (e.g. the best test accuracy over epochs);
* ``published_only``: ``{name: description}`` of the methods in the tables
  that kdkeras does not implement (shown as published-only rows);
* ``results``: one entry per source and pair: ``source``, ``teacher``,
  ``student`` (kdkeras model names), optionally ``table``, ``note``, the
  baselines ``teacher_accuracy`` / ``student_accuracy`` and ``methods``
  (``{kdkeras method or published-only name: accuracy}``; ``null`` where the
  table prints N/A).
"""

from __future__ import annotations

import dataclasses
import os

from kdkeras.errors import MissingFileError, UsageError

#: The keys of a published-numbers file.
FIELDS = ("dataset", "metric", "sources", "published_only", "results")
#: The keys of one source.
SOURCE_FIELDS = ("citation", "url", "transcribed_from", "names", "measure")
#: The keys of one entry of ``results``.
RESULT_FIELDS = ("source", "table", "teacher", "student", "note", "teacher_accuracy", "student_accuracy", "methods")
#: The rows of a pair's hard-target runs, in a pair grid's tables.
TEACHER_ROW, STUDENT_ROW = "Teacher", "Student"


@dataclasses.dataclass(frozen=True)
class Published:
    """A published-numbers file, read and checked (:func:`load_published`)."""

    path: str
    dataset: str
    metric: str
    sources: dict
    published_only: dict
    results: list

    def values(self, teacher: str, student: str, row: str) -> list[tuple[float, str]]:
        """``[(accuracy, source)]`` published for ``row`` of the pair, in the file's order.

        ``row``: :data:`TEACHER_ROW`, :data:`STUDENT_ROW` or a method name;
        a method printed N/A has no value.
        """
        out = []
        for entry in self.results:
            if (entry["teacher"], entry["student"]) != (teacher, student):
                continue
            if row == TEACHER_ROW:
                value = entry.get("teacher_accuracy")
            elif row == STUDENT_ROW:
                value = entry.get("student_accuracy")
            else:
                value = (entry.get("methods") or {}).get(row)
            if value is not None:
                out.append((float(value), entry["source"]))
        return out

    def has_pair(self, teacher: str, student: str) -> bool:
        return any((e["teacher"], e["student"]) == (teacher, student) for e in self.results)

    def methods(self) -> list[str]:
        """Every method name with a published value, in the order of first appearance."""
        names = []
        for entry in self.results:
            names += [m for m in entry.get("methods") or {} if m not in names]
        return names


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100)


def check_published(data, where: str) -> None:
    """Raises a one-line :class:`UsageError` unless ``data`` is a well-formed published-numbers mapping.

    Every result names a known source and a teacher and a student; accuracies
    are numbers in [0, 100] (or ``null``: printed N/A); every method name is
    a kdkeras method (:func:`kdkeras.list_methods`) or listed in
    ``published_only``; a source's ``names`` map to such names too.
    """
    from kdkeras.methods import list_methods

    if not isinstance(data, dict):
        raise UsageError(f"Published numbers '{where}' must hold a mapping.")
    unknown = sorted(set(data) - set(FIELDS))
    missing = [k for k in ("dataset", "sources", "results") if not data.get(k)]
    if unknown or missing:
        raise UsageError(f"Published numbers '{where}': unknown key(s) {', '.join(unknown) or 'none'}, missing "
                         f"{', '.join(missing) or 'none'}. Valid keys: {', '.join(FIELDS)}.")
    published_only = data.get("published_only") or {}
    known = set(list_methods()) | set(published_only)
    clash = sorted(set(published_only) & set(list_methods()))
    if clash:
        raise UsageError(f"Published numbers '{where}': {', '.join(clash)} in 'published_only' are kdkeras methods.")
    for key, source in data["sources"].items():
        if not isinstance(source, dict) or not isinstance(source.get("citation"), str) or not source["citation"]:
            raise UsageError(f"Source '{key}' in '{where}' needs a citation.")
        extra = sorted(set(source) - set(SOURCE_FIELDS))
        if extra:
            raise UsageError(f"Unknown key(s) {', '.join(extra)} in source '{key}' of '{where}'. "
                             f"Valid keys: {', '.join(SOURCE_FIELDS)}.")
        bad = sorted(str(v) for v in (source.get("names") or {}).values() if v not in known)
        if bad:
            raise UsageError(f"Source '{key}' in '{where}' maps names to {', '.join(bad)}: neither kdkeras methods "
                             f"nor published_only.")
    seen = set()
    for entry in data["results"]:
        if not isinstance(entry, dict) or entry.get("source") not in data["sources"] \
                or not all(isinstance(entry.get(k), str) and entry[k] for k in ("teacher", "student")):
            raise UsageError(f"Each result in '{where}' needs a known source, a teacher and a student. "
                             f"Received: {entry!r}.")
        label = f"{entry['teacher']} -> {entry['student']} ({entry['source']})"
        extra = sorted(set(entry) - set(RESULT_FIELDS))
        if extra:
            raise UsageError(f"Unknown key(s) {', '.join(extra)} in result {label} of '{where}'. "
                             f"Valid keys: {', '.join(RESULT_FIELDS)}.")
        if label in seen:
            raise UsageError(f"Result {label} is listed twice in '{where}'.")
        seen.add(label)
        methods = entry.get("methods") or {}
        if not isinstance(methods, dict):
            raise UsageError(f"'methods' of result {label} in '{where}' must map methods to accuracies.")
        bad = sorted(set(methods) - known)
        if bad:
            raise UsageError(f"Result {label} in '{where}' names {', '.join(bad)}: neither kdkeras methods "
                             f"({', '.join(list_methods())}) nor published_only.")
        values = {**methods, "teacher_accuracy": entry.get("teacher_accuracy"),
                  "student_accuracy": entry.get("student_accuracy")}
        bad = sorted(k for k, v in values.items() if not _number(v))
        if bad:
            raise UsageError(f"Result {label} in '{where}': {', '.join(bad)} must be accuracies in percent "
                             f"(or null: printed N/A).")


def load_published(path: str) -> Published:
    """Reads and checks a published-numbers YAML file (:func:`check_published`)."""
    import yaml

    if not os.path.isfile(path):
        raise MissingFileError(f"Published numbers '{path}' do not exist.")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise UsageError(f"Published numbers '{path}' are not valid YAML: {' '.join(str(err).split())}")
    check_published(data, path)
    return Published(path=path, dataset=data["dataset"], metric=data.get("metric") or "accuracy (%)",
                     sources=dict(data["sources"]), published_only=dict(data.get("published_only") or {}),
                     results=list(data["results"]))
