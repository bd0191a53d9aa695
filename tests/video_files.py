"""Videos written inside the tests with PyAV: frame i is a flat grey of level 8*i (read back to find i)."""

from __future__ import annotations

import io

import av
import numpy as np


def write_video(frames: list[np.ndarray], fps: int = 10, container: str = "mp4", codec: str = "libx264") -> bytes:
    """(H, W, 3) uint8 frames -> an encoded video file's bytes."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "1"}  # near-lossless: the grey levels survive
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def counting_video(n: int, fps: int = 10, size: int = 32, **kwargs) -> bytes:
    return write_video([np.full((size, size, 3), 8 * i, np.uint8) for i in range(n)], fps=fps, **kwargs)


def frame_numbers(frames: np.ndarray) -> list[int]:
    """(k, 3, H, W) frames preprocessed with mean 0 / std 1 -> the index each one shows."""
    return [int(round(float(f.mean()) * 255 / 8)) for f in frames]


def overstated_video(n: int, keep: int, fps: int = 10, size: int = 32) -> bytes:
    """An MP4 whose header (moov first) lists `n` frames but whose data ends cleanly after `keep` of them: what a
    download cut at a packet boundary looks like. Decoding stops at `keep` frames without an error."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "video.mp4")  # faststart rewrites the file: it needs a real one
        with av.open(path, mode="w", options={"movflags": "faststart"}) as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.height = stream.width = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "1"}
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 8 * i, np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        with open(path, "rb") as handle:
            data = handle.read()
    with av.open(io.BytesIO(data)) as container:
        ends = sorted(p.pos + p.size for p in container.demux(container.streams.video[0]) if p.size)
    return data[: ends[keep - 1]]
