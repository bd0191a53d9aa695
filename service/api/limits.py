"""GET /limits: the request limits a client sizes its batches by (the Python client chunks upserts with them)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ServicesDep
from service.api.schemas import Limits
from service.config import ServerConfig

router = APIRouter(tags=["health"])


def server_limits(config: ServerConfig) -> Limits:
    """The limits, under the names of their JEPA_* settings."""
    limits, media, stream, world = config.limits, config.media, config.stream, config.limits.world
    return Limits(
        max_body_bytes=limits.max_body_bytes, max_request_items=limits.max_request_items,
        max_upsert_vectors=limits.max_upsert_vectors, max_upsert_bytes=limits.max_upsert_bytes,
        max_metadata_bytes=limits.max_metadata_bytes, max_image_bytes=media.image.max_bytes,
        max_image_pixels=media.image.max_pixels, max_video_bytes=media.video.max_bytes,
        max_video_frames=media.video.max_frames, max_search_k=limits.max_search_k,
        max_rollout_steps=world.max_rollout_steps, max_surprise_steps=world.max_surprise_steps,
        stream_max_message_bytes=stream.max_message_bytes, stream_buffer_frames=stream.buffer_frames,
        max_plan_samples=world.max_plan_samples, max_plan_iterations=world.max_plan_iterations,
        max_plan_horizon=world.max_plan_horizon,
    )


@router.get("/limits", response_model=Limits, summary="Request limits of this server")
async def limits(services: ServicesDep) -> Limits:
    return server_limits(services.config)
