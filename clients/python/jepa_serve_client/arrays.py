"""numpy <-> the wire: base64 arrays `{"data", "dtype", "shape"}` and media inputs."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"})


@dataclass(frozen=True)
class Video:
    """A video file (path or bytes), sampled on the server (the request's num_frames / stride / fps)."""

    source: Union[str, os.PathLike, bytes]


@dataclass(frozen=True)
class Frames:
    """A clip: encoded frames (paths or bytes), oldest first."""

    frames: tuple

    def __init__(self, frames) -> None:
        object.__setattr__(self, "frames", tuple(frames))


Media = Union[str, os.PathLike, bytes, np.ndarray, Video, Frames, dict]


def encode_array(array: np.ndarray, dtype: str = "float32") -> dict[str, Any]:
    raw = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"data": base64.b64encode(raw.tobytes()).decode("ascii"), "dtype": dtype, "shape": list(raw.shape)}


def decode_array(value: Any) -> np.ndarray:
    """A response array (lists of floats, or a base64 array) -> float32 numpy."""
    if isinstance(value, dict) and "data" in value:
        raw = base64.b64decode(value["data"])
        array = np.frombuffer(raw, dtype=np.dtype(value["dtype"]).newbyteorder("<")).reshape(value["shape"])
        return array.astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def _read(source: Union[str, os.PathLike, bytes]) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def _looks_like_video(data: bytes) -> bool:
    # Container magic numbers, as the server tells them: ISO BMFF ('ftyp'), Matroska/WebM (EBML), AVI.
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3" or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def media_input(item: Media) -> dict[str, Any]:
    """One input of /embed (and of media upserts and searches):

    - a path (str or Path) or bytes of an encoded image, or of a video (told by its suffix or magic number);
    - `Video(path_or_bytes)`, `Frames([...])` to say so explicitly;
    - a numpy float array: a preprocessed tensor [3, H, W] or [T, 3, H, W] (already normalised);
    - a dict: passed as is (e.g. `{"image": "<base64>"}`).
    """
    if isinstance(item, dict):
        return item
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint8:
            raise TypeError("uint8 arrays are pixels: encode them as PNG (or send a preprocessed float tensor)")
        return {"tensor": encode_array(item, "float32")}
    if isinstance(item, Video):
        return {"video": _b64(_read(item.source))}
    if isinstance(item, Frames):
        return {"frames": [_b64(_read(f)) for f in item.frames]}
    if isinstance(item, (str, os.PathLike)) and Path(item).suffix.lower() in VIDEO_SUFFIXES:
        return {"video": _b64(_read(item))}
    if isinstance(item, (str, os.PathLike, bytes)):
        data = _read(item)
        return {"video": _b64(data)} if _looks_like_video(data) else {"image": _b64(data)}
    raise TypeError(f"cannot send {type(item).__name__} as a media input")


def as_matrix(vectors: Any) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be 1-D or 2-D; got shape {matrix.shape}")
    return matrix
