"""From request inputs to embeddings: check counts, decode in the pool, run the encoder batcher."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.api.schemas import MediaInput, VideoSamplingOptions
from service.embed_cache import cache_key
from service.errors import InvalidInput, NotFound, PayloadTooLarge, UnprocessableInput
from service.media.clips import ClipSpec, check_frame_count, to_item
from service.media.images import ImageLimits
from service.media.payload import (
    MediaItem,
    RawClip,
    RawImage,
    RawTensor,
    RawVideo,
    b64decode,
    check_videos,
    decode_frames,
    frames_given,
    prepare_input,
)
from service.media.video import FrameSampling, SampledVideo
from service.model_pool import ServedModel
from service.settings import Settings
from service.state import Services
from service.world import LatentRollout, TokenRollout


@dataclass
class Embedded:
    pooled: np.ndarray  # (N, D) raw, not normalised
    tokens: np.ndarray  # (N, T, D); (N, 0, D) when tokens were not asked for
    decode_ms: float
    inference_ms: float
    cached: list[bool] | None = None  # per item: from the embedding cache
    frames: np.ndarray | None = None  # (N, steps, D) for encoders with a per-time-step output
    sampled: list[SampledVideo | None] | None = None  # per item: the frames taken from a video


def image_limits(settings: Settings) -> ImageLimits:
    return ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                       max_video_bytes=settings.max_video_bytes, max_video_frames=settings.max_video_frames,
                       max_video_decode_bytes=settings.max_video_decode_bytes)


def frame_sampling(options: VideoSamplingOptions | None) -> FrameSampling:
    if options is None:
        return FrameSampling()
    return FrameSampling(num_frames=options.num_frames, stride=options.stride, fps=options.fps, start_s=options.start_s)


def check_count(n: int, settings: Settings, what: str = "inputs") -> None:
    if n > settings.max_request_items:
        raise PayloadTooLarge(
            f"{n} {what} in one request; the limit is {settings.max_request_items}",
            {"max_request_items": settings.max_request_items},
            code="too_many_items",
        )


def to_media_items(
    inputs: Sequence[MediaInput], settings: Settings, sampling: FrameSampling = FrameSampling()
) -> list[MediaItem]:
    check_count(len(inputs), settings)
    items: list[MediaItem] = []
    for item in inputs:
        if item.video is not None:
            items.append(RawVideo(b64decode(item.video, settings.max_video_bytes, what="video"), sampling))
        elif item.image is not None:
            items.append(RawImage(b64decode(item.image, settings.max_image_bytes)))
        elif item.frames is not None:
            check_count(len(item.frames), settings, "frames")
            items.append(RawClip(tuple(b64decode(f, settings.max_image_bytes) for f in item.frames)))
        else:
            assert item.tensor is not None
            data = b64decode(item.tensor.data, settings.max_image_bytes, what="tensor")
            items.append(RawTensor(data, item.tensor.dtype, tuple(item.tensor.shape)))
    return items


def resolve_model(services: Services, name: str | None) -> ServedModel:
    if name is not None:
        return services.models.get(name)
    default = services.settings.default_model
    if default in services.models:
        return services.models.get(default)
    served = list(services.models)
    if len(served) == 1:
        return served[0]
    raise NotFound("no model named in the request and no default model is served", code="model_not_found")


def request_deadline(header: str | None, timeout_ms: float | None, settings: Settings) -> float | None:
    """The request's deadline as a perf_counter instant: body field, else header, else the default."""
    if timeout_ms is None and header is not None:
        try:
            timeout_ms = float(header)
        except ValueError:
            raise InvalidInput("X-Request-Timeout-Ms must be a number of milliseconds", code="invalid_timeout") from None
        if not 0 < timeout_ms < 3_600_000:
            raise InvalidInput("X-Request-Timeout-Ms must be between 0 and 3600000", code="invalid_timeout")
    if timeout_ms is None:
        timeout_ms = settings.request_timeout_ms or None
    return None if timeout_ms is None else time.perf_counter() + timeout_ms / 1000.0


def resolve_world_model(
    services: Services, name: str | None
) -> tuple[ServedModel, LatentRollout | TokenRollout]:
    """The named (or default) model and its latent rollout; 422 if it has no action-conditioned predictor."""
    model = resolve_model(services, name)
    return model, require_rollout(model)


