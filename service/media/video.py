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
A header that claims more frames than the stream holds (a cut file) is found
out while decoding, and uniform sampling is redone over the frames really there.

Decoding is bounded before it costs memory: bytes, then from the stream header
the pixels per frame, the frames to decode and an estimate of the bytes the
decode will hold (decoder frames, one RGB frame, the output) against a budget;
frames are decoded one at a time and only the sampled ones are converted,
each resized to the model's input as it comes. (A 1,030-frame 768x768 video
used to cost 2.3 GB: every sampled frame was kept at full resolution.)
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
    max_decoded_bytes: int  # decoder frames + RGB copy + output, estimated from the header (413 above)


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
    pix_fmt: str | None = None  # the decoded frames' pixel format (their bytes per pixel)


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
                   height=int(ctx.height or 0), codec=str(ctx.name), pix_fmt=ctx.pix_fmt)


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
    """-> (num_frames, 3, H, W) preprocessed frames (the model's pixel dtype), oldest first, and what was sampled.

    Every limit is checked before a frame is decoded: bytes, then (from the stream header) pixels per
    frame, frames to decode and the decoded-bytes budget. Frames are decoded one at a time; a sampled
    one is preprocessed (resized to the model's input) at once into its row of the output, so the
    memory a request holds is its output plus one decoder's working set, whatever the video's length.
    """
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"video is {len(data)} bytes; the limit is {limits.max_bytes}",
                              {"bytes": len(data), "max_bytes": limits.max_bytes})
    container = _open(data)
    try:
        source = _describe(container)
        if source.width * source.height > limits.max_pixels:
            raise PayloadTooLarge(
                f"video frames are {source.width}x{source.height}; the limit is {limits.max_pixels} pixels",
                {"width": source.width, "height": source.height, "max_pixels": limits.max_pixels})
        check_decode_budget(decode_bytes(source, num_frames, preprocess), limits)
        total = 0
        if sampling.mode == "uniform":
            total = source.frames
            if not total:  # the header does not say (WebM): count packets, then start again
                container.close()
                total = _count_frames(data, limits)
                container = _open(data)
            if total > limits.max_frames:
                raise _too_long(limits)
        else:
            _check_span(sampling, num_frames, source, limits)
        out = np.empty((num_frames, 3, preprocess.height, preprocess.width), preprocess.dtype)
        taken = _sample(container, sampling, out, source, total, preprocess, limits)
        if sampling.mode == "uniform" and taken.count < num_frames and 0 < taken.decoded < total:
            # The header claimed more frames than the stream holds (a cut or damaged file): the segment
            # centres were placed past its end. Sample again over the frames that are really there.
            container.close()
            total = taken.decoded
            container = _open(data)
            taken = _sample(container, sampling, out, source, total, preprocess, limits)
    finally:
        container.close()
    if not taken.count:
        if not taken.decoded:
            raise InvalidInput("the video has no decodable frame", code=ErrorCode.INVALID_VIDEO)
        raise UnprocessableInput(
            f"the video has no frame at or after start_s={sampling.start_s} (it has {taken.decoded} frames, "
            f"{taken.last_time_s:.3f} s)", {"start_s": sampling.start_s, "frames": taken.decoded},
            code=ErrorCode.INVALID_SAMPLING)
    padded = num_frames - taken.count
    out[taken.count:] = out[taken.count - 1]
    indices = taken.indices + [taken.indices[-1]] * padded
    times = taken.times + [taken.times[-1]] * padded
    echo = SampledVideo(
        mode=sampling.mode, num_frames=num_frames, stride=sampling.stride, fps=sampling.fps, start_s=sampling.start_s,
        frame_indices=indices, timestamps_s=[round(t, 6) for t in times], padded=padded,
        resolution=[preprocess.height, preprocess.width],
        source={"frames": total or source.frames, "fps": round(source.fps, 6), "duration_s": source.duration_s,
                "width": source.width, "height": source.height, "codec": source.codec},
    )
    return out, echo


