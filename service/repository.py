"""Reading model-repository entries: `<repo>/<name>/manifest.json` + ONNX files.

The manifest is the whole contract between export/ and the service, and these
models are its one definition: export/pipeline.py writes manifests through
them (extra fields forbidden), and the service validates them here so that a
bad entry fails at start-up with a clear message, not on the first request.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class InputSpec(_Strict):
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


class OutputSpec(_Strict):
    dim: int = Field(gt=0)
    token_grid: tuple[int, ...]
    pooling: str
    token_dim: int | None = None  # when tokens are narrower than the pooled vector (the demo's linear head)
    frames: str = ""  # what the per-time-step output is, for video encoders


class ComponentSpec(_Strict):
    files: dict[Literal["fp32", "fp16"], str]
    inputs: dict[str, list[int]]
    outputs: list[str]
    parity: dict[str, object] = {}
    external_data: dict[Literal["fp32", "fp16"], str] = {}  # weight files beside graphs over 2 GiB
    # the attention in each graph (export/attention.py): mha = com.microsoft.MultiHeadAttention, onnx = ONNX
    # Attention (opset 23), unfused = MatMul + Softmax + MatMul, none = no attention layers; {} = not recorded
    attention: dict[Literal["fp32", "fp16"], Literal["mha", "onnx", "unfused", "none"]] = {}


class PredictorSpec(_Strict):
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


class FutureSpec(_Strict):
    """V-JEPA 2's mask predictor exported for future prediction (component `future`, export/families.py):
    a clip of `context_frames` frames -> the tokens of the next `future_steps` tubelet steps."""

    context_frames: int = Field(ge=1)
    future_steps: int = Field(ge=1)
    tokens_per_step: int = Field(ge=1)
    future_frames: int | None = None
    step: str = ""


class SurpriseSpec(_Strict):
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
    threshold: float = 3.0  # default: a step is surprising above this many standard deviations
    calibration: str = ""  # what data the mean and std come from


# A probe head's kind -> the encoder output it reads (raw, not L2-normalised): linear and MLP heads the pooled
# vector (B, dim), attentive heads the token grid (B, tokens, token_dim).
HEAD_FEATURES: dict[str, Literal["pooled", "tokens"]] = {"linear": "pooled", "mlp": "pooled", "attentive": "tokens"}


class HeadSpec(_Strict):
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


class PlanningSpec(_Strict):
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


class Manifest(_Strict):
    schema_version: Literal[1]
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


@dataclass(frozen=True)
class RepositoryEntry:
    name: str
    folder: Path
    manifest: Manifest

    def component_file(self, component: str, precision: str) -> Path:
        return self.folder / self.manifest.components[component].files[precision]  # type: ignore[index]


@dataclass(frozen=True)
class EntryFailure:
    name: str
    reason: str


class ManifestError(ValueError):
    pass


def read_entry(folder: Path) -> RepositoryEntry:
    path = folder / "manifest.json"
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ManifestError(f"{folder.name}: no manifest.json") from exc
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ManifestError(f"{folder.name}: invalid manifest.json: {exc}") from exc
    _check_contracts(folder.name, manifest)
    _check_files(folder, manifest)
    return RepositoryEntry(name=folder.name, folder=folder, manifest=manifest)


def _check_contracts(name: str, manifest: Manifest) -> None:
    """Every component the service would run has the contract that says how to run it."""
    if "encoder" not in manifest.components:
        raise ManifestError(f"{name}: manifest has no encoder component")
    if "predictor" in manifest.components and manifest.predictor is None:
        raise ManifestError(f"{name}: predictor component without a predictor contract")
    if "future" in manifest.components and manifest.future is None:
        raise ManifestError(f"{name}: future component without a future contract")
    if manifest.surprise is not None:
        pooled = manifest.predictor is not None and manifest.predictor.kind == "pooled"
        tokens = manifest.predictor is not None and manifest.predictor.kind == "vjepa2_ac"
        if manifest.surprise.metric == "l1_tokens" and manifest.future is None and not tokens:
            raise ManifestError(f"{name}: an l1_tokens surprise calibration needs the future component or "
                                "V-JEPA 2-AC's predictor")
        if manifest.surprise.metric == "l1_tokens" and manifest.future is not None and tokens:
            raise ManifestError(f"{name}: an l1_tokens surprise calibration is of one token predictor; this "
                                "entry has two (future and a V-JEPA 2-AC predictor)")
        if manifest.surprise.metric != "l1_tokens" and not pooled:
            raise ManifestError(f"{name}: a surprise calibration needs a pooled action-conditioned predictor")
    _check_heads(name, manifest)


def _check_heads(name: str, manifest: Manifest) -> None:
    """Every probe head has its graph and reads an output the encoder has."""
    for head, spec in manifest.heads.items():
        if not NAME_PATTERN.match(head) or spec.component not in manifest.components:
            raise ManifestError(f"{name}: head {head!r} has a bad name or no component {spec.component!r}")
        if spec.features not in manifest.components["encoder"].outputs:
            raise ManifestError(f"{name}: head {head!r} reads the encoder's {spec.features!r} output, which it lacks")


def _check_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is there (and every component has its fp32 graph)."""
    if manifest.planning is not None:
        for aid in (manifest.planning.controllable_projection, manifest.planning.action_readout):
            if aid is not None and not (folder / aid).is_file():
                raise ManifestError(f"{folder.name}: {aid} is listed but missing")
    for name, component in manifest.components.items():
        if "fp32" not in component.files:
            raise ManifestError(f"{folder.name}: component {name} has no fp32 file")
        for file in component.files.values():
            if not (folder / file).is_file():
                raise ManifestError(f"{folder.name}: {file} is listed in the manifest but missing")


def scan_repository(root: Path) -> tuple[list[RepositoryEntry], list[EntryFailure]]:
    """Every sub-folder with a manifest; hidden folders (exports in progress) are skipped."""
    if not root.is_dir():
        return [], [EntryFailure(name=str(root), reason="model repository folder does not exist")]
    entries, failures = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not NAME_PATTERN.match(folder.name):
            failures.append(EntryFailure(folder.name, "folder name is not a valid model name"))
            continue
        try:
            entries.append(read_entry(folder))
        except ManifestError as exc:
            log.error("model %s not loaded: %s", folder.name, exc)
            failures.append(EntryFailure(folder.name, str(exc)))
    return entries, failures
