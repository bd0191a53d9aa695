"""Request media (base64 images, raw tensors) -> preprocessed arrays for one model."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidInput, PayloadTooLarge, UnprocessableInput
from service.media.images import ImageLimits, ImagePreprocess, decode_image

TENSOR_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class RawImage:
    data: bytes


@dataclass(frozen=True)
class RawTensor:
    """A preprocessed tensor sent by the client: the fast path that skips decoding."""

    data: bytes
    dtype: str
    shape: tuple[int, ...]


MediaItem = RawImage | RawTensor


def b64decode(text: str, max_bytes: int, what: str = "image") -> bytes:
    """Strict base64 (data: URLs accepted); the size is checked before decoding."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if len(text) // 4 * 3 > max_bytes + 3:
        raise PayloadTooLarge(f"{what} is larger than the limit of {max_bytes} bytes", {"max_bytes": max_bytes})
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what} is not valid base64: {exc}", code="invalid_base64") from exc


def to_model_input(item: MediaItem, preprocess: ImagePreprocess, limits: ImageLimits) -> np.ndarray:
    """One item -> float32 (3, H, W), the encoder's per-item input."""
    if isinstance(item, RawImage):
        return preprocess.apply(decode_image(item.data, limits))
    expected = (3, preprocess.height, preprocess.width)
    if tuple(item.shape) != expected:
        raise UnprocessableInput(
            f"tensor shape {list(item.shape)} does not match the model input {list(expected)}",
            {"expected_shape": list(expected)},
            code="invalid_tensor",
        )
    dtype = np.dtype(TENSOR_DTYPES[item.dtype])
    if len(item.data) != dtype.itemsize * int(np.prod(expected)):
        raise InvalidInput(
            f"tensor has {len(item.data)} bytes; shape {list(expected)} of {item.dtype} needs {dtype.itemsize * int(np.prod(expected))}",
            code="invalid_tensor",
        )
    array = np.frombuffer(item.data, dtype=dtype).reshape(expected).astype(np.float32)
    if not np.isfinite(array).all():
        raise UnprocessableInput("tensor contains NaN or Inf", code="invalid_tensor")
    return array
