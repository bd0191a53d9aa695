"""Images: bytes -> RGB uint8 -> the model's CHW pixels (uint8, or normalised float32), with byte, pixel, frame
and memory limits.

What a decode costs is bounded before it is paid: the bytes, then from the header the pixels (decompression
bombs), animation (a 3,000-frame GIF or a 500-page TIFF is refused, not silently cut to its first frame), and the
memory it will hold, reserved from a budget that every decode of the process shares (DecodeMemory): large images
wait for each other instead of all growing the process at once (four 6000x6000 WebPs at once used to take 870 MB).

JPEGs are decoded with libjpeg's DCT scaling (`Image.draft`) straight to the smallest of 1/2, 1/4 or 1/8 of their
size that still holds at least the model's input size per side, then resized as every image is (antialiased): a
12 MP phone photo costs about a tenth of a full decode, and its embedding stays within cosine 0.999 of the full
decode's (tests/unit/service/media/test_draft_decoding.py; `python -m loadtests.bench_decode` times it).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import ErrorCode, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.media.memory import DecodeMemory

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"})
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# Bytes Pillow holds per pixel by mode (RGB is stored as 4); the rest take 4 or less.
PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
# Bytes per pixel a format's decoder holds besides the image: libwebp decodes to an RGBA buffer that is copied
# into a bytes object, then into the image, then made RGB (measured: 540 MB for one 36 MP WebP; PNG, TIFF, GIF
# and BMP decode into the image in place).
DECODER_BYTES = {"WEBP": 12}
WORST_BYTES_PER_PIXEL = 16  # WebP's 4 + 12: the budget must hold one image of max_image_pixels at this rate


@dataclass(frozen=True, kw_only=True)
class ImageLimits:
    max_bytes: int  # encoded size of one image
    max_pixels: int  # width x height once decoded (decompression bombs)
    memory: DecodeMemory | None = None  # shared by the process's decodes; None: unbounded (tools, benchmarks)


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


def load_image(data: bytes, preprocess: ImagePreprocess, limits: ImageLimits) -> np.ndarray:
    """Bytes -> the model's (3, H, W) input: checked, drafted (JPEG), decoded within the memory budget, resized."""
    with _readable(), opened(data, limits) as image:
        image.draft("RGB", (preprocess.width, preprocess.height))  # JPEG only: DCT-scaled, never below the input
        with _reserved(limits, decode_bytes(image, preprocess)):
            return preprocess.apply(_rgb(image))


def reduced_size(size: tuple[int, int], preprocess: ImagePreprocess) -> tuple[int, int]:
    """The smallest of 1, 1/2, 1/4, 1/8 of `size` that still holds the model's input on both sides: the rule of
    JPEG's DCT scaling (Image.draft), applied to video frames by the scaler that converts them to RGB."""
    width, height = size
    for factor in (8, 4, 2):
        if width // factor >= preprocess.width and height // factor >= preprocess.height:
            return -(-width // factor), -(-height // factor)
    return size


def still_image_format(data: bytes) -> str | None:
    """The format of a still image in `data` (PNG, JPEG, ...: one frame), else None (a video, or unreadable)."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError):
        return None
    still = image.format in ALLOWED_FORMATS and not getattr(image, "is_animated", False)
    return image.format if still else None


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open and fully decode one image as RGB at its own size; refuse oversized or broken input with a 4xx."""
    with _readable(), opened(data, limits) as image:
        return _rgb(image)


@contextlib.contextmanager
def opened(data: bytes, limits: ImageLimits) -> Iterator[Image.Image]:
    """The image, its header read and checked: bytes, format, one frame, pixels (nothing decoded yet)."""
    if not data:
        raise InvalidInput("empty image", code=ErrorCode.INVALID_IMAGE)
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"image is {len(data)} bytes; the limit is {limits.max_bytes}",
            {"bytes": len(data), "max_bytes": limits.max_bytes},
        )
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        # Pillow's own guard, raised from the header for sizes far past any sane limit: ours is what we state.
        raise PayloadTooLarge(f"image has more pixels than the limit of {limits.max_pixels}",
                              {"max_pixels": limits.max_pixels}) from exc
    _check_header(image, limits)
    yield image  # not closed: its bytes are in memory, and closing would drop the pixels an RGB image returns


def _check_header(image: Image.Image, limits: ImageLimits) -> None:
    if image.format not in ALLOWED_FORMATS:
        raise UnsupportedMediaType(
            f"image format {image.format} is not supported",
            {"supported": sorted(ALLOWED_FORMATS)},
            code=ErrorCode.UNSUPPORTED_IMAGE_FORMAT,
        )
    if getattr(image, "is_animated", False):  # read from the header or the second frame's, not by decoding
        raise UnsupportedMediaType(
            f"the {image.format} has more than one frame: send one frame as an image, or the frames as a clip "
            '({"frames": [...]}) or a video',
            {"max_frames": 1}, code=ErrorCode.UNSUPPORTED_IMAGE_FORMAT,
        )
    # The header gives the size before any pixel is decoded: refuse bombs here.
    width, height = image.size
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
            {"width": width, "height": height, "max_pixels": limits.max_pixels},
        )


def decode_bytes(image: Image.Image, preprocess: ImagePreprocess) -> int:
    """Peak bytes of decoding `image` (at its drafted size) and preprocessing it: the decoder's buffers, the decoded
    pixels, an RGB copy unless it is RGB already, the resize's intermediate rows and the float output."""
    width, height = image.size
    pixels = width * height
    decoded = pixels * (PIXEL_BYTES.get(image.mode, 4) + DECODER_BYTES.get(image.format or "", 0))
    converted = 0 if image.mode == "RGB" else pixels * 4
    resized = preprocess.width * height * 4 + preprocess.width * preprocess.height * (4 + 3 * 4)
    return decoded + converted + resized


def _reserved(limits: ImageLimits, nbytes: int) -> contextlib.AbstractContextManager:
    return limits.memory.reserve(nbytes) if limits.memory is not None else contextlib.nullcontext()


def _rgb(image: Image.Image) -> Image.Image:
    image.load()
    # convert() copies even when the mode already matches: skip it for RGB.
    return image if image.mode == "RGB" else image.convert("RGB")


@contextlib.contextmanager
def _readable() -> Iterator[None]:
    """Pillow's errors for bytes it cannot read, as the 400 of the error table."""
    try:
        yield
    except UnidentifiedImageError as exc:
        raise InvalidInput("cannot decode image: not a recognised image format", code=ErrorCode.INVALID_IMAGE) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"cannot decode image: {exc}", code=ErrorCode.INVALID_IMAGE) from exc
