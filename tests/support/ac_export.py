"""The tiny V-JEPA 2-AC checkpoint (tests/jepa_checkpoints.py) exported once per session for the service tests:
entry `ac`, calibrated for /surprise on three normal .npz trajectories, and `ac-tiny`, the same graphs without the
calibration. Exporting costs about 25 s on 2 cores, so tests/service/test_ac_world.py and test_surprise_ac.py
share one export."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from service.world.pose import pose_delta
from tests.conftest import photo

POSE = np.array([0.4, -0.1, 0.3, 0.0, 0.1, -0.2, 0.5], np.float32)
HISTORY = 2  # the predictor export's window


@dataclass(frozen=True)
class ACExport:
    checkpoint: Path  # the original .pt
    repository: Path  # entries `ac` (calibrated) and `ac-tiny` (not)
    normal: Path  # the calibration trajectories


def scene(name: str, n: int, start: int = 0) -> np.ndarray:
    """(n, 32, 32, 3) uint8: a real photo seen through a 32-pixel window that pans two pixels per frame."""
    wide = np.asarray(Image.fromarray(photo(name)).resize((96, 32), Image.Resampling.BICUBIC))
    return np.stack([wide[:, start + 2 * t:start + 2 * t + 32] for t in range(n)])


def trajectory(name: str, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames, the end-effector pose at each (moving and turning its wrist) and the actions between them (pose
    deltas as the authors' DROID loader makes them, rotation included: outside the planner's box, which keeps
    rotation at 0)."""
    step = np.array([0.01, 0.005, -0.01, 0.02, 0.0, -0.03, 0.05], np.float32)
    poses = POSE + np.arange(n, dtype=np.float32)[:, None] * step
    return scene(name, n, start), poses, pose_delta(poses[:-1], poses[1:])


def export_tiny_ac(root: Path) -> ACExport:
    from export.cli import main
    from tests.jepa_checkpoints import original_vjepa2_file

    original_vjepa2_file(root / "ac.pt")
    normal = root / "normal"
    normal.mkdir()
    for index, (name, n) in enumerate((("coffee", 6), ("chelsea", 6), ("astronaut", 12))):  # 12: past one batch
        frames, poses, actions = trajectory(name, n, start=4 * index)
        np.savez(normal / f"{name}.npz", frames=frames, poses=poses, actions=actions)
    repository = root / "repo"
    assert main(["vjepa2", str(root / "ac.pt"), "--name", "ac", "--out", str(repository), "--heads", "2",
                 "--predictor-heads", "2", "--image-size", "32", "--history", str(HISTORY), "--no-fp16",
                 "--surprise-trajectories", str(normal)]) == 0
    shutil.copytree(repository / "ac", repository / "ac-tiny")
    manifest = json.loads((repository / "ac-tiny" / "manifest.json").read_text())
    del manifest["surprise"]
    manifest["name"] = "ac-tiny"
    (repository / "ac-tiny" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return ACExport(root / "ac.pt", repository, normal)
