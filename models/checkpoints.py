"""Load JEPA checkpoints from a local path onto our modules, detected by what the path holds.

Formats (tried in the order of FORMATS, an explicit dispatch table):

- ``hf-folder``: a Hugging Face folder (``config.json`` + ``model.safetensors``) of
  ``IJepaModel`` (model_type ``ijepa``) or ``VJEPA2Model`` (``vjepa2``), read with
  ``from_pretrained(folder)`` and mapped onto our modules.
- ``ijepa-original``: Meta's I-JEPA ``.pth.tar`` (keys ``encoder``, ``predictor``,
  ``target_encoder``, ...): the EMA ``target_encoder`` if present, else ``encoder``;
  DDP ``module.`` prefixes stripped. Recognised by a 2-D patch embedding.
- ``vjepa2-original``: Meta's V-JEPA 2 ``.pt`` (``encoder``, ``predictor``): prefixes
  ``module.`` / ``backbone.`` stripped, as the authors' hub loader does. Recognised
  by a 3-D (tubelet) patch embedding. When ``predictor`` is the action-conditioned
  predictor (it has ``action_encoder``), the family is ``vjepa2_ac`` and it is loaded too.

Every weight must find its place: a checkpoint with missing, unexpected or
mis-shaped keys raises CheckpointMismatch naming them. The only keys skipped
are listed in the IGNORED tables below, each with its reason.

Nothing here downloads anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.ac_predictor import ACPredictorConfig, VJepa2ACPredictor
from models.vjepa2_predictor import MaskPredictorConfig, VJepa2MaskPredictor
from models.ijepa import IJepaConfig, IJepaEncoder
from models.vjepa2 import VJepa2Config, VJepa2Encoder

# Original checkpoints do not record the head count; these are the published architectures'.
IJEPA_HEADS = {1280: 16, 1408: 16}  # vit_huge, vit_giant (facebookresearch/ijepa vision_transformer.py)
VJEPA2_HEADS = {1024: 16, 1280: 16, 1408: 22}  # vit_large, vit_huge, vit_giant_xformers (src/hub/backbones.py)
VJEPA2_IMAGE_SIZE = 256  # vitl/vith/vitg; vitg-384 needs image_size=384 (RoPE weights do not record it)
ORIGINAL_NORM_EPS = 1e-6

# Keys that are present in published files but have no place in the model, and why.
IGNORED_VJEPA2_ENCODER = {"pos_embed": "sin-cos table left in RoPE checkpoints; the authors' loader drops it too"}
IGNORED_HF_PREFIXES = {
    "ijepa": {"pooler.": "HF's Dense+Tanh pooler is not part of I-JEPA (random weights); we mean-pool"},
    "vjepa2": {"predictor.": "the mask-token predictor: loaded on its own (vjepa2_predictor rules)"},
    "vjepa2_predictor": {"encoder.": "the encoder: loaded on its own (vjepa2 rules)"},
}


class CheckpointMismatch(ValueError):
    """The checkpoint's weights do not match the module: names every missing, unexpected or mis-shaped key."""

    def __init__(self, what: str, missing: list[str], unexpected: list[str], mis_shaped: list[str]) -> None:
        self.missing, self.unexpected, self.mis_shaped = missing, unexpected, mis_shaped
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:12]) + (f", ... ({len(keys) - 12} more)" if len(keys) > 12 else "")
                parts.append(f"{len(keys)} {label} key(s): {shown}")
        super().__init__(f"{what}: checkpoint does not match the model; " + "; ".join(parts))


class UnknownCheckpoint(ValueError):
    """The path holds nothing a loader recognises."""


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """What a checkpoint file cannot tell us (the head count; the crop size of RoPE models)."""

    heads: int | None = None
    image_size: int | None = None
    predictor_heads: int | None = None


@dataclass
class LoadedModel:
    family: str  # "ijepa" | "vjepa2" | "vjepa2_ac"
    source_format: str  # a FORMATS name
    path: Path
    encoder: nn.Module
    predictor: nn.Module | None = None  # V-JEPA 2-AC's action-conditioned predictor
    mask_predictor: nn.Module | None = None  # V-JEPA 2's mask-token predictor (future prediction)
    notes: list[str] = field(default_factory=list)  # what was skipped, and why


