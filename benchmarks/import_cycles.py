"""Import circles inside ``evolver_opt``, read from the source with ``ast`` (nothing imported).

An edge A -> B is an ``import`` of B written in A: at module level, under ``if TYPE_CHECKING:``
(type-only imports count), and, with ``--lazy``, inside functions too. ``from P import name``
points at ``P.name`` when that is a module, else at ``P`` (a package's ``__init__``). A circle is
a strongly connected set of two or more modules; each is printed with one cycle through it.

    python benchmarks/import_cycles.py [--lazy] [--root evolver_opt]

Exit status 1 when there is a circle, so a test or CI step can call it. Also lists the imports
of the package root from inside the package (``from evolver_opt import X``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` below ``root`` (a package folder)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, *, lazy: bool):
    """The import nodes of a module: top level, ``if TYPE_CHECKING``/``try`` blocks, and with
    ``lazy`` every nested one."""
    if lazy:
        yield from (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
        return
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                stack.extend(handler.body)


def edges(names: dict[str, Path], *, lazy: bool) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    graph: dict[str, set[str]] = {name: set() for name in names}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path)), lazy=lazy):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names
                ]
            for target in targets:
                while target and target not in names:  # import a.b.c of a non-module c
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    following.append(w)
        frontier = following
    return component


def root_imports(names: dict[str, Path], root: str, *, lazy: bool) -> list[str]:
    """``module:line`` of each import of the package root itself from inside the package."""
    found = []
    for name, path in names.items():
        if name == root:
            continue
        for node in _imports(ast.parse(path.read_text(), str(path)), lazy=lazy):
            if isinstance(node, ast.ImportFrom) and node.module == root and not node.level:
                if any(f"{root}.{a.name}" not in names for a in node.names):
                    found.append(f"{name}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name == root for a in node.names):
                found.append(f"{name}:{node.lineno}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="evolver_opt")
    parser.add_argument("--lazy", action="store_true", help="count imports inside functions")
    args = parser.parse_args(argv)
    folder = Path(__file__).resolve().parent.parent / args.root
    names = module_names(folder)
    graph = edges(names, lazy=args.lazy)
    found = circles(graph)
    kind = "all imports" if args.lazy else "module-level and type-only imports"
    print(f"{len(found)} import circle(s) in {args.root} ({len(names)} modules, {kind})")
    for component in found:
        print(f"  {len(component)} modules: " + " -> ".join(one_cycle(graph, component)))
    rooted = root_imports(names, args.root, lazy=args.lazy)
    print(f"{len(rooted)} import(s) of the package root {args.root} from inside it")
    for where in rooted:
        print(f"  {where}")
    return 1 if found or rooted else 0


if __name__ == "__main__":
    raise SystemExit(main())
