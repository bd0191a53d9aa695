"""Request media (base64 images, clips of frames, videos, raw tensors) -> preprocessed arrays for one model."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import ErrorCode, InvalidInput, PayloadTooLarge, UnprocessableInput
from service.media.clips import ClipSpec, check_frame_count, to_item
from service.media.images import ImageLimits, ImagePreprocess, decode_image
from service.media.video import (
    FrameSampling,
    SampledVideo,
    VideoLimits,
    check_decode_budget,
    decode_video,
    output_bytes,
)

TENSOR_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class MediaLimits:
    """What one request's media may cost: images and videos, each by their own limits."""

    image: ImageLimits
    video: VideoLimits


@dataclass(frozen=True)
class RawImage:
    data: bytes


@dataclass(frozen=True)
class RawTensor:
    """A preprocessed tensor sent by the client: the fast path that skips decoding."""

    data: bytes
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RawClip:
    """A few encoded frames, oldest first, that form one clip input."""

    frames: tuple[bytes, ...]


@dataclass(frozen=True)
class RawVideo:
    """An encoded video file (MP4, WebM, ...); the server samples its frames (service/media/video.py)."""

    data: bytes
    sampling: FrameSampling = FrameSampling()


MediaItem = RawImage | RawTensor | RawClip | RawVideo


@dataclass(frozen=True)
class ModelInput:
    """One item ready for the encoder, and for a video the sampling that produced it."""

    pixels: np.ndarray
    sampled: SampledVideo | None = None


def b64decode(text: str, max_bytes: int, what: str = "image") -> bytes:
    """Strict base64 (data: URLs accepted); the size is checked before decoding."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if len(text) // 4 * 3 > max_bytes + 3:
        raise PayloadTooLarge(f"{what} is larger than the limit of {max_bytes} bytes", {"max_bytes": max_bytes})
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what} is not valid base64: {exc}", code=ErrorCode.INVALID_BASE64) from exc


def decode_frames(item: MediaItem, preprocess: ImagePreprocess, limits: MediaLimits) -> np.ndarray:
    """One item -> (k, 3, H, W) in the model's pixel dtype: its frames, decoded and preprocessed (k = 1 for an
    image). A preprocessed tensor is normalised float pixels; a uint8 model takes it as the nearest uint8 pixels
    (ImagePreprocess.from_normalised), so it shares batches and the one graph with decoded images."""
    if isinstance(item, RawVideo):
        return decode_video(
            item.data, item.sampling, video_frames_wanted(item, None), preprocess, limits.video
        )[0]
    if isinstance(item, RawImage):
        return preprocess.apply(decode_image(item.data, limits.image))[None]
    if isinstance(item, RawClip):
        return np.stack([preprocess.apply(decode_image(frame, limits.image)) for frame in item.frames])
    frame = (3, preprocess.height, preprocess.width)
    shape = tuple(item.shape)
    if shape != frame and not (len(shape) == 4 and shape[1:] == frame and shape[0] >= 1):
        raise UnprocessableInput(
            f"tensor shape {list(shape)} does not match the model input {list(frame)} (or [frames, *{list(frame)}])",
            {"expected_shape": list(frame)},
            code=ErrorCode.INVALID_TENSOR,
        )
    dtype = np.dtype(TENSOR_DTYPES[item.dtype])
    needed = dtype.itemsize * int(np.prod(shape))
    if len(item.data) != needed:
        raise InvalidInput(
            f"tensor has {len(item.data)} bytes; shape {list(shape)} of {item.dtype} needs {needed}",
            code=ErrorCode.INVALID_TENSOR_BYTES,
        )
    array = np.frombuffer(item.data, dtype=dtype).reshape(shape).astype(np.float32)
    if not np.isfinite(array).all():
        raise UnprocessableInput("tensor contains NaN or Inf", code=ErrorCode.INVALID_TENSOR)
    return preprocess.from_normalised(array.reshape(-1, *frame))


def video_frames_wanted(item: RawVideo, clip: ClipSpec | None) -> int:
    """Frames taken from a video: the request's num_frames, else one clip (or one frame without a clip rule)."""
    if item.sampling.num_frames is not None:
        return item.sampling.num_frames
    return clip.frames_per_clip if clip is not None and clip.is_clip else 1


def frames_given(item: MediaItem, clip: ClipSpec | None = None) -> int:
    """Frames an item yields once decoded, known before decoding it."""
    if isinstance(item, RawVideo):
        return video_frames_wanted(item, clip)
    if isinstance(item, RawClip):
        return len(item.frames)
    if isinstance(item, RawTensor) and len(item.shape) == 4:
        return item.shape[0]
    return 1


def check_videos(items: Sequence[MediaItem], preprocess: ImagePreprocess, limits: MediaLimits,
                 clip: ClipSpec | None = None) -> None:
    """Before any video of a request is decoded: each one's frame count against the clip rule, and the frames
    the request will hold at the model's input size against the per-request decoding budget (413). Each
    video's decoder working set is added to its own share once its header is read (decode_video)."""
    videos = [item for item in items if isinstance(item, RawVideo)]
    wanted = [video_frames_wanted(video, clip) for video in videos]
    if clip is not None:
        for k in wanted:
            check_frame_count(k, clip)
    check_decode_budget(sum(output_bytes(k, preprocess) for k in wanted), limits.video)


def prepare_input(
    item: MediaItem, preprocess: ImagePreprocess, limits: MediaLimits, clip: ClipSpec | None = None
) -> ModelInput:
    """One item -> the encoder's per-item input ((3, H, W), a clip for clip models) + the video sampling echo."""
    clip = clip or ClipSpec()
    if isinstance(item, RawVideo):
        wanted = video_frames_wanted(item, clip)
        check_frame_count(wanted, clip)  # a clip too long is refused before decoding, not after
        frames, sampled = decode_video(item.data, item.sampling, wanted, preprocess, limits.video)
        return ModelInput(to_item(frames, clip), sampled)
    return ModelInput(to_item(decode_frames(item, preprocess, limits), clip))

