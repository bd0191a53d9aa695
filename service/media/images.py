"""Images: bytes -> RGB uint8 -> the model's CHW pixels (uint8, or normalised float32), with byte and pixel limits."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import ErrorCode, InvalidInput, PayloadTooLarge, UnsupportedMediaType

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"})
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True, kw_only=True)
class ImageLimits:
    max_bytes: int  # encoded size of one image
    max_pixels: int  # width x height once decoded (decompression bombs)


@dataclass(frozen=True, kw_only=True)
class ImagePreprocess:
    """What one model expects: fixed size, resampling, per-channel mean/std, and the pixels' dtype: uint8 for a
    graph that normalises inside (the manifest's `input.dtype`), float32 normalised here otherwise."""

    height: int
    width: int
    resize: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dtype: str = "float32"

    def apply(self, rgb: Image.Image) -> np.ndarray:
        """RGB -> (3, H, W): for a uint8 graph a channels-first copy of the pixels and no float work at all;
        otherwise float32, (pixel / 255 - mean) / std as one multiply-add per value.

        The uint8 pixels are transposed to channels-first as a view and written once into the output:
        7 to 14 times faster than float conversion, three passes and a float transpose
        (`python -m loadtests.bench_preprocess`); on a GPU the host's work per image is what bounds HTTP.
        Results differ from the three-pass form by less than 1e-6.
        """
        if rgb.size != (self.width, self.height):
            rgb = rgb.resize((self.width, self.height), RESAMPLING[self.resize])
        channels_first = np.asarray(rgb).transpose(2, 0, 1)  # (3, H, W) uint8 view
        if self.dtype == "uint8":
            return np.ascontiguousarray(channels_first)
        std = np.asarray(self.std, np.float32)
        scale = (1.0 / (255.0 * std))[:, None, None]
        offset = (-np.asarray(self.mean, np.float32) / std)[:, None, None]
        pixels = np.empty(channels_first.shape, np.float32)
        np.multiply(channels_first, scale, out=pixels, casting="unsafe")
        pixels += offset
        return pixels

    def from_normalised(self, tensor: np.ndarray) -> np.ndarray:
        """Normalised float pixels (..., 3, H, W) -> what this model takes: themselves for a float graph, the
        nearest uint8 pixels for a uint8 graph (exact for a tensor normalised from 8-bit pixels, as the image
        path does; otherwise within half a grey level, values outside the pixel range clipped to it)."""
        if self.dtype != "uint8":
            return tensor
        std = np.asarray(self.std, np.float32)[:, None, None]
        pixels = (tensor * std + np.asarray(self.mean, np.float32)[:, None, None]) * np.float32(255.0)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    @property
    def bytes_per_value(self) -> int:
        return np.dtype(self.dtype).itemsize


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open and fully decode one image as RGB; refuse oversized or broken input with a 4xx."""
    if not data:
        raise InvalidInput("empty image", code=ErrorCode.INVALID_IMAGE)
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"image is {len(data)} bytes; the limit is {limits.max_bytes}",
            {"bytes": len(data), "max_bytes": limits.max_bytes},
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise UnsupportedMediaType(
                    f"image format {image.format} is not supported",
                    {"supported": sorted(ALLOWED_FORMATS)},
                    code=ErrorCode.UNSUPPORTED_IMAGE_FORMAT,
                )
            # The header gives the size before any pixel is decoded: refuse bombs here.
            width, height = image.size
            if width * height > limits.max_pixels:
                raise PayloadTooLarge(
                    f"image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
                    {"width": width, "height": height, "max_pixels": limits.max_pixels},
                )
            image.load()
            # convert() copies even when the mode already matches: skip it for RGB.
            return image if image.mode == "RGB" else image.convert("RGB")
    except UnidentifiedImageError as exc:
        raise InvalidInput("cannot decode image: not a recognised image format", code=ErrorCode.INVALID_IMAGE) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard, raised from the header for sizes far past any sane limit.
        raise PayloadTooLarge(f"image has too many pixels: {exc}", {"max_pixels": limits.max_pixels}) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"cannot decode image: {exc}", code=ErrorCode.INVALID_IMAGE) from exc
