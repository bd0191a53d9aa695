"""Videos: MP4 / WebM / ... bytes -> the sampled frames of one clip, decoded with PyAV (FFmpeg).

Sampling happens on the server so that every client gets the model's frame
rule, and what was taken is echoed back (`SampledVideo`):
- `stride`: every stride-th decoded frame from the first frame at `start_s`;
- `fps`: one frame per 1/fps seconds from `start_s` (the first frame at or
  after each instant; a rate above the source's repeats frames);
- neither: `uniform`, the centre frame of `num_frames` equal segments of the
  video from `start_s` (one frame = the middle one).
A video that ends before the clip is full is padded by repeating its last
sampled frame (counted in `padded`), as V-JEPA 2's loaders do for short clips.

Decoding is bounded before it costs memory: bytes, pixels per frame (from the
stream header) and decoded frames; only the sampled frames are converted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from service.errors import ErrorCode, InvalidInput, PayloadTooLarge, UnprocessableInput
from service.media.images import ImagePreprocess

try:  # the service works without PyAV; video input then answers 415 with the reason
    import av
except ImportError:  # pragma: no cover - the cpu extra installs it
    av = None


@dataclass(frozen=True, kw_only=True)
class FrameSampling:
    """What the request asked for; `num_frames` None = the model's frames per clip."""

    num_frames: int | None = None
    stride: int | None = None
    fps: float | None = None
    start_s: float = 0.0

    def __post_init__(self) -> None:
        if self.stride is not None and self.fps is not None:
            raise UnprocessableInput("give 'stride' or 'fps', not both", code=ErrorCode.INVALID_SAMPLING)

    @property
    def mode(self) -> str:
        return "stride" if self.stride is not None else "fps" if self.fps is not None else "uniform"


@dataclass(frozen=True, kw_only=True)
class VideoLimits:
    max_bytes: int
    max_pixels: int  # width x height of one frame
    max_frames: int  # frames decoded to reach the last sampled one


@dataclass(frozen=True, kw_only=True)
class SampledVideo:
    """The sampling that was applied, echoed in the response."""

    mode: str
    num_frames: int
    stride: int | None
    fps: float | None
    start_s: float
    frame_indices: list[int]
    timestamps_s: list[float]
    padded: int
    resolution: list[int]  # [height, width] given to the model
    source: dict[str, object] = field(default_factory=dict)  # frames, fps, duration_s, width, height, codec


