"""The import rules of docs/architecture.md, read from the source with `ast` (no module is imported).

Every `import` / `from ... import` counts, at module level or inside a function, with relative imports resolved.
Only imports under `if TYPE_CHECKING:` are left out: they never run.

  1. No module outside mechscope.cli imports mechscope.cli.
  2. Core modules (CORE) import no feature package (FEATURES).
  3. There is no import cycle between mechscope's modules.
  4. mechscope.lab (the transformer lab: numpy / torch from scratch) imports nothing else of mechscope but LEAVES.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "mechscope"

# The core: model loading, sites and hooks, the Model and its small helpers. Features build on it, never the reverse.
CORE = {f"mechscope.{m}" for m in (
    "adapters", "sites", "hooks", "model", "loading", "interventions", "kernels", "tiny", "lens",
    "errors", "fsio", "jsonsafe", "htmlkit", "indices", "tokens", "devices", "version",
)}
FEATURES = {f"mechscope.{p}" for p in ("patching", "extract", "sae", "attention", "lab", "encoders", "data")}
# Leaf helpers: small modules that import no other part of mechscope but each other (anyone may use them).
LEAVES = {f"mechscope.{m}" for m in ("errors", "fsio", "jsonsafe", "htmlkit", "indices", "tokens", "devices",
                                      "version")}


def module_names() -> dict:
    """{module name: path} for every module of the package (a package is its __init__)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_names()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _type_checking_nodes(tree) -> set:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _owner(name: str):
    """The mechscope module a dotted name lives in (the longest known prefix), or None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> list:
    """[(imported mechscope module, line)] of every import in module `name` (in functions too, relative resolved)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    base = name if _is_package(name) else name.rpartition(".")[0]  # the package relative imports start from
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base.split(".")
                pkg = pkg[:len(pkg) - (node.level - 1)]
                mod = ".".join(pkg + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one, else a name of pkg
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for target in targets:
            owner = _owner(target)
            if owner and owner != name:
                found.append((owner, node.lineno))
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def _in(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_reader_resolves_relative_and_function_level_imports():
    """The reader itself, on a real module: `from ..errors import ...` at the top and `from .heads_report import
    ...` inside a method are both found and resolved (so the rules below can fail)."""
    heads = {m for m, _ in GRAPH["mechscope.attention.heads"]}
    assert {"mechscope.errors", "mechscope.attention.heads_report"} <= heads
    assert "mechscope.fsio" in {m for m, _ in GRAPH["mechscope.attention.heads_report"]}


def test_library_modules_never_import_the_cli():
    bad = [f"{name}:{line} imports {target}" for name, edges in GRAPH.items() if not _in(name, ["mechscope.cli"])
           for target, line in edges if _in(target, ["mechscope.cli"])]
    assert not bad, "library modules import the CLI:\n" + "\n".join(bad)


def test_core_imports_no_feature():
    assert CORE <= set(MODULES), f"CORE names modules that do not exist: {sorted(CORE - set(MODULES))}"
    bad = [f"{name}:{line} imports {target}" for name in sorted(CORE) for target, line in GRAPH[name]
           if _in(target, FEATURES) or _in(target, ["mechscope.cli"]) or target == PACKAGE]
    assert not bad, "core modules import features (or the CLI, or the package root):\n" + "\n".join(bad)


def test_leaf_helpers_import_only_other_leaf_helpers():
    bad = [f"{name}:{line} imports {target}" for name in sorted(LEAVES) for target, line in GRAPH[name]
           if target not in LEAVES]
    assert not bad, "leaf helpers import other mechscope modules:\n" + "\n".join(bad)


def test_lab_imports_only_leaf_helpers():
    bad = [f"{name}:{line} imports {target}" for name, edges in GRAPH.items() if _in(name, ["mechscope.lab"])
           for target, line in edges if not _in(target, ["mechscope.lab"]) and target not in LEAVES]
    assert not bad, "mechscope.lab imports the rest of mechscope:\n" + "\n".join(bad)


def find_cycles(graph: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in {t for t, _ in graph.get(v, ())}:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
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
    g = {"a": [("b", 1)], "b": [("c", 2)], "c": [("a", 3)], "d": [("a", 4)]}
    assert find_cycles(g) == [["a", "b", "c"]]
    assert find_cycles({"a": [("b", 1)], "b": []}) == []


def test_no_import_cycles():
    cycles = find_cycles(GRAPH)
    lines = []
    for comp in cycles:
        edges = sorted({f"  {a}:{line} -> {b}" for a in comp for b, line in GRAPH[a] if b in comp})
        lines.append(" <-> ".join(comp) + "\n" + "\n".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(lines)
