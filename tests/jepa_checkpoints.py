"""Tiny JEPA checkpoints built inside the tests: Hugging Face folders and original-format files.

Nothing is downloaded. The original-format files are rebuilt from the committed
reference fixtures (tests/fixtures/*_original.safetensors, made once by Meta's
own code; see tests/fixtures/make_original_fixtures.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def cosine_rows(a, b) -> float:
    """Worst cosine over rows (leading axis), the rest flattened."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def random_pixels(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 pixels, channels on axis 1 (NCHW, NCTHW), and their ImageNet normalisation: what an exported
    encoder (which normalises inside) and the reference model are fed."""
    pixels = np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
    axes = (1, 3) + (1,) * (len(shape) - 2)
    mean = np.asarray((0.485, 0.456, 0.406), np.float32).reshape(axes)
    std = np.asarray((0.229, 0.224, 0.225), np.float32).reshape(axes)
    return pixels, (pixels / np.float32(255.0) - mean) / std


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """HF's init (std 0.02, LayerNorms 1/0, biases 0) gives near-uniform attention, blind to positions;
    unit-scale weights and random norms make the comparison meaningful."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "position" in name:
                continue  # I-JEPA's fixed table
            if param.ndim == 1:
                param.add_(0.1 * noise)
            else:
                param.copy_(noise / param[0].numel() ** 0.5)


def tiny_ijepa_folder(folder: Path, seed: int = 0) -> torch.nn.Module:
    from transformers import IJepaConfig, IJepaModel

    torch.manual_seed(seed)
    config = IJepaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=32, patch_size=8, layer_norm_eps=1e-6)
    model = IJepaModel(config).eval()
    _randomise(model, seed)
    model.save_pretrained(folder)
    return model


def tiny_vjepa2_folder(folder: Path, seed: int = 0) -> torch.nn.Module:
    """head_dim 32: 30 channels rotated (3 x 10), 2 left as they are, as in the real ViT-g (64: 60 + 4)."""
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(seed)
    config = VJEPA2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, crop_size=32, frames_per_clip=4,
                          patch_size=8, pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2)
    model = VJEPA2Model(config).eval()
    _randomise(model, seed)
    model.save_pretrained(folder)
    return model


@dataclass
class Reference:
    """One committed fixture: checkpoint groups as the original code saved them, inputs, outputs, config."""

    groups: dict[str, dict[str, torch.Tensor]]
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    config: dict
    source: str


def reference(name: str) -> Reference:
    from safetensors import safe_open

    groups: dict[str, dict[str, torch.Tensor]] = {}
    inputs, outputs = {}, {}
    with safe_open(str(FIXTURES / f"{name}.safetensors"), "pt") as f:
        meta = f.metadata()
        for key in f.keys():  # noqa: SIM118 - safetensors' safe_open is not a mapping: keys() is its listing
            kind, rest = key.split("/", 1)
            if kind == "ckpt":
                group, param = rest.split("/", 1)
                groups.setdefault(group, {})[param] = f.get_tensor(key)
            else:
                (inputs if kind == "input" else outputs)[rest] = f.get_tensor(key)
    return Reference(groups, inputs, outputs, json.loads(meta["config"]), meta["source"])


def original_ijepa_file(path: Path) -> Reference:
    """An I-JEPA .pth.tar like train.py writes: target_encoder (the reference) and a different online encoder."""
    ref = reference("ijepa_original")
    target = ref.groups["target_encoder"]
    online = {k: v + 0.5 for k, v in target.items()}  # must not be the one loaded
    torch.save({"encoder": online, "predictor": {}, "target_encoder": target, "opt": {}, "scaler": None,
                "epoch": 300, "loss": 0.1, "batch_size": 2048, "world_size": 16, "lr": 0.001}, path)
    return ref


def original_vjepa2_file(
    path: Path, with_predictor: bool = True, extra_pos_embed: bool = True
) -> tuple[Reference, Reference]:
    """A V-JEPA 2(-AC) .pt: `encoder` (+ the unused sin-cos `pos_embed` of RoPE checkpoints) and the AC `predictor`."""
    enc, ac = reference("vjepa2_original"), reference("vjepa2_ac_original")
    encoder = dict(enc.groups["encoder"])
    if extra_pos_embed:
        encoder["module.backbone.pos_embed"] = torch.zeros(1, 32, enc.config["dim"])
    payload = {"encoder": encoder, "epoch": 10}
    if with_predictor:
        payload["predictor"] = ac.groups["predictor"]
    torch.save(payload, path)
    return enc, ac
