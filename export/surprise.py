"""Calibrate a surprise score at export: what the predictor's one-step error looks like on normal data.

The distance between the predicted and the observed state only means something
against its normal spread, which differs by model; the mean and std measured
here on held-out normal trajectories (seeds never used in training) go into the
manifest, and the service reports (distance - mean) / std.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.demo import DemoModel, world

CALIBRATION_SEED = 5150  # held out: training uses other seeds (models/demo/train.py)
CALIBRATION_TRAJECTORIES = 64
CALIBRATION_STEPS = 16
DEFAULT_THRESHOLD = 3.0


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
    return {
        "metric": "mse",
        "normalization": "zscore",
        "mean": float(raw.mean()),
        "std": float(raw.std()),
        "threshold": DEFAULT_THRESHOLD,
        "calibration": f"one-step predictor error on {raw.size} steps of {CALIBRATION_TRAJECTORIES} held-out "
        f"random-policy trajectories (seed {CALIBRATION_SEED}); 99th percentile z = "
        f"{float((np.percentile(raw, 99) - raw.mean()) / raw.std()):.2f}",
    }
