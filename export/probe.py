"""`jepa-export probe`: a probe classifier on a served model's frozen features, exported as an ONNX head.

A linear or MLP head reads the model's pooled embedding, an attentive head its token grid (export/probe_heads.py),
both computed by the entry's own exported encoder (ONNX Runtime, the graph the service runs) on images preprocessed
the way the service does (resize to the manifest's size, mean/std, a still image repeated into a clip for clip
models). The head is fitted on a random split of the labelled files, exported (standardisation folded in, then
softmax), and the exported graph is scored on the rest; it is written to `<entry>/heads/<name>.onnx` and listed in
the entry's manifest with its kind, the features it reads, its label names and held-out accuracy. The service loads
it at start-up (restart or roll the replicas to serve a new head).
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

from contract import HEAD_FEATURES
from export.onnx_graph import export_onnx
from export.pipeline import rewrite_manifest
from export.probe_heads import FitOptions, fit_attentive, fit_linear, fit_mlp, head_graph, mlp_graph

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


# per kind: epochs, learning rate, weight decay (linear: full-batch Adam; mlp, attentive: AdamW on mini-batches)
KIND_DEFAULTS = {"linear": (300, 0.05, 1e-4), "mlp": (200, 1e-3, 1e-2), "attentive": (60, 1e-3, 1e-2)}


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    entry: Path  # the model's repository entry, e.g. model_repository/demo
    name: str  # the head's name (requests say `"head": name`)
    kind: str = "linear"  # linear | mlp (pooled features) | attentive (tokens)
    holdout: float = 0.2  # share of the files kept out of training to measure accuracy
    seed: int = 0
    epochs: int | None = None  # None: the kind's default (KIND_DEFAULTS)
    weight_decay: float | None = None
    hidden: int = 256  # mlp: hidden units; attentive: width of the MLP after the attention
    attention_heads: int = 4  # attentive
    force: bool = False

    def fit_options(self) -> FitOptions:
        epochs, rate, decay = KIND_DEFAULTS[self.kind]
        return FitOptions(epochs=self.epochs or epochs, learning_rate=rate,
                          weight_decay=decay if self.weight_decay is None else self.weight_decay,
                          hidden=self.hidden, attention_heads=self.attention_heads, seed=self.seed)


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
    """Images -> the encoder's input items, as the service prepares a still image: uint8 pixels for a graph that
    normalises them itself (the manifest's input dtype), else normalised float32."""
    spec = manifest["input"]
    height, width = spec["image_size"]
    mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
    uint8 = spec.get("dtype", "float32") == "uint8"
    items = []
    for file in files:
        with Image.open(file) as image:
            rgb = image.convert("RGB")
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), RESAMPLING[spec.get("resize", "bilinear")])
        rgb_array = np.asarray(rgb)
        pixels = (rgb_array if uint8 else (rgb_array.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
        frames = spec.get("frames_per_clip", 1)
        if spec["layout"] == "NTCHW":
            pixels = np.repeat(pixels[None], frames, axis=0)  # (T, 3, H, W)
        elif spec["layout"] == "NCTHW":
            pixels = np.repeat(pixels[:, None], frames, axis=1)  # (3, T, H, W)
        items.append(pixels)
    return np.ascontiguousarray(np.stack(items)).astype(np.uint8 if uint8 else np.float32)


def encoder_features(entry: Path, manifest: dict, files: Sequence[Path], output: str = "pooled",
                     batch: int = 64) -> np.ndarray:
    """The encoder's `output` ("pooled" (N, D) or "tokens" (N, T, D)) for the files, as the service computes it."""
    encoder = manifest["components"]["encoder"]
    if output not in encoder["outputs"]:
        hint = "an attentive probe reads the token grid; train --kind linear or mlp" if output == "tokens" else ""
        raise ValueError(f"{entry.name}'s encoder has no {output!r} output (it has {encoder['outputs']}); {hint}")
    session = ort.InferenceSession(str(entry / encoder["files"]["fp32"]), providers=["CPUExecutionProvider"])
    out = [session.run([output], {"pixel_values": preprocess(files[i:i + batch], manifest)})[0]
           for i in range(0, len(files), batch)]
    return np.concatenate(out).astype(np.float32)


def fit_head(kind: str, x: np.ndarray, y: np.ndarray, classes: int, options: FitOptions) -> onnx.ModelProto:
    """Train a head of `kind` on raw features -> its ONNX graph (features -> probabilities)."""
    if kind == "linear":
        return head_graph(*fit_linear(x, y, classes, options))
    if kind == "mlp":
        return mlp_graph(fit_mlp(x, y, classes, options))
    probe = fit_attentive(x, y, classes, options)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.onnx"
        export_onnx(probe, (torch.from_numpy(x[:2]),), path, ["features"], ["probabilities"])
        return onnx.load(str(path))


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    """The share of rows the ONNX head (as the service runs it) labels right."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    predicted = np.concatenate([session.run(["probabilities"], {"features": x[i:i + 256]})[0].argmax(1)
                                for i in range(0, len(x), 256)])
    return float((predicted == y).mean())


def train_probe(options: ProbeOptions, samples: Sequence[tuple[Path, str]], source: str,
                log: Callable[[str], None] = print) -> dict:
    """Fit, score the exported head on the held-out split, write it into the entry; returns the manifest's head
    record."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", options.name):
        raise ValueError(f"head name {options.name!r}: 1-64 letters, digits, '.', '_', '-', "
                         "starting with a letter or digit")
    if options.kind not in HEAD_FEATURES:
        raise ValueError(f"probe kind {options.kind!r}: expected one of {sorted(HEAD_FEATURES)}")
    manifest = json.loads((options.entry / "manifest.json").read_text())
    if options.name in manifest.get("heads", {}) and not options.force:
        raise FileExistsError(f"{options.entry.name} already has a head {options.name!r} (use --force to replace it)")
    labels = sorted({label for _, label in samples})
    if len(labels) < 2:
        raise ValueError(f"a probe needs at least two labels; found {labels}")
    features = HEAD_FEATURES[options.kind]
    files = [path for path, _ in samples]
    y = np.asarray([labels.index(label) for _, label in samples], np.int64)
    log(f"[probe] {len(files)} files, labels {labels}: {features} features from {options.entry.name}'s encoder")
    x = encoder_features(options.entry, manifest, files, features)
    order = np.random.default_rng(options.seed).permutation(len(files))
    held = order[: max(1, int(round(len(files) * options.holdout)))]
    train = order[len(held):]
    head = fit_head(options.kind, x[train], y[train], len(labels), options.fit_options())
    held_out = accuracy(head, x[held], y[held])
    log(f"[probe] {options.kind} head: held-out accuracy {held_out:.4f} on {len(held)} files "
        f"(trained on {len(train)})")
    component = f"head_{options.name}"
    relative = f"heads/{options.name}.onnx"
    (options.entry / "heads").mkdir(exist_ok=True)
    tmp = options.entry / "heads" / f".{options.name}.onnx.tmp"
    onnx.save(head, str(tmp))
    tmp.replace(options.entry / relative)
    record = {"component": component, "features": features, "labels": labels, "kind": options.kind,
              "held_out_accuracy": held_out,
              "trained_on": f"{len(train)} files of {source}; accuracy of the exported head on {len(held)} "
                            f"held-out files (seed {options.seed})"}
    manifest.setdefault("components", {})[component] = {
        "files": {"fp32": relative}, "inputs": {"features": [-1, *(int(n) for n in x.shape[1:])]},
        "outputs": ["probabilities"], "parity": {}}
    manifest.setdefault("heads", {})[options.name] = record
    rewrite_manifest(options.entry, manifest)
    return record
