"""What every peer shares with jepa-serve, so only the serving strategy differs: same model, same decode."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.media.images import ImageLimits, ImagePreprocess, decode_image

LIMITS = ImageLimits(max_bytes=16 * 1024 * 1024, max_pixels=40_000_000)


def clip_frames(manifest: dict) -> int:
    """Frames a clip model takes per item (an image is repeated to fill them); 0 for plain NCHW image models."""
    spec = manifest["input"]
    return int(spec.get("frames_per_clip", 1)) if spec.get("layout") == "NTCHW" else 0


def as_model_item(pixels: np.ndarray, frames: int) -> np.ndarray:
    """(3, H, W) -> the encoder's per-item input: itself, or the image repeated to a (T, 3, H, W) clip."""
    return np.repeat(pixels[None], frames, axis=0) if frames else pixels


def preprocess_of(manifest: dict) -> ImagePreprocess:
    """The resize and normalisation a model entry's manifest asks for (uint8 pixels for a graph that normalises)."""
    spec = manifest["input"]
    return ImagePreprocess(height=spec["image_size"][0], width=spec["image_size"][1], resize=spec["resize"],
                           mean=tuple(spec["mean"]), std=tuple(spec["std"]), dtype=spec.get("dtype", "float32"))


def load_entry(folder: Path | None = None) -> tuple[ort.InferenceSession, ImagePreprocess, int]:
    """The model entry in `folder` (default: named by PEER_MODEL_DIR), with jepa-serve's CPU session options."""
    folder = folder or Path(os.environ["PEER_MODEL_DIR"])
    manifest = json.loads((folder / "manifest.json").read_text())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(folder / "encoder.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session, preprocess_of(manifest), clip_frames(manifest)


def decode_one(body: dict, preprocess: ImagePreprocess, frames: int) -> np.ndarray:
    """The first input of an /embed-style JSON body -> the encoder's per-item input (uint8 or float32 pixels, as
    the graph takes them)."""
    return as_model_item(preprocess.apply(decode_image(base64.b64decode(body["inputs"][0]["image"]), LIMITS)), frames)


def normalise(pooled: np.ndarray) -> list[float]:
    return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).tolist()
