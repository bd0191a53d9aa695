"""Planning by the cross-entropy method (CEM) in latent space.

The loop is written against a callable simulator,
`await simulate(actions (S, H, A)) -> predicted states (S, H, F)`, so the same
code runs on a numpy toy in tests, on a pooled-state predictor (one step at a
time: `rollout_batch` turns `world_model(states (S, D), actions (S, A))` into one) and on
V-JEPA 2-AC's token predictor (F = tokens x dim). Each rollout step of one
iteration sends all S samples together: one predictor batch.

Cost of a predicted trajectory to the goal g:
  d(z) = mean over kept dimensions of (P (z - g))^2 ("l2"), or of |P (z - g)|
  ("l1", V-JEPA 2-AC's energy on layer-normed tokens), with P = identity or a
  projection onto a subspace (e.g. the directions the actions can move:
  everything else, like a distractor that moves by itself, is ignored);
  "final" = d(z_H); "all_steps" = mean_k d(z_k), which rewards getting there
  early and staying (useful for long horizons).

Action repeat r: CEM searches over ceil(H / r) actions, each held for r
steps. The predictor still runs all H steps, but the search space shrinks by
r, so a few hundred samples can find long manoeuvres (around a wall, say)
that a per-step search of the same size does not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

WorldModel = Callable[[np.ndarray, np.ndarray], Awaitable[np.ndarray]]
Simulator = Callable[[np.ndarray], Awaitable[np.ndarray]]
CostMode = Literal["final", "all_steps"]
Distance = Literal["l2", "l1"]


@dataclass(frozen=True, kw_only=True)
class CEMConfig:
    horizon: int = 8
    samples: int = 256
    iterations: int = 4
    elites: int = 16
    init_std: float = 1.0  # as a fraction of the half-width of the action box
    min_std: float = 0.05
    momentum: float = 0.1  # weight of the previous mean/std in each refit
    cost: CostMode = "final"
    distance: Distance = "l2"
    action_repeat: int = 1  # each searched action is held for this many steps
    seed: int = 0

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.samples < 2 or self.iterations < 1 or self.action_repeat < 1:
            raise ValueError("horizon >= 1, samples >= 2, iterations >= 1 and action_repeat >= 1 are required")
        if not 1 <= self.elites <= self.samples:
            raise ValueError("elites must be between 1 and samples")

    @property
    def decisions(self) -> int:
        """Searched actions: ceil(horizon / action_repeat)."""
        return -(-self.horizon // self.action_repeat)


@dataclass(frozen=True)
class Plan:
    actions: np.ndarray  # (H, A)
    cost: float
    states: np.ndarray  # (H, D) predicted states along the plan
    iteration_costs: list[float]  # best cost after each iteration


def trajectory_cost(
    states: np.ndarray, goal: np.ndarray, projection: np.ndarray | None, mode: CostMode, distance: Distance = "l2"
) -> np.ndarray:
    """states (S, H, D), goal (D,), projection (k, D) or None -> cost per sample (S,)."""
    diff = states - goal  # (S, H, D)
    if projection is not None:
        diff = diff @ projection.T  # (S, H, k)
    per_step = np.mean(np.abs(diff) if distance == "l1" else diff * diff, axis=-1)  # (S, H)
    return per_step[:, -1] if mode == "final" else per_step.mean(axis=1)


async def rollout_batch(world_model: WorldModel, start: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """start (D,), actions (S, H, A) -> states (S, H, D): H world-model calls of S rows each."""
    states = np.broadcast_to(start, (actions.shape[0], start.shape[0])).astype(np.float32)
    out = []
    for h in range(actions.shape[1]):
        states = await world_model(states, actions[:, h])
        out.append(states)
    return np.stack(out, axis=1)


async def plan_sequences(
    simulate: Simulator,
    goal: np.ndarray,
    action_low: np.ndarray,
    action_high: np.ndarray,
    config: CEMConfig,
    projection: np.ndarray | None = None,
) -> Plan:
    """CEM over action sequences in the box [low, high]; returns the best sequence seen.

    The first iteration also scores the all-zero ("stay") plan, clipped to the
    box, so the result is never worse under the model than doing nothing.
    """
    rng = np.random.default_rng(config.seed)
    low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
    h, a = config.decisions, low.shape[0]

    def expand(blocks: np.ndarray) -> np.ndarray:  # (..., decisions, A) -> (..., horizon, A)
        return np.repeat(blocks, config.action_repeat, axis=-2)[..., : config.horizon, :]

    mean = np.broadcast_to((low + high) / 2, (h, a)).astype(np.float32)
    std = np.broadcast_to(config.init_std * (high - low) / 2, (h, a)).astype(np.float32)
    floor = config.min_std * (high - low) / 2
    best_cost, best_actions, best_states = np.inf, expand(mean), None
    history = []
    for iteration in range(config.iterations):
        samples = mean + std * rng.standard_normal((config.samples, h, a)).astype(np.float32)  # (S, H, A)
        samples = np.clip(samples, low, high)
        samples[0] = np.clip(mean, low, high)  # keep the current mean as a candidate
        if iteration == 0:
            samples[1] = np.clip(np.zeros((h, a), np.float32), low, high)
        states = await simulate(expand(samples))  # (S, H, D)
        costs = trajectory_cost(states, goal, projection, config.cost, config.distance)
        order = np.argsort(costs)
        if costs[order[0]] < best_cost:
            best_cost, best_actions, best_states = float(costs[order[0]]), expand(samples[order[0]]), states[order[0]]
        elites = samples[order[: config.elites]]
        mean = config.momentum * mean + (1 - config.momentum) * elites.mean(axis=0)
        std = np.maximum(config.momentum * std + (1 - config.momentum) * elites.std(axis=0), floor)
        history.append(best_cost)
    assert best_states is not None
    return Plan(actions=best_actions, cost=best_cost, states=best_states, iteration_costs=history)
