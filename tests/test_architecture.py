"""The package's import graph: no cycles, and every import points down the layer order.

Every module of ``mdplugin`` is parsed with :mod:`ast` (nothing is imported); every ``import`` and
``from … import`` statement counts, at module level or inside a function (lazy imports too).
Layers, bottom to top (docs/architecture.md)::

    core < structures < features < learn < models < engines < oracles < {active, spectra} < cli

A module may import its own layer and the layers below it; ``active`` and ``spectra`` do not
import each other; nothing imports ``cli`` except ``mdplugin.__main__`` (``python -m mdplugin``);
nothing inside the package imports the top-level ``mdplugin`` package (the public facade).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mdplugin"

LAYERS = {"core": 0, "structures": 1, "features": 2, "learn": 3, "models": 4, "engines": 5, "oracles": 6,
          "active": 7, "spectra": 7, "cli": 8}
#: the package facade (mdplugin/__init__.py) sits above every layer but cli; __main__ above all
FACADE, ENTRY = 7.5, 9

#: known import cycles, each with the owner who removes it. ONLY cycles listed here are allowed.
KNOWN_CYCLES: set = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, level: int, module: str | None) -> str:
    """The absolute name of ``from <level dots><module> import …`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".") if _is_package(importer) else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _known(name: str) -> str | None:
    """``name`` or its longest prefix that is a module of the package (None outside it)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str) -> dict[str, int]:
    """Package modules imported by module ``name``: {module: line of the first import}."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, node.level, node.module)
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
        for target in targets:
            known = _known(target)
            if known is not None and known != name:
                found.setdefault(known, node.lineno)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def _layer(name: str) -> tuple[str, float]:
    parts = name.split(".")
    if name == "mdplugin":
        return "mdplugin (facade)", FACADE
    if name == "mdplugin.__main__":
        return "__main__", ENTRY
    return parts[1], LAYERS[parts[1]]


def test_every_module_has_a_layer():
    """A new top-level sub-package must be placed in the layer order (here and in docs)."""
    unplaced = sorted({n.split(".")[1] for n in MODULES if n.count(".") >= 1 and n != "mdplugin.__main__"}
                      - set(LAYERS))
    assert not unplaced, f"sub-packages without a layer: {unplaced} (add them to LAYERS and docs/architecture.md)"


def _violations(graph: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for importer, targets in sorted(graph.items()):
        layer, rank = _layer(importer)
        for target, line in sorted(targets.items()):
            t_layer, t_rank = _layer(target)
            where = f"{MODULES[importer].relative_to(PACKAGE.parent)}:{line}" if importer in MODULES else importer
            if t_layer == "cli" and importer != "mdplugin.__main__" and layer != "cli":
                out.append(f"{where}: {importer} imports {target} (nothing imports cli)")
            elif target == "mdplugin" and importer != "mdplugin.__main__":
                out.append(f"{where}: {importer} imports the top-level package (the facade)")
            elif t_rank > rank:
                out.append(f"{where}: {importer} ({layer}) imports {target} ({t_layer}), a higher layer")
            elif t_rank == rank and t_layer != layer:
                out.append(f"{where}: {importer} ({layer}) imports {target} ({t_layer}): they do not import each other")
    return out


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself),
    each as a sorted list (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
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
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    cycles = [c for c in _cycles(GRAPH) if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_known_cycles_still_exist():
    """An allowed exception that no longer happens must be removed from KNOWN_CYCLES."""
    now = {frozenset(c) for c in _cycles(GRAPH)}
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in now]
    assert not gone, f"remove these cycles from KNOWN_CYCLES, they are gone: {gone}"


def test_imports_follow_the_layers():
    bad = _violations(GRAPH)
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


# --- the checker itself catches what it must -------------------------------------------------


def test_checker_finds_a_cycle_and_a_lazy_upward_import(tmp_path):
    graph = {"mdplugin.core.a": {"mdplugin.core.b": 1}, "mdplugin.core.b": {"mdplugin.core.a": 3},
             "mdplugin.core.c": {}}
    assert _cycles(graph) == [["mdplugin.core.a", "mdplugin.core.b"]]
    assert _cycles({"mdplugin.core.a": {"mdplugin.core.a": 1}}) == [["mdplugin.core.a"]]
    upward = {"mdplugin.engines.ipi": {"mdplugin.active.onthefly": 453}}
    assert "higher layer" in _violations(upward)[0]
    sideways = {"mdplugin.active.loop": {"mdplugin.spectra.compute": 1}}
    assert "do not import each other" in _violations(sideways)[0]
    into_cli = {"mdplugin.active.loop": {"mdplugin.cli.parser": 1}}
    assert "nothing imports cli" in _violations(into_cli)[0]


def test_parser_sees_lazy_relative_and_submodule_imports():
    # engines/ase.py imports the models layer at module level, relative
    assert "mdplugin.models.base" in GRAPH["mdplugin.engines.ase"]
    # ``from .parser import main`` in cli/__init__ resolves to the submodule
    assert "mdplugin.cli.parser" in GRAPH["mdplugin.cli"]
    # lazy imports inside functions count: cli/parser.py imports the commands in their handlers
    assert any(t.startswith("mdplugin.models") for t in GRAPH["mdplugin.cli.parser"])


#: modules allowed to write into a ``__dict__`` (none: the features/ caches that lived on the
#: expansion object are an explicit FeatureCache now)
KNOWN_DICT_WRITES: set = set()


def dict_writes(name: str) -> list[int]:
    """Lines of ``x.__dict__[k] = …``, ``del x.__dict__[k]`` and ``x.__dict__.setdefault/pop/update/…(…)``
    in module ``name``: state belongs in attributes set in ``__init__``/``fit``, not slipped into an
    object's dictionary."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    writes = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "__dict__"):
            continue
        up = parent.get(node)
        if isinstance(up, ast.Subscript) and isinstance(up.ctx, (ast.Store, ast.Del)):
            writes.append(node.lineno)
        elif isinstance(up, ast.Attribute) and up.attr in ("setdefault", "pop", "update", "clear", "popitem",
                                                          "__setitem__", "__delitem__"):
            writes.append(node.lineno)
    return writes


def test_no_writes_into_an_objects_dict():
    bad = {str(MODULES[n].relative_to(PACKAGE.parent)): dict_writes(n)
           for n in MODULES if n not in KNOWN_DICT_WRITES}
    bad = {path: lines for path, lines in bad.items() if lines}
    assert not bad, f"writes into a __dict__ (file: lines): {bad}"


def test_known_dict_writes_still_exist():
    gone = sorted(n for n in KNOWN_DICT_WRITES if n not in MODULES or not dict_writes(n))
    assert not gone, f"remove these modules from KNOWN_DICT_WRITES, they no longer write into a __dict__: {gone}"
