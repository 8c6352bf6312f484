"""The package's floors: world -> model/flow -> data -> train -> eval -> experiments -> cluster.

A module imports only from its own floor or the floors below it, at the top of the module or inside a
function alike: a lazy import is still a dependency. This walks every module's imports with ``ast`` (no
module is executed), so a new upward import fails here with the line that makes it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lenslib"

#: Floor of each subpackage or top-level module. ``paths`` and ``atomic`` are the foundation everything may
#: use; the captioners (``recaption``) and the prompt rewriter (``reasoner``) read only the world, so they
#: sit with the model.
FLOORS = {
    "paths": 0,
    "atomic": 0,
    "world": 1,
    "model": 2,
    "flow": 2,
    "recaption": 2,
    "reasoner": 2,
    "data": 3,
    "train": 4,
    "eval": 5,
    "experiments": 6,
    "cluster": 7,
}
#: Entry points above every floor: they wire the floors together (``lens train`` hands evaluation's judge to
#: the trainer) and may import anything. So may the notebook helpers, which serve the book, not the package.
ENTRY_POINTS = {"cli", "__main__"}
UNFLOORED = {"__init__", "book", "course", "paper", "toy2d", "cli", "__main__"}


def _module(path: Path) -> list[str]:
    return list(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _imports(path: Path):
    """``(line, imported module)`` for every import statement in ``path``, relative ones resolved."""
    parts = _module(path)
    package = parts if path.name == "__init__.py" else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.lineno, node.module


def _floor(dotted: list[str]) -> int | None:
    return FLOORS.get(dotted[1]) if len(dotted) > 1 and dotted[0] == "lenslib" else None


def test_every_module_imports_only_from_its_floor_or_below():
    upward, unknown = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module(path)
        if me[-1] in ENTRY_POINTS or (len(me) == 2 and me[1] in UNFLOORED):
            continue
        mine = _floor(me)
        if mine is None:
            unknown.append(".".join(me))
            continue
        for line, name in _imports(path):
            target = name.split(".")
            if target[0] != "lenslib" or len(target) < 2:
                continue
            theirs = _floor(target)
            if theirs is None or theirs > mine:
                upward.append(f"{'.'.join(me)}:{line} imports {name}")
    assert unknown == [], f"modules outside every floor (add them to FLOORS): {unknown}"
    assert upward == [], "imports from a higher floor (or from an unfloored module):\n" + "\n".join(upward)


def test_the_walk_sees_lazy_and_relative_imports(tmp_path):
    """The checker itself: an import inside a function and a relative import are both found."""
    pkg = tmp_path / "lenslib" / "data"
    pkg.mkdir(parents=True)
    mod = pkg / "x.py"
    mod.write_text("from .order import plan\n\ndef f():\n    from lenslib.train import trainer\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "lenslib"
    try:
        found = list(_imports(mod))
    finally:
        PACKAGE = saved
    assert found == [(1, "lenslib.data.order"), (4, "lenslib.train")]
    assert _floor(["lenslib", "train"]) > _floor(["lenslib", "data"])


def _package_graph() -> dict[str, set[str]]:
    """Which packages (subpackages and top-level modules) each one imports, lazy imports included."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module(path)
        if len(me) < 2 or me[1] in ENTRY_POINTS | UNFLOORED or me[-1] in ENTRY_POINTS:
            continue
        mine = me[1]
        for _, name in _imports(path):
            target = name.split(".")
            if target[0] == "lenslib" and len(target) > 1 and target[1] != mine and target[1] in FLOORS:
                graph.setdefault(mine, set()).add(target[1])
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``[]`` when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                here = path + [node]
                return here[here.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return []


def test_no_import_cycle_between_packages():
    """Floors allow imports within a floor (``model`` and ``flow`` share one); they must form no cycle."""
    assert _cycle(_package_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) != []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
