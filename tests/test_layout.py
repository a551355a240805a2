"""The package's shape (docs/ARCHITECTURE.md): layers, no import cycles, arguments parsed only
in cli/.

The imports are read with ``ast`` from the source, function-local ones included (a deferred
import still ties two modules together); only imports under ``if TYPE_CHECKING:`` are left
out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mel2mel"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _known(name: str) -> str | None:
    """The module of ``name`` (itself, or the package holding the attribute it names)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The mel2mel modules ``module`` imports at run time."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node)
        for stmt in node.body
        for child in ast.walk(stmt)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {_known(a.name) for a in node.names if a.name.startswith("mel2mel")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if base.split(".")[0] != "mel2mel":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else _known(base))
    found.discard(None)
    found.discard(module)
    return found  # type: ignore[return-value]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_walker_sees_deferred_imports_and_skips_typing_ones():
    assert "mel2mel.vocoders.wavenet_fast" in imports_of("mel2mel.vocoders.wavenet")
    assert "mel2mel.vocoders.wavenet" not in imports_of("mel2mel.vocoders.wavenet_fast")
    assert "mel2mel.synthesizer" in imports_of("mel2mel")  # lazy, inside __getattr__
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = {m: imports_of(m) for m in MODULES}
    assert find_cycles(graph) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_command_line_parses_arguments(module):
    if module.startswith("mel2mel.cli"):
        return
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert "argparse" not in names, f"{module} imports argparse; move it to mel2mel.cli"


def test_every_import_names_a_module_of_the_package():
    # A stale name would otherwise still import from another checkout on sys.path.
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "mel2mel":
                    assert name in MODULES, f"{module} imports {name}, which does not exist"


# The layers of docs/ARCHITECTURE.md: a module imports only from its own group or lower layers.
LAYERS = {
    "constants": 0, "errors": 0, "version": 0, "configs": 0, "pretrained": 0,
    "fileio": 1, "validate": 1, "instruments": 1,
    "midi": 2, "audio": 2,
    "data": 3, "vocoders": 3, "examples": 3,
    "models": 4,
    "train": 5, "timbre": 5,
    "synthesis": 6, "evaluation": 6, "listening": 6,
    "synthesizer": 7,
    "mel2mel": 8, "web": 8, "gallery": 8, "cli": 9, "__main__": 10,
}  # fmt: skip


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mel2mel"


def test_every_module_has_a_layer():
    assert {_group(m) for m in MODULES} == set(LAYERS)


def test_modules_import_only_from_lower_layers():
    upward = [
        f"{m} -> {d}"
        for m in MODULES
        for d in imports_of(m)
        if _group(m) != _group(d) and LAYERS[_group(m)] <= LAYERS[_group(d)]
    ]
    assert upward == []


def test_no_private_names_cross_modules():
    private = [
        f"{module} imports {node.module}.{alias.name}"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mel2mel")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert private == []
