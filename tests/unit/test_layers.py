"""The package's layers: imports point down, never up, and no module imports itself back
through others (docs/development.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "mnist_hpc"
# lowest first; a module may import its own layer and those before it
LAYERS = ["errors", "files", "tables", "seeds", "config", "job", "data", "step", "observe",
          "run", "bench", "doctor", "scaling", "train", "evaluate", "metrics", "runs", "grid"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports (lazy ones too)."""
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = found.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - node.level + 1]
            elif (node.module or "").split(".")[0] == "mnist_hpc":
                base = []
                node.module = node.module.partition(".")[2] or None
            else:
                continue
            stem = base + (node.module.split(".") if node.module else [])
            for alias in node.names:  # ``from . import x``: x may be a module
                candidate = ".".join(stem + [alias.name])
                targets.add(candidate if candidate in known else ".".join(stem))
    return {name: {t for t in targets if t and t != name} for name, targets in found.items()}


def layer(name: str) -> int:
    return LAYERS.index(name.split(".")[0])


def test_every_top_level_module_or_package_has_a_layer():
    tops = {module_name(p).split(".")[0] for p in PACKAGE.rglob("*.py")} - {""}
    assert tops <= set(LAYERS), tops - set(LAYERS)


def test_imports_point_down():
    upward = [f"{name} -> {target}" for name, targets in imports().items() if name
              for target in targets if layer(target) > layer(name)]
    assert not upward


def test_no_import_cycle():
    graph = imports()
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                raise AssertionError("cycle: " + " -> ".join(path + [name, target]))
            if target not in state:
                visit(target, path + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, f"{init} has no docstring worth the name"
        if init.parent.name in ("config", "job", "data", "step", "observe", "run"):
            assert "May import" in doc, init
