"""A few-node ONNX graph written as protobuf bytes, for ONNX Runtime to load, without the `onnx` package.

The serving install has onnxruntime but not `onnx` (an export dependency: its wheel and protobuf bindings are
there to build and check whole models). The device search (device_search.py) needs two tiny graphs built at
run time for the dimension and metric it serves; writing their ModelProto by hand takes the few message types
below (field numbers from onnx/onnx.proto3), and tests/unit/service/index/test_device_search.py checks the bytes
with `onnx.checker` and against `onnx.helper`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

FLOAT, INT64, FLOAT16 = 1, 7, 10  # TensorProto.DataType
IR_VERSION = 8  # ONNX Runtime 1.18+ loads it
_VARINT, _FIXED32, _BYTES = 0, 5, 2
_ATTRIBUTE_FLOAT, _ATTRIBUTE_INT = 1, 2  # AttributeProto.AttributeType


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf writes it
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _varint(value)


def _bytes(number: int, payload: bytes) -> bytes:
    return _key(number, _BYTES) + _varint(len(payload)) + payload


def _text(number: int, text: str) -> bytes:
    return _bytes(number, text.encode())


@dataclass(frozen=True)
class Tensor:
    """A graph input or output: name, element type, and dims (int: fixed, str: named, free)."""

    name: str
    elem_type: int
    dims: Sequence[int | str]

    def encode(self) -> bytes:
        shape = _bytes(2, b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _text(2, d)) for d in self.dims))
        tensor_type = _int(1, self.elem_type) + shape
        return _text(1, self.name) + _bytes(2, _bytes(1, tensor_type))  # ValueInfoProto{name, TypeProto{tensor}}


@dataclass(frozen=True)
class Node:
    op_type: str
    inputs: Sequence[str]
    outputs: Sequence[str]
    attributes: dict[str, int | float] = field(default_factory=dict)

    def encode(self) -> bytes:
        out = b"".join(_text(1, i) for i in self.inputs) + b"".join(_text(2, o) for o in self.outputs)
        out += _text(4, self.op_type)
        for name, value in sorted(self.attributes.items()):  # by name, as onnx.helper writes them
            if isinstance(value, float):
                attribute = _text(1, name) + _key(2, _FIXED32) + struct.pack("<f", value) + _int(20, _ATTRIBUTE_FLOAT)
            else:
                attribute = _text(1, name) + _int(3, value) + _int(20, _ATTRIBUTE_INT)
            out += _bytes(5, attribute)
        return out


def model_bytes(name: str, nodes: Sequence[Node], inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                opset: int = 17) -> bytes:
    """A serialised ModelProto of one graph in the default domain."""
    graph = b"".join(_bytes(1, n.encode()) for n in nodes) + _text(2, name)
    graph += b"".join(_bytes(11, t.encode()) for t in inputs) + b"".join(_bytes(12, t.encode()) for t in outputs)
    return (_int(1, IR_VERSION) + _text(2, "jepa-serve") + _bytes(7, graph)
            + _bytes(8, _text(1, "") + _int(2, opset)))
