"""manifest.json: the contract between export/ (which writes it) and service/ (which reads it).

One model-repository entry is `<repo>/<name>/manifest.json` plus the files it lists. These pydantic models are
the manifest's one definition: export/pipeline.py validates what it writes with them (extra fields forbidden),
service/repository.py reads entries with them. This package imports only the standard library and pydantic, so
both sides can import it without importing each other. Bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # an entry's folder name, a probe head's name
DEFAULT_SURPRISE_THRESHOLD = 3.0  # standard deviations above normal: the surprise threshold when nobody says


class ContractModel(BaseModel):
    """Frozen. Fields this reader does not know are ignored, so an entry written by a newer exporter that only
    added fields still loads (an incompatible change bumps SCHEMA_VERSION, which the reader refuses); the
    exporter validates what it writes with extra="forbid", so it never writes a field this reader lacks."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class InputSpec(ContractModel):
    """NCHW: one item is an image (C, H, W). NTCHW: one item is a clip (frames_per_clip, C, H, W);
    NCTHW (V-JEPA 2): a clip with channels first (C, frames_per_clip, H, W). A shorter clip (a single
    image, say) is padded by `clip_padding` (V-JEPA 2 repeats the frame)."""

    kind: Literal["image", "video"]
    layout: Literal["NCHW", "NTCHW", "NCTHW"]
    channels: int = 3
    # uint8: the graphs take pixels and normalise by mean/std themselves (export/pixels.py), so the host only
    # resizes and lays them out; float32: the host normalises
    dtype: Literal["float32", "uint8"] = "float32"
    image_size: tuple[int, int]
    resize: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    frames_per_clip: int = Field(1, ge=1)
    tubelet: int = 1
    patch_size: int
    clip_padding: Literal["repeat_first"] = "repeat_first"
    image: str = ""  # how an image becomes an item (video models: repeated along T), for people reading it


class OutputSpec(ContractModel):
    dim: int = Field(gt=0)
    token_grid: tuple[int, ...]
    pooling: str
    token_dim: int | None = None  # when tokens are narrower than the pooled vector (the demo's linear head)
    frames: str = ""  # what the per-time-step output is, for video encoders


class ComponentSpec(ContractModel):
    files: dict[Literal["fp32", "fp16"], str]
    inputs: dict[str, list[int]]
    outputs: list[str]
    parity: dict[str, object] = {}
    external_data: dict[Literal["fp32", "fp16"], str] = {}  # weight files beside graphs over 2 GiB
    # the attention in each graph (export/attention.py): mha = com.microsoft.MultiHeadAttention, onnx = ONNX
    # Attention (opset 23), unfused = MatMul + Softmax + MatMul, none = no attention layers; {} = not recorded
    attention: dict[Literal["fp32", "fp16"], Literal["mha", "onnx", "unfused", "none"]] = {}
    # graphs that take uint8 pixels (input.dtype uint8): whether each one's normalisation is folded into its
    # patch-embedding Conv (export/normalisation_fold.py) or done by a Mul + Add before it; parity's
    # normalisation_fallback says why a graph is not folded; {} = a graph that does not normalise pixels
    normalisation: dict[Literal["fp32", "fp16"], Literal["folded", "unfolded"]] = {}


class PredictorSpec(ContractModel):
    """`pooled`: (state, action) -> next state on pooled vectors (the demo). `vjepa2_ac`: V-JEPA 2-AC's
    token-level predictor, context (B, H*tokens_per_frame, state_dim) + actions + proprio states (B, H, A)
    -> the next frame's tokens at every step, block-causal (see export/families.py)."""

    kind: Literal["pooled", "vjepa2_ac"] = "pooled"
    state_dim: int
    action_dim: int
    action_low: list[float]
    action_high: list[float]
    context_frames: int = 1
    tokens_per_frame: int = 1
    proprio_dim: int = 0
    step: str = ""
    normalize_tokens: str = ""  # token-level predictors: how tokens are normalised around each step
    shorter_history: str = ""  # token-level predictors: how a history shorter than context_frames is fed


