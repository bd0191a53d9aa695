"""Imports go one way: routers use the pipeline and the edge helpers, never each other; the pipeline never the edge."""

import ast
from pathlib import Path

from tests.support.paths import SERVICE


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _routers() -> dict[str, Path]:
    return {f"service.api.{p.stem}": p for p in (SERVICE / "api").glob("*.py") if "APIRouter(" in p.read_text()}


def test_routers_never_import_each_other():
    routers = _routers()
    assert {"service.api.embed", "service.api.search", "service.api.collections"} <= set(routers)
    for name, path in routers.items():
        assert not (_imports(path) & (set(routers) - {name})), f"{name} imports another router"


def test_the_pipeline_does_not_reach_into_the_http_edge():
    assert not {m for m in _imports(SERVICE / "pipeline.py") if m.startswith(("service.api", "fastapi", "starlette"))}
