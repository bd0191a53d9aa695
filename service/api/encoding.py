"""Output encodings for large arrays: JSON floats, base64 raw bytes, or an `.npy` body."""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi import Response

from service.api.schemas import EncodedArray

NPY = "application/x-npy"


def encode_array(array: np.ndarray, encoding: str, dtype: str) -> list | EncodedArray:
    if encoding == "float":
        return array.tolist()
    raw = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return EncodedArray(data=base64.b64encode(raw.tobytes()).decode(), dtype=dtype, shape=list(raw.shape))  # type: ignore[arg-type]


def npy_response(array: np.ndarray, dtype: str, headers: dict[str, str]) -> Response:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)
    return Response(buffer.getvalue(), media_type=NPY, headers=headers)
