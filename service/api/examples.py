"""Request examples for the OpenAPI document: small, real and valid against the served default model.

Swagger UI and ReDoc would otherwise build examples from the schema, filling mutually exclusive fields
(`image` and `tensor`, `stride` and `fps`) and getting 422. Each example here is sent to a real server by
tests/e2e/test_openapi_examples.py, which expects 2xx.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from service.model_pool import ServedModel

EXAMPLE_COLLECTION = "pets"


def _png(shift: int) -> str:
    """A 32x32 colour gradient as base64 PNG (about 100 bytes)."""
    y, x = np.mgrid[0:32, 0:32]
    pixels = np.stack([(x * 8 + shift) % 256, y * 8, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _mp4(frames: int = 4) -> str:
    """A 32x32 MP4 of `frames` grey frames at 4 fps (about 1 KB)."""
    import av  # the video decoder the service already uses; imported here so the docs need it only when built

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.height = stream.width = 32
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return base64.b64encode(buffer.getvalue()).decode()


def _b64_array(array: np.ndarray) -> dict[str, Any]:
    raw = np.ascontiguousarray(array, dtype="<f4")
    return {"data": base64.b64encode(raw.tobytes()).decode(), "dtype": "float32", "shape": list(raw.shape)}


def request_examples(model: ServedModel | None) -> dict[str, dict[str, dict[str, Any]]]:
    """operationId -> example name -> {"summary", "value"}. Without a served model (still loading), only the
    examples that do not depend on its input size, dimension or action space."""
    now, goal = _png(0), _png(96)
    image = {"image": now}
    examples: dict[str, dict[str, dict[str, Any]]] = {
        "embed": {
            "image": {"summary": "one image (base64 PNG)", "value": {"inputs": [image]}},
            "frames": {"summary": "a clip of frames, oldest first", "value": {"inputs": [{"frames": [now, goal]}]}},
            "video": {
                "summary": "a video sampled on the server at 2 fps",
                "value": {"inputs": [{"video": _mp4()}], "fps": 2, "output": "pooled"},
            },
        },
        "create_collection": {
            "from_model": {
                "summary": "dimension and embedding space taken from a served model",
                "value": {"model": model.name if model else "demo", "metric": "cosine"},
            },
        },
        "upsert_points": {
            "media": {
                "summary": "images, embedded by the collection's model",
                "value": {"ids": ["cat"], "inputs": [image], "metadata": [{"kind": "cat"}]},
            },
        },
        "search": {
            "media": {
                "summary": "query by an image",
                "value": {"collection": EXAMPLE_COLLECTION, "input": image, "k": 3},
            },
            "by_id": {
                "summary": "query by a stored point",
                "value": {"collection": EXAMPLE_COLLECTION, "id": "cat", "k": 3},
            },
        },
        "delete_points": {"ids": {"summary": "points by id", "value": {"ids": ["cat"]}}},
        "classify": {
            "knn": {"summary": "kNN vote of the nearest stored points on their metadata field 'kind'",
                    "value": {"collection": EXAMPLE_COLLECTION, "inputs": [image], "k": 3, "label_field": "kind"}},
        },
    }
    if model is None:
        return examples
    manifest = model.manifest
    dim = manifest.output.dim
    pre = model.preprocess
    examples["embed"]["tensor"] = {
        "summary": f"a preprocessed frame [3, {pre.height}, {pre.width}] (base64 float32)",
        "value": {"inputs": [{"tensor": _b64_array(np.zeros((3, pre.height, pre.width), np.float32))}]},
    }
    ramp = np.linspace(-1.0, 1.0, dim, dtype=np.float32)
    examples["upsert_points"]["vectors"] = {
        "summary": f"precomputed {dim}-d vectors as lists of floats",
        "value": {"ids": ["v1"], "vectors": [ramp.round(4).tolist()], "metadata": [{"kind": "vector"}]},
    }
    examples["upsert_points"]["vector_array"] = {
        "summary": "precomputed vectors as one base64 float32 array (compact; what the Python client sends)",
        "value": {"ids": ["v2", "v3"], "vectors": _b64_array(np.stack([ramp, -ramp]))},
    }
    examples["search"]["vector"] = {
        "summary": "query by a vector, with a metadata filter",
        "value": {"collection": EXAMPLE_COLLECTION, "vector": ramp.round(4).tolist(), "k": 3,
                  "filter": {"kind": {"in": ["cat", "vector"]}}},
    }
    predictor = manifest.predictor
    if "predictor" in manifest.components and predictor is not None and predictor.kind == "pooled":
        step = [
            round((lo + hi) / 2 + (hi - lo) / 4, 3)
            for lo, hi in zip(predictor.action_low, predictor.action_high, strict=False)
        ]
        examples["predict_future"] = {
            "rollout": {"summary": "two actions from one observed frame",
                        "value": {"context": [image], "actions": [step, step]}},
        }
        examples["plan"] = {
            "goal_image": {"summary": "a short CEM plan toward a goal image",
                           "value": {"observation": [image], "goal": {"image": goal}, "horizon": 4, "samples": 32,
                                     "iterations": 2}},
        }
    if model.world.calibration is not None and predictor is not None:
        still = [round((lo + hi) / 2, 3) for lo, hi in zip(predictor.action_low, predictor.action_high, strict=False)]
        frames = [{"image": _png(shift)} for shift in (0, 8, 16, 24)]
        examples["surprise"] = {
            "frames": {"summary": "four frames and the three actions between them: a score per scored step",
                       "value": {"observations": frames, "actions": [still, still, still]}},
        }
    return examples
