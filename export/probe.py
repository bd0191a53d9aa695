"""`jepa-export probe`: a linear probe on a served model's frozen features, exported as an ONNX head.

The features are the model's pooled embedding, computed by the entry's own exported encoder (ONNX Runtime, the
graph the service runs) on images preprocessed the way the service does (resize to the manifest's size, mean/std,
a still image repeated into a clip for clip models). A multinomial logistic regression is fitted on a random
split of the labelled files and scored on the rest; the head (standardisation folded into the weights, then
softmax) is written to `<entry>/heads/<name>.onnx` and listed in the entry's manifest with its label names and
held-out accuracy. The service loads it at start-up (restart or roll the replicas to serve a new head).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from export.pipeline import rewrite_manifest

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    entry: Path  # the model's repository entry, e.g. model_repository/demo
    name: str  # the head's name (requests say `"head": name`)
    holdout: float = 0.2  # share of the files kept out of training to measure accuracy
    seed: int = 0
    epochs: int = 300
    weight_decay: float = 1e-4
    force: bool = False


def labelled_folder(folder: Path) -> list[tuple[Path, str]]:
    """`folder/<label>/<image>`: one sub-folder per label."""
    samples = [(f, d.name) for d in sorted(folder.iterdir()) if d.is_dir()
               for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not samples:
        raise ValueError(f"{folder}: no images in label sub-folders (expected {folder}/<label>/<image>)")
    return samples


def labelled_csv(path: Path) -> list[tuple[Path, str]]:
    """A CSV with the columns `path,label` (paths relative to the CSV's folder)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a header with the columns 'path' and 'label'")
    return [((path.parent / row["path"]).resolve(), row["label"]) for row in rows]


def preprocess(files: Sequence[Path], manifest: dict) -> np.ndarray:
    """Images -> the encoder's input items, as the service prepares a still image."""
    spec = manifest["input"]
    height, width = spec["image_size"]
    mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
    items = []
    for file in files:
        with Image.open(file) as image:
            rgb = image.convert("RGB")
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), RESAMPLING[spec.get("resize", "bilinear")])
        pixels = ((np.asarray(rgb, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)  # (3, H, W)
        frames = spec.get("frames_per_clip", 1)
        if spec["layout"] == "NTCHW":
            pixels = np.repeat(pixels[None], frames, axis=0)  # (T, 3, H, W)
        elif spec["layout"] == "NCTHW":
            pixels = np.repeat(pixels[:, None], frames, axis=1)  # (3, T, H, W)
        items.append(pixels)
    return np.ascontiguousarray(np.stack(items)).astype(np.float32)


def pooled_features(entry: Path, manifest: dict, files: Sequence[Path], batch: int = 64) -> np.ndarray:
    session = ort.InferenceSession(str(entry / manifest["components"]["encoder"]["files"]["fp32"]),
                                   providers=["CPUExecutionProvider"])
    out = [session.run(["pooled"], {"pixel_values": preprocess(files[i:i + batch], manifest)})[0]
           for i in range(0, len(files), batch)]
    return np.concatenate(out).astype(np.float32)


def fit_linear(x: np.ndarray, y: np.ndarray, classes: int, options: ProbeOptions) -> tuple[np.ndarray, np.ndarray]:
    """Standardised multinomial logistic regression, full-batch; returns (W (C, D), b (C,)) on the raw features
    (the standardisation folded in)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    generator = torch.Generator().manual_seed(options.seed)
    xs = torch.from_numpy((x - mean) / scale)
    layer = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.01)
        layer.bias.zero_()
    optimiser = torch.optim.Adam(layer.parameters(), lr=0.05, weight_decay=options.weight_decay)
    target = torch.from_numpy(y)
    for _ in range(options.epochs):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(layer(xs), target).backward()
        optimiser.step()
    weight = layer.weight.detach().numpy() / scale  # (C, D)
    bias = layer.bias.detach().numpy() - weight @ mean
    return weight.astype(np.float32), bias.astype(np.float32)


def head_graph(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """features (B, D) -> probabilities (B, C) = softmax(features W^T + b)."""
    classes, dim = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "weight_t"], ["scaled"]),
         helper.make_node("Add", ["scaled", "bias"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "probe_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(np.ascontiguousarray(weight.T), "weight_t"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def train_probe(options: ProbeOptions, samples: Sequence[tuple[Path, str]], source: str,
                log: Callable[[str], None] = print) -> dict:
    """Fit, score on the held-out split, write the head into the entry; returns the manifest's head record."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", options.name):
        raise ValueError(f"head name {options.name!r}: 1-64 letters, digits, '.', '_', '-', "
                         "starting with a letter or digit")
    manifest = json.loads((options.entry / "manifest.json").read_text())
    if options.name in manifest.get("heads", {}) and not options.force:
        raise FileExistsError(f"{options.entry.name} already has a head {options.name!r} (use --force to replace it)")
    labels = sorted({label for _, label in samples})
    if len(labels) < 2:
        raise ValueError(f"a probe needs at least two labels; found {labels}")
    files = [path for path, _ in samples]
    y = np.asarray([labels.index(label) for _, label in samples], np.int64)
    log(f"[probe] {len(files)} files, labels {labels}: embedding with {options.entry.name}'s encoder")
    x = pooled_features(options.entry, manifest, files)
    order = np.random.default_rng(options.seed).permutation(len(files))
    held = order[: max(1, int(round(len(files) * options.holdout)))]
    train = order[len(held):]
    weight, bias = fit_linear(x[train], y[train], len(labels), options)
    accuracy = float(((x[held] @ weight.T + bias).argmax(1) == y[held]).mean())
    log(f"[probe] held-out accuracy {accuracy:.4f} on {len(held)} files (trained on {len(train)})")
    component = f"head_{options.name}"
    relative = f"heads/{options.name}.onnx"
    (options.entry / "heads").mkdir(exist_ok=True)
    tmp = options.entry / "heads" / f".{options.name}.onnx.tmp"
    onnx.save(head_graph(weight, bias), str(tmp))
    tmp.replace(options.entry / relative)
    record = {"component": component, "features": "pooled", "labels": labels, "kind": "linear",
              "held_out_accuracy": accuracy,
              "trained_on": f"{len(train)} files of {source}; accuracy on {len(held)} held-out files "
                            f"(seed {options.seed})"}
    manifest.setdefault("components", {})[component] = {
        "files": {"fp32": relative}, "inputs": {"features": [-1, int(x.shape[1])]}, "outputs": ["probabilities"],
        "parity": {}}
    manifest.setdefault("heads", {})[options.name] = record
    rewrite_manifest(options.entry, manifest)
    return record
