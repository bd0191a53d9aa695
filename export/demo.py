"""Export the trained demo model (clip encoder + action-conditioned predictor) into a repository entry.

The weights come from the committed safetensors file (models/demo/weights/),
written by `make demo-train`; `--weights` exports any other checkpoint of the
same architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.manifest import embedding_space_id, state_dict_sha256
from export.pipeline import PROBES, ExportOptions, export_component, export_pixel_component, image_probes, write_entry
from export.planning import action_readout, controllable_subspace
from export.surprise import calibrate_demo
from models.demo import DEFAULT_WEIGHTS, DemoModel, load_demo_model, world


def clip_probes(n: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Half real world clips (two consecutive frames), half synthetic images repeated into a clip. (n, 2, 3, 64, 64)"""
    data = world.generate_trajectories(4321, n - n // 2, steps=2)
    frames = data.frames()[:, 1:].astype(np.float32) / 255.0  # (k, 2, 64, 64, 3)
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    real = ((frames - m) / s).transpose(0, 1, 4, 2, 3)  # (k, 2, 3, 64, 64)
    synthetic = image_probes(n // 2, world.SIZE, mean, std)[:, None].repeat(2, axis=1)  # (n/2, 2, 3, 64, 64)
    return np.ascontiguousarray(np.concatenate([real, synthetic]).astype(np.float32))


def export_demo(options: ExportOptions, log: Callable[[str], None] = print, weights: Path = DEFAULT_WEIGHTS) -> Path:
    """Write `<out>/<name>/` from the demo weights (the shipped ones by default), through the export pipeline."""
    model: DemoModel = load_demo_model(weights)
    cfg = model.encoder.config

    def build(folder: Path) -> dict[str, Any]:
        pixels = clip_probes(PROBES, model.mean, model.std)
        encoder = export_pixel_component(model.encoder, pixels, ("pooled", "tokens"), folder, "encoder", options, log,
                                         mean=model.mean, std=model.std, layout="NTCHW")
        with torch.inference_mode():
            states = model.encoder(torch.from_numpy(pixels))[0].numpy()
        actions = (
            np.random.default_rng(99).uniform(-model.action_bound, model.action_bound, (PROBES, 2)).astype(np.float32)
        )
        predictor = export_component(
            model.predictor, {"state": states, "action": actions}, ("next_state",), folder, "predictor", options, log
        )
        # world states for the controllable subspace: encoded clips of random-policy trajectories
        data = world.generate_trajectories(2024, 64, steps=8)
        frames = data.frames().astype(np.float32) / 255.0  # (64, 9, 64, 64, 3)
        frames = ((frames - np.asarray(model.mean, np.float32)) / np.asarray(model.std, np.float32)).transpose(
            0, 1, 4, 2, 3
        )
        clips = np.stack([frames[:, :-1], frames[:, 1:]], axis=2).reshape(-1, 2, 3, 64, 64)  # (512, 2, 3, 64, 64)
        with torch.inference_mode():
            world_states = model.encoder(torch.from_numpy(np.ascontiguousarray(clips)))[0].numpy()
        bound = np.full(2, model.action_bound, np.float32)
        projection, kept = controllable_subspace(model.predictor, world_states, -bound, bound)
        np.save(folder / "controllable.npy", projection)
        log(f"[planning] controllable subspace: {projection.shape[0]} dims, {kept:.1%} of action-driven variance")
        readout, readout_r2 = action_readout(model.predictor, world_states, -bound, bound)
        np.save(folder / "action_readout.npy", readout)
        log(f"[planning] action readout: ({readout.shape[0]}, {readout.shape[1]}), R^2 {readout_r2:.3f} of the action")
        surprise = calibrate_demo(model)
        log(f"[surprise] one-step mse on normal data: mean {surprise['mean']:.4f}, std {surprise['std']:.4f}")
        checkpoint = state_dict_sha256([model.encoder, model.predictor])
        preprocessing = {
            "image_size": [cfg.image_size, cfg.image_size],
            "resize": "bilinear",
            "mean": list(model.mean),
            "std": list(model.std),
            "frames_per_clip": cfg.frames,
            "tubelet": cfg.frames,
            "patch_size": cfg.patch,
        }
        # the pooled vector is a trained linear head over the whole token grid, then BatchNorm (not a mean)
        pooling = "linear_head_over_token_grid_batchnorm"
        return {
            "family": "demo",
            "checkpoint_sha256": checkpoint,
            "source": f"models.demo weights {weights.name}",
            "space_id": embedding_space_id("demo", checkpoint, preprocessing, pooling, cfg.dim),
            # one item is a clip (T, C, H, W); fewer frames are padded by repeating the first (V-JEPA 2's rule)
            "input": {"kind": "image", "layout": "NTCHW", "channels": 3, "dtype": options.pixel_dtype,
                      "clip_padding": "repeat_first",
                      **preprocessing},
            "output": {"dim": cfg.dim, "token_grid": [cfg.grid, cfg.grid], "token_dim": cfg.width, "pooling": pooling},
            "components": {"encoder": encoder, "predictor": predictor},
            "planning": {
                "controllable_projection": "controllable.npy",
                "controllable_dims": int(projection.shape[0]),
                "method": f"PCA of predictor(z, a) - predictor(z, 0) over 512 world states, {kept:.1%} of variance",
                "action_readout": "action_readout.npy",
                "action_readout_method": "ridge fit of W (predictor(z, a) - predictor(z, 0)) = a over the same states, "
                f"R^2 {readout_r2:.3f}",
            },
            "surprise": surprise,
            "predictor": {
                "state_dim": cfg.dim,
                "action_dim": model.predictor.config.action_dim,
                "action_low": [-model.action_bound] * 2,
                "action_high": [model.action_bound] * 2,
                "context_frames": cfg.frames,
                "step": "one action moves the agent one world step; next_state = predictor(state, action)",
            },
        }

    return write_entry(options, build, log)
