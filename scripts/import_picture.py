"""The import picture of ``bin_agent``: its units (the package's top-level modules and
subpackages), the arrows between them (every import, those inside functions included) and
the cycles among them.

    python scripts/import_picture.py            # units, arrows, cycles
    python scripts/import_picture.py --arrows   # and every arrow

``tests/test_layout.py`` keeps the cycles at none.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def modules(root: Path = REPO) -> dict[str, tuple[Path, bool]]:
    """Every module of bin_agent: dotted name -> (file, is a package's ``__init__``)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in (root / "bin_agent").rglob("*.py"):
        if "models" in path.relative_to(root).parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        init = parts[-1] == "__init__"
        found[".".join(parts[:-1] if init else parts)] = (path, init)
    return found


def unit(module: str) -> str:
    """``bin_agent.mqtt.link`` -> ``bin_agent.mqtt``."""
    return ".".join(module.split(".")[:2])


def arrows(root: Path = REPO) -> set[tuple[str, str]]:
    """(importer, imported) between modules of bin_agent."""
    found = modules(root)
    edges: set[tuple[str, str]] = set()
    for name, (path, init) in found.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if init else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in found else source for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges.update((name, t) for t in targets if t in found and t != name)
    return edges


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one unit (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        if unit(a) != unit(b):
            graph.setdefault(unit(a), set()).add(unit(b))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

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
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in list(graph):
        if v not in index:
            visit(v)
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arrows", action="store_true", help="print every arrow between units")
    args = parser.parse_args()
    edges = arrows()
    between = {(unit(a), unit(b)) for a, b in edges if unit(a) != unit(b)}
    units = sorted({unit(m) for m in modules()})
    print(f"units: {len(units)}; arrows between units: {len(between)}; cycles: {cycles(edges) or 'none'}")
    if args.arrows:
        for a, b in sorted(between):
            print(f"  {a} -> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
