"""The procedural demo world: determinism, walls and door, ball physics, rendering, dataset."""

import numpy as np
import pytest

from models.demo import world


def test_same_seed_same_dataset_other_seed_differs():
    a, b, c = (world.generate_trajectories(s, 6, steps=10) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.agent, b.agent)
    np.testing.assert_array_equal(a.frames(), b.frames())
    assert not np.array_equal(a.agent, c.agent)


def test_dataset_shapes_and_action_bounds():
    data = world.generate_trajectories(0, 5, steps=12)
    assert data.agent.shape == data.ball.shape == (5, 13, 2)
    assert data.actions.shape == (5, 12, 2) and data.actions.dtype == np.float32
    assert np.abs(data.actions).max() <= 1.0
    assert data.frames().shape == (5, 13, 64, 64, 3) and data.frames().dtype == np.uint8
    steps = np.abs(np.diff(data.agent, axis=1))
    assert steps.max() <= world.AGENT_SPEED + 1e-9


def test_the_wall_blocks_except_at_the_door():
    left = np.array([[24.0, 10.0]])
    pushed = left
    for _ in range(10):
        pushed = world.move_agent(pushed, np.array([[1.0, 0.0]]))
    assert world.room_of(pushed[0, 0]) == 0  # stopped by the wall
    at_door = np.array([[24.0, 31.5]])
    for _ in range(10):
        at_door = world.move_agent(at_door, np.array([[1.0, 0.0]]))
    assert world.room_of(at_door[0, 0]) == 1  # through the door


def test_agent_never_enters_walls_along_random_trajectories():
    data = world.generate_trajectories(1, 40, steps=32)
    assert not world.blocked(data.agent).any()
    assert data.agent.min() >= world.AGENT_LO and data.agent.max() <= world.AGENT_HI


def test_biased_policy_crosses_the_door_often():
    data = world.generate_trajectories(2, 200, steps=32, door_fraction=0.5)
    assert data.crosses_door().mean() > 0.3
    none = world.generate_trajectories(2, 200, steps=32, door_fraction=0.0)
    assert data.crosses_door().mean() > 2 * none.crosses_door().mean()


def test_ball_bounces_and_keeps_its_speed():
    pos, vel = np.array([[5.0, 30.0]]), np.array([[-2.5, 0.0]])
    pos, vel = world.move_ball(pos, vel)
    assert vel[0, 0] == 2.5 and pos[0, 0] >= world.BALL_LO
    speeds = np.linalg.norm(np.diff(world.generate_trajectories(5, 10).ball, axis=1), axis=-1)
    assert np.all(speeds <= world.BALL_SPEED + 1e-9)


def test_render_draws_agent_and_ball_where_they_are():
    frame = world.render(np.array([[10.0, 50.0]]), np.array([[50.0, 10.0]]))[0]
    assert tuple(frame[50, 10]) == tuple(world.AGENT_U8)
    assert tuple(frame[10, 50]) == tuple(world.BALL_U8)
    assert tuple(frame[30, 20]) == tuple(world.BACKGROUND_U8[30, 20])
    assert tuple(frame[10, 31]) == tuple(world.BACKGROUND_U8[10, 31])  # wall
    assert (frame != world.BACKGROUND_U8).any(axis=-1).sum() == 25 + 16


@pytest.mark.parametrize("kind", world.VIOLATIONS)
def test_violations_are_seeded_and_break_physics_only_from_the_onset(kind):
    a, b = world.generate_violations(7, 6, kind, steps=20), world.generate_violations(7, 6, kind, steps=20)
    np.testing.assert_array_equal(a.violated.frames(), b.violated.frames())
    clean, bad = a.clean.frames(), a.violated.frames()
    assert (a.onset >= 1).all()
    for i, onset in enumerate(a.onset):
        np.testing.assert_array_equal(clean[i, :onset], bad[i, :onset])  # identical up to the onset
        assert not np.array_equal(clean[i, onset], bad[i, onset])  # and different at it
    np.testing.assert_array_equal(a.clean.actions, a.violated.actions)


def test_each_violation_breaks_its_own_rule():
    ball = world.generate_violations(1, 8, "ball_teleport")
    jumps = [np.linalg.norm(ball.violated.ball[i, o] - ball.clean.ball[i, o]) for i, o in enumerate(ball.onset)]
    assert min(jumps) >= world.TELEPORT_MIN_PX
    agent = world.generate_violations(1, 8, "agent_teleport")
    assert all(np.linalg.norm(agent.violated.agent[i, o] - agent.clean.agent[i, o]) >= world.TELEPORT_MIN_PX
               for i, o in enumerate(agent.onset))
    through = world.generate_violations(1, 8, "pass_through")
    assert not world.blocked(through.clean.agent).any()  # the wall stops the clean agent
    assert all(world.blocked(through.violated.agent[i, o][None])[0] for i, o in enumerate(through.onset))
    vanish = world.generate_violations(1, 8, "vanish")
    frames = vanish.violated.frames()
    blue = (frames == world.BALL_U8).all(-1).any((-1, -2))  # (N, T + 1): is any ball pixel drawn
    for i, o in enumerate(vanish.onset):
        assert blue[i, :o].all() and not blue[i, o:].any()


def test_violations_are_off_by_default():
    data = world.generate_trajectories(3, 4, steps=8)
    assert data.ball_visible is None
    with pytest.raises(ValueError, match="unknown violation"):
        world.generate_violations(0, 1, "levitation")
