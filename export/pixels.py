"""Encoders that take uint8 pixels and normalise inside the graph.

The host then does no float work per pixel (decode, resize, crop and a channels-first copy only), and a GPU
batch copies a quarter of the bytes of float32 pixels. The normalisation is the same multiply-add the host did
(service/media/images.py ImagePreprocess): pixel * 1 / (255 std) - mean / std in float32, with the two
per-channel vectors as graph constants. The gate compares the uint8 graph with the PyTorch model fed the float
normalisation of the same uint8 pixels, so the only thing allowed to differ is the graph.

`ExportOptions.pixel_dtype` (`jepa-export ... --float-input` for float32) picks it; the manifest's `input.dtype`
tells the service which kind of pixels to feed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

PIXEL_DTYPES = ("uint8", "float32")
# where the colour channels are in a batch of each layout
CHANNEL_AXIS = {"NCHW": 1, "NTCHW": 2, "NCTHW": 1}


def _per_channel(values: Sequence[float], layout: str, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[CHANNEL_AXIS[layout]] = len(values)
    return np.asarray(values, np.float64).reshape(shape)


class PixelInput(nn.Module):
    """uint8 pixels (any layout) -> `module(normalised float32 pixels)`."""

    def __init__(self, module: nn.Module, mean: Sequence[float], std: Sequence[float], layout: str, ndim: int) -> None:
        super().__init__()
        self.module = module
        std64 = _per_channel(std, layout, ndim)
        # float32 constants computed as the host computes them, so the graph's arithmetic is the host's
        scale = (1.0 / (255.0 * std64.astype(np.float32))).astype(np.float32)
        offset = (-_per_channel(mean, layout, ndim).astype(np.float32) / std64.astype(np.float32)).astype(np.float32)
        self.register_buffer("scale", torch.from_numpy(scale), persistent=False)
        self.register_buffer("offset", torch.from_numpy(offset), persistent=False)

    def forward(self, pixel_values: torch.Tensor):
        return self.module(pixel_values.to(torch.float32) * self.scale + self.offset)


def to_pixels(normalised: np.ndarray, mean: Sequence[float], std: Sequence[float], layout: str) -> np.ndarray:
    """Normalised float pixels -> the uint8 pixels nearest to them (the probes of a uint8 graph)."""
    m, s = _per_channel(mean, layout, normalised.ndim), _per_channel(std, layout, normalised.ndim)
    return np.clip(np.rint((normalised.astype(np.float64) * s + m) * 255.0), 0, 255).astype(np.uint8)
