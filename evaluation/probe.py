"""Probe heads on the demo world: which room the agent is in, which room the ball is in, and whether they share one.

Frames of random world states (the agent anywhere it may stand, the ball anywhere) are written as a labelled
folder; `jepa-export probe` (export/probe.py) trains a linear head on the exported encoder's frozen pooled
features and reports its held-out accuracy; then fresh frames (another seed) are classified through POST
/classify of the served app, in process, and scored against their true labels.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from models.demo import world

TRAIN_SEED, TEST_SEED = 6060, 6161
GOAL = 0.98  # the room head's goal


def random_scenes(seed: int, n: int) -> tuple[np.ndarray, dict[str, list[str]]]:
    """(n, 64, 64, 3) frames and their labels per head: `room` (the agent's), `ball_room` (the ball's) and
    `same_room` (whether they match: the XOR of the other two, which no linear probe can draw)."""
    rng = np.random.default_rng(seed)
    agents = world.random_free_positions(rng, n, rng.integers(0, 2, n))
    balls = rng.uniform(world.BALL_LO, world.BALL_HI, (n, 2))
    rooms, ball_rooms = world.room_of(agents[:, 0]), world.room_of(balls[:, 0])
    return world.render(agents, balls), {
        "room": ["left" if r == 0 else "right" for r in rooms],
        "ball_room": ["left" if r == 0 else "right" for r in ball_rooms],
        "same_room": ["same" if a == b else "other" for a, b in zip(rooms, ball_rooms, strict=True)],
    }


def evaluate_probes(entry: Path, train: int, test: int) -> dict:
    from export.probe import ProbeOptions, labelled_folder, train_probe

    frames, labels = random_scenes(TRAIN_SEED, train)
    out: dict = {"train_frames": train, "test_frames": test, "goal": GOAL, "heads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for head, names in labels.items():
            folder = Path(tmp) / head
            for i, (frame, label) in enumerate(zip(frames, names, strict=True)):
                (folder / label).mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame).save(folder / label / f"{i:05d}.png")
            record = train_probe(ProbeOptions(entry=entry, name=head), labelled_folder(folder),
                                 f"{train} random demo scenes (seed {TRAIN_SEED})", log=lambda _: None)
            out["heads"][head] = {"labels": record["labels"], "held_out_accuracy": record["held_out_accuracy"]}
    served = served_accuracy(entry.parent, test)
    for head, accuracy in served.items():
        out["heads"][head]["served_accuracy"] = accuracy
        print("probe", head, out["heads"][head], flush=True)
    return out


def served_accuracy(repository: Path, n: int) -> dict[str, float]:
    """Fresh scenes through POST /classify of the served app (in process): accuracy per head."""
    from fastapi.testclient import TestClient

    from evaluation.episodes import wait_until_ready
    from service.app import create_app
    from service.settings import Settings

    frames, labels = random_scenes(TEST_SEED, n)
    images = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        images.append({"image": base64.b64encode(buffer.getvalue()).decode()})
    settings = Settings(model_repository=repository, data_dir=repository / "data", intra_op_threads=1)
    correct = {head: 0 for head in labels}
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        for head in labels:
            for start in range(0, n, 64):
                response = client.post("/classify", json={"head": head, "top_k": 1, "inputs": images[start:start + 64]})
                response.raise_for_status()
                predicted = [row[0]["label"] for row in response.json()["labels"]]
                correct[head] += sum(p == t for p, t in zip(predicted, labels[head][start:start + 64], strict=True))
    return {head: correct[head] / n for head in labels}
