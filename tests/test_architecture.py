"""The architecture, checked from the installed source (issue 12).

Dependencies point one way: readers/preprocess <- inference <- pipeline <-
DaCHS glue <- operations <- CLI, and training code depends on ingest.  The
import graph is read from the installed packages' source with :mod:`ast`,
imports inside functions included, so a lazy import cannot hide a cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

PACKAGES = ("retrspect.ingest", "retrspect.vo_services", "retrspect.models")
#: what may import what, between the top-level packages
ALLOWED = {"retrspect.ingest": set(),
           "retrspect.vo_services": {"retrspect.ingest"},
           "retrspect.models": {"retrspect.ingest"}}
RUNTIME = ("retrspect.ingest", "retrspect.vo_services")
MAX_LINES = 900


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        root = Path(find_spec(package).submodule_search_locations[0])
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _imports(name: str, path: Path, modules) -> set[str]:
    """Every module this module imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] \
                    if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out.add(base)
            # "from package import module" imports the module
            out.update(f"{base}.{alias.name}" for alias in node.names
                       if f"{base}.{alias.name}" in modules)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules)
            for name, path in modules.items()}


def _internal(graph, name):
    return {target for target in graph[name] if target in graph
            and target != name}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_the_graph_is_read(graph):
    """The reader sees the edges it must judge (a lazy one included)."""
    assert "retrspect.ingest.readers.registry" in \
        graph["retrspect.ingest.readers"]
    assert "retrspect.ingest.pipeline" in graph["retrspect.vo_services.grammars"]
    assert "retrspect.ingest.infer" in _internal(
        graph, "retrspect.ingest.pipeline")  # imported inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]]


def test_no_cycle_between_modules(graph):
    edges = {name: _internal(graph, name) for name in graph}
    # a package's __init__ re-exporting its modules is not a cycle
    for name in edges:
        edges[name] = {t for t in edges[name] if not name.startswith(t + ".")}
    assert _cycles(edges) == []


def _package_of(module: str) -> str:
    """The top-level package: retrspect.ingest, .vo_services or .models."""
    return ".".join(module.split(".")[:2])


def test_no_cycle_between_packages_and_dependencies_point_one_way(graph):
    edges: dict[str, set[str]] = {}
    for name in graph:
        for target in _internal(graph, name):
            source, sink = _package_of(name), _package_of(target)
            if source != sink:
                edges.setdefault(source, set()).add(sink)
    assert _cycles(edges) == []
    top = {package: {t for t in targets if t in ALLOWED}
           for package, targets in edges.items() if package in ALLOWED}
    for package, targets in top.items():
        assert targets <= ALLOWED[package], (package, targets)


def test_runtime_imports_neither_training_code_nor_torch(graph):
    """(The runtime reads model files' metadata with onnx, a runtime
    dependency; it never imports torch.)"""
    offenders = {name: sorted(t for t in graph[name]
                              if t.startswith("retrspect.models")
                              or t.split(".")[0] == "torch")
                 for name in graph if name.startswith(RUNTIME)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_source_file_is_over_900_lines():
    root = Path(__file__).resolve().parents[1]
    long = {str(p.relative_to(root)): n for p in sorted(root.rglob("*.py"))
            if "build" not in p.parts
            and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_no_bare_generic_top_level_package_is_installed():
    """The installed distribution's files (asked from outside the checkout,
    whose build metadata would answer otherwise)."""
    code = ("from importlib.metadata import distribution\n"
            "for f in distribution('retrspect').files: print(f)\n")
    files = subprocess.run([sys.executable, "-c", code], capture_output=True,
                           text=True, check=True, cwd="/").stdout.split()
    tops = {f.split("/")[0] for f in files if f.endswith(".py")}
    assert tops == {"retrspect"}
    assert "retrspect/ingest/readers/registry.py" in files


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{name} is blocked (not installed)")
sys.meta_path.insert(0, Block())
"""


def test_the_runtime_imports_without_torch(graph):
    runtime = sorted(name for name in graph if name.startswith(RUNTIME))
    code = BLOCK_TORCH + "".join(f"import {name}\n" for name in runtime) + (
        "from retrspect.ingest.infer import models_for_table\n"
        "models = models_for_table(None, None)\n"
        "print(sorted(models.builtin), 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-4:] == ["['classifier',", "'vae',",
                                          "'velocity']", "False"]


def test_training_commands_say_what_is_missing_without_torch():
    code = BLOCK_TORCH + (
        "import importlib.util\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'torch' "
        "else orig(name, *a)\n")
    code = code.replace("import importlib.util\n",
                        "import importlib.util\norig = importlib.util.find_spec\n")
    code += ("from retrspect.vo_services import cli\n"
             "sys.exit(cli.main(['train']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, cwd="/")
    assert result.returncode == 1
    assert "pip install 'retrspect[train]'" in result.stderr
