"""The layout's rules, checked on the source: who may import what, no import cycle, modules and
functions short enough to read in one sitting.

Imports are read from the syntax tree (nothing is imported), so a rule broken inside a
function (a lazy import) is caught as well; imports under ``if TYPE_CHECKING:`` are ignored.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "worker")

#: third-party packages ``model/`` may import at module level (pure numerics)
MODEL_LIBRARIES = {"numpy", "torch", "scipy", "pwlf", "safetensors"}
#: optional extras ``model/`` may import only inside the functions that need them
MODEL_OPTIONAL = {"sklearn", "matplotlib"}
#: the transport-free streaming core: no Kafka, Redis or torch, so tests drive it with fakes
CORE_MODULES = (
    "worker.stream.core",
    "worker.stream.windowing",
    "worker.stream.batching",
    "worker.stream.offsets",
    "worker.stream.messages",
    "worker.stream.served",
    "worker.stream.scoring",
    "worker.stream.core_api",
    "worker.stream.routing",
    "worker.stream.routed",
    "worker.stream.shadow",
)
CORE_FORBIDDEN = {"kafka", "redis", "torch"}
#: only the CLI (where everything is wired) and the dev package itself may import worker.dev
DEV_IMPORTERS = ("worker.cli", "worker.commands", "worker.dev")

MAX_MODULE_LINES = 520  # "about 500"
MAX_FUNCTION_LINES = 80
LONG_MARK = "# long:"  # on the def line or the line above: why this function stays long


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted name as written, resolved to a module of the project where possible
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(p): p
        for pkg in PACKAGES
        for p in sorted((REPO / pkg).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


SOURCES = _sources()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            yield from ((n, in_function) for n in child.orelse)
            continue
        yield child, in_function
        inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        yield from _walk(child, inner)


def _resolve(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the project (else ``name``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in SOURCES:
            return candidate
    return name


def _imports(module: str) -> list[Import]:
    path = SOURCES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: list[Import] = []
    for node, in_function in _walk(tree, False):
        if isinstance(node, ast.Import):
            out += [Import(module, _resolve(a.name), node.lineno, in_function) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}")
                out.append(Import(module, target, node.lineno, in_function))
    return out


IMPORTS = {m: _imports(m) for m in SOURCES}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_walk_sees_the_project() -> None:
    assert "model.base" in SOURCES and "worker.stream.core" in SOURCES
    assert any(i.target == "model.errors" for i in IMPORTS["model.base"])


def test_model_imports_only_numerics_and_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = [
        f"{i.importer}:{i.line} imports {i.target}"
        for m, imports in IMPORTS.items()
        if _top(m) == "model"
        for i in imports
        if _top(i.target) not in stdlib | MODEL_LIBRARIES | {"model"}
        and not (i.in_function and _top(i.target) in MODEL_OPTIONAL)
    ]
    assert not bad, "model/ must stay pure numerics:\n" + "\n".join(bad)


def test_the_streaming_core_needs_no_kafka_redis_or_torch() -> None:
    bad = [
        f"{i.importer}:{i.line} imports {i.target}"
        for m in CORE_MODULES
        for i in IMPORTS[m]
        if _top(i.target) in CORE_FORBIDDEN
    ]
    assert not bad, "\n".join(bad)


def test_only_the_cli_reaches_the_dev_services() -> None:
    bad = [
        f"{i.importer}:{i.line} imports {i.target}"
        for m, imports in IMPORTS.items()
        if not m.startswith(DEV_IMPORTERS)
        for i in imports
        if i.target == "worker.dev" or i.target.startswith("worker.dev.")
    ]
    assert not bad, "production code must not depend on the dev services:\n" + "\n".join(bad)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan; recursion is fine for
    the ~100 modules of the project)."""
    graph = {
        m: sorted({i.target for i in IMPORTS[m] if i.target in SOURCES} - {m}) for m in SOURCES
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {
        **IMPORTS,
        "model.errors": [*IMPORTS["model.errors"], Import("model.errors", "model.base", 1, True)],
    }
    monkeypatch.setattr(sys.modules[__name__], "IMPORTS", fake)
    assert any({"model.base", "model.errors"} <= set(c) for c in _cycles())


def test_modules_are_readable_in_one_sitting() -> None:
    long = {
        m: n
        for m, p in SOURCES.items()
        if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_fit_on_a_screen() -> None:
    long = []
    for m, p in SOURCES.items():
        lines = p.read_text(encoding="utf-8").split("\n")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            marked = any(LONG_MARK in lines[k] for k in (node.lineno - 2, node.lineno - 1))
            if size > MAX_FUNCTION_LINES and not marked:
                long.append(f"{m}:{node.lineno} {node.name} ({size} lines)")
    assert not long, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them, or say why with {LONG_MARK!r}"
        " on the line above the def):\n" + "\n".join(long)
    )
