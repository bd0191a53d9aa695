"""Planning episodes in the demo world, through POST /plan of the served app (model predictive control)."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
from PIL import Image

from models.demo import world


def png_b64(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def plan_episodes(client, episodes: int, kind: str, steps: int, plan_args: dict, execute: int, seed: int):
    """MPC with POST /plan: replan every `execute` steps.

    -> (successes, random-action successes, final distances, ms per plan, one path, the cost space /plan used).
    """
    rng = np.random.default_rng(seed)
    ok, dists, times, example, subspace = 0, [], [], None, None
    random_ok = 0
    for ep in range(episodes):
        state = world.random_state(rng)
        room = world.room_of(state.agent[0])
        goal_room = room if kind == "same_room" else 1 - room
        while True:
            goal_agent = world.random_free_positions(rng, 1, np.array([goal_room]))[0]
            if np.abs(goal_agent - state.agent).max() > 8:
                break
        goal_frame = world.render(goal_agent[None], rng.uniform(world.BALL_LO, world.BALL_HI, (1, 2)))[0]
        goal_b64 = png_b64(goal_frame)
        prev = world.render(state.agent[None], state.ball[None])[0]
        path = [state.agent.copy()]
        t = 0
        while t < steps:
            frame = world.render(state.agent[None], state.ball[None])[0]
            body = {"observation": [{"image": png_b64(prev)}, {"image": png_b64(frame)}], "goal": {"image": goal_b64},
                    "seed": ep * 1000 + t, **plan_args}
            started = time.perf_counter()
            response = client.post("/plan", json=body)
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            subspace = response.json()["subspace"]
            for action in response.json()["actions"][:execute]:
                if t >= steps:
                    break
                prev = world.render(state.agent[None], state.ball[None])[0]
                state = world.step(state, np.asarray(action))
                path.append(state.agent.copy())
                t += 1
        dist = float(np.abs(state.agent - goal_agent).max())
        dists.append(dist)
        ok += dist <= 4.0
        # random actions from the same start, same number of steps
        rs = world.WorldState(agent=path[0], ball=state.ball, ball_velocity=state.ball_velocity)
        for _ in range(steps):
            rs = world.step(rs, rng.uniform(-1, 1, 2))
        random_ok += float(np.abs(rs.agent - goal_agent).max()) <= 4.0
        if example is None or (dist <= 4.0 and kind != "same_room" and example[3] > 4.0):
            example = (np.array(path), goal_agent, goal_frame, dist)
    return ok, random_ok, dists, times, example, subspace


def wait_until_ready(client, timeout_s: float = 600.0) -> None:
    """The app warms every batch size before /readyz turns ready (and /plan answers 503 until then)."""
    deadline = time.perf_counter() + timeout_s
    while client.get("/readyz").status_code != 200:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the served app was not ready after {timeout_s:.0f} s: {client.get('/readyz').text}")
        time.sleep(0.5)
