"""The house rules of docs/architecture.md: imports flow one way, with no cycle, function-level imports included."""

import ast
import functools
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "kdkeras")

#: Layers, lowest first: a module may import its own layer and the ones below, never above.
LAYERS = (
    ("kdkeras.errors", "kdkeras.choices", "kdkeras.host", "kdkeras.io_utils", "kdkeras.plotting", "kdkeras.paper", "kdkeras.tables", "kdkeras.claims",
     "kdkeras.models.registry"),
    ("kdkeras.layers", "kdkeras.initializers", "kdkeras.losses", "kdkeras.optimizers", "kdkeras.profiling",
     "kdkeras.models", "kdkeras.data", "kdkeras.methods"),
    ("kdkeras.recipes", "kdkeras.config", "kdkeras.distiller", "kdkeras.batchnorm", "kdkeras.callbacks",
     "kdkeras.runtime"),
    ("kdkeras.training", "kdkeras.hparams", "kdkeras.throughput"),
    ("kdkeras.grid", "kdkeras.experiments", "kdkeras.tuning", "kdkeras.analysis", "kdkeras.gpu_check"),
    ("kdkeras.cli",),
    ("kdkeras.commands", "kdkeras.__main__"),
)


def _modules():
    """``{dotted name: path}`` of every module of the package (``__init__`` as the package name)."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(folder, name)
    return out


def _imports(path, name, modules):
    """The kdkeras modules ``name`` imports anywhere in its file (top level or inside functions)."""
    is_package = path.endswith("__init__.py")
    package = name if is_package else name.rsplit(".", 1)[0]
    targets = set()

    def resolve(dotted):
        while dotted and dotted not in modules:
            dotted = dotted.rsplit(".", 1)[0] if "." in dotted else ""
        return dotted

    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kdkeras"):
                    targets.add(resolve(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("kdkeras"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in modules else resolve(base))
    targets.discard("")
    targets.discard(name)
    return targets


@functools.lru_cache(maxsize=1)
def _graph():
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycle(graph):
    """A list of modules forming an import cycle, or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_function_level_imports():
    graph = _graph()
    # kdkeras.training.pipeline imports kdkeras.distiller inside build_run_model only.
    assert "kdkeras.distiller" in graph["kdkeras.training.pipeline"]
    assert "kdkeras.training.run_folder" in graph["kdkeras.analysis.runs"]


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _layer(name):
    for index, layer in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in layer):
            best = max((p for p in layer if name == p or name.startswith(p + ".")), key=len)
            return index, best
    return None, None


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_flow_down_the_layers(module):
    own, _ = _layer(module)
    if own is None:
        assert module == "kdkeras", f"{module} belongs to no layer of docs/architecture.md"
        return
    for target in _graph()[module]:
        level, _ = _layer(target)
        assert level is not None and level <= own, f"{module} (layer {own}) imports {target} (layer {level})"


def test_the_registry_is_a_leaf():
    assert _graph()["kdkeras.models.registry"] <= {"kdkeras.errors"}


def test_errors_import_nothing_of_kdkeras():
    assert _graph()["kdkeras.errors"] == set()


def test_only_the_run_folder_module_spells_a_run_folders_file_names():
    """RunFolder owns every file name of a run folder: no other module writes one as a string."""
    import re

    from kdkeras.training import run_folder

    names = [run_folder.CONFIG_FILE, run_folder.HISTORY_FILE, run_folder.RESULTS_FILE, run_folder.MODEL_FILE,
             run_folder.INITIAL_WEIGHTS_FILE, run_folder.BNSTATS_FILE, run_folder.GRADIENT_FLOW_FILE]
    pattern = re.compile("[\"'](" + "|".join(re.escape(n) for n in names) + ")[\"']")
    spelled = []
    for name, path in _modules().items():
        if name == "kdkeras.training.run_folder":
            continue
        for number, line in enumerate(open(path), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and '"""' not in code and not code.strip().startswith(("``", "*")):
                spelled.append(f"{name}:{number}: {line.strip()}")
    assert not spelled, spelled