# --- reading the path ---------------------------------------------------------------------------------


@dataclass
class Source:
    path: Path
    hf_config: dict[str, Any] | None = None  # a Hugging Face folder
    payload: Mapping[str, Any] | None = None  # a torch checkpoint file


def read_source(path: Path) -> Source:
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        if config.is_file() and (path / "model.safetensors").is_file():
            return Source(path=path, hf_config=json.loads(config.read_text()))
        raise UnknownCheckpoint(f"{path}: a folder without config.json + model.safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    try:
        try:  # memory-mapped: a ViT-g training checkpoint (optimizer state included) need not fit in RAM
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            payload = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:  # a pickle with arbitrary objects, or not a torch file at all
        raise UnknownCheckpoint(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, Mapping):
        raise UnknownCheckpoint(f"{path}: top level is {type(payload).__name__}, not a dict of state dicts")
    return Source(path=path, payload=payload)


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove DDP / wrapper prefixes wherever they occur, exactly as the authors' own loaders do."""
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            key = key.replace(prefix, "")
        out[key] = value
    return out


def _original_encoder_state(
    source: Source, keys: tuple[str, ...], prefixes: tuple[str, ...]
) -> tuple[str, dict] | None:
    if source.payload is None:
        return None
    for key in keys:
        state = source.payload.get(key)
        if isinstance(state, Mapping) and state:
            return key, strip_prefixes(state, prefixes)
    return None


def _patch_rank(state: Mapping[str, torch.Tensor]) -> int:
    weight = state.get("patch_embed.proj.weight")
    return weight.ndim if isinstance(weight, torch.Tensor) else -1


# --- putting weights in place -------------------------------------------------------------------------


def assign(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load `state` into `module` only if every key matches by name and shape (else CheckpointMismatch)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatch(what, missing, unexpected, mis_shaped)
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    module.eval()


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str = "blocks.") -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    ids = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(ids) + 1 if ids else 0


def _heads(dim: int, table: Mapping[int, int], override: int | None, what: str) -> int:
    if override:
        return override
    if dim not in table:
        raise ValueError(f"{what}: no published architecture has width {dim}; pass the head count (--heads)")
    return table[dim]


# --- original I-JEPA ----------------------------------------------------------------------------------

IJEPA_KEYS = ("target_encoder", "encoder")


def matches_ijepa_original(source: Source) -> bool:
    found = _original_encoder_state(source, IJEPA_KEYS, ("module.",))
    return found is not None and _patch_rank(found[1]) == 4


def load_ijepa_original(source: Source, options: LoadOptions) -> LoadedModel:
    which, state = _original_encoder_state(source, IJEPA_KEYS, ("module.",))  # type: ignore[misc]
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        absent = [k for k in ("patch_embed.proj.weight", "pos_embed") if k not in state]
        raise CheckpointMismatch(f"{source.path} [{which}]", absent, [], [])
    patch = state["patch_embed.proj.weight"]
    dim, patch_size = patch.shape[0], patch.shape[-1]
    grid = int(round(state["pos_embed"].shape[1] ** 0.5))
    config = IJepaConfig(
        image_size=grid * patch_size,
        patch_size=patch_size,
        in_chans=patch.shape[1],
        dim=dim,
        depth=_count_blocks(state),
        heads=_heads(dim, IJEPA_HEADS, options.heads, str(source.path)),
        mlp_hidden=state["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in state else 4 * dim,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        norm_eps=ORIGINAL_NORM_EPS,
    )
    encoder = IJepaEncoder(config)
    assign(encoder, state, f"{source.path} [{which}]")
    return LoadedModel(family="ijepa", source_format="ijepa-original", path=source.path, encoder=encoder,
                       notes=[f"encoder weights from '{which}'"])


# --- original V-JEPA 2 (and 2-AC) ---------------------------------------------------------------------

VJEPA2_PREFIXES = ("module.", "backbone.")


def matches_vjepa2_original(source: Source) -> bool:
    found = _original_encoder_state(source, ("encoder",), VJEPA2_PREFIXES)
    return found is not None and _patch_rank(found[1]) == 5


def vjepa2_config_from_state(state: Mapping[str, torch.Tensor], options: LoadOptions, what: str) -> VJepa2Config:
    patch = state["patch_embed.proj.weight"]  # (D, C, tubelet, p, p)
    dim = patch.shape[0]
    return VJepa2Config(
        image_size=options.image_size or VJEPA2_IMAGE_SIZE,
        patch_size=patch.shape[-1],
        tubelet=patch.shape[2],
        in_chans=patch.shape[1],
        dim=dim,
        depth=_count_blocks(state),
        heads=_heads(dim, VJEPA2_HEADS, options.heads, what),
        mlp_hidden=state["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in state else 4 * dim,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        norm_eps=ORIGINAL_NORM_EPS,
    )


def load_vjepa2_original(source: Source, options: LoadOptions) -> LoadedModel:
    _, state = _original_encoder_state(source, ("encoder",), VJEPA2_PREFIXES)  # type: ignore[misc]
    what = f"{source.path} [encoder]"
    notes = [f"skipped encoder key '{k}': {why}" for k, why in IGNORED_VJEPA2_ENCODER.items() if k in state]
    state = {k: v for k, v in state.items() if k not in IGNORED_VJEPA2_ENCODER}
    if "patch_embed.proj.weight" not in state:
        raise CheckpointMismatch(what, ["patch_embed.proj.weight"], [], [])
    config = vjepa2_config_from_state(state, options, what)
    encoder = VJepa2Encoder(config)
    assign(encoder, state, what)
    loaded = LoadedModel(family="vjepa2", source_format="vjepa2-original", path=source.path, encoder=encoder,
                         notes=notes)
    predictor_state = source.payload.get("predictor") if source.payload is not None else None
    if isinstance(predictor_state, Mapping) and predictor_state:
        predictor_state = strip_prefixes(predictor_state, VJEPA2_PREFIXES)
        if "action_encoder.weight" in predictor_state:
            loaded.family = "vjepa2_ac"
            loaded.predictor = load_ac_predictor_state(predictor_state, config, options, f"{source.path} [predictor]")
        else:
            loaded.notes.append("skipped 'predictor': the mask-token predictor is not exported")
    return loaded


def load_ac_predictor_state(
    state: Mapping[str, torch.Tensor], encoder: VJepa2Config, options: LoadOptions, what: str
) -> VJepa2ACPredictor:
    for key in ("predictor_embed.weight", "action_encoder.weight", "predictor_blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise CheckpointMismatch(what, [key], [], [])
    width = state["predictor_embed.weight"].shape[0]
    config = ACPredictorConfig(
        image_size=encoder.image_size,
        patch_size=encoder.patch_size,
        embed_dim=state["predictor_embed.weight"].shape[1],
        dim=width,
        depth=_count_blocks(state, "predictor_blocks."),
        heads=options.predictor_heads or 16,  # vit_ac_predictor: 16 heads at width 1024
        mlp_hidden=state["predictor_blocks.0.mlp.fc1.weight"].shape[0],
        action_dim=state["action_encoder.weight"].shape[1],
        qkv_bias="predictor_blocks.0.attn.qkv.bias" in state,
        norm_eps=ORIGINAL_NORM_EPS,
    )
    predictor = VJepa2ACPredictor(config)
    assign(predictor, state, what)
    return predictor


# --- Hugging Face folders -----------------------------------------------------------------------------

# (pattern, replacement) on HF parameter names; `qkv:` targets are slots of our fused qkv projection.
_IJ = r"^(?:ijepa\.)?"  # the I-JEPA rules accept the names of several transformers versions
_IJ_LAYER = _IJ + r"(?:encoder\.)?layers?\.(\d+)\."
HF_RULES: dict[str, list[tuple[str, str]]] = {
    "ijepa": [
        (_IJ + r"embeddings\.position_embeddings$", "pos_embed"),
        (_IJ + r"embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
        (_IJ_LAYER + r"attention\.(?:attention\.)?(?:query|q_proj)\.(weight|bias)$", r"qkv:0:blocks.\1:\2"),
        (_IJ_LAYER + r"attention\.(?:attention\.)?(?:key|k_proj)\.(weight|bias)$", r"qkv:1:blocks.\1:\2"),
        (_IJ_LAYER + r"attention\.(?:attention\.)?(?:value|v_proj)\.(weight|bias)$", r"qkv:2:blocks.\1:\2"),
        (_IJ_LAYER + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
        (_IJ_LAYER + r"layernorm_before\.(weight|bias)$", r"blocks.\1.norm1.\2"),
        (_IJ_LAYER + r"layernorm_after\.(weight|bias)$", r"blocks.\1.norm2.\2"),
        (_IJ_LAYER + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
        (_IJ_LAYER + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
        (_IJ + r"layernorm\.(weight|bias)$", r"norm.\1"),
    ],
    "vjepa2": [
        (r"^encoder\.embeddings\.patch_embeddings\.proj\.(weight|bias)$", r"patch_embed.proj.\1"),
        (r"^encoder\.layer\.(\d+)\.attention\.query\.(weight|bias)$", r"qkv:0:blocks.\1:\2"),
        (r"^encoder\.layer\.(\d+)\.attention\.key\.(weight|bias)$", r"qkv:1:blocks.\1:\2"),
        (r"^encoder\.layer\.(\d+)\.attention\.value\.(weight|bias)$", r"qkv:2:blocks.\1:\2"),
        (r"^encoder\.layer\.(\d+)\.attention\.proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
        (r"^encoder\.layer\.(\d+)\.(norm1|norm2)\.(weight|bias)$", r"blocks.\1.\2.\3"),
        (r"^encoder\.layer\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", r"blocks.\1.mlp.\2.\3"),
        (r"^encoder\.layernorm\.(weight|bias)$", r"norm.\1"),
    ],
    # the mask-token predictor of a VJEPA2Model folder, onto models/vjepa2_predictor.py (the original's names)
    "vjepa2_predictor": [
        (r"^predictor\.embeddings\.predictor_embeddings\.(weight|bias)$", r"predictor_embed.\1"),
        (r"^predictor\.embeddings\.mask_tokens$", "mask_tokens"),
        (r"^predictor\.layer\.(\d+)\.attention\.query\.(weight|bias)$", r"qkv:0:predictor_blocks.\1:\2"),
        (r"^predictor\.layer\.(\d+)\.attention\.key\.(weight|bias)$", r"qkv:1:predictor_blocks.\1:\2"),
        (r"^predictor\.layer\.(\d+)\.attention\.value\.(weight|bias)$", r"qkv:2:predictor_blocks.\1:\2"),
        (r"^predictor\.layer\.(\d+)\.attention\.proj\.(weight|bias)$", r"predictor_blocks.\1.attn.proj.\2"),
        (r"^predictor\.layer\.(\d+)\.(norm1|norm2)\.(weight|bias)$", r"predictor_blocks.\1.\2.\3"),
        (r"^predictor\.layer\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", r"predictor_blocks.\1.mlp.\2.\3"),
        (r"^predictor\.layernorm\.(weight|bias)$", r"predictor_norm.\1"),
        (r"^predictor\.proj\.(weight|bias)$", r"predictor_proj.\1"),
    ],
}


def map_hf_state(
    family: str, hf_state: Mapping[str, torch.Tensor], what: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF names -> ours (q, k, v concatenated into qkv). Unknown HF keys raise; ignored ones are reported."""
    rules = [(re.compile(p), r) for p, r in HF_RULES[family]]
    ignored = IGNORED_HF_PREFIXES[family]
    state: dict[str, torch.Tensor] = {}
    slots: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    unexpected, skipped = [], set()
    for key, value in hf_state.items():
        prefix = next((p for p in ignored if key.startswith(p)), None)
        if prefix is not None:
            skipped.add(prefix)
            continue
        for pattern, replacement in rules:
            if pattern.match(key):
                target = pattern.sub(replacement, key)
                break
        else:
            unexpected.append(key)
            continue
        if target.startswith("qkv:"):
            _, slot, block, kind = target.split(":")
            slots.setdefault((block, kind), {})[int(slot)] = value
        else:
            state[target] = value
    incomplete = []
    for (block, kind), parts in sorted(slots.items()):
        if sorted(parts) != [0, 1, 2]:
            incomplete.append(f"{block}.attn.qkv.{kind} (has only {len(parts)} of q, k, v)")
            continue
        state[f"{block}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    if unexpected or incomplete:
        raise CheckpointMismatch(what, incomplete, sorted(unexpected), [])
    return state, [f"skipped HF keys '{p}*': {ignored[p]}" for p in sorted(skipped)]


def matches_hf_folder(source: Source) -> bool:
    return source.hf_config is not None


def _require_gelu(config: Mapping[str, Any], what: str) -> None:
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"{what}: hidden_act {act!r} is not supported (our modules use exact GELU)")


class CheckpointUnreadable(ValueError):
    """A weight file that cannot be read (truncated, not safetensors, damaged header): one line naming it."""


def _from_pretrained(model_class: type, source: Source, what: str) -> tuple[nn.Module, dict[str, Any]]:
    """`from_pretrained` with its loading report, which we judge ourselves instead of letting transformers
    initialise missing weights at random (it only logs them). Mis-shaped tensors are reported, not raised
    (`ignore_mismatched_sizes`), so that they are named together with the rest."""
    from transformers.utils import logging as hf_logging

    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # its own load report would precede ours, and disagree on what is fatal
    hf_logging.disable_progress_bar()  # a tiny folder loads in milliseconds; the bar only buries the error
    try:
        return model_class.from_pretrained(source.path, local_files_only=True, output_loading_info=True,
                                           ignore_mismatched_sizes=True)
    except Exception as exc:  # safetensors' SafetensorError has no narrower base; OSError, RuntimeError, ...
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointUnreadable(
            f"{what}: cannot read the weights in model.safetensors ({type(exc).__name__}: {first_line})"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()


def check_loading_report(
    family: str, report: Mapping[str, Any], what: str, predictor_keys: Sequence[str] = ()
) -> tuple[bool, list[str]]:
    """Every key of the folder's model accounted for, or CheckpointMismatch naming the others.

    Keys under an IGNORED_HF_PREFIXES prefix may be absent or extra, except the V-JEPA 2 predictor,
    which is all there (loaded) or all absent (the folder is exported without it): a predictor with
    some of its weights missing would be served half random. `predictor_keys`: the model's predictor
    parameters. -> (predictor present, notes)."""
    ignored = IGNORED_HF_PREFIXES[family]
    missing = sorted(report.get("missing_keys") or ())
    unexpected = sorted(report.get("unexpected_keys") or ())
    mis_shaped = sorted(f"{key} {tuple(found)} != {tuple(expected)}"
                        for key, found, expected in report.get("mismatched_keys") or ())
    notes: list[str] = []
    predictor = True
    if family == "vjepa2":
        predictor_missing = [k for k in missing if k.startswith("predictor.")]
        if predictor_missing and len(predictor_missing) == len(predictor_keys):
            predictor = False
            missing = [k for k in missing if not k.startswith("predictor.")]
            notes.append("the folder has no predictor weights: exported without the mask-token predictor")
    else:
        skipped = sorted({p for p in ignored for k in missing + unexpected if k.startswith(p)})
        missing = [k for k in missing if not any(k.startswith(p) for p in ignored)]
        unexpected = [k for k in unexpected if not any(k.startswith(p) for p in ignored)]
        notes += [f"skipped HF keys '{p}*': {ignored[p]}" for p in skipped]
    errors = [str(e) for e in report.get("error_msgs") or ()]
    if missing or unexpected or mis_shaped or errors:
        raise CheckpointMismatch(what, missing, unexpected, mis_shaped + errors)
    return predictor, notes


def load_hf_folder(source: Source, options: LoadOptions) -> LoadedModel:
    cfg = source.hf_config or {}
    model_type = cfg.get("model_type")
    what = f"{source.path} (model_type {model_type!r})"
    _require_gelu(cfg, what)
    if model_type == "ijepa":
        from transformers import IJepaModel

        hf, report = _from_pretrained(IJepaModel, source, what)
        c = hf.config
        image = c.image_size if isinstance(c.image_size, int) else c.image_size[0]
        patch = c.patch_size if isinstance(c.patch_size, int) else c.patch_size[0]
        config = IJepaConfig(image_size=image, patch_size=patch, in_chans=c.num_channels, dim=c.hidden_size,
                             depth=c.num_hidden_layers, heads=c.num_attention_heads, mlp_hidden=c.intermediate_size,
                             qkv_bias=c.qkv_bias, norm_eps=c.layer_norm_eps)
        module: nn.Module = IJepaEncoder(config)
    elif model_type == "vjepa2":
        from transformers import VJEPA2Model

        hf, report = _from_pretrained(VJEPA2Model, source, what)
        c = hf.config
        config = VJepa2Config(image_size=c.crop_size, patch_size=c.patch_size, tubelet=c.tubelet_size,
                              in_chans=c.in_chans, dim=c.hidden_size, depth=c.num_hidden_layers,
                              heads=c.num_attention_heads, mlp_hidden=int(c.hidden_size * c.mlp_ratio),
                              qkv_bias=c.qkv_bias, norm_eps=c.layer_norm_eps)
        module = VJepa2Encoder(config)
    else:
        raise UnknownCheckpoint(f"{what}: only model_type 'ijepa' and 'vjepa2' folders are supported")
    hf_state = hf.state_dict()
    predictor_keys = [k for k in hf_state if k.startswith("predictor.")]
    has_predictor, notes = check_loading_report(model_type, report, what, predictor_keys)
    state, _ = map_hf_state(model_type, hf_state, what)  # its skipped prefixes were judged by the report above
    assign(module, state, what)
    loaded = LoadedModel(family=model_type, source_format="hf-folder", path=source.path, encoder=module, notes=notes)
    if model_type == "vjepa2" and has_predictor:
        c = hf.config
        predictor = VJepa2MaskPredictor(MaskPredictorConfig(
            embed_dim=c.hidden_size, dim=c.pred_hidden_size, depth=c.pred_num_hidden_layers,
            heads=c.pred_num_attention_heads, mlp_hidden=int(c.pred_hidden_size * c.pred_mlp_ratio),
            mask_tokens=c.pred_num_mask_tokens, qkv_bias=c.qkv_bias, norm_eps=c.layer_norm_eps))
        predictor_state, _ = map_hf_state("vjepa2_predictor", hf_state, f"{what} [predictor]")
        assign(predictor, predictor_state, f"{what} [predictor]")
        loaded.mask_predictor = predictor
    return loaded


# --- the dispatch table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    name: str
    matches: Callable[[Source], bool]
    family: Callable[[Source], str]  # known before loading, so a wrong family is refused cheaply
    load: Callable[[Source, LoadOptions], LoadedModel]


FORMATS: tuple[Format, ...] = (
    Format("hf-folder", matches_hf_folder, lambda src: str((src.hf_config or {}).get("model_type")), load_hf_folder),
    Format("ijepa-original", matches_ijepa_original, lambda s: "ijepa", load_ijepa_original),
    Format("vjepa2-original", matches_vjepa2_original, lambda s: "vjepa2", load_vjepa2_original),
)


def detect_format(source: Source) -> Format:
    for fmt in FORMATS:
        if fmt.matches(source):
            return fmt
    keys = sorted(source.payload)[:12] if source.payload is not None else []
    raise UnknownCheckpoint(
        f"{source.path}: not a recognised JEPA checkpoint (top-level keys: {keys}); expected a Hugging Face folder, "
        "an I-JEPA .pth.tar with 'target_encoder'/'encoder', or a V-JEPA 2 .pt with 'encoder'"
    )


def load_checkpoint(path: Path | str, options: LoadOptions | None = None, family: str | None = None) -> LoadedModel:
    """Read `path`, pick its format, build our module(s) and load every weight; `family` asserts what it must be."""
    source = read_source(Path(path))
    fmt = detect_format(source)
    found = fmt.family(source)
    if family is not None and found != family.split("_")[0]:
        raise ValueError(f"{path}: holds a {found} model ({fmt.name}), not {family}")
    return fmt.load(source, options or LoadOptions())
