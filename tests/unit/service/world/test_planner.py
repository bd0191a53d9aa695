"""The CEM planner on a numpy toy world model (no HTTP, no ONNX): STYLE.md habit 13."""

import asyncio

import numpy as np
import pytest

from service.world.planner import CEMConfig, plan_sequences, rollout_batch, trajectory_cost

LOW, HIGH = np.array([-1.0, -1.0], np.float32), np.array([1.0, 1.0], np.float32)


async def plan_cem(world_model, start, goal, low, high, config, projection=None):
    """CEM from the state `start` with a one-step world model, as the service's pooled rollout runs it."""
    return await plan_sequences(lambda actions: rollout_batch(world_model, start, actions), goal, low, high, config,
                                projection)


def toy_world(calls: list[int]):
    """State = (x, y, distractor...): actions move x, y; the distractor drifts by itself."""

    async def world_model(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        calls.append(states.shape[0])
        nxt = states.copy()
        nxt[:, :2] += 0.5 * actions
        nxt[:, 2:] += 0.3
        return nxt

    return world_model


def run(coro):
    return asyncio.run(coro)


def test_cem_reaches_a_reachable_goal_and_batches_all_samples():
    calls: list[int] = []
    start = np.zeros(4, np.float32)
    goal = np.array([1.5, -1.0, 0.0, 0.0], np.float32)
    projection = np.eye(4, dtype=np.float32)[:2]  # only x, y are controllable
    cfg = CEMConfig(horizon=4, samples=128, iterations=5, elites=16)
    plan = run(plan_cem(toy_world(calls), start, goal, LOW, HIGH, cfg, projection))
    assert plan.actions.shape == (4, 2) and plan.states.shape == (4, 4)
    assert (plan.actions >= LOW).all() and (plan.actions <= HIGH).all()
    assert np.abs(plan.states[-1, :2] - goal[:2]).max() < 0.15
    assert plan.cost < 0.01 and plan.iteration_costs == sorted(plan.iteration_costs, reverse=True)
    assert calls == [128] * (4 * 5)  # one world-model batch of all samples per step


def test_full_space_cost_counts_the_uncontrollable_part_and_the_subspace_ignores_it():
    start = np.zeros(4, np.float32)
    goal = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
    cfg = CEMConfig(horizon=4, samples=64, iterations=3, elites=8)
    full = run(plan_cem(toy_world([]), start, goal, LOW, HIGH, cfg))
    sub = run(plan_cem(toy_world([]), start, goal, LOW, HIGH, cfg, np.eye(4, dtype=np.float32)[:2]))
    assert full.cost > 0.5  # the drift of the distractor cannot be planned away
    assert sub.cost < 0.05


def test_plan_is_never_worse_than_doing_nothing_and_is_seeded():
    start = np.zeros(4, np.float32)
    goal = np.zeros(4, np.float32)  # staying put is optimal
    cfg = CEMConfig(horizon=3, samples=16, iterations=1, elites=4, seed=7)
    plan = run(plan_cem(toy_world([]), start, goal, LOW, HIGH, cfg, np.eye(4, dtype=np.float32)[:2]))
    stay = run(rollout_batch(toy_world([]), start, np.zeros((1, 3, 2), np.float32)))
    assert plan.cost <= trajectory_cost(stay, goal, np.eye(4, dtype=np.float32)[:2], "final")[0] + 1e-9
    again = run(plan_cem(toy_world([]), start, goal, LOW, HIGH, cfg, np.eye(4, dtype=np.float32)[:2]))
    np.testing.assert_array_equal(plan.actions, again.actions)


def test_all_steps_cost_prefers_getting_there_early():
    states = np.zeros((2, 3, 1), np.float32)
    states[0, :, 0] = [1.0, 1.0, 0.0]  # reaches the goal only at the last step
    states[1, :, 0] = [0.0, 0.0, 0.0]  # there from the first step
    goal = np.zeros(1, np.float32)
    final = trajectory_cost(states, goal, None, "final")
    every = trajectory_cost(states, goal, None, "all_steps")
    assert final[0] == final[1] == 0.0 and every[0] > every[1]


def test_action_repeat_holds_each_searched_action_and_still_reaches_the_goal():
    calls: list[int] = []
    start = np.zeros(4, np.float32)
    goal = np.array([2.5, -1.5, 0.0, 0.0], np.float32)  # needs 5 steps at full speed on x
    cfg = CEMConfig(horizon=7, samples=64, iterations=4, elites=8, action_repeat=3)
    assert cfg.decisions == 3
    plan = run(plan_cem(toy_world(calls), start, goal, LOW, HIGH, cfg, np.eye(4, dtype=np.float32)[:2]))
    assert plan.actions.shape == (7, 2) and plan.states.shape == (7, 4)
    # piecewise constant over blocks of 3 (the last block is cut to the horizon)
    for block in (plan.actions[0:3], plan.actions[3:6], plan.actions[6:7]):
        assert (block == block[0]).all()
    assert np.abs(plan.states[-1, :2] - goal[:2]).max() < 0.3
    assert calls == [64] * (7 * 4)  # the predictor still runs every step, all samples in one batch


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        CEMConfig(action_repeat=0)
    with pytest.raises(ValueError):
        CEMConfig(samples=1)
    with pytest.raises(ValueError):
        CEMConfig(samples=8, elites=9)
