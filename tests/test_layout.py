"""The house rules of the layout, checked: who may import whom, and room sizes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGES = ("gateway", "healthd", "shared")
# A package may import only these of the project's packages.
ALLOWED = {
    "gateway": {"gateway", "shared"},
    "healthd": {"healthd", "shared"},
    "shared": {"shared"},
}
MAX_MODULE_LINES = 400
MAX_MODULES_PER_FOLDER = 12


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def project_imports(path: Path) -> set[str]:
    """The dotted names of project modules `path` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(REPO)))
def test_imports_stay_inside_their_layer(path: Path) -> None:
    package = path.relative_to(REPO).parts[0]
    wrong = {name for name in project_imports(path) if name.split(".")[0] not in ALLOWED[package]}
    assert not wrong, f"{package} must not import {sorted(wrong)}"


# The rooms of gateway/ (a folder, or a module at its top), lowest first: a module may
# import its own room and the rooms of lower levels, never a room of its level or above.
# So the request path's parts (routing, accounting, proxy) never reach up into the
# admin API, the pages or the app that wires them, and handler rooms stay apart.
GATEWAY_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"json_bodies", "context", "client_connections", "client"}),
    frozenset({"openapi", "errors", "middleware", "splice", "translate"}),
    frozenset({"routing"}),
    frozenset({"accounting", "admission"}),
    frozenset({"proxy"}),
    frozenset({"catalog", "liveness", "prometheus", "cli", "ownership"}),
    frozenset({"admin", "web"}),
    # keys and groups (people), model names and tokens (hosts): on admin's schemas
    frozenset({"people", "hosts"}),
    frozenset({"app", "main"}),
)


def runtime_imports(path: Path) -> set[str]:
    """The project modules `path` imports when it runs: not those under `if TYPE_CHECKING:`
    (a type named in a hint is no dependency of the code: gateway/context.py holds the
    proxy's runtime without importing the proxy)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def gateway_room(path: Path) -> str:
    parts = path.relative_to(REPO / "gateway").parts
    return parts[0] if len(parts) > 1 else path.stem


def room_level(room: str) -> int:
    for level, rooms in enumerate(GATEWAY_LEVELS):
        if room in rooms:
            return level
    raise AssertionError(f"gateway room {room!r} has no level in GATEWAY_LEVELS")


@pytest.mark.parametrize(
    "path",
    [path for path in modules() if path.parts[len(REPO.parts)] == "gateway"],
    ids=lambda path: str(path.relative_to(REPO)),
)
def test_gateway_rooms_import_only_lower_rooms(path: Path) -> None:
    if path.name == "__init__.py" and path.parent == REPO / "gateway":
        return
    room = gateway_room(path)
    wrong = set()
    for name in runtime_imports(path):
        parts = name.split(".")
        if parts[0] != "gateway" or len(parts) < 2:
            continue
        other = parts[1]
        if other != room and room_level(other) >= room_level(room):
            wrong.add(name)
    assert not wrong, f"{room} (level {room_level(room)}) must not import {sorted(wrong)}"


def test_the_upstream_room_imports_only_what_it_stands_on() -> None:
    allowed = {
        "shared.upstream",
        "shared.failures",
        "shared.urls",
        "shared.settings",
        "shared.single_flight",
    }
    for path in (REPO / "shared" / "upstream").glob("*.py"):
        imported = {
            name for name in project_imports(path) if not name.startswith("shared.upstream")
        }
        assert imported <= allowed, f"{path.name} imports {sorted(imported - allowed)}"


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(REPO)))
def test_no_module_is_too_long_to_read(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_no_folder_holds_too_many_modules() -> None:
    folders = {path.parent for path in modules()}
    crowded = {
        str(folder.relative_to(REPO)): count
        for folder in folders
        if (count := len(list(folder.glob("*.py")))) > MAX_MODULES_PER_FOLDER
    }
    assert not crowded


def test_tests_mirror_the_packages() -> None:
    """Every test folder below tests/ is a package folder of the same name (or deploy/,
    or conformance/: the real servers' suite)."""
    for folder in (REPO / "tests").rglob("*/"):
        if folder.name == "__pycache__" or not list(folder.glob("test_*.py")):
            continue
        relative = folder.relative_to(REPO / "tests")
        assert relative.parts[0] in ("deploy", "conformance") or (REPO / relative).is_dir(), (
            relative
        )
