"""The package layout: no import loops among our modules, and imports only point down.

Layers (issue 22, ARCHITECTURE.md): schemas <- simulation, model <- beam_jobs <- evaluation
<- benchmarks. Every import counts, at module level or inside a function: a lazy import
still runs, and a loop through one is still a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "simulation", "model", "beam_jobs", "evaluation", "benchmarks")
# package -> the other packages of ours it may import.
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "simulation": {"schemas"},
    "model": {"schemas"},
    "beam_jobs": {"schemas", "simulation", "model"},
    "evaluation": {"schemas", "simulation", "model", "beam_jobs"},
    "benchmarks": {"schemas", "simulation", "model", "beam_jobs", "evaluation"},
}


def _module_name(root: Path, path: Path) -> str:
    """root/a/b/c.py -> a.b.c; root/a/b/__init__.py -> a.b."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """{module: modules of `packages` it imports} over every .py file under root/<package>.

    Every `import` and `from ... import` anywhere in a file counts (module level, functions,
    TYPE_CHECKING blocks). `from a.b import c` is an import of the module a.b.c when that is a
    module of ours, else of a.b; relative imports are resolved against the importing package.
    A module's imports of itself are left out.
    """
    packages = tuple(packages)
    files = {
        _module_name(root, f): f for pkg in packages for f in sorted((root / pkg).rglob("*.py"))
    }

    def ours(name: str) -> bool:
        return name.split(".", 1)[0] in packages

    def resolve(name: str) -> str:
        # The longest prefix that is one of our modules (a.b.c.func -> a.b.c).
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in files:
                return ".".join(parts[:n])
        return name

    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(resolve(a.name) for a in node.names if ours(a.name))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if not ours(module):
                    continue
                for a in node.names:
                    targets.add(resolve(f"{module}.{a.name}"))
        graph[mod] = targets - {mod}
    return graph


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (each a set of import loops),
    members sorted, components sorted (Tarjan)."""
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
    return sorted(out)


def _describe(graph: Mapping[str, Iterable[str]], cycles: list[list[str]]) -> str:
    lines = []
    for comp in cycles:
        members = set(comp)
        edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in members]
        lines.append(f"loop among {comp}: " + "; ".join(edges))
    return "\n".join(lines)


def layer_violations(
    graph: Mapping[str, Iterable[str]], allowed: Mapping[str, set[str]]
) -> list[str]:
    """'a.x -> b.y' for every import from one package into another it may not import."""
    out = []
    for src in sorted(graph):
        src_pkg = src.split(".", 1)[0]
        for dst in sorted(graph[src]):
            dst_pkg = dst.split(".", 1)[0]
            if dst_pkg != src_pkg and dst_pkg not in allowed[src_pkg]:
                out.append(f"{src} -> {dst}")
    return out


# ---------------------------------------------------------------------------------- the walker


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_walker_sees_every_kind_of_import_and_finds_the_loop(tmp_path):
    _write(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/base.py": "import os\n",
            "high/__init__.py": "from high.a import f\n",
            "high/a.py": "import numpy\nfrom high import b\nfrom low.base import os\n\ndef f(): ...\n",
            # The loop closes through a function-level import, as benchmarks.quality's and
            # benchmarks.speed's did.
            "high/b.py": "def g():\n    from high.a import f\n    return f\n",
            "high/sub/__init__.py": "from .. import b\n",
            "high/sub/c.py": "from . import d\nfrom ..a import f\nimport high.sub.d as dd\n",
            "high/sub/d.py": "import low\n",
        },
    )
    graph = import_graph(tmp_path, ("low", "high"))
    assert graph == {
        "low": set(),
        "low.base": set(),
        "high": {"high.a"},
        "high.a": {"high.b", "low.base"},
        "high.b": {"high.a"},
        "high.sub": {"high.b"},
        "high.sub.c": {"high.sub.d", "high.a"},
        "high.sub.d": {"low"},
    }
    cycles = find_cycles(graph)
    assert cycles == [["high.a", "high.b"]]
    assert (
        _describe(graph, cycles)
        == "loop among ['high.a', 'high.b']: high.a -> high.b; high.b -> high.a"
    )
    # Layers: high may import low, not the reverse.
    assert layer_violations(graph, {"low": set(), "high": {"low"}}) == []
    assert layer_violations(graph, {"low": set(), "high": set()}) == [
        "high.a -> low.base",
        "high.sub.d -> low",
    ]


def test_find_cycles_on_hand_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    two = find_cycles({"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"x", "a"}})
    assert two == [["a", "b"], ["x", "y"]]


# ---------------------------------------------------------------------------------- our packages


def test_no_import_loops_among_our_packages():
    graph = import_graph(REPO, PACKAGES)
    assert "evaluation.evaluate" in graph and "benchmarks.speed" in graph  # the walk saw them
    cycles = find_cycles(graph)
    assert not cycles, "import loops:\n" + _describe(graph, cycles)


def test_imports_only_point_down_the_layers():
    graph = import_graph(REPO, PACKAGES)
    assert "evaluation.report" in graph["benchmarks.run_all"]  # the walk sees cross-package
    bad = layer_violations(graph, ALLOWED)
    assert not bad, "imports against the layering:\n" + "\n".join(bad)
