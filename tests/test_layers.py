"""The package's layers point one way and its modules import each other without cycles.

Every ``import`` in ``src/polymodal`` is read from the source, those inside functions included (an import
deferred into a function still ties the two modules together; deferring it only hides a cycle). Each
module belongs to one layer of :data:`LAYERS`, bottom first, and may import only from its own layer or
below. docs/architecture.md draws the same table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "polymodal"

# Bottom first. A module's layer is that of the longest prefix listed; the feature packages (caption,
# generate, flava) are vertical slices, so their modules are listed by role: model code in "models",
# trainers in "train", metrics and plots in "eval". A package's __init__ re-exports its modules, so it
# sits in the layer of the highest one it exports.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("polymodal.errors", "polymodal.core")),
    ("data", ("polymodal.data",)),
    ("blocks", ("polymodal.text", "polymodal.nn", "polymodal.towers")),
    ("models", (
        "polymodal.models", "polymodal.fusion",
        "polymodal.caption.model", "polymodal.caption.decode",
        "polymodal.generate.model", "polymodal.generate.flow",
        "polymodal.flava.config", "polymodal.flava.data", "polymodal.flava.heads", "polymodal.flava.image_encoder",
        "polymodal.flava.text_encoder", "polymodal.flava.multimodal_encoder", "polymodal.flava.model",
        "polymodal.flava.io", "polymodal.flava.vqa_model",
    )),
    ("losses", ("polymodal.losses",)),
    ("train", (
        "polymodal.train", "polymodal.caption.train", "polymodal.generate.train",
        "polymodal.flava.pretrain", "polymodal.flava.vqa", "polymodal.caption",
    )),
    ("eval", (
        "polymodal.eval", "polymodal.caption.attention_plot", "polymodal.generate.frechet",
        "polymodal.flava.matching", "polymodal.flava.zeroshot", "polymodal.generate", "polymodal.flava",
    )),
    ("recipes", ("polymodal.recipes", "polymodal.embed")),
    ("search", ("polymodal.search",)),
    ("cli", ("polymodal.cli", "polymodal.__main__")),
    ("api", ("polymodal",)),  # the package root: the public facade (load, save, create)
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), name)
    return None if best is None else best[1]


def _resolve(target: str) -> str | None:
    """The module a dotted import target lands in (``polymodal.a.b.name`` -> ``polymodal.a.b``)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_in(source: str, module: str, *, is_package: bool = False, type_only: bool = True) -> dict[str, int]:
    """Project modules that ``source`` (the text of ``module``) imports anywhere, with the first line.

    ``type_only=False`` leaves out imports made only for type checkers, which cannot form a cycle at run time
    (they still count for the layers: an annotation is a dependency too)."""
    package = module if is_package else module.rpartition(".")[0]
    found: dict[str, int] = {}
    tree = ast.parse(source)
    if not type_only:  # leave out the bodies of ``if TYPE_CHECKING:``, which never run
        for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and _is_type_checking(n.test)]:
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name`` imports mod.
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target) if target.startswith("polymodal") else None
            if resolved and resolved != module:
                found.setdefault(resolved, node.lineno)
    return found


GRAPH = {m: imports_in(p.read_text(), m, is_package=p.name == "__init__.py") for m, p in MODULES.items()}
RUNTIME_GRAPH = {
    m: imports_in(p.read_text(), m, is_package=p.name == "__init__.py", type_only=False) for m, p in MODULES.items()
}


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module are import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
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
                    work.append((child, iter(graph[child])))
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
                    cycles.append(sorted(component))
    return cycles


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, f"add these modules to LAYERS (and docs/architecture.md): {unplaced}"


def test_no_import_points_up() -> None:
    upward = [
        f"{MODULES[m].relative_to(SRC)}:{line}: {m} [{layer_of(m)}] imports {t} [{layer_of(t)}]"
        for m, targets in GRAPH.items()
        for t, line in targets.items()
        if RANK[layer_of(t) or "api"] > RANK[layer_of(m) or "api"]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    cycles = strongly_connected(RUNTIME_GRAPH)
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}, [["a", "b", "c"]]),
        ({"a": {"b": 1}, "b": {}, "c": {"c": 1}}, []),
        ({"a": {"b": 1}, "b": {"a": 1}, "c": {"d": 1}, "d": {"c": 1}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycle_finder_finds_cycles(graph: dict[str, dict[str, int]], expected: list[list[str]]) -> None:
    assert sorted(strongly_connected(graph)) == expected


def test_walker_reads_function_bodies_and_relative_imports() -> None:
    # A deferred import is how the old cycles hid: the walk must see it.
    source = (
        "import polymodal.errors\n"
        "def f():\n"
        "    from polymodal.core import checkpoint\n"
        "    if True:\n"
        "        from .zeroshot import zeroshot_classify\n"
        "        from polymodal.models.prompts import fill_template as fill\n"
    )
    found = imports_in(source, "polymodal.eval.x")
    assert set(found) == {
        "polymodal.errors", "polymodal.core.checkpoint", "polymodal.eval.zeroshot", "polymodal.models.prompts"
    }
    assert found["polymodal.core.checkpoint"] == 3


def test_type_checking_imports_count_for_layers_not_for_cycles() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from polymodal.models.clip import CLIP\n"
    assert set(imports_in(source, "polymodal.eval.x")) == {"polymodal.models.clip"}
    assert imports_in(source, "polymodal.eval.x", type_only=False) == {}
