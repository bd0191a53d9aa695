"""The request pipeline: from decoded request items to embeddings, observations and clips.

Routers turn request bodies into media items (service/api/inputs.py) and call these; this module decodes in the
decode executor, asks the embedding cache, runs the model's batchers and records the decode metrics.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.embed_cache import cache_key
from service.errors import Conflict, ErrorCode, PayloadTooLarge, UnprocessableInput, at_item
from service.index import Collection
from service.media.clips import ClipSpec, check_frame_count, to_item
from service.media.images import ImagePreprocess
from service.media.payload import (
    MediaItem,
    MediaLimits,
    ModelInput,
    RawVideo,
    check_videos,
    decode_frames,
    frames_given,
    prepare_input,
    video_frames_wanted,
)
from service.media.video import SampledVideo, decode_video
from service.model_pool import ServedModel
from service.state import Services
from service.world import Observation, ObservationNeed


@dataclass
class Embedded:
    pooled: np.ndarray  # (N, D) raw, not normalised
    tokens: np.ndarray  # (N, T, D); (N, 0, D) when tokens were not asked for
    decode_ms: float
    inference_ms: float
    cached: list[bool] | None = None  # per item: from the embedding cache
    frames: np.ndarray | None = None  # (N, steps, D) for encoders with a per-time-step output
    sampled: list[SampledVideo | None] | None = None  # per item: the frames taken from a video


async def embed_items(
    services: Services,
    model: ServedModel,
    items: Sequence[MediaItem],
    deadline: float | None = None,
    use_cache: bool = True,
    output: str = "pooled",
) -> Embedded:
    """Pooled embeddings, plus the `output` asked for ("tokens" or "frames"): only those leave the engine.
    With the cache, only the inputs it does not hold are computed."""
    cache = services.embed_cache if use_cache else None
    if cache is None or any(isinstance(item, RawVideo) for item in items):
        # videos bypass the cache: their response carries the sampling echo, which the cache does not keep
        result = await _compute(services, model, items, deadline, output)
        result.cached = [False] * len(items)
        return result
    keys = [cache_key(item, model.manifest.space_id) for item in items]
    found = await services.storage(cache.get_many, keys)
    missing = [i for i, vector in enumerate(found) if vector is None]
    hits = len(items) - len(missing)
    services.metrics.embed_cache_hits.labels(backend=cache.backend).inc(hits)
    services.metrics.embed_cache_misses.labels(backend=cache.backend).inc(len(missing))
    decode_ms = inference_ms = 0.0
    if missing:
        computed = await _compute(services, model, [items[i] for i in missing], deadline, indices=missing)
        decode_ms, inference_ms = computed.decode_ms, computed.inference_ms
        await services.storage(cache.put_many, [keys[i] for i in missing], computed.pooled)
        for row, i in enumerate(missing):
            found[i] = computed.pooled[row]
    pooled = np.stack([np.asarray(v, np.float32) for v in found])
    tokens = np.zeros((len(items), 0, pooled.shape[1]), np.float32)
    missed = set(missing)
    return Embedded(pooled, tokens, decode_ms, inference_ms, cached=[i not in missed for i in range(len(items))])


async def _compute(
    services: Services, model: ServedModel, items: Sequence[MediaItem], deadline: float | None = None,
    output: str = "pooled", indices: Sequence[int] | None = None,
) -> Embedded:
    """`indices`: each item's position in the request (when only some are computed), for detail.index."""
    limits = services.media
    positions = list(indices) if indices is not None else list(range(len(items)))
    started = time.perf_counter()
    check_videos(items, model.preprocess, limits, model.clip)  # clip lengths and the decode budget, before decoding
    # Tell the batcher these items are coming, so it holds a batch open for them while they decode.
    model.encoder.announce(len(items))
    try:
        prepared = await _prepare_all(services, model, items, positions, limits)
    except BaseException:
        model.encoder.withdraw(len(items))
        raise
    decoded = time.perf_counter()
    per_item = (decoded - started) / max(len(items), 1)
    for _ in items:
        services.metrics.decode_seconds.observe(per_item)
    wanted = ("pooled",) if output == "pooled" else ("pooled", output)
    outputs = await model.encode([p.pixels for p in prepared], deadline, announced=True, outputs=wanted)
    tokens = outputs.get("tokens", np.zeros((len(items), 0, outputs["pooled"].shape[1]), np.float32))
    return Embedded(outputs["pooled"], tokens, (decoded - started) * 1000,
                    (time.perf_counter() - decoded) * 1000, frames=outputs.get("frames"),
                    sampled=[p.sampled for p in prepared])


