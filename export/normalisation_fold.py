"""Fold the pixel normalisation of a uint8 graph into its patch-embedding convolution.

A uint8 encoder (export/pixels.py) starts Cast(uint8 -> float) -> Mul(scale) -> Add(offset) -> [layout] -> Conv.
With s and t per input channel of the Conv, conv(W, x*s + t) = conv(W * s[c], x) + (b + sum over c, k of
W[o, c, k] * t[c]): the same Conv with other weights and bias, and no per-pixel Mul and Add (on ONNX Runtime's CPU
provider they cost about as much as a ViT's patch-embedding Conv). The identity is exact only if every output of
the Conv sees real pixels: no padding (a padded border would be x = 0 after the fold, -t/s before it), one group
and no dilation; a Conv that is not so is left alone, and so is anything but that chain.

[layout] is what clip layouts put between the normalisation and the Conv: the demo's Reshape of (B, T, C, H, W)
into (B, T*C, H, W), or a Transpose. The per-channel constants are carried through it by applying it to them
broadcast to one item, so each Conv input channel gets the scale and offset of the pixels it reads; the fold is
refused unless that leaves one value per Conv input channel. The Cast stays (the graph's input is still uint8);
this module only rewrites graphs, the export's parity gate decides whether a folded graph is kept
(export/pipeline.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper, numpy_helper

LAYOUT_OPS = ("Reshape", "Transpose")
EXTERNAL_ALIGNMENT = 4096  # offsets of tensors appended to an external-data file (a page, as onnx aligns large ones)


class NotFoldable(ValueError):
    """The graph does not have a normalisation this module can fold exactly; the message says why."""


@dataclass(frozen=True)
class Fold:
    """What a fold did: the Conv it went into, the layout ops between the normalisation and that Conv, the Conv's
    weight before and its weight and bias after."""

    conv: str
    layout: tuple[str, ...]
    weight: str
    folded: tuple[str, str]


@dataclass(frozen=True)
class _Chain:
    cast: onnx.NodeProto
    mul: onnx.NodeProto
    add: onnx.NodeProto
    layout: tuple[onnx.NodeProto, ...]
    conv: onnx.NodeProto


class _Graph:
    """Look-ups over one graph: who consumes a value, which values are constants."""

    def __init__(self, model: onnx.ModelProto, folder: Path) -> None:
        self.graph = model.graph
        self.folder = folder
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def only_consumer(self, value: str, after: str) -> onnx.NodeProto:
        users = self.consumers.get(value, [])
        if value in self.outputs or len(users) != 1:
            raise NotFoldable(f"the output of {after} is read by {len(users)} nodes"
                              f"{' and is a graph output' if value in self.outputs else ''}, not by one")
        return users[0]

    def constant(self, name: str, what: str) -> np.ndarray:
        if name not in self.initializers:
            raise NotFoldable(f"{what} ({name}) is not a constant of the graph")
        return numpy_helper.to_array(self.initializers[name], base_dir=str(self.folder))

    def other_operand(self, node: onnx.NodeProto, value: str) -> str:
        others = [name for name in node.input if name != value]
        if len(node.input) != 2 or len(others) != 1:
            raise NotFoldable(f"{node.op_type} {node.name} does not combine the pixels with one constant")
        return others[0]


def _pixel_cast(graph: _Graph) -> onnx.NodeProto:
    uint8_inputs = {i.name for i in graph.graph.input if i.type.tensor_type.elem_type == TensorProto.UINT8}
    casts = [node for node in graph.graph.node if node.op_type == "Cast" and node.input[0] in uint8_inputs
             and helper.get_attribute_value(next(a for a in node.attribute if a.name == "to")) == TensorProto.FLOAT]
    if len(casts) != 1:
        raise NotFoldable(f"{len(casts)} Casts of uint8 pixels to float in the graph, not one")
    return casts[0]


def _find_chain(graph: _Graph) -> _Chain:
    cast = _pixel_cast(graph)
    muls = [node for node in graph.consumers.get(cast.output[0], []) if node.op_type == "Mul"]
    if len(muls) != 1:
        raise NotFoldable(f"the cast pixels go to {len(muls)} Mul nodes, not one")
    mul = muls[0]
    add = graph.only_consumer(mul.output[0], f"Mul {mul.name}")
    if add.op_type != "Add":
        raise NotFoldable(f"the scaled pixels go to {add.op_type} {add.name}, not to an Add")
    layout: list[onnx.NodeProto] = []
    node = graph.only_consumer(add.output[0], f"Add {add.name}")
    value = add.output[0]
    while node.op_type in LAYOUT_OPS:
        if node.input[0] != value:
            raise NotFoldable(f"{node.op_type} {node.name} does not lay out the normalised pixels")
        layout.append(node)
        value = node.output[0]
        node = graph.only_consumer(value, f"{node.op_type} {node.name}")
    if node.op_type != "Conv" or node.input[0] != value:
        raise NotFoldable(f"the normalised pixels go to {node.op_type} {node.name}, not to a Conv")
    return _Chain(cast, mul, add, tuple(layout), node)


def _check_conv(conv: onnx.NodeProto) -> None:
    """Only a Conv whose every output reads real pixels with one weight per (output, input channel, tap)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(attrs.get("pads", []))
    if auto_pad not in ("NOTSET", "VALID") or any(pads):
        raise NotFoldable(f"Conv {conv.name} pads its input (pads {pads}, auto_pad {auto_pad}): the padded border "
                          "would be zero after the fold and -offset/scale before it")
    if attrs.get("group", 1) != 1:
        raise NotFoldable(f"Conv {conv.name} has {attrs['group']} groups, not 1")
    if any(d != 1 for d in attrs.get("dilations", [])):
        raise NotFoldable(f"Conv {conv.name} is dilated ({list(attrs['dilations'])})")


