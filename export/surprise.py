"""Calibrate a surprise score at export: what the predictor's one-step error looks like on normal data.

The distance between the predicted and the observed state only means something
against its normal spread, which differs by model; the mean and std measured
here on held-out normal data go into the manifest, and the service reports
(distance - mean) / std. The normal data: demo trajectories of seeds never used
in training (the demo), a folder of videos (V-JEPA 2's mask predictor), a
folder of .npz trajectories with poses and actions (V-JEPA 2-AC).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract import DEFAULT_SURPRISE_THRESHOLD
from models.demo import DemoModel, world

CALIBRATION_SEED = 5150  # held out: training uses other seeds (models/demo/train.py)
CALIBRATION_TRAJECTORIES = 64
CALIBRATION_STEPS = 16


def zscore_calibration(metric: str, raw: np.ndarray, calibration: str) -> dict[str, Any]:
    """Distances on normal data -> the manifest's `surprise`: the service reports (distance - mean) / std."""
    return {
        "metric": metric,
        "normalization": "zscore",
        "mean": float(raw.mean()),
        "std": float(max(raw.std(), 1e-6)),  # a constant distance (a degenerate model) must not divide by zero
        "threshold": DEFAULT_SURPRISE_THRESHOLD,
        "calibration": calibration,
    }


def demo_clips(trajectories: world.Trajectories, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Frames -> normalised 2-frame clips (N, T, 2, 3, 64, 64); clip t = (frame t, frame t + 1)."""
    frames = trajectories.frames().astype(np.float32) / 255.0
    frames = ((frames - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(0, 1, 4, 2, 3)
    return np.ascontiguousarray(np.stack([frames[:, :-1], frames[:, 1:]], axis=2))


def one_step_mse(model: DemoModel, trajectories: world.Trajectories) -> np.ndarray:
    """(N, T - 2): mean squared difference between predictor(state of clip t, action t + 1) and the state of clip
    t + 1, on every step where both clips are real (the action after clip t moves frame t + 1 to t + 2)."""
    clips = demo_clips(trajectories, model.mean, model.std)  # (N, T, 2, 3, 64, 64)
    n, t = clips.shape[:2]
    with torch.inference_mode():
        states = model.encoder(torch.from_numpy(clips.reshape(n * t, *clips.shape[2:])))[0].reshape(n, t, -1)
        actions = torch.from_numpy(trajectories.actions[:, 1:].astype(np.float32))  # (N, T - 1, 2)
        predicted = model.predictor(states[:, :-1].reshape(-1, states.shape[-1]), actions.reshape(-1, 2))
    return ((predicted.reshape(n, t - 1, -1) - states[:, 1:]) ** 2).mean(-1).numpy()


def calibrate_demo(model: DemoModel) -> dict[str, Any]:
    data = world.generate_trajectories(CALIBRATION_SEED, CALIBRATION_TRAJECTORIES, CALIBRATION_STEPS)
    raw = one_step_mse(model, data).ravel()
    return zscore_calibration(
        "mse", raw, f"one-step predictor error on {raw.size} steps of {CALIBRATION_TRAJECTORIES} held-out "
        f"random-policy trajectories (seed {CALIBRATION_SEED}); 99th percentile z = "
        f"{float((np.percentile(raw, 99) - raw.mean()) / raw.std()):.2f}")


# -- V-JEPA 2 with its mask predictor -----------------------------------------------------------------------------

MAX_CALIBRATION_CLIPS = 256


def video_clips(folder: Path, frames: int, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Every video in `folder` cut into back-to-back clips of `frames` consecutive frames, resized (bicubic) to
    size x size and normalised: (N, 3, frames, size, size), at most MAX_CALIBRATION_CLIPS."""
    import av
    from PIL import Image

    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    clips: list[np.ndarray] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        with av.open(str(path)) as container:
            decoded = [((np.asarray(f.to_image().convert("RGB").resize((size, size), Image.Resampling.BICUBIC),
                                    np.float32) / 255.0 - m) / s) for f in container.decode(video=0)]
        for start in range(0, len(decoded) - frames + 1, frames):
            clips.append(np.stack(decoded[start:start + frames]).transpose(3, 0, 1, 2))  # (3, T, S, S)
            if len(clips) == MAX_CALIBRATION_CLIPS:
                return np.ascontiguousarray(np.stack(clips)).astype(np.float32)
    if not clips:
        raise ValueError(f"{folder}: no video with {frames} frames to calibrate the surprise score on")
    return np.ascontiguousarray(np.stack(clips)).astype(np.float32)


def future_token_l1(predicted: np.ndarray, observed: np.ndarray, future_steps: int) -> np.ndarray:
    """(N, m*P, D) predicted and observed tokens of the last m tubelet steps -> (N, m) mean |predicted -
    layer_norm(observed)| per step: V-JEPA's training loss, whose targets are the layer-normed encoder tokens."""
    centred = observed - observed.mean(-1, keepdims=True)
    target = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-6)
    n, tokens, _ = predicted.shape
    return np.abs(predicted - target).reshape(n, future_steps, tokens // future_steps, -1).mean(axis=(2, 3))


def calibrate_future(future_graph: torch.nn.Module, encoder: torch.nn.Module, clips: np.ndarray, context_frames: int,
                     future_steps: int, source: str) -> dict[str, Any]:
    """The per-step L1 of predicted vs observed future tokens on normal clips -> the manifest's `surprise`."""
    with torch.inference_mode():
        x = torch.from_numpy(clips)
        observed = encoder.tokens(x).numpy()  # (N, steps*P, D)
        predicted = future_graph(x[:, :, :context_frames])[0].numpy()  # (N, m*P, D)
    raw = future_token_l1(predicted, observed[:, -predicted.shape[1]:], future_steps).ravel()
    return zscore_calibration(
        "l1_tokens", raw, f"L1 of predicted vs observed (layer-normed) future tokens on {raw.size} tubelet steps of "
        f"{len(clips)} clips from {source}")


# -- V-JEPA 2-AC ---------------------------------------------------------------------------------------------------

MAX_CALIBRATION_STEPS = 1024
CALIBRATION_BATCH = 8  # frames per encoder call, windows per predictor call
TRAJECTORY_FORMAT = ("an .npz of frames uint8 (T, H, W, 3), poses float (T, 7): the end-effector state at each "
                     "frame, actions float (T - 1, 7): action t taken between frame t and t + 1, T >= 2")


@dataclass(frozen=True)
class Trajectory:
    frames: np.ndarray  # (T, 3, S, S) resized and normalised
    poses: np.ndarray  # (T, A)
    actions: np.ndarray  # (T - 1, A)


def npz_trajectories(folder: Path, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                     pose_dim: int) -> list[Trajectory]:
    """Every .npz file in `folder` (TRAJECTORY_FORMAT), frames resized (bicubic) to size x size and normalised, up
    to MAX_CALIBRATION_STEPS steps in all; a file of another shape is an error naming it."""
    from PIL import Image

    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    out: list[Trajectory] = []
    steps = 0
    for path in sorted(folder.glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:  # not a zip, or pickled objects
            raise ValueError(f"{path}: not a readable .npz ({exc})") from exc
        if not {"frames", "poses", "actions"} <= set(arrays):
            raise ValueError(f"{path}: expected {TRAJECTORY_FORMAT}; it holds {sorted(arrays)}")
        frames, poses, actions = arrays["frames"], arrays["poses"], arrays["actions"]
        t = len(frames)
        if (frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or t < 2
                or poses.shape != (t, pose_dim) or actions.shape != (t - 1, pose_dim)):
            raise ValueError(f"{path}: expected {TRAJECTORY_FORMAT}; got frames {frames.dtype} {list(frames.shape)}, "
                             f"poses {list(poses.shape)}, actions {list(actions.shape)}")
        pixels = np.stack([(np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC), np.float32)
                            / 255.0 - m) / s for f in frames]).transpose(0, 3, 1, 2)  # (T, 3, S, S)
        out.append(Trajectory(np.ascontiguousarray(pixels, np.float32), poses.astype(np.float32),
                              actions.astype(np.float32)))
        steps += t - 1
        if steps >= MAX_CALIBRATION_STEPS:
            break
    if not out:
        raise ValueError(f"{folder}: no .npz trajectory to calibrate the surprise score on ({TRAJECTORY_FORMAT})")
    return out