class FutureSpec(ContractModel):
    """V-JEPA 2's mask predictor exported for future prediction (component `future`, export/families.py):
    a clip of `context_frames` frames -> the tokens of the next `future_steps` tubelet steps."""

    context_frames: int = Field(ge=1)
    future_steps: int = Field(ge=1)
    tokens_per_step: int = Field(ge=1)
    future_frames: int | None = None
    step: str = ""


class SurpriseSpec(ContractModel):
    """How a surprise score is made from the distance between the predicted and the observed pooled state, and
    what normal looks like: `mean` and `std` of that distance on held-out normal data, measured at export, turn a
    distance into a z-score, so `threshold` (in standard deviations) means the same for every model."""

    # mse = mean squared difference per dimension (pooled predictors); l1_tokens = mean |predicted -
    # layer_norm(observed)| over a future tubelet step's tokens (V-JEPA 2's mask predictor) or over the next frame's
    # tokens, the prediction layer-normed too (V-JEPA 2-AC): each predictor's training loss
    metric: Literal["mse", "l2", "cosine", "l1_tokens"] = "mse"
    normalization: Literal["zscore"] = "zscore"
    mean: float
    std: float = Field(gt=0)
    threshold: float = DEFAULT_SURPRISE_THRESHOLD  # a step is surprising above this many standard deviations
    calibration: str = ""  # what data the mean and std come from


# A probe head's kind -> the encoder output it reads (raw, not L2-normalised): linear and MLP heads the pooled
# vector (B, dim), attentive heads the token grid (B, tokens, token_dim).
HEAD_FEATURES: dict[str, Literal["pooled", "tokens"]] = {"linear": "pooled", "mlp": "pooled", "attentive": "tokens"}


class HeadSpec(ContractModel):
    """A probe classifier trained on the model's frozen features (`jepa-export probe`): its ONNX graph is the
    component `component` (input `features`: the encoder output `features` names -> output `probabilities`
    (B, len(labels)))."""

    component: str
    features: Literal["pooled", "tokens"] = "pooled"
    labels: list[str] = Field(min_length=2)
    kind: Literal["linear", "mlp", "attentive"] = "linear"
    held_out_accuracy: float | None = None
    trained_on: str = ""

    @model_validator(mode="after")
    def _features_of_kind(self) -> HeadSpec:
        if HEAD_FEATURES[self.kind] != self.features:
            raise ValueError(f"a {self.kind} head reads {HEAD_FEATURES[self.kind]!r} features, not {self.features!r}")
        return self


class PlanningSpec(ContractModel):
    """Optional planning aids shipped with a model (see export/planning.py)."""

    controllable_projection: str | None = None  # .npy file (k, state_dim): rows span what actions can move
    controllable_dims: int | None = None
    method: str = ""
    distance: Literal["l1", "l2"] = "l2"  # energy between predicted and goal states (V-JEPA 2-AC: l1 on tokens)
    defaults: dict[Literal["horizon", "samples", "elites", "iterations"], int] = {}  # /plan defaults (the paper's)
    # .npy file (action_dim, state_dim): a linear inverse model, W (next - still) ~ action; distances through it
    # grow with the number of action steps between two states (see export/planning.py)
    action_readout: str | None = None
    action_readout_method: str = ""


class Manifest(ContractModel):
    schema_version: Literal[SCHEMA_VERSION]  # type: ignore[valid-type]
    name: str
    family: str
    checkpoint_sha256: str
    source: str = ""  # the weights it was exported from
    space_id: str
    input: InputSpec
    output: OutputSpec
    components: dict[str, ComponentSpec]
    predictor: PredictorSpec | None = None
    future: FutureSpec | None = None
    planning: PlanningSpec | None = None
    surprise: SurpriseSpec | None = None
    heads: dict[str, HeadSpec] = {}
    tools: dict[str, str] = {}
    created_at: str = ""
    architecture: dict[str, int] = {}  # depth, heads, ... of checkpoint families, for people reading it
    fusion: str = ""  # ONNX Runtime's transformer fusions applied at export (export/fusion.py), if any
