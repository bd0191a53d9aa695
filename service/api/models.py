"""GET /models: the served models, their contracts (from the manifests) and runtimes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import ServicesDep

router = APIRouter(tags=["health"])


def described(spec: BaseModel) -> dict[str, Any]:
    """A manifest section for people: its notes (`image`, `normalize_tokens`, ...) only where the export wrote one."""
    return {key: value for key, value in spec.model_dump().items() if value != ""}


@router.get("/models", summary="Served models, their contracts and runtimes")
async def list_models(services: ServicesDep) -> dict[str, Any]:
    models = []
    for model in services.models:
        m = model.manifest
        models.append(
            {
                "name": model.name,
                "family": m.family,
                "space_id": m.space_id,
                "dim": m.output.dim,
                "token_grid": list(m.output.token_grid),
                "pooling": m.output.pooling,
                "input": described(m.input),
                "predictor": described(m.predictor) if m.predictor else None,
                "surprise": described(m.surprise) if model.world.calibration is not None else None,
                "heads": {name: described(spec) for name, spec in m.heads.items()},
                "components": {
                    b.component: {
                        "device": b.engine.device,
                        "precision": b.engine.precision,
                        "attention": m.components[b.component].attention.get(b.engine.precision),
                        "parity": m.components[b.component].parity,
                    }
                    for b in model.batchers
                },
                "checkpoint_sha256": m.checkpoint_sha256,
            }
        )
    return {"models": models, "failed": services.models.failures}
