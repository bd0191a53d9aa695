"""Export the trained demo model (clip encoder + action-conditioned predictor) into a repository entry.

The weights come from the committed safetensors file (models/demo/weights/),
written by `make demo-train`; `--weights` exports any other checkpoint of the
same architecture.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.manifest import embedding_space_id, staged_entry, state_dict_sha256, tool_versions, write_manifest
from export.onnx_graph import convert_fp16, export_onnx, external_data_file
from export.parity import check_parity
from export.planning import action_readout, controllable_subspace
from export.surprise import calibrate_demo
from models.demo import DEFAULT_WEIGHTS, DemoModel, load_demo_model
from models.demo import world

FP32_GATE = 0.99999
FP16_GATE = 0.999
PROBES = 16


class ParityError(RuntimeError):
    """The exported fp32 graph does not reproduce the PyTorch model."""


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    name: str = "demo"
    out: Path = Path("model_repository")
    weights: Path = DEFAULT_WEIGHTS
    fp32_gate: float = FP32_GATE
    fp16_gate: float = FP16_GATE
    fp16: bool = True
    # ONNX Runtime's transformer fusions (export/fusion.py) in place of the traced graphs, behind a parity gate
    fuse: bool = False
    force: bool = False


def image_probes(n: int, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Half white noise, half smooth colour gradients; normalised like served images. (n, 3, size, size)"""
    rng = np.random.default_rng(1234)
    noise = rng.random((n - n // 2, 3, size, size))
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    phases = rng.random((n // 2, 3, 2)) * 2 * np.pi
    smooth = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(phases[..., :1, None]) + yy) + phases[..., 1:, None])
    pixels = np.concatenate([noise, smooth.reshape(n // 2, 3, size, size)])
    m = np.asarray(mean).reshape(1, 3, 1, 1)
    s = np.asarray(std).reshape(1, 3, 1, 1)
    return ((pixels - m) / s).astype(np.float32)


def clip_probes(n: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Half real world clips (two consecutive frames), half synthetic images repeated into a clip. (n, 2, 3, 64, 64)"""
    data = world.generate_trajectories(4321, n - n // 2, steps=2)
    frames = data.frames()[:, 1:].astype(np.float32) / 255.0  # (k, 2, 64, 64, 3)
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    real = ((frames - m) / s).transpose(0, 1, 4, 2, 3)  # (k, 2, 3, 64, 64)
    synthetic = image_probes(n // 2, world.SIZE, mean, std)[:, None].repeat(2, axis=1)  # (n/2, 2, 3, 64, 64)
    return np.ascontiguousarray(np.concatenate([real, synthetic]).astype(np.float32))


def torch_runner(module: torch.nn.Module, output_names: tuple[str, ...]) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(v) for v in feeds.values()))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.numpy() for name, out in zip(output_names, outputs, strict=True)}

    return run


def export_component(
    module: torch.nn.Module,
    feeds: dict[str, np.ndarray],
    output_names: tuple[str, ...],
    folder: Path,
    stem: str,
    options: ExportOptions,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """fp32 graph (must pass its gate), then an fp16 copy kept only if it passes its own."""
    fp32_path = folder / f"{stem}.onnx"
    log(f"[{stem}] tracing to ONNX")
    example = tuple(torch.from_numpy(v[:2]) for v in feeds.values())
    export_onnx(module, example, fp32_path, tuple(feeds), output_names)
    reference = torch_runner(module, output_names)
    fp32 = check_parity(fp32_path, feeds, reference)
    log(f"[{stem}] fp32 parity: min cosine {fp32.min_cosine:.7f}, max |diff| {fp32.max_abs_diff:.2e}")
    if fp32.min_cosine < options.fp32_gate:
        raise ParityError(f"{stem}: fp32 ONNX min cosine {fp32.min_cosine:.7f} < gate {options.fp32_gate}")
    files = {"fp32": fp32_path.name}
    parity: dict[str, Any] = {"fp32": fp32.as_dict(), "fp32_gate": options.fp32_gate, "fp16_gate": options.fp16_gate}
    if options.fp16:
        parity["fp16"] = fp16_copy(fp32_path, feeds, reference, options.fp16_gate, stem, log)
        if parity["fp16"].get("kept"):
            files["fp16"] = f"{stem}.fp16.onnx"
    inputs = {name: [-1, *value.shape[1:]] for name, value in feeds.items()}
    return {"files": files, "inputs": inputs, "outputs": list(output_names), "parity": parity}


def fp16_copy(
    fp32_path: Path,
    feeds: dict[str, np.ndarray],
    reference: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    gate: float,
    stem: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Write `<stem>.fp16.onnx` beside the fp32 graph if it converts, runs and passes its gate; the parity
    record says which (a conversion that fails or writes an invalid graph is a failed gate, not a failed export)."""
    fp16_path = fp32_path.with_name(f"{stem}.fp16.onnx")
    try:
        convert_fp16(fp32_path, fp16_path)
        report = check_parity(fp16_path, feeds, reference)
    except Exception as exc:
        for leftover in (fp16_path, external_data_file(fp16_path)):
            leftover.unlink(missing_ok=True)
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
        log(f"[{stem}] fp16 conversion failed ({reason}): REJECTED, not written")
        return {"error": reason, "kept": False}
    kept = report.min_cosine >= gate
    if kept:
        log(f"[{stem}] fp16 parity: min cosine {report.min_cosine:.7f} >= {gate}: kept")
    else:
        fp16_path.unlink()
        log(f"[{stem}] fp16 parity: min cosine {report.min_cosine:.7f} < {gate}: REJECTED, not written")
    return {**report.as_dict(), "kept": kept}


def export_demo(options: ExportOptions, log: Callable[[str], None] = print) -> Path:
    """Write `<out>/<name>/` atomically: build in a temp folder, then rename into place."""
    model: DemoModel = load_demo_model(options.weights)
    cfg = model.encoder.config
    with staged_entry(options.out, options.name, options.force) as folder:
        pixels = clip_probes(PROBES, model.mean, model.std)
        encoder = export_component(model.encoder, {"pixel_values": pixels}, ("pooled", "tokens"), folder, "encoder", options, log)
        with torch.inference_mode():
            states = model.encoder(torch.from_numpy(pixels))[0].numpy()
        actions = np.random.default_rng(99).uniform(-model.action_bound, model.action_bound, (PROBES, 2)).astype(np.float32)
        predictor = export_component(
            model.predictor, {"state": states, "action": actions}, ("next_state",), folder, "predictor", options, log
        )
        # world states for the controllable subspace: encoded clips of random-policy trajectories
        data = world.generate_trajectories(2024, 64, steps=8)
        frames = data.frames().astype(np.float32) / 255.0  # (64, 9, 64, 64, 3)
        frames = ((frames - np.asarray(model.mean, np.float32)) / np.asarray(model.std, np.float32)).transpose(0, 1, 4, 2, 3)
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
        write_manifest(
            folder,
            {
                "name": options.name,
                "family": "demo",
                "checkpoint_sha256": checkpoint,
                "source": f"models.demo weights {options.weights.name}",
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "tools": tool_versions(),
                "space_id": embedding_space_id("demo", checkpoint, preprocessing, pooling, cfg.dim),
                # one item is a clip (T, C, H, W); fewer frames are padded by repeating the first (V-JEPA 2's rule)
                "input": {"kind": "image", "layout": "NTCHW", "channels": 3, "clip_padding": "repeat_first",
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
            },
        )
    target = options.out / options.name
    log(f"wrote {target}")
    return target