def _item_shape(graph: _Graph, name: str) -> tuple[int, ...]:
    """The static shape of one item of the graph input `name` (every axis but the batch)."""
    value = next(i for i in graph.graph.input if i.name == name)
    dims = value.type.tensor_type.shape.dim[1:]
    if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        raise NotFoldable(f"the input {name} has no static shape past the batch axis")
    return tuple(d.dim_value for d in dims)


def _apply_layout(array: np.ndarray, node: onnx.NodeProto, graph: _Graph) -> np.ndarray:
    """One layout op on one item (batch 1), the batch kept in front so that every item is laid out alike."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Transpose":
        perm = list(attrs.get("perm", range(array.ndim)[::-1]))
        if perm[0] != 0:
            raise NotFoldable(f"Transpose {node.name} moves the batch axis (perm {perm})")
        return array.transpose(perm)
    shape = [int(d) for d in graph.constant(node.input[1], f"the shape of Reshape {node.name}")]
    if not attrs.get("allowzero", 0):
        shape = [array.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if not shape or shape[0] != -1:
        raise NotFoldable(f"Reshape {node.name} does not keep a dynamic batch in front (shape {shape})")
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise NotFoldable(f"Reshape {node.name}: {exc}") from exc


def _per_conv_channel(constant: np.ndarray, item: tuple[int, ...], chain: _Chain, graph: _Graph, what: str,
                      channels: int, ndim: int) -> np.ndarray:
    """A Mul / Add constant -> its value for each input channel of the Conv (refused if it varies within one)."""
    try:
        array = np.broadcast_to(constant.astype(np.float64), (1, *item))
    except ValueError as exc:
        raise NotFoldable(f"the {what} {constant.shape} does not broadcast over one item {item}") from exc
    for node in chain.layout:
        array = _apply_layout(array, node, graph)
    if array.ndim != ndim or array.shape[1] != channels:
        raise NotFoldable(f"the {what} laid out for the Conv has shape {array.shape}, which does not match its "
                          f"{channels} input channels")
    per_channel = np.moveaxis(array, 1, 0).reshape(channels, -1)  # every row too: a Reshape may fold T into it
    if not np.all(per_channel == per_channel[:, :1]):
        raise NotFoldable(f"the {what} is not one value per input channel of Conv {chain.conv.name}")
    return per_channel[:, 0]


def _folded_weights(weight: np.ndarray, bias: np.ndarray, scale: np.ndarray,
                    offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conv(W, x*s + t) + b = conv(W*s, x) + (b + sum W*t); in float64, rounded once to the weights' dtype."""
    channel = (1, -1) + (1,) * (weight.ndim - 2)
    w64 = weight.astype(np.float64)
    folded = w64 * scale.reshape(channel)
    shift = (w64 * offset.reshape(channel)).sum(axis=tuple(range(1, weight.ndim)))
    return folded.astype(weight.dtype), (bias.astype(np.float64) + shift).astype(weight.dtype)


