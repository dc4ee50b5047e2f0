"""The layers of src/auditledger hold: every import points down, no cycles, the verifier never
depends on the code it checks, and the core never imports an integration.

Imports are read from the source (every ``import`` statement, also inside functions and under
``TYPE_CHECKING``), so a lazy import cannot hide an arrow that points up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "auditledger"

# Top to bottom: a module may import modules of its own layer or of layers below it.
LAYERS: list[tuple[str, ...]] = [
    ("auditledger",),  # the public surface
    (
        "auditledger.cli",
        "auditledger.slack",
        "auditledger._slack_async",
        "auditledger.web",
        "auditledger._viewer",
    ),
    ("auditledger.metrics", "auditledger._slack_common"),
    # _gdpr: erasure and retention, the only code that changes stored rows (it appends its
    # records through a sink and reads through _read).
    ("auditledger._api", "auditledger._gdpr", "auditledger.testing"),
    ("auditledger._nats",),  # the NATS transport: publishing sink, stream, ingesters
    ("auditledger._read",),
    ("auditledger._write",),
    ("auditledger._sinks",),
    ("auditledger._chain",),
    ("auditledger._db",),
    (
        "auditledger._events",
        "auditledger._actions",
        "auditledger._errors",
        "auditledger._ids",
        "auditledger._jsonbytes",
    ),
]
INTEGRATIONS = (
    "auditledger.slack",
    "auditledger._slack_async",
    "auditledger._slack_common",
    "auditledger.web",
    "auditledger._viewer",
    "auditledger.metrics",
)
INTEGRATION_EXTRAS = ("slack_bolt", "slack_sdk", "starlette", "fastapi", "prometheus_client")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module (ours or third-party, top-level name) that ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import x`` imports the module x when there is one.
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known)
    return {f for f in found if f and (f in known or not f.startswith("auditledger"))}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {i for i in _imports(name, path, known) if i in known and i != name}
        for name, path in modules.items()
    }


def _layer(name: str) -> int:
    best, rank = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank < 0:
        pytest.fail(f"{name} is in no layer of tests/test_layout.py: place it")
    return rank


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_every_import_points_down() -> None:
    upward = [
        f"{name} -> {target}"
        for name, targets in _graph().items()
        for target in targets
        if name != "auditledger" and _layer(target) < _layer(name)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_read_side_never_imports_the_write_side() -> None:
    wrong = [
        f"{name} -> {target}"
        for name, targets in _graph().items()
        if _under(name, "auditledger._read")
        for target in targets
        if _under(target, "auditledger._write") or _under(target, "auditledger._sinks")
    ]
    assert wrong == []


def test_the_core_never_imports_an_integration_or_its_extra() -> None:
    modules = _modules()
    known = set(modules)
    wrong = []
    for name, path in modules.items():
        # The command line is an entry point like the integrations (``auditledger serve``
        # starts the web viewer), not core: every module of it may import them.
        if name == "auditledger" or _under(name, "auditledger.cli"):
            continue
        if any(_under(name, i) for i in INTEGRATIONS):
            continue
        for target in _imports(name, path, known):
            if any(_under(target, i) for i in INTEGRATIONS) or target.split(".")[0] in (
                INTEGRATION_EXTRAS
            ):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_no_module_is_over_400_lines() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_rules_see_the_arrows() -> None:
    """The parser finds relative imports at every depth, lazy ones included."""
    graph = _graph()
    assert "auditledger._db.rows" in graph["auditledger._chain.canonical"]
    assert "auditledger._read.verify.parallel" in graph["auditledger._read.verify.run"]
    assert "auditledger._slack_async" in graph["auditledger.slack"]  # imported lazily
    assert "auditledger._api.default" in graph["auditledger.testing"]