async def _prepare_all(services: Services, model: ServedModel, items: Sequence[MediaItem], positions: list[int],
                       limits: MediaLimits) -> list[ModelInput]:
    """Every item decoded and preprocessed, in request order. A video takes a video slot and a decode thread of its
    own; the images go in as many runs as there are decode threads, so that a request of 8 images costs one
    hand-off to a thread and back, not 8 (measured with py-spy: the hand-offs cost a front's event loop more than
    routing the request), and still uses every decode thread there is."""
    prepared: list[ModelInput | None] = [None] * len(items)
    numbered = list(enumerate(zip(items, positions, strict=True)))  # (place, (item, index in the request))
    images = [entry for entry in numbered if not isinstance(entry[1][0], RawVideo)]
    runs = min(len(images), services.executors.decode_threads)

    def prepare(item: MediaItem, index: int) -> ModelInput:
        with at_item(index):
            return prepare_input(item, model.preprocess, limits, model.clip)

    async def decode_images(run: list) -> None:
        done = await services.decode(lambda: [prepare(item, index) for _, (item, index) in run])
        for (place, _), value in zip(run, done, strict=True):
            prepared[place] = value

    async def decode_video(place: int, item: MediaItem, index: int) -> None:
        prepared[place] = await services.decode_item(item, prepare, item, index)

    await asyncio.gather(*(decode_images(images[i::runs]) for i in range(runs)),
                         *(decode_video(place, item, index) for place, (item, index) in numbered
                           if isinstance(item, RawVideo)))
    return prepared  # type: ignore[return-value]  # every place is filled once gather returns


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


async def observe(services: Services, model: ServedModel, items: Sequence[MediaItem],
                  need: ObservationNeed) -> Observation:
    """A request's media items (oldest first) -> what the model's world model asked to see: every frame, or one
    clip (padded by the clip rule, or exactly `need.clip_frames` frames)."""
    if need.clip_frames is None:
        started = time.perf_counter()
        frames, sampled = await _decode_frames(services, model, items)
        return Observation(frames, (time.perf_counter() - started) * 1000, sampled)
    if need.exact:
        return await _observe_exact_clip(services, model, items, need.clip_frames)
    return await _observe_clip(services, model, items, need.clip_frames)


async def _observe_exact_clip(services: Services, model: ServedModel, items: Sequence[MediaItem],
                              frames: int) -> Observation:
    """One clip of exactly `frames` frames in the model's layout: nothing padded, since a padded frame would be
    scored as if it had been seen (a video must reach `frames` sampled frames)."""
    if len(items) == 1 and isinstance(items[0], RawVideo):
        seen = await _observe_clip(services, model, items, frames)
        padded = seen.sampled[0].padded if seen.sampled[0] is not None else 0
        if padded:
            raise UnprocessableInput(f"the video ended {padded} frame(s) short of the {frames} the model scores as "
                                     "one clip", {"frames_per_clip": frames}, code=ErrorCode.INVALID_CONTEXT)
        return seen
    started = time.perf_counter()
    decoded, sampled = await _decode_frames(services, model, items)
    if len(decoded) != frames:
        raise UnprocessableInput(f"model {model.name!r} scores clips of exactly {frames} frames; got {len(decoded)}",
                                 {"frames_per_clip": frames}, code=ErrorCode.INVALID_CONTEXT)
    return Observation(to_item(decoded, model.clip), (time.perf_counter() - started) * 1000, sampled)


