"""The code keeps the shape the README's layout table describes: rooms that import only downward,
no cycles, a pure core, and modules small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450
IO_LIBRARIES = {"pika", "psycopg", "sqlite3", "socket", "subprocess", "http", "urllib.request", "fastapi",
                "uvicorn", "prometheus_client", "requests", "click", "pkcs11"}
SHARED = {"broker", "broker.settings", "broker.logs", "broker.sqlite", "broker.private", "broker.pkcs11",
          "broker.i18n", "broker.i18n.extract"}
# room -> the rooms it may import from (besides itself and the shared modules)
MAY_IMPORT = {
    "broker.core": set(),
    "broker.relay": {"broker.core"},
    "broker.ops": {"broker.core", "broker.relay"},
    "broker.cli": {"broker.core", "broker.relay", "broker.ops", "adapters"},
    "adapters": {"broker.core", "broker.relay.amqp", "broker.relay.transport", "broker.relay.livetrust"},
}
PIKA_HOME = "broker.relay.amqp"
"""The AMQP transport: the only room that imports pika."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted([*(ROOT / "broker").rglob("*.py"), *(ROOT / "adapters").glob("*.py")]):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package(path: Path) -> list[str]:
    """The package a file's relative imports start from."""
    return list(path.relative_to(ROOT).parent.parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (imports inside functions count),
    relative imports (``from . import x``, ``from ..core import y``) resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = _package(path)[:len(_package(path)) - (node.level - 1)]
                module = ".".join([*base, *([module] if module else [])])
            if not module:
                continue
            submodules = {f"{module}.{a.name}" for a in node.names} & set(MODULES)
            found.update(submodules)
            if len(submodules) < len(node.names):  # names from the module itself, not only its submodules
                found.add(module)
    return found


GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _room_of(module: str) -> str | None:
    if module in SHARED:
        return "shared"
    for room in sorted(MAY_IMPORT, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return None


def _room(module: str) -> str:
    room = _room_of(module)
    if room is None:
        raise AssertionError(f"{module} is in no room: add it to the README's layout and to MAY_IMPORT")
    return room


def test_every_module_has_a_room() -> None:
    """Each module of broker/ and adapters/ sits in one of the rooms (or is shared): a module
    outside them (``broker/stray.py``, say) is named here."""
    assert sorted(m for m in MODULES if _room_of(m) is None) == []


def test_relative_imports_are_seen() -> None:
    """The import graph resolves relative imports, so that ``from ..ops import x`` in the core
    cannot slip past the rules above."""
    package = ROOT / "broker" / "core"
    probe = package / "_probe.py"
    probe.write_text("from ..ops import queues\nfrom . import wire\n", encoding="utf-8")
    try:
        assert _imports(probe) >= {"broker.ops.queues", "broker.core.wire"}
    finally:
        probe.unlink()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_amqp_transport_imports_pika(module: str) -> None:
    """pika is imported in ``broker/relay/amqp/`` alone: the worker talks to an interface
    (``broker/relay/transport.py``), and the SDK reaches pika through the transport's helpers."""
    if module == PIKA_HOME or module.startswith(PIKA_HOME + "."):
        return
    assert sorted(m for m in _imports(MODULES[module]) if m.split(".")[0] == "pika") == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downward(module: str) -> None:
    """A module imports only from its own room, the rooms below it, and the shared modules:
    the core from nothing else; the relay from the core; ops from both; the CLI from everything;
    the adapters from the core and the transport only."""
    room = _room(module)
    if room == "shared":
        assert all(_room(m) == "shared" or m == "broker" for m in GRAPH[module]), GRAPH[module]
        return
    allowed = MAY_IMPORT[room] | {room}
    wrong = sorted(m for m in GRAPH[module]
                   if _room(m) != "shared" and not any(m == a or m.startswith(a + ".") for a in allowed))
    assert wrong == [], f"{module} ({room}) imports {wrong}"


@pytest.mark.parametrize("test_module", sorted(p.name for p in (ROOT / "tests").glob("*.py")))
def test_tests_stand_alone(test_module: str) -> None:
    """A test module, or a helper of the tests, imports the code under test and the tests' helpers
    (``tests/relay.py``, ``tests/signatures.py``...), never a test module or bench code: a test is
    not broken by a change to another test or to a benchmark."""
    path = ROOT / "tests" / test_module
    imported = _imports(path) | {f"{node.module}.{a.name}" for node in ast.walk(ast.parse(path.read_text("utf-8")))
                                 if isinstance(node, ast.ImportFrom) and node.module in ("tests", "bench")
                                 for a in node.names}
    assert sorted(m for m in imported if m.startswith(("tests.test_", "bench")) or m == "bench") == []


def test_no_import_cycles() -> None:
    """The import graph of broker/ and adapters/ has no cycle."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                raise AssertionError("cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _room(m) == "broker.core"))
def test_core_is_pure(module: str) -> None:
    """The core imports no I/O library: it needs no broker, database, network or process to test."""
    libraries = {m for m in _imports(MODULES[module]) if m.split(".")[0] not in ("broker", "adapters")}
    assert sorted(lib for lib in libraries if lib in IO_LIBRARIES or lib.split(".")[0] in IO_LIBRARIES) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_readable(module: str) -> None:
    """No module is over about 450 lines."""
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines"
