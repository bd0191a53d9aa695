"""Clips: the manifest-driven rule that turns one or a few frames into the model's input item.

A model whose manifest layout is NTCHW (frames first) or NCTHW (channels first,
V-JEPA 2) takes clips of `frames_per_clip` frames.
A request may give fewer frames (one image is the usual case); the clip is then
padded at the front by repeating its first frame, as V-JEPA 2 does for images,
so the last frame given is always the newest. More frames than the clip holds
is an error, not a silent crop. A model with layout NCHW takes one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import ErrorCode, UnprocessableInput


@dataclass(frozen=True, kw_only=True)
class ClipSpec:
    frames_per_clip: int = 1
    layout: str = "NCHW"

    @property
    def is_clip(self) -> bool:
        return self.layout in ("NTCHW", "NCTHW")


def check_frame_count(k: int, spec: ClipSpec) -> None:
    """1 to frames_per_clip frames per input; called before a video is decoded as well as after."""
    limit = spec.frames_per_clip if spec.is_clip else 1
    if not 1 <= k <= limit:
        raise UnprocessableInput(
            f"{k} frames given; this model takes 1 to {limit} frame(s) per input",
            {"frames_per_clip": limit},
            code=ErrorCode.INVALID_CLIP,
        )


def to_item(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """(k, C, H, W) preprocessed frames -> the model's item: (C, H, W) for NCHW, (T, C, H, W) for NTCHW,
    (C, T, H, W) for NCTHW."""
    k = frames.shape[0]
    check_frame_count(k, spec)
    if not spec.is_clip:
        return frames[0]
    if k < spec.frames_per_clip:
        pad = np.repeat(frames[:1], spec.frames_per_clip - k, axis=0)
        frames = np.concatenate([pad, frames])
    if spec.layout == "NCTHW":
        frames = frames.transpose(1, 0, 2, 3)
    return np.ascontiguousarray(frames)
