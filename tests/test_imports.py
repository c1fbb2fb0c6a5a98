"""No import cycle among the package's modules, counting imports inside functions.

The graph has an edge from a module to every ``search_env`` module it names in an ``import`` or ``from ... import``
anywhere in its source (module level, functions, methods; ``if TYPE_CHECKING:`` blocks too). ``from pkg import x``
is an edge to ``pkg.x`` when that is a module, else to ``pkg``. A submodule's implicit import of its parent package
is not an edge, nor is ``importlib.import_module`` of a computed name. Run as a script, it prints any cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "search_env"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` (at ``path``) imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.add(sub if sub in known else module)
    return {t for t in targets if t in known and t != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = modules(root)
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
                components.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return [_path_through(graph, set(c)) for c in components]


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A cycle inside ``component``: breadth-first from its first module back to itself."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return sorted(component)


def test_graph_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from search_env.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from ..sub.a import f\nimport search_env\n")
    graph = import_graph(pkg)
    assert graph == {"search_env": set(), "search_env.sub": {"search_env.sub.a"},
                     "search_env.sub.a": {"search_env.sub.b"}, "search_env.sub.b": {"search_env.sub.a", "search_env"}}
    assert cycles(graph) == [["search_env.sub.a", "search_env.sub.b", "search_env.sub.a"]]


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 40 and "search_env.data.mapped" in graph
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_no_library_module_imports_the_commands():
    """The CLI sits on top: library modules (everything outside ``search_env.commands``) never import it, except
    its argparse pieces (``commands.args``)."""
    graph = import_graph()
    assert "search_env.commands.cli" in graph and graph["search_env.commands.cli"]  # the graph sees the CLI
    offenders = {}
    for name, path in modules().items():
        if name.startswith("search_env.commands"):
            continue
        # every name imported, module or not (an old path kept by search_env._moved is no file of the package)
        nodes = list(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
        named = {n.module or "" for n in nodes if isinstance(n, ast.ImportFrom)}
        named |= {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
        offenders[name] = sorted(t for t in named | graph[name]
                                 if t.startswith("search_env.commands") and t != "search_env.commands.args")
    assert not {k: v for k, v in offenders.items() if v}
    # the one exception is argparse only: it imports nothing of the package, so it cannot pull the CLI in
    assert graph["search_env.commands.args"] == set()


def test_moved_modules_import_under_their_old_names_with_a_warning():
    """Every old module path of ``search_env._moved.MOVED`` hands out the module it moved to, and warns."""
    import subprocess

    code = """
import importlib, warnings, search_env
from search_env._moved import MOVED
for old, new in MOVED.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new), old
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
print(len(MOVED))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    from search_env._moved import MOVED

    assert int(out.stdout) == len(MOVED) >= 14  # every entry was checked


if __name__ == "__main__":
    found = cycles(import_graph())
    for cycle in found:
        print(" -> ".join(cycle))
    print(f"{len(found)} cycle(s)")
    sys.exit(1 if found else 0)
