"""No import cycles among ptsbench modules (function-level imports included), and every import points
down the layers of docs/extending.md.

Edges: every ``import``/``from ... import`` in a module (at any depth of the file) to the
ptsbench module it names, plus each ancestor package of that module (importing ``a.b.c`` runs
``a/__init__`` and ``a/b/__init__``), plus the plugin modules a registry imports on first use
(``Registry(..., plugins=...)``). A submodule importing its own ancestor package
(``from . import REGISTRY``) is not an edge: Python has already initialised the parent by then.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = {module_name(p, src): p for p in (src / "ptsbench").rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        text = path.read_text()
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = ".".join(filter(None, [base, node.module]))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                while target:  # the module and every ancestor package it initialises
                    if target != mod and not mod.startswith(target + "."):
                        graph[mod].add(target)
                    target = target.rpartition(".")[0]
        for spec in re.findall(r"Registry\([^)]*plugins=([^,)\s]+)", text):
            # the registry imports its package's modules once asked: after its own module has loaded, so the
            # edges are the package's (as if its __init__ imported them), not the defining module's
            plugins = package if spec == "__name__" else spec.strip("\"'")
            graph[plugins] |= {
                m
                for m in files
                if m.rpartition(".")[0] == plugins and not m.rpartition(".")[2].startswith("_") and m != plugins
            }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_detector_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "ptsbench"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("from . import b\n")
    (pkg / "models" / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "models" / "c.py").write_text("from .. import models\n")  # child -> own package: fine
    assert cycles(import_graph(tmp_path)) == [["ptsbench.models.a", "ptsbench.models.b"]]


def test_ptsbench_has_no_import_cycles():
    graph = import_graph()
    assert "ptsbench.phases" in graph and "ptsbench.models.library" in graph["ptsbench.phases"]
    assert "ptsbench.sparsity.allocators.erk" in graph["ptsbench.sparsity.allocators"]  # plugins, lazily
    assert cycles(graph) == []


def layers() -> dict[str, int]:
    """module or package -> layer, from the table in docs/extending.md ("| 3 models | `models/` |")."""
    out = {}
    for number, cells in re.findall(r"^\| (\d+) [^|]*\| (.*) \|$", DOC.read_text(), flags=re.M):
        for name in re.findall(r"`([\w/]+)`", cells):
            out["ptsbench." + name.rstrip("/").replace("/", ".")] = int(number)
    return out


def layer_of(module: str, table: dict[str, int]) -> int:
    parts = module.split(".")
    for i in range(len(parts), 1, -1):
        if ".".join(parts[:i]) in table:
            return table[".".join(parts[:i])]
    raise AssertionError(f"{module} is in no layer of docs/extending.md")


def test_every_import_points_down_the_documented_layers():
    table = layers()
    assert len(set(table.values())) == 9
    graph = import_graph()
    upward = sorted(
        f"{m} (layer {layer_of(m, table)}) -> {t} (layer {layer_of(t, table)})"
        for m, targets in graph.items()
        if m != "ptsbench"
        for t in targets
        if t != "ptsbench" and layer_of(t, table) > layer_of(m, table)
    )
    assert upward == []


def test_the_data_layer_does_not_import_models():
    graph = import_graph()
    reaching_up = {
        m: sorted(t for t in ts if t.startswith("ptsbench.models"))
        for m, ts in graph.items()
        if m.startswith("ptsbench.data")
    }
    assert {m: ts for m, ts in reaching_up.items() if ts} == {}
