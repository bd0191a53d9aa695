"""Export Meta's JEPA checkpoints (I-JEPA, V-JEPA 2, V-JEPA 2-AC) into model-repository entries.

`jepa-export ijepa PATH --name N` and `jepa-export vjepa2 PATH --name N --frames T`:
PATH is anything models/checkpoints.py recognises (a Hugging Face folder or an
original .pth.tar / .pt). Each component goes through export/pipeline.py's
`export_component`: fp32 ONNX with a dynamic batch that must pass its parity
gate against our PyTorch module, then an fp16 copy kept only if it passes its own.

Contracts written to manifest.json:
- I-JEPA: input kind "image", NCHW, ImageNet mean/std; outputs `pooled` (B, D)
  and `tokens` (B, g*g, D).
- V-JEPA 2: input kind "video", layout NCTHW with a fixed `frames_per_clip` T
  per export (RoPE positions and the token count follow T, H, W); outputs
  `pooled` (B, D), `frames` (B, T/2, D: one vector per tubelet step) and
  `tokens` (B, (T/2)*g*g, D). An image is T identical frames (T=2: the
  authors' image convention, vjepa2#95).
- V-JEPA 2 with its mask predictor (HF folders carry it): `future.onnx` takes the
  first (T/2 - m) tubelet steps' frames and returns `predicted` (B, m*g*g, D),
  the tokens of the next m steps, and `context_pooled` (B, D) (`--future-steps m`).
- V-JEPA 2-AC: the encoder as above (per-frame encoding: T=2 by default), plus
  `predictor.onnx` taking `context` (B, H*g*g, D), `actions` and `states`
  (B, H, 7) for a fixed history H, with the block-causal mask as a constant;
  `--surprise-trajectories` calibrates /surprise on normal .npz trajectories
  (export/surprise.py TRAJECTORY_FORMAT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract import ComponentSpec
from export.manifest import embedding_space_id, state_dict_sha256
from export.pipeline import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PROBES,
    ExportOptions,
    export_component,
    export_pixel_component,
    image_probes,
    write_entry,
)
from export.surprise import Trajectory, calibrate_ac, calibrate_future, npz_trajectories, video_clips
from models.ac_predictor import VJepa2ACPredictor
from models.checkpoints import LoadedModel, LoadOptions, load_checkpoint
from models.ijepa import IJepaEncoder
from models.vjepa2 import VJepa2Encoder
from models.vjepa2_predictor import FuturePrediction, VJepa2MaskPredictor

POOLING = "mean_final_patch_tokens"
VIDEO_PROBES = 8
# Where the released CEM planner samples (notebooks/utils/mpc_utils.py): xyz clipped to +-maxnorm (0.05),
# rotation fixed at 0, gripper clipped to +-0.75 (its `close_gripper` option then forces 1.0).
AC_ACTION_LOW = [-0.05, -0.05, -0.05, 0.0, 0.0, 0.0, -0.75]
AC_ACTION_HIGH = [0.05, 0.05, 0.05, 0.0, 0.0, 0.0, 0.75]
# The paper's planner: CEM on the L1 distance between the predicted and the goal frame's layer-normed tokens,
# 400 samples, top 10, 10 iterations, horizon 2 (the service's /plan defaults for this model).
AC_PLANNING = {
    "distance": "l1",
    "defaults": {"horizon": 2, "samples": 400, "elites": 10, "iterations": 10},
    "method": "V-JEPA 2-AC: CEM on the L1 energy between predicted and goal-frame tokens",
}


@dataclass(frozen=True, kw_only=True)
class CheckpointExportOptions:
    path: Path
    export: ExportOptions
    load: LoadOptions = LoadOptions()
    frames: int | None = None  # V-JEPA 2 frames per clip (default 16; 2 for a 2-AC encoder)
    history: int = 2  # V-JEPA 2-AC: time steps the predictor sees
    future_steps: int | None = None  # V-JEPA 2 mask predictor: steps predicted (None: half the clip; 0: skip)
    surprise_videos: Path | None = None  # V-JEPA 2 mask predictor: normal videos to calibrate /surprise on
    surprise_trajectories: Path | None = None  # V-JEPA 2-AC: normal .npz trajectories to calibrate /surprise on


def video_probes(n: int, frames: int, size: int) -> np.ndarray:
    """(n, 3, T, size, size): image probes drifting a few pixels per frame, so frames differ as in real clips."""
    base = image_probes(n, size, IMAGENET_MEAN, IMAGENET_STD)  # (n, 3, S, S)
    clips = [np.roll(base, shift=2 * t, axis=-1) for t in range(frames)]
    return np.ascontiguousarray(np.stack(clips, axis=2))


def _load(options: CheckpointExportOptions, family: str, log: Callable[[str], None]) -> LoadedModel:
    loaded = load_checkpoint(options.path, options.load, family=family)
    params = sum(p.numel() for p in loaded.encoder.parameters())
    log(f"{options.path}: {loaded.source_format}, family {loaded.family}, encoder {params / 1e6:.1f}M parameters")
    for note in loaded.notes:
        log(f"  {note}")
    return loaded


def export_ijepa(options: CheckpointExportOptions, log: Callable[[str], None] = print) -> Path:
    loaded = _load(options, "ijepa", log)
    encoder: IJepaEncoder = loaded.encoder  # type: ignore[assignment]
    cfg = encoder.config

    def build(folder: Path) -> dict[str, Any]:
        pixels = image_probes(PROBES, cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)
        component = export_pixel_component(encoder, pixels, ("pooled", "tokens"), folder, "encoder", options.export,
                                           log, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="NCHW")
        checkpoint = state_dict_sha256([encoder])
        preprocessing = {"image_size": [cfg.image_size, cfg.image_size], "resize": "bicubic",
                         "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "frames_per_clip": 1, "tubelet": 1,
                         "patch_size": cfg.patch_size}
        return {
            "family": "ijepa",
            "checkpoint_sha256": checkpoint,
            "source": f"{loaded.source_format} {loaded.path.name}",
            "space_id": embedding_space_id("ijepa", checkpoint, preprocessing, POOLING, cfg.dim),
            "input": {"kind": "image", "layout": "NCHW", "channels": 3, "dtype": options.export.pixel_dtype,
                      **preprocessing},
            "output": {"dim": cfg.dim, "token_grid": [cfg.grid, cfg.grid], "pooling": POOLING},
            "architecture": {"depth": cfg.depth, "heads": cfg.heads, "mlp_hidden": cfg.mlp_hidden},
            "components": {"encoder": component},
        }

    return write_entry(options.export, build, log)


def export_vjepa2(options: CheckpointExportOptions, log: Callable[[str], None] = print) -> Path:
    loaded = _load(options, "vjepa2", log)
    encoder: VJepa2Encoder = loaded.encoder  # type: ignore[assignment]
    predictor: VJepa2ACPredictor | None = loaded.predictor  # type: ignore[assignment]
    cfg = encoder.config
    frames = options.frames or (cfg.tubelet if predictor is not None else 16)
    if frames % cfg.tubelet:
        raise ValueError(f"--frames {frames} is not a multiple of the tubelet ({cfg.tubelet})")
    steps = frames // cfg.tubelet
    trajectories = _ac_trajectories(options, encoder, predictor)  # read (and checked) before anything is traced

    def build(folder: Path) -> dict[str, Any]:
        clips = video_probes(VIDEO_PROBES, frames, cfg.image_size)
        components = {"encoder": export_pixel_component(
            encoder, clips, ("pooled", "frames", "tokens"), folder, "encoder", options.export, log,
            mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="NCTHW")}
        modules: list[torch.nn.Module] = [encoder]
        manifest: dict[str, Any] = {}
        if predictor is not None:
            modules.append(predictor)
            components["predictor"], manifest["predictor"] = _export_ac_predictor(
                encoder, predictor, options, folder, log)
            manifest["planning"] = AC_PLANNING
            if trajectories is not None:
                manifest["surprise"] = calibrate_ac(encoder, predictor, trajectories, options.history, cfg.tubelet,
                                                    str(options.surprise_trajectories))
                log(f"[surprise] teacher-forced next-frame L1 on normal trajectories: mean "
                    f"{manifest['surprise']['mean']:.4f}, std {manifest['surprise']['std']:.4f}")
        future = _future_steps(options, steps) if loaded.mask_predictor is not None else 0
        if future:
            modules.append(loaded.mask_predictor)
            components["future"], manifest["future"] = _export_future(
                encoder, loaded.mask_predictor, steps, future, options, folder, log)
            if options.surprise_videos is not None:
                clips = video_clips(options.surprise_videos, frames, cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)
                graph = FuturePrediction(encoder, loaded.mask_predictor, future).eval()
                manifest["surprise"] = calibrate_future(graph, encoder, clips, (steps - future) * cfg.tubelet, future,
                                                        str(options.surprise_videos))
                log(f"[surprise] future-token L1 on normal clips: mean {manifest['surprise']['mean']:.4f}, "
                    f"std {manifest['surprise']['std']:.4f}")
        elif loaded.mask_predictor is not None:
            log("mask predictor not exported (--future-steps 0, or a clip of one tubelet step)")
        checkpoint = state_dict_sha256(modules)
        preprocessing = {"image_size": [cfg.image_size, cfg.image_size], "resize": "bicubic",
                         "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "frames_per_clip": frames,
                         "tubelet": cfg.tubelet, "patch_size": cfg.patch_size}
        return {
            "family": loaded.family,
            "checkpoint_sha256": checkpoint,
            "source": f"{loaded.source_format} {loaded.path.name}",
            "space_id": embedding_space_id("vjepa2", checkpoint, preprocessing, POOLING, cfg.dim),
            "input": {"kind": "video", "layout": "NCTHW", "channels": 3, "dtype": options.export.pixel_dtype,
                      **preprocessing,
                      "image": f"repeat the image {frames} times along T"},
            "output": {"dim": cfg.dim, "token_grid": [steps, cfg.grid, cfg.grid], "pooling": POOLING,
                       "frames": "one vector per tubelet step: mean of that step's g*g tokens"},
            "architecture": {"depth": cfg.depth, "heads": cfg.heads, "mlp_hidden": cfg.mlp_hidden},
            "components": components,
            **manifest,
        }

    return write_entry(options.export, build, log)


def _future_steps(options: CheckpointExportOptions, steps: int) -> int:
    future = steps // 2 if options.future_steps is None else options.future_steps
    if future and not 0 < future < steps:
        raise ValueError(f"--future-steps {future}: the clip has {steps} tubelet steps; predict 1 to {steps - 1}")
    return future


def _export_future(
    encoder: VJepa2Encoder, predictor: VJepa2MaskPredictor, steps: int, future: int,
    options: CheckpointExportOptions, folder: Path, log: Callable[[str], None],
) -> tuple[ComponentSpec, dict[str, Any]]:
    """One graph: the first steps - future tubelet steps of a clip -> the predicted tokens of the next `future`."""
    cfg = encoder.config
    context_frames = (steps - future) * cfg.tubelet
    graph = FuturePrediction(encoder, predictor, future).eval()
    clips = video_probes(VIDEO_PROBES, context_frames, cfg.image_size)
    component = export_pixel_component(graph, clips, ("predicted", "context_pooled"), folder, "future",
                                       options.export, log, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="NCTHW")
    contract = {
        "context_frames": context_frames,
        "future_steps": future,
        "future_frames": future * cfg.tubelet,
        "tokens_per_step": cfg.grid * cfg.grid,
        "step": "predicted[:, s*g*g:(s+1)*g*g] = tokens of tubelet step (context steps + s), from the context alone",
    }
    return component, contract


def _ac_trajectories(options: CheckpointExportOptions, encoder: VJepa2Encoder,
                     predictor: VJepa2ACPredictor | None) -> list[Trajectory] | None:
    """The normal trajectories of --surprise-trajectories, or None without it."""
    folder = options.surprise_trajectories
    if folder is None:
        return None
    if predictor is None:
        raise ValueError(f"--surprise-trajectories calibrates V-JEPA 2-AC's action-conditioned predictor; "
                         f"{options.path} has none")
    if not folder.is_dir():
        raise FileNotFoundError(f"--surprise-trajectories {folder}: not a folder")
    return npz_trajectories(folder, encoder.config.image_size, IMAGENET_MEAN, IMAGENET_STD,
                            predictor.config.action_dim)


def _export_ac_predictor(
    encoder: VJepa2Encoder, predictor: VJepa2ACPredictor, options: CheckpointExportOptions, folder: Path,
    log: Callable[[str], None],
) -> tuple[ComponentSpec, dict[str, Any]]:
    """Probe contexts are real encoder outputs of probe frames, layer-normed as the authors' world model feeds them."""
    pcfg, history, tubelet = predictor.config, options.history, encoder.config.tubelet
    rng = np.random.default_rng(7)
    frames = video_probes(VIDEO_PROBES, history, encoder.config.image_size)  # (n, 3, H, S, S): H distinct frames
    with torch.inference_mode():
        # each frame encoded alone, repeated to fill one tubelet: (n, g*g, E) per frame
        tokens = [encoder.tokens(torch.from_numpy(np.repeat(frames[:, :, t:t + 1], tubelet, axis=2)))
                  for t in range(history)]
        context = torch.nn.functional.layer_norm(torch.cat(tokens, dim=1), (pcfg.embed_dim,)).numpy()
    low, high = np.asarray(AC_ACTION_LOW), np.asarray(AC_ACTION_HIGH)
    actions = rng.uniform(low, high, (VIDEO_PROBES, history, pcfg.action_dim)).astype(np.float32)
    states = rng.normal(0, 0.3, (VIDEO_PROBES, history, pcfg.action_dim)).astype(np.float32)
    component = export_component(predictor, {"context": context, "actions": actions, "states": states},
                                 ("predicted",), folder, "predictor", options.export, log)
    contract = {
        "kind": "vjepa2_ac",  # token-level, action- and state-conditioned (the demo predictor maps pooled vectors)
        "state_dim": pcfg.embed_dim,
        "action_dim": pcfg.action_dim,
        "action_low": AC_ACTION_LOW,
        "action_high": AC_ACTION_HIGH,
        "context_frames": history,
        "tokens_per_frame": pcfg.tokens_per_step,
        "proprio_dim": pcfg.action_dim,
        "normalize_tokens": "layer_norm, no affine, on encoder tokens and each prediction (authors' world model)",
        "step": "predicted[:, t*g*g:(t+1)*g*g] = tokens of frame t+1 from frames <= t, their states, actions",
        "shorter_history": "block-causal: with h < context_frames, fill later blocks with anything, read block h-1",
    }
    return component, contract
