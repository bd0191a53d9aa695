"""The demo JEPA world model: a patchify-CNN clip encoder and an action-conditioned predictor.

The encoder reads a 2-frame clip (B, 2, 3, 64, 64) -- two frames, so the
ball's velocity is visible -- as 6 channels. A strided "patchify" convolution
and two more convolutions give an 8x8 grid of feature tokens; the pooled
state embedding is a linear head over the whole grid (so it keeps *where*
things are) followed by BatchNorm. The final normalisation matters: without
it the initial embedding spread is ~1e-4 and SIGReg has no gradient to use
(measured while choosing the architecture), and it puts the embedding on the unit-variance scale SIGReg
tests against.

A CNN rather than a ViT because it trains ~2.7x more clips per second on a
2-core CPU (measured while choosing the architecture); models/vit.py stays for parity tests and real
checkpoints.

Trained weights ship as safetensors (models/demo/weights/demo.safetensors);
`load_demo_model` reads them, `build_demo_model(seed)` is the untrained init.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from models.predictor import ActionConditionedPredictor, PredictorConfig

DEMO_MEAN = (0.5, 0.5, 0.5)
DEMO_STD = (0.25, 0.25, 0.25)
DEMO_ACTION_BOUND = 1.0
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "demo.safetensors"


@dataclass(frozen=True, kw_only=True)
class ClipEncoderConfig:
    image_size: int = 64
    frames: int = 2
    in_chans: int = 3
    width: int = 64  # channels of the token grid
    dim: int = 128  # pooled state embedding
    patch: int = 4  # the first (patchify) convolution's kernel and stride

    @property
    def grid(self) -> int:
        return self.image_size // self.patch // 2

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid


class ClipEncoder(nn.Module):
    """Clips (B, T, C, H, W) -> pooled (B, dim) and tokens (B, grid*grid, width)."""

    def __init__(self, config: ClipEncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.width
        self.features = nn.Sequential(
            nn.Conv2d(config.frames * config.in_chans, c // 2, config.patch, stride=config.patch),  # (B, c/2, 16, 16)
            nn.GELU(),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1),  # (B, c, 8, 8)
            nn.GELU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.GELU(),
        )
        self.head = nn.Linear(c * config.num_tokens, config.dim)
        self.norm = nn.BatchNorm1d(config.dim, affine=False)

    def raw(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The un-normalised head output (B, dim) and the feature grid (B, c, g, g)."""
        b = pixel_values.shape[0]
        x = pixel_values.reshape(b, -1, self.config.image_size, self.config.image_size)  # (B, T*C, H, W)
        grid = self.features(x)  # (B, c, g, g)
        return self.head(grid.flatten(1)), grid

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, grid = self.raw(pixel_values)
        return self.norm(raw), grid.flatten(2).transpose(1, 2)  # (B, dim), (B, g*g, c)


@dataclass
class DemoModel:
    encoder: ClipEncoder
    predictor: ActionConditionedPredictor
    mean: tuple[float, float, float] = DEMO_MEAN
    std: tuple[float, float, float] = DEMO_STD
    action_bound: float = DEMO_ACTION_BOUND

    def modules(self) -> list[nn.Module]:
        return [self.encoder, self.predictor]


def predictor_config(encoder: ClipEncoderConfig) -> PredictorConfig:
    return PredictorConfig(dim=encoder.dim, action_dim=2, hidden=512, depth=3)


def build_demo_model(seed: int = 0, config: ClipEncoderConfig | None = None) -> DemoModel:
    """Untrained, fixed-seed initialisation; leaves the global torch RNG as it was."""
    config = config or ClipEncoderConfig()
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        encoder = ClipEncoder(config)
        predictor = ActionConditionedPredictor(predictor_config(config))
    finally:
        torch.random.set_rng_state(generator_state)
    return DemoModel(encoder=encoder.eval(), predictor=predictor.eval())


def save_demo_model(model: DemoModel, path: Path, extra: dict[str, str] | None = None) -> Path:
    """safetensors with the encoder config in the metadata header (weights only: no pickle)."""
    from safetensors.torch import save_file

    tensors = {f"encoder.{k}": v.detach().contiguous() for k, v in model.encoder.state_dict().items()}
    tensors |= {f"predictor.{k}": v.detach().contiguous() for k, v in model.predictor.state_dict().items()}
    metadata = {"encoder_config": json.dumps(asdict(model.encoder.config)), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_demo_model(path: Path = DEFAULT_WEIGHTS) -> DemoModel:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    config = ClipEncoderConfig(**json.loads(metadata["encoder_config"]))
    model = build_demo_model(0, config)
    tensors = load_file(str(path))
    model.encoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")})
    model.predictor.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("predictor.")})
    return DemoModel(encoder=model.encoder.eval(), predictor=model.predictor.eval())
