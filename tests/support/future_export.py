"""The tiny V-JEPA 2 checkpoint with its mask predictor (tests/jepa_checkpoints.py), exported once per session with
a surprise calibration on three normal videos: entry `vj` (6-frame clips, 2 future tubelet steps). Shared by
tests/service/test_surprise_future.py and test_world_inputs.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def drifting_frames(seed: int, n: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8: a smooth random image moving two pixels per frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    return np.stack([np.roll(base, 2 * t, axis=1) for t in range(n)])


def export_tiny_future(root: Path) -> Path:
    """-> the repository holding `vj`."""
    from export.cli import main
    from tests.jepa_checkpoints import tiny_vjepa2_folder
    from tests.video_files import write_video

    tiny_vjepa2_folder(root / "hf", seed=2)
    normal = root / "normal"
    normal.mkdir()
    for seed in range(3):
        (normal / f"{seed}.mp4").write_bytes(write_video(list(drifting_frames(seed, 12))))
    assert main(["vjepa2", str(root / "hf"), "--name", "vj", "--out", str(root / "repo"), "--frames", "6",
                 "--future-steps", "2", "--no-fp16", "--surprise-videos", str(normal)]) == 0
    return root / "repo"
