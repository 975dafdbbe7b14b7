"""The codebase's shape: docs/ARCHITECTURE.md names real modules, no import circle, no module past ~700 lines."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("synth", "serve", "train")
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if "runtime" in parts:  # the sandbox's in-process helpers run inside the sandbox, not in synth
                continue
            found[name] = path
    return found


def _module_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules imported when `name` is imported: top-level statements only (not inside functions, not under
    `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                out.add(base)
                out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)

    visit(tree.body)
    resolved = set()
    for target in out:
        # importing a.b.c imports a and a.b first (their __init__ modules)
        parts = target.split(".")
        resolved.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in known)
    resolved.discard(name)
    return resolved


def test_no_import_circle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _module_level_imports(path, name, known) for name, path in modules.items()}
    # A package importing its own submodules (re-exports) is how packages work, not a circle between concepts.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_longer_than_the_limit(name: str) -> None:
    path = _modules()[name]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines; split it by concept"


def test_architecture_page_names_modules_that_exist() -> None:
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    paths = sorted(set(re.findall(r"`((?:synth|serve|train)/[\w/]+\.py)`", text)))
    assert len(paths) >= 20, "the page should name the modules of the data flow"
    for rel in paths:
        assert (REPO / rel).is_file(), f"docs/ARCHITECTURE.md names {rel}, which does not exist"
        module = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        importlib.import_module(module)
    # every engine module is on the page (the page is the map; a module missing from it is lost)
    named = set(paths)
    missing = [str(p.relative_to(REPO)) for n, p in _modules().items()
               if n.startswith("synth") and str(p.relative_to(REPO)) not in named and p.name != "__init__.py"]
    assert not missing, f"docs/ARCHITECTURE.md does not name: {', '.join(missing)}"