async def _observe_clip(services: Services, model: ServedModel, items: Sequence[MediaItem],
                        frames: int) -> Observation:
    """Context items (images, frames or one video, oldest first) -> one clip of `frames` frames in the model's
    layout; fewer frames are padded at the front by the clip rule (a video is sampled by its FrameSampling)."""
    spec = ClipSpec(frames_per_clip=frames, layout=model.clip.layout if model.clip.is_clip else "NTCHW")
    started = time.perf_counter()
    if len(items) == 1 and isinstance(items[0], RawVideo):
        limits = services.media
        check_videos(items, model.preprocess, limits, spec)
        prepared = await services.decode_item(items[0], prepare_input, items[0], model.preprocess, limits, spec)
        return Observation(prepared.pixels, (time.perf_counter() - started) * 1000, (prepared.sampled,))
    check_frame_count(sum(frames_given(item) for item in items), spec)  # before decoding, not after
    decoded, sampled = await _decode_frames(services, model, items)
    return Observation(to_item(decoded, spec), (time.perf_counter() - started) * 1000, sampled)


async def _decode_frames(services: Services, model: ServedModel,
                         items: Sequence[MediaItem]) -> tuple[np.ndarray, tuple[SampledVideo | None, ...]]:
    """Every item's frames, decoded in the decode executor and preprocessed for the model, oldest first:
    (k, 3, H, W); and per item, the frames taken from a video (None for other items)."""
    limits = services.media
    check_videos(items, model.preprocess, limits)

    async def decode(item: MediaItem, index: int) -> tuple[np.ndarray, SampledVideo | None]:
        with at_item(index):
            return await services.decode_item(item, _frames_of, item, model.preprocess, limits)

    decoded = await asyncio.gather(*(decode(item, index) for index, item in enumerate(items)))
    return np.concatenate([frames for frames, _ in decoded]), tuple(sampled for _, sampled in decoded)


def _frames_of(item: MediaItem, preprocess: ImagePreprocess,
               limits: MediaLimits) -> tuple[np.ndarray, SampledVideo | None]:
    """decode_frames, keeping what was sampled from a video (the responses echo it)."""
    if isinstance(item, RawVideo):
        return decode_video(item.data, item.sampling, video_frames_wanted(item, None), preprocess, limits.video)
    return decode_frames(item, preprocess, limits), None


def check_space(collection: Collection, space_id: str | None) -> None:
    """Vectors from another embedding space are meaningless in a collection: refuse them."""
    expected = collection.config.space_id
    if space_id is not None and expected is not None and space_id != expected:
        raise Conflict(
            f"vectors are from space {space_id!r}; collection {collection.config.name!r} holds {expected!r}",
            {"collection_space_id": expected, "space_id": space_id},
            code=ErrorCode.SPACE_MISMATCH,
        )


def model_for_collection(services: Services, collection: Collection) -> ServedModel:
    """The served model that embeds media for this collection (its named model, else one of its space)."""
    config = collection.config
    if config.model is not None and config.model in services.models:
        model = services.models.get(config.model)
    elif config.space_id is not None and (by_space := services.models.by_space(config.space_id)) is not None:
        model = by_space
    else:
        raise UnprocessableInput(
            f"collection {config.name!r} is not tied to a served model; send vectors instead of media",
            code=ErrorCode.NO_MODEL_FOR_COLLECTION,
        )
    check_space(collection, model.manifest.space_id)
    return model


def check_metadata_size(metadata: list[dict], limit: int) -> None:
    for row, entry in enumerate(metadata):
        size = len(json.dumps(entry, separators=(",", ":")))
        if size > limit:
            raise PayloadTooLarge(
                f"metadata of point {row} is {size} bytes of JSON; the limit is {limit}",
                {"index": row, "bytes": size, "max_metadata_bytes": limit},
                code=ErrorCode.METADATA_TOO_LARGE,
            )
