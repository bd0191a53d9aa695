"""A model repository written without PyTorch: a tiny linear patch encoder as an ONNX graph, built with
onnx.helper from seeded numpy weights, and a manifest built with the service's own typed model.

The HTTP tests that exercise the edge (errors, limits, collections, auth, tracing, the cache) serve this, so
they need no export through PyTorch; tests of what a real model computes (parity with PyTorch) serve the
demo export and are marked `torch_parity`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from contract import ComponentSpec, InputSpec, Manifest, OutputSpec

SIZE, PATCH, DIM = 16, 4, 8  # a 16x16 image in 4x4 patches: 16 tokens of 8 values
GRID = SIZE // PATCH


def encoder_graph(weights: np.ndarray):
    """pixel_values (N, 3, 16, 16) -> tokens (N, 16, 8) = patches @ W, pooled (N, 8) = mean over tokens."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, values) -> object:
        return numpy_helper.from_array(np.asarray(values, np.int64), name)

    nodes = [
        # (N, 3, gh, ph, gw, pw) -> (N, gh, gw, 3, ph, pw) -> (N, gh*gw, 3*ph*pw)
        helper.make_node("Reshape", ["pixel_values", "split_shape"], ["split"]),
        helper.make_node("Transpose", ["split"], ["patches6"], perm=[0, 2, 4, 1, 3, 5]),
        helper.make_node("Reshape", ["patches6", "token_shape"], ["patches"]),
        helper.make_node("MatMul", ["patches", "W"], ["tokens"]),
        helper.make_node("ReduceMean", ["tokens", "token_axis"], ["pooled"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "fake_encoder",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", DIM]),
         helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", GRID * GRID, DIM])],
        initializer=[
            const("split_shape", [-1, 3, GRID, PATCH, GRID, PATCH]),
            const("token_shape", [-1, GRID * GRID, 3 * PATCH * PATCH]),
            const("token_axis", [1]),
            numpy_helper.from_array(weights.astype(np.float32), "W"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def reference_embedding(pixels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same computation in numpy: (N, 3, 16, 16) preprocessed pixels -> pooled (N, 8), tokens (N, 16, 8)."""
    n = len(pixels)
    patches = pixels.reshape(n, 3, GRID, PATCH, GRID, PATCH).transpose(0, 2, 4, 1, 3, 5).reshape(n, GRID * GRID, -1)
    tokens = patches @ weights
    return tokens.mean(axis=1), tokens


def fake_weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3 * PATCH * PATCH, DIM)).astype(np.float32) / 7.0


def write_fake_entry(root: Path, name: str = "fake", seed: int = 0) -> Path:
    """<root>/<name>/{encoder.onnx, manifest.json}; returns the entry's folder."""
    import onnx

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    weights = fake_weights(seed)
    onnx.save(encoder_graph(weights), folder / "encoder.onnx")
    digest = hashlib.sha256(weights.tobytes()).hexdigest()
    manifest = Manifest(
        schema_version=1,
        name=name,
        family="fake",
        checkpoint_sha256=digest,
        space_id=f"fake-{digest[:16]}",
        input=InputSpec(
            kind="image",
            layout="NCHW",
            image_size=(SIZE, SIZE),
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            patch_size=PATCH,
        ),
        output=OutputSpec(dim=DIM, token_grid=(GRID, GRID), pooling="mean"),
        components={
            "encoder": ComponentSpec(
                files={"fp32": "encoder.onnx"},
                inputs={"pixel_values": [-1, 3, SIZE, SIZE]},
                outputs=["pooled", "tokens"],
            )
        },
    )
    (folder / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return folder
