"""The package import graph of zonemesh/ has no cycle, and the layers import downwards only.

Read from the source with `ast` (no import runs), counting every import: module level, inside
functions (lazy) and under `TYPE_CHECKING`, since each is a dependency someone must keep true.
A package is the first name below `zonemesh` (`zonemesh.xds.cache` -> `xds`; `zonemesh.config`
-> `config`). A failure names the cycle and, for each hop, a module import that makes it.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "zonemesh"

# `demo` <-> `lab`: `lab.mesh` drives the demo's processes and `demo.cli` runs the lab mesh.
# Both packages belong to the demo work, not to the control plane; named here so that any
# other cycle, or this one growing, still fails.
KNOWN_CYCLES = {frozenset({"demo", "lab"})}

# The composition root: only these may import `zonemesh.cp` (it imports every layer).
COMPOSITION_USERS = {"cp", "cli", "__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every `zonemesh.*` module `path` imports, relative imports resolved."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from zonemesh import cp` / `from zonemesh.translate import names` import modules.
            found.update(
                f"{module}.{alias.name}"
                for alias in node.names
                if is_module(f"{module}.{alias.name}")
            )
    return {m for m in found if m == "zonemesh" or m.startswith("zonemesh.")}


def is_module(dotted: str) -> bool:
    path = ROOT.parent.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    candidate = ROOT / parts[1]
    if candidate.is_dir() or candidate.with_suffix(".py").is_file():
        return parts[1]
    return None  # `from zonemesh import __version__`: an attribute, not a package


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the module imports that make the edge."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        source = module_name(path)
        src_pkg = package_of(source)
        for target in sorted(imported_modules(path)):
            dst_pkg = package_of(target)
            if src_pkg and dst_pkg and dst_pkg != src_pkg:
                graph[src_pkg][dst_pkg].append(f"{source} imports {target}")
    return graph


def strongly_connected(graph: dict[str, dict[str, list[str]]]) -> list[set[str]]:
    """Tarjan's components with more than one package (each holds at least one cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    nodes = sorted(set(graph) | {d for edges in graph.values() for d in edges})

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, {})):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(component)

    for node in nodes:
        if node not in index:
            visit(node)
    return out


def a_cycle(graph: dict[str, dict[str, list[str]]], component: set[str]) -> list[str]:
    """One cycle inside `component`, as packages from its smallest member back to it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for succ in sorted(graph.get(node, {})):
                if succ == start:
                    return [*paths[node], start]
                if succ in component and succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    nxt.append(succ)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {component}")  # not for an SCC


def describe(graph: dict[str, dict[str, list[str]]], component: set[str]) -> str:
    cycle = a_cycle(graph, component)
    hops = [
        f"  {a} -> {b}: {graph[a][b][0]}"
        + (f" (+{len(graph[a][b]) - 1} more)" * (len(graph[a][b]) > 1))
        for a, b in itertools.pairwise(cycle)
    ]
    return f"{' -> '.join(cycle)} (all tied in it: {sorted(component)})\n" + "\n".join(hops)


def test_the_reader_resolves_imports_as_python_does() -> None:
    """The parser must see the edges, or a passing graph test would prove nothing."""
    graph = package_graph()
    assert "runtime" in graph["xds"]  # xds/component.py builds on the Runtime
    assert "translate" in graph["xds"]
    assert "cp" in graph["cli"]  # lazily, inside `zonemesh cp run`


def test_no_package_import_cycle() -> None:
    graph = package_graph()
    cycles = [c for c in strongly_connected(graph) if frozenset(c) not in KNOWN_CYCLES]
    if cycles:
        pytest.fail("package import cycles:\n" + "\n".join(describe(graph, c) for c in cycles))


def test_only_the_composition_root_imports_cp() -> None:
    """`zonemesh.cp` composes every layer; a layer importing it is a cycle waiting to happen."""
    graph = package_graph()
    offenders = [
        imp
        for pkg, edges in graph.items()
        if pkg not in COMPOSITION_USERS
        for imp in edges.get("cp", [])
    ]
    assert offenders == [], "\n".join(offenders)


def test_the_data_plane_never_loads_translation() -> None:
    """`dp run` shares names with the CP through `zonemesh.cpdp`, not the translation layer."""
    graph = package_graph()
    assert graph["dp"].get("translate", []) == []
    assert graph["dp"].get("xds", []) == []


def test_translation_does_not_import_the_xds_layer() -> None:
    """Data flows translate -> xds: the transport constants both need are below both."""
    graph = package_graph()
    assert graph["translate"].get("xds", []) == []


def test_translation_does_no_store_io() -> None:
    """The engine's tracker feeds the state from store events; translation reads no store."""
    graph = package_graph()
    readers = {imp.split(" imports ")[0] for imp in graph["translate"].get("store", [])}
    assert readers == set(), sorted(readers)
