"""Imports run one way: a module may import only from its own layer or lower ones.

The layers (lowest first; see docs/architecture.md)::

    0  proseco.errors, proseco.fileio, proseco.registry, proseco.schedules,
       proseco.special_tokens, proseco.models.*
    1  proseco.noising, proseco.losses.*, proseco.sampling.*, proseco.methods.*
    2  proseco.chem, proseco.data.*
    3  proseco.pretrained
    4  proseco.eval.*
    5  proseco.training.*
    6  proseco.commands.*, proseco.serving.*, proseco.cli

Layers 1 and 2 are siblings, and so are 4 and 5: neither of a pair imports the other
(:data:`SIBLINGS`; the two diamonds of docs/architecture.md).

Every ``import`` / ``from ... import`` statement of every module under ``src/proseco`` counts,
including those inside functions and ``if TYPE_CHECKING:`` blocks, as do
``importlib.import_module("proseco....")`` calls with a literal name. ``proseco/__init__.py`` is
exempt: it re-exports the public API (and loads training lazily). Importing the ``proseco``
package itself from inside the package counts as importing the top layer, except for its
metadata (``from proseco import __version__``).

The source is read with :mod:`ast`; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

PACKAGE = "proseco"
SRC = Path(__file__).resolve().parents[2] / "src" / PACKAGE

# Module (or package) name -> layer; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "proseco._version": 0,
    "proseco.errors": 0,
    "proseco.fileio": 0,
    "proseco.registry": 0,
    "proseco.schedules": 0,
    "proseco.special_tokens": 0,
    "proseco.models": 0,
    "proseco.noising": 1,
    "proseco.losses": 1,
    "proseco.sampling": 1,
    "proseco.methods": 1,  # training methods: each owns its loss and sampler (same layer)
    "proseco.chem": 2,
    "proseco.data": 2,
    "proseco.pretrained": 3,
    "proseco.eval": 4,
    "proseco.training": 5,
    "proseco.commands": 6,
    "proseco.serving": 6,
    "proseco.cli": 6,
    "proseco.__main__": 6,
}
# Layers that are siblings, not a stack: neither imports the other (docs/architecture.md draws
# the two diamonds: base -> core | data -> pretrained -> eval | training -> commands).
SIBLINGS: list[tuple[int, int]] = [(1, 2), (4, 5)]
TOP = max(LAYERS.values())
ROOT_LAYER = TOP  # ``import proseco`` itself: its __init__ re-exports every layer

# Importers whose own imports are not checked.
EXEMPT = {
    "proseco",  # __init__.py: the public API, re-exported from every layer
}

# Importers whose upward imports are tolerated: none. Do not add one; fix the import instead.
ALLOWED_UPWARD: set[str] = set()


class Edge(NamedTuple):
    importer: str
    imported: str
    line: int


def module_name(path: Path, src: Path = SRC) -> str:
    """``src/proseco/data/qm9.py`` -> ``proseco.data.qm9``; a package's ``__init__`` -> the package."""
    parts = [src.name, *path.relative_to(src).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package: name -> file."""
    return {module_name(p, src): p for p in sorted(src.rglob("*.py"))}


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(
    source: str, module: str, known: set[str], *, is_package: bool = False
) -> list[Edge]:
    """The package-internal modules that ``module`` (whose code is ``source``) imports.

    ``from X import name`` counts as importing ``X.name`` when that is a module in ``known``,
    else ``X``. Relative imports are resolved against ``module``.
    """
    edges = []
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if base == PACKAGE and alias.name.startswith("__") and sub not in known:
                    continue  # package metadata such as __version__, not an API dependency
                targets.append(sub if sub in known else base)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                edges.append(Edge(module, target, node.lineno))
    return sorted(set(edges), key=lambda e: (e.line, e.imported))


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (longest matching prefix in :data:`LAYERS`), or ``None``."""
    if module == PACKAGE:
        return ROOT_LAYER
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        layer = LAYERS.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def upward_imports(edges: list[Edge], allowed: set[str] = frozenset()) -> list[str]:
    """``importer (layer a) -> imported (layer b)`` for each edge with ``b > a``."""
    bad = []
    for e in edges:
        if e.importer in allowed:
            continue
        a, b = layer_of(e.importer), layer_of(e.imported)
        if a is not None and b is not None and b > a:
            bad.append(f"{e.importer} (layer {a}) -> {e.imported} (layer {b})  [line {e.line}]")
    return bad


def package_edges(src: Path = SRC) -> list[Edge]:
    modules = all_modules(src)
    known = set(modules)
    edges = []
    for name, path in modules.items():
        if name in EXEMPT:
            continue
        source = path.read_text(encoding="utf-8")
        edges += imports_of(source, name, known, is_package=path.name == "__init__.py")
    return edges


# ----------------------------------------------------------------------------- the rule
def test_every_module_has_a_layer():
    unmapped = sorted(m for m in all_modules() if layer_of(m) is None)
    assert not unmapped, (
        f"modules with no layer: {unmapped}; add them to LAYERS in tests/unit/test_layers.py "
        "and to docs/architecture.md"
    )


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(package_edges(), ALLOWED_UPWARD)
    assert not bad, (
        "imports must run from higher layers to lower ones (docs/architecture.md); "
        "these go upward:\n  " + "\n  ".join(bad)
    )


def sibling_imports(edges: list[Edge]) -> list[str]:
    """``importer (layer a) -> imported (layer b)`` for each edge between two sibling layers."""
    pairs = {frozenset(p) for p in SIBLINGS}
    bad = []
    for e in edges:
        a, b = layer_of(e.importer), layer_of(e.imported)
        if a is not None and b is not None and frozenset((a, b)) in pairs:
            bad.append(f"{e.importer} (layer {a}) -> {e.imported} (layer {b})  [line {e.line}]")
    return bad


def allowed_layers(layer: int) -> set[int]:
    """The layers a module of ``layer`` may import: its own and the lower ones but a sibling."""
    siblings = {b for a, b in SIBLINGS if a == layer} | {a for a, b in SIBLINGS if b == layer}
    return set(range(layer + 1)) - siblings


def test_sibling_layers_do_not_import_each_other():
    bad = sibling_imports(package_edges())
    assert not bad, (
        "core (1) and data (2), eval (4) and training (5) are siblings (docs/architecture.md); "
        "these import across:\n  " + "\n  ".join(bad)
    )
    assert allowed_layers(5) == {0, 1, 2, 3, 5} and allowed_layers(2) == {0, 2}
    assert sibling_imports([Edge("proseco.training.loop", "proseco.eval.text", 7)]) == [
        "proseco.training.loop (layer 5) -> proseco.eval.text (layer 4)  [line 7]"
    ]


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """The modules on import circles: each strongly connected group of two or more, sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.importer != e.imported:
            graph.setdefault(e.importer, set()).add(e.imported)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {m: reach(m) for m in graph}
    groups = {tuple(sorted(m2 for m2 in reachable if m2 in r and m in reachable[m2]))
              for m, r in reachable.items() if m in r}  # fmt: skip
    return sorted(list(g) for g in groups)


def test_no_import_circles():
    """No module reaches itself through imports (those inside functions count too)."""
    cycles = import_cycles(package_edges())
    assert not cycles, "import circles (break them; docs/architecture.md):\n  " + "\n  ".join(
        " <-> ".join(c) for c in cycles
    )


def test_a_circle_is_found():
    edges = [Edge("a", "b", 1), Edge("b", "c", 1), Edge("c", "a", 1), Edge("c", "d", 1)]
    assert import_cycles(edges) == [["a", "b", "c"]]
    assert import_cycles(edges[1:]) == []


def test_the_package_is_found_and_its_imports_are_seen():
    pairs = {(e.importer, e.imported) for e in package_edges()}
    assert len(all_modules()) > 20
    assert ("proseco.losses.inputs", "proseco.noising") in pairs
    assert ("proseco.data.qm9", "proseco.chem") in pairs


# ----------------------------------------------------------------------------- the checker
KNOWN = {"proseco.data.qm9", "proseco.eval", "proseco.eval.molecules", "proseco.chem"}


def test_an_upward_import_is_reported_with_both_ends():
    edges = [
        Edge("proseco.data.qm9", "proseco.eval.molecules", 3),
        Edge("proseco.eval.molecules", "proseco.chem", 4),  # downward: fine
        Edge("proseco.training.loop", "proseco.training.splits", 5),  # same layer: fine
    ]
    bad = upward_imports(edges)
    assert bad == ["proseco.data.qm9 (layer 2) -> proseco.eval.molecules (layer 4)  [line 3]"]
    assert upward_imports(edges, allowed={"proseco.data.qm9"}) == []


def test_imports_inside_functions_and_relative_imports_are_resolved():
    source = (
        "import os\n"
        "import proseco.chem\n"
        "def f():\n"
        "    from ..eval import molecules\n"
        "    from ..eval.molecules import molecule_metrics\n"
        "    from . import qm9\n"
        "    import importlib\n"
        "    importlib.import_module('proseco.training.loop')\n"
        "class C:\n"
        "    def g(self):\n"
        "        from proseco import sample\n"
        "        from proseco import __version__\n"
    )
    edges = imports_of(source, "proseco.data.qm9", KNOWN)
    assert sorted((e.imported, e.line) for e in edges) == [
        ("proseco", 11),
        ("proseco.chem", 2),
        ("proseco.data.qm9", 6),
        ("proseco.eval.molecules", 4),
        ("proseco.eval.molecules", 5),
        ("proseco.training.loop", 8),
    ]
    assert [b.split(" ")[4] for b in upward_imports(edges)] == [
        "proseco.eval.molecules",
        "proseco.eval.molecules",
        "proseco.training.loop",
        "proseco",
    ]
    # in a package's __init__, "." is the package itself
    init = imports_of("from .molecules import x\n", "proseco.eval", KNOWN, is_package=True)
    assert [e.imported for e in init] == ["proseco.eval.molecules"]


def test_layers_follow_the_longest_prefix():
    assert layer_of("proseco.sampling.loop") == 1
    assert layer_of("proseco.models.dit") == 0
    assert layer_of("proseco.commands.train") == 6
    assert layer_of("proseco") == TOP
    assert layer_of("proseco.chemistry") is None  # a prefix of names, not of strings
    assert layer_of("numpy") is None
