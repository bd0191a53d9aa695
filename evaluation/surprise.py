"""Surprise on the demo world: does the served predictor's error single out the steps that break physics?

For each violation kind of models/demo/world.py, held-out pairs of trajectories (the same start and actions, one
obeying physics and one breaking it once) are encoded by the exported ONNX encoder, each state is predicted from
the one before by the exported ONNX predictor, and the error is z-scored with the manifest's calibration: the
same arithmetic as POST /surprise (tests/service/test_surprise_api.py checks that equality). Positives are the
onset steps of the violated trajectories; negatives are every step of their clean twins. The steps after an onset
are left out of both: what follows a violation (a ball carrying on from where it teleported) is neither normal
nor the violation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation.metrics import Encoder, clip_array, predictor_fn
from models.demo import world

SURPRISE_SEED = 4242  # held out: training, calibration (export/surprise.py) and the other sections use other seeds
STEPS = 24
GOALS = {"ball_teleport": 0.95, "agent_teleport": 0.95, "pass_through": 0.9, "vanish": 0.9}


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney U statistic, normalised)."""
    p, n = np.asarray(positives, np.float64)[:, None], np.asarray(negatives, np.float64)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def step_scores(trajectories: world.Trajectories, encoder: Encoder, predict, mean: float, std: float) -> np.ndarray:
    """(N, T - 1) z-scored one-step errors; column k scores frame k + 2 (its state is the clip of frames k+1, k+2,
    predicted from the clip of frames k, k+1 and the action between frames k+1 and k+2)."""
    clips = clip_array(trajectories.frames())  # (N, T, 2, 3, 64, 64)
    n, t = clips.shape[:2]
    z = encoder(clips.reshape(-1, *clips.shape[2:])).reshape(n, t, -1)
    actions = trajectories.actions[:, 1:]
    flat = predict(z[:, :-1].reshape(-1, z.shape[-1]), actions.reshape(-1, actions.shape[-1]))
    predicted = flat.reshape(n, t - 1, -1)
    return (((predicted - z[:, 1:]) ** 2).mean(-1) - mean) / std


def evaluate_surprise(entry: Path, trajectories: int, figure: Path) -> dict:
    manifest = json.loads((entry / "manifest.json").read_text())
    spec = manifest["surprise"]
    encoder, predict = Encoder(onnx_path=entry / "encoder.onnx"), predictor_fn(onnx_path=entry / "predictor.onnx")
    out: dict = {"trajectories_per_kind": trajectories, "steps": STEPS, "seed": SURPRISE_SEED,
                 "threshold": spec["threshold"], "calibration": spec, "kinds": {}}
    examples = {}
    for kind in world.VIOLATIONS:
        pairs = world.generate_violations(SURPRISE_SEED, trajectories, kind, steps=STEPS)
        clean = step_scores(pairs.clean, encoder, predict, spec["mean"], spec["std"])
        violated = step_scores(pairs.violated, encoder, predict, spec["mean"], spec["std"])
        keep = pairs.onset >= 2  # the onset needs a clean state before it to be predicted from
        columns = pairs.onset[keep] - 2
        positives = violated[keep, columns]
        negatives = np.concatenate([clean[i, :] for i in np.flatnonzero(keep)])
        out["kinds"][kind] = {
            "auroc": auroc(positives, negatives), "goal": GOALS[kind], "positives": int(positives.size),
            "negatives": int(negatives.size),
            "onsets_over_threshold": float((positives > spec["threshold"]).mean()),
            "normal_steps_over_threshold": float((negatives > spec["threshold"]).mean()),
            "median_onset_score": float(np.median(positives)), "median_normal_score": float(np.median(negatives)),
        }
        i = int(np.flatnonzero(pairs.onset >= 6)[0]) if (pairs.onset >= 6).any() else int(np.flatnonzero(keep)[0])
        examples[kind] = (violated[i], clean[i], int(pairs.onset[i]))
        print("surprise", kind, out["kinds"][kind], flush=True)
    surprise_figure(examples, spec["threshold"], figure)
    return out


def surprise_figure(examples: dict, threshold: float, path: Path) -> None:
    """One trajectory per kind: the score of every frame, violated and clean twin, the onset marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(examples), figsize=(4 * len(examples), 3), sharey=True)
    for ax, (kind, (violated, clean, onset)) in zip(axes, examples.items(), strict=True):
        frames = np.arange(2, 2 + len(violated))
        ax.plot(frames, clean, color="0.6", label="clean twin")
        ax.plot(frames, violated, color="C3", label="violated")
        ax.axvline(onset, color="C0", linestyle="--", label="violation")
        ax.axhline(threshold, color="k", linewidth=0.8, linestyle=":", label=f"threshold {threshold:g}")
        ax.set_title(kind.replace("_", " "))
        ax.set_xlabel("frame")
    axes[0].set_ylabel("surprise (z-score)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
