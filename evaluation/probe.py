"""Probe heads on the demo world: which room the agent is in, which room the ball is in, and whether they share one.

Frames of random world states (the agent anywhere it may stand, the ball anywhere) are written as a labelled
folder; `jepa-export probe` (export/probe.py) trains each head on the exported encoder's frozen features (linear
heads on the pooled vector; `same_room`, the XOR of the two rooms, also with the non-linear kinds: an MLP on the
pooled vector and an attentive probe on the token grid) and reports the exported head's held-out accuracy; then
fresh frames (another seed) are classified through POST /classify of the served app, in process, and scored
against their true labels.

Labels are read from the drawn frame: `world.render` rounds centres to whole pixels, so a ball centred at x = 31.6
is drawn exactly where one at 32.3 is; its room is that of the rounded centre (the x it is drawn at).
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
GOAL = 0.98  # the room heads' goal: the agent's room, and whether the ball is in it
# head -> (the question it answers, the probe kind); `same_room` is the kind that met the goal (docs/demo_world.md),
# the other kinds are trained on the same question for comparison
HEADS = {"room": ("room", "linear"), "ball_room": ("ball_room", "linear"), "same_room": ("same_room", "mlp"),
         "same_room_attentive": ("same_room", "attentive"), "same_room_linear": ("same_room", "linear")}


def random_scenes(seed: int, n: int) -> tuple[np.ndarray, dict[str, list[str]], np.ndarray]:
    """(n, 64, 64, 3) frames, their labels per question: `room` (the agent's), `ball_room` (the ball's) and
    `same_room` (whether they match: the XOR of the other two, which no linear probe can draw), and (n,) whether
    the ball is drawn over the inner wall's columns."""
    rng = np.random.default_rng(seed)
    agents = world.random_free_positions(rng, n, rng.integers(0, 2, n))
    balls = rng.uniform(world.BALL_LO, world.BALL_HI, (n, 2))
    ball_x = np.round(balls[:, 0])  # as drawn: columns [x - 2, x + 1]
    rooms, ball_rooms = world.room_of(np.round(agents[:, 0])), world.room_of(ball_x)
    on_wall = (ball_x - world.BALL_HALF < world.WALL_X1) & (ball_x + world.BALL_HALF - 1 >= world.WALL_X0)
    return world.render(agents, balls), {
        "room": ["left" if r == 0 else "right" for r in rooms],
        "ball_room": ["left" if r == 0 else "right" for r in ball_rooms],
        "same_room": ["same" if a == b else "other" for a, b in zip(rooms, ball_rooms, strict=True)],
    }, on_wall


def evaluate_probes(entry: Path, train: int, test: int) -> dict:
    from export.probe import ProbeOptions, labelled_folder, train_probe

    frames, labels, _ = random_scenes(TRAIN_SEED, train)
    out: dict = {"train_frames": train, "test_frames": test, "goal": GOAL, "heads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for question, names in labels.items():
            folder = Path(tmp) / question
            for i, (frame, label) in enumerate(zip(frames, names, strict=True)):
                (folder / label).mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame).save(folder / label / f"{i:05d}.png")
        for head, (question, kind) in HEADS.items():
            record = train_probe(ProbeOptions(entry=entry, name=head, kind=kind), labelled_folder(Path(tmp) / question),
                                 f"{train} random demo scenes (seed {TRAIN_SEED})", log=lambda _: None)
            out["heads"][head] = {"question": question, "kind": kind, "features": record["features"],
                                  "labels": record["labels"], "held_out_accuracy": record["held_out_accuracy"]}
            print("probe", head, out["heads"][head], flush=True)
    served, out["test_ball_on_wall"] = served_accuracy(entry.parent, test)
    for head, figures in served.items():
        out["heads"][head].update(figures)
        print("probe", head, out["heads"][head], flush=True)
    return out


def served_accuracy(repository: Path, n: int) -> tuple[dict[str, dict[str, float]], float]:
    """Fresh scenes through POST /classify of the served app (in process): per head, the accuracy and the share of
    its errors made on scenes with the ball drawn over the inner wall; and the share of such scenes."""
    from fastapi.testclient import TestClient

    from evaluation.episodes import wait_until_ready
    from service.app import create_app
    from service.settings import Settings

    frames, labels, on_wall = random_scenes(TEST_SEED, n)
    images = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        images.append({"image": base64.b64encode(buffer.getvalue()).decode()})
    settings = Settings(model_repository=repository, data_dir=repository / "data", intra_op_threads=1)
    out = {}
    with TestClient(create_app(settings.config)) as client:
        wait_until_ready(client)
        for head, (question, _) in HEADS.items():
            predicted = []
            for start in range(0, n, 64):
                response = client.post("/classify", json={"head": head, "top_k": 1, "inputs": images[start:start + 64]})
                response.raise_for_status()
                predicted += [row[0]["label"] for row in response.json()["labels"]]
            wrong = np.asarray(predicted) != np.asarray(labels[question])
            out[head] = {"served_accuracy": float(1 - wrong.mean()),
                         "served_errors_ball_on_wall": float(on_wall[wrong].mean()) if wrong.any() else 0.0}
    return out, float(on_wall.mean())