# What one decode holds besides its output: H.264 / HEVC keep up to 16 reference frames, frame threading
# one more per thread, plus the frame being converted; then one full-size RGB copy for the resize.
DECODER_THREADS = 2  # FFmpeg's AUTO would start one per core, each holding frames: bounded here
REFERENCE_FRAMES = 16
# Output: the (k, 3, H, W) rows (float32, or uint8 for a graph that normalises), and once more for the clip rule's
# layout copy (to_item).
OUTPUT_COPIES = 2


def output_bytes(num_frames: int, preprocess: ImagePreprocess) -> int:
    """Bytes of the preprocessed frames a video yields (known before the file is opened)."""
    return OUTPUT_COPIES * num_frames * 3 * preprocess.height * preprocess.width * preprocess.bytes_per_value


def decode_bytes(source: _Source, num_frames: int, preprocess: ImagePreprocess) -> int:
    """Estimated peak bytes of decoding one video: the decoder's frames, one RGB frame, the output."""
    try:
        bytes_per_pixel = av.VideoFormat(source.pix_fmt).padded_bits_per_pixel / 8 if source.pix_fmt else 3.0
    except (ValueError, TypeError):
        bytes_per_pixel = 3.0
    pixels = source.width * source.height
    decoder = int(pixels * bytes_per_pixel * (REFERENCE_FRAMES + DECODER_THREADS + 1))
    return decoder + pixels * 3 + output_bytes(num_frames, preprocess)


def check_decode_budget(needed: int, limits: VideoLimits) -> None:
    if needed > limits.max_decoded_bytes:
        raise PayloadTooLarge(
            f"decoding this video would take about {needed / 2**20:.0f} MiB; the limit is "
            f"{limits.max_decoded_bytes / 2**20:.0f} MiB per request (fewer or smaller frames, or a smaller video)",
            {"decoded_bytes": needed, "max_decoded_bytes": limits.max_decoded_bytes}, code=ErrorCode.VIDEO_TOO_LARGE)


def _check_span(sampling: FrameSampling, k: int, source: _Source, limits: VideoLimits) -> None:
    """Stride and fps sampling: refuse before decoding if reaching the last sampled frame would decode more than
    max_frames (a video shorter than the span ends sooner, padded, so the header's count caps it)."""
    fps = source.fps or 25.0
    first = int(sampling.start_s * fps)
    if sampling.stride is not None:
        needed = first + (k - 1) * sampling.stride + 1
    else:
        needed = int((sampling.start_s + (k - 1) / float(sampling.fps)) * fps) + 1  # type: ignore[arg-type]
    if source.frames:
        needed = min(needed, source.frames)
    if needed > limits.max_frames:
        raise _too_long(limits)


@dataclass
class _Taken:
    count: int = 0  # output rows filled
    decoded: int = 0  # frames decoded
    last_time_s: float = 0.0
    indices: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


def _sample(container, sampling: FrameSampling, out: np.ndarray, source: _Source, total: int,
            preprocess: ImagePreprocess, limits: VideoLimits) -> _Taken:
    """Decode in order, preprocessing each sampled frame into the next row of `out` (k = len(out))."""
    k = len(out)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = DECODER_THREADS
    fps = source.fps or 25.0
    taken = _Taken()
    first = None  # index of the first frame at or after start_s
    axis = "time"
    wanted: list[float] = []
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index >= limits.max_frames:
                raise _too_long(limits)
            taken.decoded = index + 1
            t = float(frame.time) if frame.time is not None else index / fps
            taken.last_time_s = t
            if first is None:
                if t + 0.5 / fps < sampling.start_s:
                    continue
                first = index
                axis, wanted = _targets(sampling, k, max(total - index, 1))
            position = t if axis == "time" else float(index - first)
            tolerance = 0.5 / fps if axis == "time" else 0.0
            row = None
            while taken.count < k and wanted[taken.count] <= position + tolerance:
                if row is None:  # a frame sampled twice (fps above the source's) is converted once
                    row = preprocess.apply(frame.to_image())
                out[taken.count] = row
                taken.indices.append(index)
                taken.times.append(t)
                taken.count += 1
            if taken.count == k:
                break
    except av.FFmpegError as exc:
        raise InvalidInput(f"cannot decode video: {exc}", code=ErrorCode.INVALID_VIDEO) from exc
    return taken