def looks_like_video(data: bytes) -> bool:
    """Container magic numbers: ISO BMFF (MP4/MOV: 'ftyp' box), Matroska/WebM (EBML), AVI (RIFF....AVI )."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3" or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")


@dataclass
class _Source:
    frames: int  # 0 when the container does not say
    fps: float
    duration_s: float | None
    width: int
    height: int
    codec: str


def _open(data: bytes):
    if av is None:
        raise UnprocessableInput("video input needs PyAV (pip install av)", code=ErrorCode.VIDEO_UNSUPPORTED)
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise InvalidInput(f"cannot open video: {exc}", code=ErrorCode.INVALID_VIDEO) from exc
    if not container.streams.video:
        container.close()
        raise InvalidInput("the file has no video stream", code=ErrorCode.INVALID_VIDEO)
    return container


def _describe(container) -> _Source:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    ctx = stream.codec_context
    return _Source(frames=int(stream.frames or 0), fps=fps, duration_s=duration, width=int(ctx.width or 0),
                   height=int(ctx.height or 0), codec=str(ctx.name))


def _too_long(limits: VideoLimits) -> PayloadTooLarge:
    return PayloadTooLarge(f"the video needs more than {limits.max_frames} decoded frames",
                           {"max_video_frames": limits.max_frames}, code=ErrorCode.VIDEO_TOO_LONG)


def _count_frames(data: bytes, limits: VideoLimits) -> int:
    """Frames in the stream, from packets (no decoding), for containers whose header does not say (WebM)."""
    container = _open(data)
    try:
        count = 0
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                count += 1
                if count > limits.max_frames:
                    raise _too_long(limits)
        return count
    except av.FFmpegError as exc:
        raise InvalidInput(f"cannot read video: {exc}", code=ErrorCode.INVALID_VIDEO) from exc
    finally:
        container.close()


def _targets(sampling: FrameSampling, k: int, total: int) -> tuple[str, list[float]]:
    """For stride/uniform: frame indices counted from the first frame at start_s; for fps: instants (s)."""
    if sampling.stride is not None:
        return "index", [float(i * sampling.stride) for i in range(k)]
    if sampling.fps is not None:
        return "time", [sampling.start_s + i / sampling.fps for i in range(k)]
    return "index", [float(int((i + 0.5) * total / k)) for i in range(k)]


def decode_video(
    data: bytes, sampling: FrameSampling, num_frames: int, preprocess: ImagePreprocess, limits: VideoLimits
) -> tuple[np.ndarray, SampledVideo]:
    """-> float32 (num_frames, 3, H, W) preprocessed frames, oldest first, and what was sampled."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"video is {len(data)} bytes; the limit is {limits.max_bytes}",
                              {"bytes": len(data), "max_bytes": limits.max_bytes})
    container = _open(data)
    source = _describe(container)
    if source.width * source.height > limits.max_pixels:
        container.close()
        raise PayloadTooLarge(f"video frames are {source.width}x{source.height}; the limit is {limits.max_pixels} pixels",
                              {"width": source.width, "height": source.height, "max_pixels": limits.max_pixels})
    total = 0
    if sampling.mode == "uniform":
        total = source.frames
        if total > limits.max_frames:
            container.close()
            raise _too_long(limits)
        if not total:  # the header does not say (WebM): count packets, then start again
            container.close()
            total = _count_frames(data, limits)
            container = _open(data)
    try:
        picked, times, indices = _sample(container, sampling, num_frames, source, total, limits)
    finally:
        container.close()
    if not picked:
        raise UnprocessableInput(f"the video has no frame at or after start_s={sampling.start_s}",
                                 {"start_s": sampling.start_s}, code=ErrorCode.INVALID_SAMPLING)
    padded = num_frames - len(picked)
    picked += [picked[-1]] * padded
    indices += [indices[-1]] * padded
    times += [times[-1]] * padded
    frames = np.stack([preprocess.apply(image) for image in picked])
    echo = SampledVideo(
        mode=sampling.mode, num_frames=num_frames, stride=sampling.stride, fps=sampling.fps, start_s=sampling.start_s,
        frame_indices=indices, timestamps_s=[round(t, 6) for t in times], padded=padded,
        resolution=[preprocess.height, preprocess.width],
        source={"frames": total or source.frames, "fps": round(source.fps, 6), "duration_s": source.duration_s,
                "width": source.width, "height": source.height, "codec": source.codec},
    )
    return frames, echo


def _sample(container, sampling: FrameSampling, k: int, source: _Source, total: int, limits: VideoLimits):
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = source.fps or 25.0
    picked, times, indices = [], [], []
    first = None  # index of the first frame at or after start_s
    axis = "time"
    wanted: list[float] = []
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index >= limits.max_frames:
                raise _too_long(limits)
            t = float(frame.time) if frame.time is not None else index / fps
            if first is None:
                if t + 0.5 / fps < sampling.start_s:
                    continue
                first = index
                axis, wanted = _targets(sampling, k, max(total - index, 1))
            position = t if axis == "time" else float(index - first)
            tolerance = 0.5 / fps if axis == "time" else 0.0
            while len(picked) < k and wanted[len(picked)] <= position + tolerance:
                picked.append(frame.to_image())
                times.append(t)
                indices.append(index)
            if len(picked) == k:
                break
    except av.FFmpegError as exc:
        raise InvalidInput(f"cannot decode video: {exc}", code=ErrorCode.INVALID_VIDEO) from exc
    return picked, times, indices
