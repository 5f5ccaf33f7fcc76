"""No import circles among the modules of the layers below (imports inside functions count):
`dgalign.hparams`, `dgalign.curvature`, `dgalign.algorithms` and `dgalign.experiments`, and
none of them imports a layer above it (algorithms -> hparams/curvature; experiments ->
algorithms; never back)."""

from __future__ import annotations

import ast
from pathlib import Path

import dgalign

ROOT = Path(dgalign.__file__).parent
SCOPE = ("dgalign.hparams", "dgalign.curvature", "dgalign.algorithms", "dgalign.experiments")
ORDER = {
    "dgalign.hparams": 0,
    "dgalign.curvature": 0,
    "dgalign.algorithms": 1,
    "dgalign.experiments": 2,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every dgalign module `path` imports, at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("dgalign")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dgalign"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return {m for m in out if m in MODULES}


def in_scope(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in SCOPE)


def layer(name: str) -> str:
    return next(s for s in SCOPE if name == s or name.startswith(s + "."))


def graph() -> dict[str, set[str]]:
    return {
        name: {m for m in imports(path) if in_scope(m) and m != name}
        for name, path in MODULES.items()
        if in_scope(name)
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert cycles(graph()) == []


def test_lower_layers_never_import_upper_ones():
    bad = [
        (a, b)
        for a, targets in graph().items()
        for b in targets
        if ORDER[layer(b)] > ORDER[layer(a)]
    ]
    assert bad == []


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
