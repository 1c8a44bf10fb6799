"""The import layering of the project, read from the source (ast; imports inside functions count too):
featurestore, facedata, extract, analyze, pipelines, each importing only the packages before it (analyze
never imports extract or torch), and no import cycle between modules (docs/architecture.md, "The import rule")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"featurestore": 0, "facedata": 1, "extract": 2, "analyze": 3, "train": 3.5, "pipelines": 4}
"""A module may import a project package of its own layer or below, never above (the torch-free store at the
bottom; facedata builds its tables)."""
TORCH = ("torch", "torchvision")
KNOWN_CYCLES: list[list[str]] = []
"""Cycles knowingly left (none): a new cycle fails these tests, and so does removing one without removing it here."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYER:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `name` imports anywhere in its file (but under `if TYPE_CHECKING:`), resolved to the longest known project module
    (e.g. `from analyze import rows` -> analyze.rows); third-party imports by their top-level name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {  # `if TYPE_CHECKING:` imports are for annotations, never executed: not a dependency
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for sub in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in found:
        top = target.split(".")[0]
        if top not in LAYER:
            resolved.add(top)
            continue
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_modules_found():
    assert {"analyze.rows", "analyze.curves", "analyze.scores", "pipelines.context", "extract.cli"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_down_the_layers(name):
    own = name.split(".")[0]
    upward = sorted(t for t in GRAPH[name] if t.split(".")[0] in LAYER and LAYER[t.split(".")[0]] > LAYER[own])
    assert not upward, f"{name} imports {upward}, a layer above {own}"
    if own == "analyze":
        bad = sorted(t for t in GRAPH[name] if t.split(".")[0] in ("extract", *TORCH))
        assert not bad, f"{name} imports {bad}: analyze never imports extract or torch"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", sorted(LAYER))
def test_no_import_cycle_inside_a_package(package):
    inside = {
        n: {t for t in deps if t.split(".")[0] == package} for n, deps in GRAPH.items() if n.split(".")[0] == package
    }
    assert _cycles(inside) == [c for c in KNOWN_CYCLES if c[0].split(".")[0] == package]


def test_no_import_cycle_in_the_project():
    project = {n: {t for t in deps if t in GRAPH} for n, deps in GRAPH.items()}
    assert _cycles(project) == KNOWN_CYCLES
