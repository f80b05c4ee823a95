"""The import graph of the three packages: no cycles, and imports flow one way (issue 15).

routes → pipeline → engines (llm, tts, library) → common; the Pi never imports the server; common
imports neither. Function-level imports count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cloud_server", "pi_client", "common")


def module_graph() -> dict[str, set[str]]:
    """Each module of the three packages → the modules of them it imports."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_import_graph_has_no_cycles() -> None:
    graph = module_graph()
    assert len(graph) > 60  # the scan found the packages
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_imports_flow_one_way() -> None:
    lower_layers = ("cloud_server.pipeline", "cloud_server.llm", "cloud_server.tts", "cloud_server.library",
                    "cloud_server.storage")
    wrong = []
    for module, imports in module_graph().items():
        for target in imports:
            if module.startswith("common") and not target.startswith("common"):
                wrong.append(f"{module} -> {target} (common imports only common)")
            elif module.startswith("pi_client") and target.startswith("cloud_server"):
                wrong.append(f"{module} -> {target} (the Pi never imports the server)")
            elif module.startswith(lower_layers) and target.startswith("cloud_server.routes"):
                wrong.append(f"{module} -> {target} (routes sit on top)")
    assert wrong == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
