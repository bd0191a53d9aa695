"""Precomputed vectors from a request body -> one float32 matrix, with errors that name the offending row.

Vectors come as JSON lists of floats, or as one base64 array (`{"data", "dtype", "shape"}`): a bulk upsert
of 10,000 x 384 floats is a 20 MB base64 string that parses in milliseconds, where the same numbers as
JSON text are twice the bytes and take the better part of a second to parse.
"""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np

from service.api.schemas import Vector, VectorArray
from service.errors import ErrorCode, InvalidInput, UnprocessableInput


def to_matrix(vectors: list[Vector] | VectorArray, what: str = "vectors") -> np.ndarray:
    """(N, dim) float32; 400 for bad base64, 422 (with detail.index for lists) for ragged or mis-sized input."""
    if isinstance(vectors, VectorArray):
        return _decode_array(vectors, what)
    width = len(vectors[0]) if vectors else 0
    for row, vector in enumerate(vectors):
        if len(vector) != width:
            raise UnprocessableInput(
                f"{what}: row {row} has {len(vector)} values; row 0 has {width}",
                {"index": row, "expected_dim": width}, code=ErrorCode.DIMENSION_MISMATCH,
            )
    return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), width)


def _decode_array(array: VectorArray, what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(array.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what}: 'data' is not valid base64: {exc}", code=ErrorCode.INVALID_BASE64) from exc
    dtype = np.dtype(array.dtype).newbyteorder("<")
    expected = math.prod(array.shape) * dtype.itemsize
    if len(raw) != expected:
        raise UnprocessableInput(
            f"{what}: shape {array.shape} of {array.dtype} needs {expected} bytes; 'data' holds {len(raw)}",
            {"expected_bytes": expected, "bytes": len(raw)}, code=ErrorCode.INVALID_VECTOR,
        )
    return np.frombuffer(raw, dtype=dtype).reshape(array.shape).astype(np.float32)
