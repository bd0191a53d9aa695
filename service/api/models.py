"""GET /models: the served models, their contracts (from the manifests) and runtimes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import ServicesDep

router = APIRouter(tags=["health"])


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
                "input": m.input.model_dump(),
                "predictor": m.predictor.model_dump() if m.predictor else None,
                "surprise": m.surprise.model_dump() if model.world.calibration is not None else None,
                "heads": {name: spec.model_dump() for name, spec in m.heads.items()},
                "components": {
                    b.component: {
                        "device": b.engine.device,
                        "precision": b.engine.precision,
                        "parity": m.components[b.component].parity,
                    }
                    for b in model.batchers
                },
                "checkpoint_sha256": m.checkpoint_sha256,
            }
        )
    return {"models": models, "failed": services.models.failures}
