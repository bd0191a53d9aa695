"""docs/architecture.md is the map of the code as it is: every module is named there, nothing it names is gone,
and its tables of which room imports which are the imports the code has."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
ROOMS = ("service", "export", "models", "evaluation", "contract", "clients")
# the project's top-level packages as imported (the client's package lives under clients/python/)
PACKAGES = {"service": "service", "export": "export", "models": "models", "evaluation": "evaluation",
            "contract": "contract", "jepa_serve_client": "clients"}
SERVICE_ROOMS = ("api", "batching", "index", "ipc", "media", "runtime", "security", "world")
MODULE = re.compile(r"\b((?:%s)/[\w/]+\.py)\b" % "|".join(ROOMS))


def modules() -> set[str]:
    found = set()
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def room_of(dotted: str) -> str | None:
    """A module's room: the top-level room, or service.<sub-room>, or `service` for service's own modules."""
    parts = dotted.split(".")
    room = PACKAGES.get(parts[0])
    if room == "service" and len(parts) > 1 and parts[1] in SERVICE_ROOMS:
        return f"service.{parts[1]}"
    return room


def imports_by_room() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in modules():
        dotted = module.removeprefix("clients/python/").removesuffix(".py").replace("/", ".")
        source = room_of(dotted)
        assert source is not None
        targets = graph.setdefault(source, set())
        for node in ast.walk(ast.parse((ROOT / module).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                target = room_of(name)
                if target is not None and target != source:
                    targets.add(target)
    return graph


def table(text: str, heading: str) -> dict[str, set[str]]:
    """The rows of the table whose header starts with `heading`: first cell -> the last cell's rooms."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {heading} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        room = re.match(r"`([^`]+)`", cells[0]).group(1).rstrip("/")
        last = cells[-1]
        rows[room] = set() if last == "none" else {part.strip() for part in last.split(",")}
    return rows


def test_every_module_is_on_the_map_and_the_map_names_no_missing_module():
    named = set(MODULE.findall(DOC.read_text()))
    present = modules()
    assert not present - named, f"modules missing from docs/architecture.md: {sorted(present - named)}"
    assert not named - present, f"docs/architecture.md names modules that do not exist: {sorted(named - present)}"


def test_the_tables_of_imports_are_the_imports_of_the_code():
    text = DOC.read_text()
    graph = imports_by_room()
    top = table(text, "room")
    assert set(top) == set(PACKAGES.values())
    for room, imported in top.items():
        actual = {target.split(".")[0] for target in graph.get(room, set())} | {
            target.split(".")[0] for source, targets in graph.items() if source.startswith(f"{room}.")
            for target in targets}
        actual.discard(room)
        assert imported == actual, f"{room} imports {sorted(actual)}, the page says {sorted(imported)}"
    inside = table(text, "service room")
    expected = {room: targets for room, targets in graph.items() if room == "service" or room.startswith("service.")}
    assert set(inside) == set(expected), sorted(set(inside) ^ set(expected))
    for room, imported in inside.items():
        assert imported == expected[room], f"{room} imports {sorted(expected[room])}, the page says {sorted(imported)}"
