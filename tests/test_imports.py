"""The import graph, read with `ast` (no module is imported): no circle anywhere in tinycnn and
the sweeper plugin, no module reaching for another's underscore names, and the sweeper's parts
small enough to read (modules up to ~350 lines, functions up to ~60)."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = {"tinycnn": REPO / "tinycnn",
            "hydra_plugins.tinycnn_plugins": REPO / "hydra_plugins" / "tinycnn_plugins"}
# The sweeper and the modules it is made of (the others have their own owners and limits).
SWEEPER = ["hydra_plugins/tinycnn_plugins/*.py", "tinycnn/study.py", "tinycnn/storage.py",
           "tinycnn/heartbeat.py", "tinycnn/sampling.py", "tinycnn/locking.py",
           "tinycnn/stops.py", "tinycnn/pool.py", "tinycnn/lazy.py"]


def modules() -> dict:
    """module name -> its parsed source."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def imports(name: str, tree: ast.Module, known: set) -> dict:
    """The modules of `known` that `name` imports (anywhere, functions included) -> the names
    it takes from each."""
    package = name if name in PACKAGES else name.rsplit(".", 1)[0]
    out: dict = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known:
                    out.setdefault(a.name, set())
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for a in node.names:
                if f"{base}.{a.name}" in known:  # from package import module
                    out.setdefault(f"{base}.{a.name}", set())
                elif base in known:
                    out.setdefault(base, set()).add(a.name)
    out.pop(name, None)
    return out


def graph() -> dict:
    trees = modules()
    return {name: imports(name, tree, set(trees)) for name, tree in trees.items()}


def test_no_import_circle():
    g = graph()
    state: dict = {}
    path: list = []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in g[m]:
            assert state.get(n) != "open", " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n)
        path.pop()
        state[m] = "done"

    for m in g:
        if m not in state:
            visit(m)


def test_no_module_takes_another_modules_underscore_names():
    taken = [f"{m} takes {dep}.{n}" for m, deps in graph().items() for dep, names in deps.items()
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert taken == []


def test_the_sweeper_is_in_parts_small_enough_to_read():
    too_long = []
    for pattern in SWEEPER:
        for path in sorted(REPO.glob(pattern)):
            text = path.read_text()
            lines = len(text.splitlines())
            if lines > 350:
                too_long.append(f"{path.name}: {lines} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > 60:
                        too_long.append(f"{path.name}: {node.name}() {length} lines")
    assert too_long == []


def test_a_circle_is_found():
    """The check above can fail: two modules importing each other are found."""
    a = ast.parse("from . import b\n")
    b = ast.parse("def f():\n    from .a import g\n")
    known = {"tinycnn.a", "tinycnn.b"}
    assert imports("tinycnn.a", a, known) == {"tinycnn.b": set()}
    assert imports("tinycnn.b", b, known) == {"tinycnn.a": {"g"}}
