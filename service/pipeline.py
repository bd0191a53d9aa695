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
from service.media.images import ImageLimits
from service.media.memory import DecodeMemory
from service.media.payload import (
    MediaItem,
    MediaLimits,
    RawVideo,
    check_videos,
    decode_frames,
    frames_given,
    prepare_input,
)
from service.media.video import SampledVideo, VideoLimits
from service.model_pool import ServedModel
from service.settings import Settings
from service.state import Services
from service.world import FutureSurprise, LatentRollout, SurpriseScorer, TokenRollout, TokenSurprise


def media_limits(settings: Settings, image_memory: DecodeMemory | None = None) -> MediaLimits:
    """`image_memory`: the process's image decoding budget (Executors.image_memory); None = unbounded."""
    return MediaLimits(
        image=ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                          memory=image_memory),
        video=VideoLimits(max_bytes=settings.max_video_bytes, max_pixels=settings.max_image_pixels,
                          max_frames=settings.max_video_frames, max_decoded_bytes=settings.max_video_decode_bytes),
    )


@dataclass
class Embedded:
    pooled: np.ndarray  # (N, D) raw, not normalised
    tokens: np.ndarray  # (N, T, D); (N, 0, D) when tokens were not asked for
    decode_ms: float
    inference_ms: float
    cached: list[bool] | None = None  # per item: from the embedding cache
    frames: np.ndarray | None = None  # (N, steps, D) for encoders with a per-time-step output
    sampled: list[SampledVideo | None] | None = None  # per item: the frames taken from a video


def require_rollout(model: ServedModel) -> LatentRollout | TokenRollout:
    if model.rollout is None:
        raise UnprocessableInput(
            f"model {model.name!r} has no action-conditioned predictor", code=ErrorCode.NO_PREDICTOR
        )
    return model.rollout


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
    limits = media_limits(services.settings, services.executors.image_memory)
    positions = list(indices) if indices is not None else list(range(len(items)))

    async def prepare(item: MediaItem, index: int):
        with at_item(index):
            return await services.decode_item(item, prepare_input, item, model.preprocess, limits, model.clip)

    started = time.perf_counter()
    check_videos(items, model.preprocess, limits, model.clip)  # clip lengths and the decode budget, before decoding
    # Tell the batcher these items are coming, so it holds a batch open for them while they decode.
    model.encoder.announce(len(items))
    try:
        prepared = await asyncio.gather(*(prepare(item, index) for item, index in zip(items, positions, strict=False)))
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


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


@dataclass
class Observed:
    state: np.ndarray  # (D,) raw pooled embedding of the newest observation
    decode_ms: float
    inference_ms: float


async def embed_observation(
    services: Services, model: ServedModel, items: Sequence[MediaItem], deadline: float | None = None
) -> Observed:
    """Observation frames (oldest first) -> the state embedding of the newest one.

    Each input is one frame (an image or a (3, H, W) tensor). A clip model sees
    its last `frames_per_clip` frames as one clip (fewer are padded by the clip
    rule); a single-frame model embeds the last frame.
    """
    started = time.perf_counter()
    stacked = await _decode_frames(services, model, items)  # (k, 3, H, W)
    window = model.clip.frames_per_clip if model.clip.is_clip else 1
    item = to_item(stacked[-window:], model.clip)
    decoded = time.perf_counter()
    pooled, _ = await model.embed([item], deadline)
    return Observed(pooled[0], (decoded - started) * 1000, (time.perf_counter() - decoded) * 1000)


async def observe_tokens(
    services: Services, model: ServedModel, items: Sequence[MediaItem], deadline: float | None = None
) -> tuple[np.ndarray, float, float]:
    """Observation frames (oldest first) -> each frame's token grid (n, tokens, D), every frame encoded on its
    own as a clip of identical frames (how V-JEPA 2-AC's world model encodes observations); + decode/encode ms."""
    started = time.perf_counter()
    frames = await _decode_frames(services, model, items)  # (n, 3, H, W)
    clips = [to_item(frame[None], model.clip) for frame in frames]
    encoded = time.perf_counter()
    _, tokens = await model.embed(clips, deadline)
    return tokens, (encoded - started) * 1000, (time.perf_counter() - encoded) * 1000


@dataclass
class ObservedStates:
    states: np.ndarray  # (k - window + 1, D): the state at every observation that has a full clip behind it
    first: int  # the observation index of states[0] (window - 1)
    frames: int  # k, the frames decoded
    decode_ms: float
    inference_ms: float