def fold_model(model: onnx.ModelProto, folder: Path) -> Fold:
    """Fold the normalisation of `model` (in memory; external data read from `folder`) or raise NotFoldable."""
    graph = _Graph(model, folder)
    chain = _find_chain(graph)
    _check_conv(chain.conv)
    weight = graph.constant(chain.conv.input[1], f"the weight of Conv {chain.conv.name}")
    has_bias = len(chain.conv.input) > 2 and chain.conv.input[2]
    bias = graph.constant(chain.conv.input[2], f"the bias of Conv {chain.conv.name}") if has_bias else np.zeros(
        weight.shape[0], weight.dtype)
    item = _item_shape(graph, chain.cast.input[0])
    scale = graph.constant(graph.other_operand(chain.mul, chain.cast.output[0]), "scale")
    offset = graph.constant(graph.other_operand(chain.add, chain.mul.output[0]), "offset")
    scale, offset = (_per_conv_channel(value, item, chain, graph, what, weight.shape[1], weight.ndim)
                     for value, what in ((scale, "scale"), (offset, "offset")))
    source = chain.conv.input[1]
    folded = _rewire(graph, chain, _folded_weights(weight, bias, scale, offset))
    return Fold(conv=chain.conv.name, layout=tuple(node.op_type for node in chain.layout), weight=source,
                folded=folded)


def _rewire(graph: _Graph, chain: _Chain, arrays: tuple[np.ndarray, np.ndarray]) -> tuple[str, str]:
    """Cast -> [layout] -> Conv with the folded weights (new initializers: another node may read the old ones);
    the Mul, the Add, and the constants only they read go. -> the names of the new weight and bias."""
    conv = chain.conv
    first = chain.layout[0] if chain.layout else conv
    first.input[0] = chain.cast.output[0]
    replaced = [*chain.mul.input, *chain.add.input, *conv.input[1:]]
    stems = [conv.input[1], conv.input[2] if len(conv.input) > 2 and conv.input[2] else f"{conv.name}.bias"]
    names = [f"{stem}.folded" for stem in stems]
    for name, array in zip(names, arrays, strict=True):
        graph.graph.initializer.append(numpy_helper.from_array(array, name))
    pixels = conv.input[0]
    del conv.input[:]
    conv.input.extend([pixels, *names])
    for node in (chain.mul, chain.add):
        graph.graph.node.remove(node)
    read = {name for node in graph.graph.node for name in node.input} | graph.outputs
    for name in set(replaced) - read:
        if name in graph.initializers:
            graph.graph.initializer.remove(graph.initializers[name])
    return names[0], names[1]


def fold_normalisation(src: Path, dst: Path) -> Fold:
    """Write `dst`: the graph at `src` with its pixel normalisation folded into the first Conv; raises NotFoldable
    (and writes nothing) if it has none that folds exactly. Weights kept in an external-data file stay there, so
    `dst` must be beside `src`."""
    if dst.parent.resolve() != src.parent.resolve():
        raise ValueError(f"{dst} must be in the folder of {src} (its external data is found from there)")
    model = onnx.load(str(src), load_external_data=False)
    before = {t.name: t for t in model.graph.initializer}
    fold = fold_model(model, src.parent)
    if before[fold.weight].data_location == TensorProto.EXTERNAL:
        _append_external(model, fold.folded, src.parent, before[fold.weight])
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))
    return fold


def _append_external(model: onnx.ModelProto, names: Sequence[str], folder: Path, beside: onnx.TensorProto) -> None:
    """Move the folded tensors into the external-data file the Conv's weight was in (appended at aligned offsets, so
    every graph that reads that file still finds its own tensors where they were): a graph whose weights are kept
    beside it keeps all of them there."""
    location = next(entry.value for entry in beside.external_data if entry.key == "location")
    with (folder / location).open("r+b") as data:
        for tensor in (t for t in model.graph.initializer if t.name in names):
            offset = -(-data.seek(0, 2) // EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT
            data.seek(offset)
            data.write(tensor.raw_data)
            external_data_helper.set_external_data(tensor, location, offset, len(tensor.raw_data))
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
