"""From request bodies to media items: count limits, base64 decoding and video sampling options."""

from __future__ import annotations

from collections.abc import Sequence

from service.api.schemas import MediaInput, VideoSamplingOptions
from service.config import LimitsConfig, MediaConfig
from service.errors import ErrorCode, PayloadTooLarge, at_item
from service.media.payload import MediaItem, RawClip, RawImage, RawTensor, RawVideo, b64decode
from service.media.video import FrameSampling


def frame_sampling(options: VideoSamplingOptions | None, default_frames: int | None = None) -> FrameSampling:
    """The request's video sampling; `default_frames` when it names no frame count (a model's context length)."""
    if options is None:
        return FrameSampling(num_frames=default_frames)
    num_frames = options.num_frames if options.num_frames is not None else default_frames
    return FrameSampling(num_frames=num_frames, stride=options.stride, fps=options.fps, start_s=options.start_s)


def check_count(n: int, limits: LimitsConfig, what: str = "inputs") -> None:
    if n > limits.max_request_items:
        raise PayloadTooLarge(
            f"{n} {what} in one request; the limit is {limits.max_request_items}",
            {"max_request_items": limits.max_request_items},
            code=ErrorCode.TOO_MANY_ITEMS,
        )


def check_upsert_size(points: int, dim: int, limits: LimitsConfig) -> None:
    """Precomputed vectors cost no decoding: an upsert of them is bounded by count and raw float32 bytes."""
    if points > limits.max_upsert_vectors:
        raise PayloadTooLarge(
            f"{points} vectors in one upsert; the limit is {limits.max_upsert_vectors}",
            {"max_upsert_vectors": limits.max_upsert_vectors}, code=ErrorCode.TOO_MANY_ITEMS,
        )
    size = points * dim * 4
    if size > limits.max_upsert_bytes:
        raise PayloadTooLarge(
            f"{points} vectors of dim {dim} are {size} bytes of float32; the limit is {limits.max_upsert_bytes}",
            {"bytes": size, "max_upsert_bytes": limits.max_upsert_bytes}, code=ErrorCode.TOO_MANY_ITEMS,
        )


def to_media_items(
    inputs: Sequence[MediaInput], limits: LimitsConfig, media: MediaConfig, sampling: FrameSampling | None = None
) -> list[MediaItem]:
    """Count and size checks of the request's media (`limits`: how many; `media`: how large), before decoding."""
    check_count(len(inputs), limits)
    sampling = sampling or FrameSampling()
    items: list[MediaItem] = []
    for index, item in enumerate(inputs):
        with at_item(index):
            items.append(_to_media_item(item, limits, media, sampling))
    return items


def _to_media_item(item: MediaInput, limits: LimitsConfig, media: MediaConfig, sampling: FrameSampling) -> MediaItem:
    image_bytes = media.image.max_bytes
    if item.video is not None:
        return RawVideo(b64decode(item.video, media.video.max_bytes, what="video"), sampling)
    if item.image is not None:
        return RawImage(b64decode(item.image, image_bytes))
    if item.frames is not None:
        check_count(len(item.frames), limits, "frames")
        return RawClip(tuple(b64decode(f, image_bytes) for f in item.frames))
    assert item.tensor is not None
    data = b64decode(item.tensor.data, image_bytes, what="tensor")
    return RawTensor(data, item.tensor.dtype, tuple(item.tensor.shape))