async def observe_states(
    services: Services, model: ServedModel, items: Sequence[MediaItem], deadline: float | None = None
) -> ObservedStates:
    """Observation frames (oldest first) -> the pooled state at each of them, all in one encoder request.

    A clip model's state at frame t is the clip of frames t - frames_per_clip + 1 .. t (how its predictor was
    trained: the clip shows the motion), so the first frames_per_clip - 1 frames have no state of their own."""
    started = time.perf_counter()
    frames = await _decode_frames(services, model, items)  # (k, 3, H, W)
    window = model.clip.frames_per_clip if model.clip.is_clip else 1
    clips = [to_item(frames[t - window + 1:t + 1], model.clip) for t in range(window - 1, len(frames))]
    decoded = time.perf_counter()
    if not clips:
        return ObservedStates(np.zeros((0, model.manifest.output.dim), np.float32), window - 1, len(frames),
                              (decoded - started) * 1000, 0.0)
    outputs = await model.encode(clips, deadline, outputs=("pooled",))
    return ObservedStates(outputs["pooled"], window - 1, len(frames), (decoded - started) * 1000,
                          (time.perf_counter() - decoded) * 1000)


async def observe_exact_clip(services: Services, model: ServedModel, items: Sequence[MediaItem],
                             frames: int) -> ObservedClip:
    """Observation items -> one clip of exactly `frames` frames in the model's layout: nothing padded, since a
    padded frame would be scored as if it had been seen (a video must reach `frames` sampled frames)."""
    if len(items) == 1 and isinstance(items[0], RawVideo):
        seen = await observe_clip(services, model, items, frames)
        if seen.sampled is not None and seen.sampled.padded:
            raise UnprocessableInput(f"the video ended {seen.sampled.padded} frame(s) short of the {frames} the model "
                                     "scores as one clip", {"frames_per_clip": frames}, code=ErrorCode.INVALID_CONTEXT)
        return seen
    started = time.perf_counter()
    decoded = await _decode_frames(services, model, items)
    if len(decoded) != frames:
        raise UnprocessableInput(f"model {model.name!r} scores clips of exactly {frames} frames; got {len(decoded)}",
                                 {"frames_per_clip": frames}, code=ErrorCode.INVALID_CONTEXT)
    return ObservedClip(to_item(decoded, model.clip), None, (time.perf_counter() - started) * 1000)


def require_surprise(model: ServedModel) -> SurpriseScorer | FutureSurprise | TokenSurprise:
    if model.surprise is None:
        raise UnprocessableInput(
            f"model {model.name!r} has no surprise calibration: {_how_to_calibrate(model)}",
            code=ErrorCode.NO_SURPRISE)
    return model.surprise


def _how_to_calibrate(model: ServedModel) -> str:
    if isinstance(model.rollout, TokenRollout):
        return ("export it again with `jepa-export vjepa2 CHECKPOINT --surprise-trajectories FOLDER`, a folder of "
                ".npz trajectories of normal behaviour (frames, poses, actions; see docs/models.md)")
    if model.future is not None:
        return ("export it again with `jepa-export vjepa2 FOLDER --surprise-videos VIDEOS`, a folder of normal "
                "videos")
    return ("surprise needs a pooled action-conditioned predictor, V-JEPA 2's mask predictor or V-JEPA 2-AC's "
            "predictor, calibrated at export")


@dataclass
class ObservedClip:
    clip: np.ndarray  # the encoder-layout item, e.g. (3, T, H, W)
    sampled: SampledVideo | None
    decode_ms: float


async def observe_clip(services: Services, model: ServedModel, items: Sequence[MediaItem], frames: int) -> ObservedClip:
    """Context items (images, frames or one video, oldest first) -> one clip of `frames` frames in the model's
    layout; fewer frames are padded at the front by the clip rule (a video is sampled by its FrameSampling)."""
    spec = ClipSpec(frames_per_clip=frames, layout=model.clip.layout if model.clip.is_clip else "NTCHW")
    started = time.perf_counter()
    if len(items) == 1 and isinstance(items[0], RawVideo):
        limits = media_limits(services.settings, services.executors.image_memory)
        check_videos(items, model.preprocess, limits, spec)
        prepared = await services.decode_item(items[0], prepare_input, items[0], model.preprocess, limits, spec)
        return ObservedClip(prepared.pixels, prepared.sampled, (time.perf_counter() - started) * 1000)
    check_frame_count(sum(frames_given(item) for item in items), spec)  # before decoding, not after
    clip = to_item(await _decode_frames(services, model, items), spec)
    return ObservedClip(clip, None, (time.perf_counter() - started) * 1000)


async def _decode_frames(services: Services, model: ServedModel, items: Sequence[MediaItem]) -> np.ndarray:
    """Every item's frames, decoded in the decode executor and preprocessed for the model, oldest first:
    (k, 3, H, W)."""
    limits = media_limits(services.settings, services.executors.image_memory)
    check_videos(items, model.preprocess, limits)

    async def decode(item: MediaItem, index: int) -> np.ndarray:
        with at_item(index):
            return await services.decode_item(item, decode_frames, item, model.preprocess, limits)

    decoded = await asyncio.gather(*(decode(item, index) for index, item in enumerate(items)))
    return np.concatenate(decoded)


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