def require_rollout(model: ServedModel) -> LatentRollout | TokenRollout:
    if model.rollout is None:
        raise UnprocessableInput(f"model {model.name!r} has no action-conditioned predictor", code="no_predictor")
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
    found = await services.run_blocking(cache.get_many, keys)
    missing = [i for i, vector in enumerate(found) if vector is None]
    hits = len(items) - len(missing)
    services.metrics.embed_cache_hits.labels(backend=cache.backend).inc(hits)
    services.metrics.embed_cache_misses.labels(backend=cache.backend).inc(len(missing))
    decode_ms = inference_ms = 0.0
    if missing:
        computed = await _compute(services, model, [items[i] for i in missing], deadline)
        decode_ms, inference_ms = computed.decode_ms, computed.inference_ms
        await services.run_blocking(cache.put_many, [keys[i] for i in missing], computed.pooled)
        for row, i in enumerate(missing):
            found[i] = computed.pooled[row]
    pooled = np.stack([np.asarray(v, np.float32) for v in found])
    tokens = np.zeros((len(items), 0, pooled.shape[1]), np.float32)
    missed = set(missing)
    return Embedded(pooled, tokens, decode_ms, inference_ms, cached=[i not in missed for i in range(len(items))])


async def _compute(
    services: Services, model: ServedModel, items: Sequence[MediaItem], deadline: float | None = None,
    output: str = "pooled",
) -> Embedded:
    limits = image_limits(services.settings)
    started = time.perf_counter()
    # Tell the batcher these items are coming, so it holds a batch open for them while they decode.
    check_videos(items, model.preprocess, limits, model.clip)  # clip lengths and the decode budget, before decoding
    model.encoder.announce(len(items))
    try:
        prepared = await asyncio.gather(
            *(services.decode(item, prepare_input, item, model.preprocess, limits, model.clip) for item in items)
        )
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
    services: Services, model: ServedModel, inputs: Sequence[MediaInput], deadline: float | None = None
) -> Observed:
    """Observation frames (oldest first) -> the state embedding of the newest one.

    Each input is one frame (an image or a (3, H, W) tensor). A clip model sees
    its last `frames_per_clip` frames as one clip (fewer are padded by the clip
    rule); a single-frame model embeds the last frame.
    """
    started = time.perf_counter()
    stacked = await _decode_frames(services, model, to_media_items(inputs, services.settings))  # (k, 3, H, W)
    window = model.clip.frames_per_clip if model.clip.is_clip else 1
    item = to_item(stacked[-window:], model.clip)
    decoded = time.perf_counter()
    pooled, _ = await model.embed([item], deadline)
    return Observed(pooled[0], (decoded - started) * 1000, (time.perf_counter() - decoded) * 1000)


async def observe_tokens(
    services: Services, model: ServedModel, inputs: Sequence[MediaInput], deadline: float | None = None
) -> tuple[np.ndarray, float, float]:
    """Observation frames (oldest first) -> each frame's token grid (n, tokens, D), every frame encoded on its
    own as a clip of identical frames (how V-JEPA 2-AC's world model encodes observations); + decode/encode ms."""
    started = time.perf_counter()
    frames = await _decode_frames(services, model, to_media_items(inputs, services.settings))  # (n, 3, H, W)
    clips = [to_item(frame[None], model.clip) for frame in frames]
    encoded = time.perf_counter()
    _, tokens = await model.embed(clips, deadline)
    return tokens, (encoded - started) * 1000, (time.perf_counter() - encoded) * 1000


@dataclass
class ObservedClip:
    clip: np.ndarray  # the encoder-layout item, e.g. (3, T, H, W)
    sampled: SampledVideo | None
    decode_ms: float


async def observe_clip(
    services: Services, model: ServedModel, inputs: Sequence[MediaInput], frames: int, sampling: FrameSampling
) -> ObservedClip:
    """Context inputs (images, frames or one video, oldest first) -> one clip of `frames` frames in the model's
    layout; fewer frames are padded at the front by the clip rule, a video is sampled to `frames` by default."""
    if sampling.num_frames is None:
        sampling = dataclasses.replace(sampling, num_frames=frames)
    items = to_media_items(inputs, services.settings, sampling)
    spec = ClipSpec(frames_per_clip=frames, layout=model.clip.layout if model.clip.is_clip else "NTCHW")
    started = time.perf_counter()
    if len(items) == 1 and isinstance(items[0], RawVideo):
        limits = image_limits(services.settings)
        check_videos(items, model.preprocess, limits, spec)
        prepared = await services.decode(items[0], prepare_input, items[0], model.preprocess, limits, spec)
        return ObservedClip(prepared.pixels, prepared.sampled, (time.perf_counter() - started) * 1000)
    check_frame_count(sum(frames_given(item) for item in items), spec)  # before decoding, not after
    clip = to_item(await _decode_frames(services, model, items), spec)
    return ObservedClip(clip, None, (time.perf_counter() - started) * 1000)


async def _decode_frames(services: Services, model: ServedModel, items: Sequence[MediaItem]) -> np.ndarray:
    """Every item's frames, decoded in the pool and preprocessed for the model, oldest first: (k, 3, H, W)."""
    limits = image_limits(services.settings)
    check_videos(items, model.preprocess, limits)
    decoded = await asyncio.gather(*(services.decode(i, decode_frames, i, model.preprocess, limits) for i in items))
    return np.concatenate(decoded)
