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


# The world-model families and their parts: only service/world and the model pool (which chooses one) name them.
FAMILY_PARTS = {"LatentRollout", "TokenRollout", "FuturePredictor", "SurpriseScorer", "TokenSurprise", "FutureSurprise",
                "PooledWorld", "TokenWorld", "FutureWorld", "SurpriseStream", "TokenSurpriseStream"}


def _names(path: Path) -> set[str]:
    """Every name a module imports or uses (module attributes included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
    return found


def test_routers_and_the_pipeline_name_no_world_model_family():
    """They ask the model's WorldModel; which family answers is chosen once, in the model pool."""
    for path in [*(SERVICE / "api").glob("*.py"), SERVICE / "pipeline.py"]:
        assert not (_names(path) & FAMILY_PARTS), f"{path.name} names a world-model family"


def test_world_models_take_plain_data_not_the_http_edge_or_the_app():
    """So a core process can hold the world models while front processes decode: no request bodies, no Services."""
    edge = ("service.api", "fastapi", "starlette", "service.state", "service.pipeline", "service.model_pool",
            "service.settings")
    for path in (SERVICE / "world").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith(edge)}, f"service/world/{path.name} reaches the edge"
