"""A procedural two-room world rendered with numpy (64x64 RGB), deterministic from a seed.

- An agent (5x5 red square) moves by clipped 2-D actions in [-1, 1]^2, at most
  AGENT_SPEED pixels per axis per step. It cannot pass the wall between the
  two rooms except through the door (a 12-px gap).
- A passive ball (4x4 blue square) bounces off the outer walls at BALL_SPEED
  pixels per step. It ignores the agent and the inner wall (it flies over it),
  so its velocity can only be read from two frames.
- The two room floors have slightly different tints so that one frame tells
  the rooms apart.

Positions are float (x, y) pixel centres; frames round them. Everything the
world does is a pure function of its inputs and a numpy Generator, so a seed
reproduces a dataset exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64
BORDER = 2  # outer wall thickness
WALL_X0, WALL_X1 = 30, 34  # inner wall columns [x0, x1)
DOOR_Y0, DOOR_Y1 = 26, 38  # door rows [y0, y1)
AGENT_HALF = 2  # agent covers [c - 2, c + 2]: 5 px
BALL_HALF = 2  # ball covers [c - 2, c + 1]: 4 px
AGENT_SPEED = 3.0
BALL_SPEED = 2.5
ACTION_BOUND = 1.0

FLOOR_LEFT = np.array([0.82, 0.80, 0.74], np.float32)
FLOOR_RIGHT = np.array([0.74, 0.80, 0.84], np.float32)
WALL = np.array([0.20, 0.20, 0.22], np.float32)
AGENT = np.array([0.90, 0.12, 0.10], np.float32)
BALL = np.array([0.10, 0.35, 0.95], np.float32)

# Where an agent centre may be (the walls are never entered).
AGENT_LO = BORDER + AGENT_HALF
AGENT_HI = SIZE - BORDER - AGENT_HALF - 1
BALL_LO = BORDER + BALL_HALF
BALL_HI = SIZE - BORDER - BALL_HALF


def _background() -> np.ndarray:
    image = np.empty((SIZE, SIZE, 3), np.float32)
    image[:, :WALL_X0] = FLOOR_LEFT
    image[:, WALL_X0:] = FLOOR_RIGHT
    image[:, WALL_X0:WALL_X1] = WALL
    image[DOOR_Y0:DOOR_Y1, WALL_X0:WALL_X1] = (FLOOR_LEFT + FLOOR_RIGHT) / 2
    image[:BORDER], image[-BORDER:], image[:, :BORDER], image[:, -BORDER:] = WALL, WALL, WALL, WALL
    return image


BACKGROUND = _background()
BACKGROUND_U8 = (BACKGROUND * 255 + 0.5).astype(np.uint8)
AGENT_U8 = (AGENT * 255 + 0.5).astype(np.uint8)
BALL_U8 = (BALL * 255 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class WorldState:
    agent: np.ndarray  # (2,) x, y
    ball: np.ndarray  # (2,) x, y
    ball_velocity: np.ndarray  # (2,) pixels per step


def room_of(x: np.ndarray | float) -> np.ndarray:
    """0 = left room, 1 = right room (by the agent centre's x)."""
    return (np.asarray(x) >= (WALL_X0 + WALL_X1) / 2).astype(np.int64)


def blocked(agent: np.ndarray) -> np.ndarray:
    """(..., 2) agent centres -> whether the 5x5 body overlaps the inner wall outside the door."""
    x, y = np.round(agent[..., 0]), np.round(agent[..., 1])
    overlaps_wall = (x + AGENT_HALF >= WALL_X0) & (x - AGENT_HALF < WALL_X1)
    inside_door = (y - AGENT_HALF >= DOOR_Y0) & (y + AGENT_HALF < DOOR_Y1)
    return overlaps_wall & ~inside_door


def move_agent(agent: np.ndarray, action: np.ndarray) -> np.ndarray:
    """(N, 2) positions, (N, 2) actions -> next positions. One axis at a time; a blocked axis does not move."""
    step = np.clip(action, -ACTION_BOUND, ACTION_BOUND) * AGENT_SPEED
    out = agent.astype(np.float64).copy()
    for axis in (0, 1):
        trial = out.copy()
        trial[:, axis] = np.clip(trial[:, axis] + step[:, axis], AGENT_LO, AGENT_HI)
        ok = ~blocked(trial)
        out[ok] = trial[ok]
    return out


def move_ball(ball: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elastic bounce off the outer walls. (N, 2), (N, 2) -> next (N, 2), (N, 2)."""
    pos = ball + velocity
    vel = velocity.copy()
    low, high = pos < BALL_LO, pos > BALL_HI
    pos = np.where(low, 2 * BALL_LO - pos, pos)
    pos = np.where(high, 2 * BALL_HI - pos, pos)
    vel = np.where(low | high, -vel, vel)
    return pos, vel


def render(agent: np.ndarray, ball: np.ndarray, ball_visible: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) agent and ball centres -> (N, 64, 64, 3) uint8 frames; `ball_visible` (N,) hides the ball where False.

    A per-frame loop of two slice assignments is ~50x faster than boolean masks
    over the whole batch (training renders hundreds of frames per step).
    """
    agent = np.round(np.asarray(agent, np.float64)).astype(np.int64)
    ball = np.round(np.asarray(ball, np.float64)).astype(np.int64)
    visible = np.ones(len(agent), bool) if ball_visible is None else np.asarray(ball_visible, bool)
    frames = np.broadcast_to(BACKGROUND_U8, (len(agent), SIZE, SIZE, 3)).copy()
    for frame, (ax, ay), (bx, by), shown in zip(frames, agent.tolist(), ball.tolist(), visible.tolist(), strict=True):
        if shown:
            frame[by - BALL_HALF:by + BALL_HALF, bx - BALL_HALF:bx + BALL_HALF] = BALL_U8
        frame[ay - AGENT_HALF:ay + AGENT_HALF + 1, ax - AGENT_HALF:ax + AGENT_HALF + 1] = AGENT_U8  # over the ball
    return frames


def random_free_positions(rng: np.random.Generator, n: int, room: np.ndarray | None = None) -> np.ndarray:
    """(n, 2) agent centres not inside the wall; in the given room per row (0/1) when `room` is set."""
    out = np.empty((n, 2))
    for i in range(n):
        while True:
            p = rng.uniform(AGENT_LO, AGENT_HI, 2)
            if blocked(p[None])[0]:
                continue
            if room is not None and room_of(p[0]) != room[i]:
                continue
            out[i] = p
            break
    return out


def random_state(rng: np.random.Generator) -> WorldState:
    angle = rng.uniform(0, 2 * np.pi)
    return WorldState(
        agent=random_free_positions(rng, 1)[0],
        ball=rng.uniform(BALL_LO, BALL_HI, 2),
        ball_velocity=BALL_SPEED * np.array([np.cos(angle), np.sin(angle)]),
    )


def step(state: WorldState, action: np.ndarray) -> WorldState:
    agent = move_agent(state.agent[None], np.asarray(action, np.float64)[None])[0]
    ball, vel = move_ball(state.ball[None], state.ball_velocity[None])
    return WorldState(agent=agent, ball=ball[0], ball_velocity=vel[0])


# -- random-policy trajectories ----------------------------------------------------------------

DOOR_LEFT = np.array([WALL_X0 - AGENT_HALF - 3.0, (DOOR_Y0 + DOOR_Y1 - 1) / 2])
DOOR_RIGHT = np.array([WALL_X1 + AGENT_HALF + 2.0, (DOOR_Y0 + DOOR_Y1 - 1) / 2])


@dataclass(frozen=True)
class Trajectories:
    """N trajectories of T steps: T + 1 positions, T actions."""

    agent: np.ndarray  # (N, T + 1, 2)
    ball: np.ndarray  # (N, T + 1, 2)
    actions: np.ndarray  # (N, T, 2) float32 in [-1, 1]
    ball_visible: np.ndarray | None = None  # (N, T + 1) bool; None = always visible (only violations hide it)

    def frames(self, index: int | slice | np.ndarray = slice(None)) -> np.ndarray:
        """Rendered frames (n, T + 1, 64, 64, 3) uint8 of the selected trajectories."""
        agent, ball = self.agent[index], self.ball[index]
        shape = agent.shape[:-1]
        visible = None if self.ball_visible is None else self.ball_visible[index].reshape(-1)
        return render(agent.reshape(-1, 2), ball.reshape(-1, 2), visible).reshape(*shape, SIZE, SIZE, 3)

    def crosses_door(self) -> np.ndarray:
        rooms = room_of(self.agent[..., 0])
        return rooms.min(axis=1) != rooms.max(axis=1)


def _door_waypoints(start: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Near door, far door side, then a random point in the other room."""
    if room_of(start[0]) == 0:
        near, far, other = DOOR_LEFT, DOOR_RIGHT, 1
    else:
        near, far, other = DOOR_RIGHT, DOOR_LEFT, 0
    jitter = np.array([0.0, rng.uniform(-2.5, 2.5)])
    return [near + jitter, far + jitter, random_free_positions(rng, 1, np.array([other]))[0]]


def generate_trajectories(seed: int, n: int, steps: int = 32, door_fraction: float = 0.5) -> Trajectories:
    """Random-policy trajectories; a `door_fraction` of them head for the door (with noise) so many cross it.

    The other trajectories follow smooth random actions (AR(1) noise). Noise is
    added to the door-seeking actions too, so actions cover the whole box.
    """
    rng = np.random.default_rng(seed)
    agent = np.empty((n, steps + 1, 2))
    ball = np.empty((n, steps + 1, 2))
    actions = np.empty((n, steps, 2), np.float32)
    for i in range(n):
        state = random_state(rng)
        seek = rng.random() < door_fraction
        waypoints = _door_waypoints(state.agent, rng) if seek else []
        smooth = rng.uniform(-1, 1, 2)
        agent[i, 0], ball[i, 0] = state.agent, state.ball
        for t in range(steps):
            smooth = np.clip(0.8 * smooth + 0.6 * rng.standard_normal(2), -1, 1)
            if waypoints:
                if np.abs(waypoints[0] - state.agent).max() < 2.0:
                    waypoints.pop(0)
            if waypoints:
                action = np.clip((waypoints[0] - state.agent) / AGENT_SPEED + 0.35 * rng.standard_normal(2), -1, 1)
            else:
                action = smooth
            actions[i, t] = action
            state = step(state, action)
            agent[i, t + 1], ball[i, t + 1] = state.agent, state.ball
    return Trajectories(agent=agent, ball=ball, actions=actions)


# -- physics violations (off by default: only generate_violations makes them) ---------------------------------

VIOLATIONS = ("ball_teleport", "agent_teleport", "pass_through", "vanish")
TELEPORT_MIN_PX = 16.0  # a teleport lands at least this far from where the object would have been


@dataclass(frozen=True)
class ViolationSet:
    """Pairs of trajectories from the same start under the same actions: `clean` obeys the world's physics,
    `violated` breaks it once at frame `onset[i]` (and stays broken: a vanished ball stays away, a teleported
    object carries on from where it landed). Frames before the onset are identical in both."""

    kind: str
    clean: Trajectories
    violated: Trajectories
    onset: np.ndarray  # (N,) index of the first violating frame


def generate_violations(seed: int, n: int, kind: str, steps: int = 24,
                        onset_range: tuple[int, int] = (6, 18)) -> ViolationSet:
    """Seeded violation pairs of one kind.

    - `ball_teleport` / `agent_teleport`: at the onset the object jumps to a random place at least
      TELEPORT_MIN_PX away (the ball keeps its velocity).
    - `pass_through`: the agent walks at a point of the inner wall away from the door; in `clean` the wall stops
      it, in `violated` it walks through (the ball already flies over the inner wall in this world, so the wall
      only constrains the agent). The onset is the first frame with the agent inside the wall.
    - `vanish`: the ball is not drawn from the onset on.
    Policies other than `pass_through` are the smooth random actions of generate_trajectories.
    """
    if kind not in VIOLATIONS:
        raise ValueError(f"unknown violation {kind!r}; one of {VIOLATIONS}")
    rng = np.random.default_rng([seed, VIOLATIONS.index(kind)])
    shape = (n, steps + 1, 2)
    clean_agent, clean_ball, bad_agent, bad_ball = (np.empty(shape) for _ in range(4))
    actions = np.empty((n, steps, 2), np.float32)
    visible = np.ones((n, steps + 1), bool)
    onset = np.full(n, -1, np.int64)
    for i in range(n):
        state = random_state(rng)
        if kind == "pass_through":
            state = _facing_the_wall(state, rng)
        push = 1.0 if room_of(state.agent[0]) == 0 else -1.0
        clean, bad = state, state
        planned = int(rng.integers(*onset_range))
        smooth = rng.uniform(-1, 1, 2)
        clean_agent[i, 0], clean_ball[i, 0], bad_agent[i, 0], bad_ball[i, 0] = (
            state.agent, state.ball, state.agent, state.ball)
        for t in range(steps):
            if kind == "pass_through":
                action = np.clip([push * rng.uniform(0.6, 1.0), 0.15 * rng.standard_normal()], -1, 1)
            else:
                smooth = np.clip(0.8 * smooth + 0.6 * rng.standard_normal(2), -1, 1)
                action = smooth
            actions[i, t] = action
            clean = step(clean, action)
            if kind == "pass_through":
                bad = _walk_through(bad, action)
                if onset[i] < 0 and blocked(bad.agent[None])[0]:
                    onset[i] = t + 1
            else:
                bad = step(bad, action)
                if t + 1 == planned:
                    onset[i] = planned
                    bad = _break(bad, kind, rng)
            if kind == "vanish" and onset[i] >= 0:
                visible[i, t + 1] = False
            clean_agent[i, t + 1], clean_ball[i, t + 1] = clean.agent, clean.ball
            bad_agent[i, t + 1], bad_ball[i, t + 1] = bad.agent, bad.ball
    acts = actions.copy()
    return ViolationSet(
        kind=kind,
        clean=Trajectories(agent=clean_agent, ball=clean_ball, actions=acts),
        violated=Trajectories(agent=bad_agent, ball=bad_ball, actions=acts,
                              ball_visible=visible if kind == "vanish" else None),
        onset=onset,
    )


def _facing_the_wall(state: WorldState, rng: np.random.Generator) -> WorldState:
    """The agent 8-20 px from the inner wall (a few steps of walking), at a height where the wall is solid."""
    side = int(rng.integers(2))
    y = rng.uniform(AGENT_LO + 1, DOOR_Y0 - AGENT_HALF - 3) if rng.random() < 0.5 else rng.uniform(
        DOOR_Y1 + AGENT_HALF + 2, AGENT_HI - 1)
    x = WALL_X0 - AGENT_HALF - rng.uniform(8, 20) if side == 0 else WALL_X1 + AGENT_HALF + rng.uniform(8, 20)
    return WorldState(agent=np.array([x, y]), ball=state.ball, ball_velocity=state.ball_velocity)


def _walk_through(state: WorldState, action: np.ndarray) -> WorldState:
    """A step in which the inner wall does not stop the agent (the outer walls still do)."""
    step_px = np.clip(np.asarray(action, np.float64), -ACTION_BOUND, ACTION_BOUND) * AGENT_SPEED
    agent = np.clip(state.agent + step_px, AGENT_LO, AGENT_HI)
    ball, vel = move_ball(state.ball[None], state.ball_velocity[None])
    return WorldState(agent=agent, ball=ball[0], ball_velocity=vel[0])


def _break(state: WorldState, kind: str, rng: np.random.Generator) -> WorldState:
    if kind == "ball_teleport":
        while True:
            ball = rng.uniform(BALL_LO, BALL_HI, 2)
            if np.linalg.norm(ball - state.ball) >= TELEPORT_MIN_PX:
                return WorldState(agent=state.agent, ball=ball, ball_velocity=state.ball_velocity)
    if kind == "agent_teleport":
        while True:
            agent = random_free_positions(rng, 1)[0]
            if np.linalg.norm(agent - state.agent) >= TELEPORT_MIN_PX:
                return WorldState(agent=agent, ball=state.ball, ball_velocity=state.ball_velocity)
    return state  # vanish: the physics go on; only the drawing changes