def teacher_forced_l1(encoder: torch.nn.Module, predictor: torch.nn.Module, trajectory: Trajectory, history: int,
                      tubelet: int) -> np.ndarray:
    """(T - 1,): for every frame t + 1, mean |layer_norm(predictor(frames, poses and actions s..t)) - observed| over
    its tokens, s = max(0, t - history + 1); each frame encoded alone (repeated to one tubelet) and layer-normed, as
    the authors' world model feeds and trains the predictor. Frames are encoded, and windows of equal length
    predicted, CALIBRATION_BATCH at a time (a ViT-g over a whole trajectory at once would need tens of GB)."""
    with torch.inference_mode():
        frames = torch.from_numpy(trajectory.frames)
        tokens = torch.cat([encoder.tokens(frames[i:i + CALIBRATION_BATCH, :, None].repeat(1, 1, tubelet, 1, 1))
                            for i in range(0, len(frames), CALIBRATION_BATCH)])  # clips (b, 3, tubelet, S, S) in
        per_frame = predictor.config.tokens_per_step
        tokens = torch.nn.functional.layer_norm(tokens[:, -per_frame:], (tokens.shape[-1],))  # (T, P, D)
        poses, actions = torch.from_numpy(trajectory.poses), torch.from_numpy(trajectory.actions)
        distances = np.zeros(len(actions))
        by_length: dict[int, list[int]] = {}
        for t in range(len(actions)):
            by_length.setdefault(min(t + 1, history), []).append(t)
        for w, same_length in by_length.items():
            for i in range(0, len(same_length), CALIBRATION_BATCH):
                steps = same_length[i:i + CALIBRATION_BATCH]
                context = torch.stack([tokens[t - w + 1:t + 1].flatten(0, 1) for t in steps])  # (B, w*P, D)
                acts = torch.stack([actions[t - w + 1:t + 1] for t in steps])
                states = torch.stack([poses[t - w + 1:t + 1] for t in steps])
                predicted = predictor(context, acts, states)[:, -per_frame:]
                predicted = torch.nn.functional.layer_norm(predicted, (predicted.shape[-1],))
                observed = tokens[[t + 1 for t in steps]]
                distances[steps] = (predicted.double() - observed.double()).abs().mean(dim=(1, 2)).numpy()
    return distances


def calibrate_ac(encoder: torch.nn.Module, predictor: torch.nn.Module, trajectories: list[Trajectory], history: int,
                 tubelet: int, source: str) -> dict[str, Any]:
    """The teacher-forced next-frame L1 on normal trajectories -> the manifest's `surprise`."""
    raw = np.concatenate([teacher_forced_l1(encoder, predictor, t, history, tubelet) for t in trajectories])
    return zscore_calibration(
        "l1_tokens", raw, f"L1 of the teacher-forced prediction vs the observed next frame's (layer-normed) tokens, "
        f"history {history}, on {raw.size} steps of {len(trajectories)} trajectories from {source}")
