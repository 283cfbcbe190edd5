"""The house as drawn from the imports: data flows one way, modules stay readable.

Every ``import`` in ``src/medprobe`` (lazy ones inside functions included: they hide a circle,
they do not remove it) is read with :mod:`ast`. The test fails on an import circle, on an import
from a lower layer of the pipeline into a higher one, on a module over 500 lines and on a
function whose body (its docstring aside: the data adapters write their selection rules out
there) is over 80 lines. A new top-level module must be placed in :data:`LAYERS` first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: the pipeline's layers, low to high: a module may import from its own layer and below. The package's
#: ``__init__`` is a facade (its ``load_probe`` is imported lazily, on first use) and stands outside them.
LAYERS = [
    {"errors", "progress", "io", "staging", "study_prompt", "c_grid", "scoring", "hardware"},
    {"config"},
    {"data"},
    {"models"},
    {"features", "testing"},
    {"probes"},
    {"stats"},
    {"mcq"},
    {"report"},
    {"run_checks", "plan", "stages", "outputs", "experiment", "deploy", "compare", "study", "bench"},
    {"cli", "console_output"},
]
MAX_MODULE_LINES = 500
MAX_FUNCTION_BODY_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "medprobe").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {d for d in out if d in modules and d != name and not name.startswith(d + ".")}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(top: str) -> int:
    if top == "__init__":  # ``from medprobe import __version__`` reaches the facade's lowest part
        return 0
    for level, members in enumerate(LAYERS):
        if top in members:
            return level
    raise AssertionError(f"top-level module medprobe.{top} is not placed in LAYERS (tests/test_architecture.py)")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert circles == []


def test_no_upward_imports(graph: dict[str, set[str]]) -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                    if a != "medprobe" and _layer(_top(b)) > _layer(_top(a)))
    assert upward == []


def test_modules_and_functions_stay_readable() -> None:
    too_long = []
    for path in (SRC / "medprobe").rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1
                start = body[1].lineno if has_doc else body[0].lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_BODY_LINES:
                    too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert too_long == []
