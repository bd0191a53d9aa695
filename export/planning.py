"""Planning aids exported beside a model with an action-conditioned predictor.

The controllable subspace: the directions of the state embedding that actions
can move. For states z from real data and random actions a in the action box,
delta = predictor(z, a) - predictor(z, a0) (a0 = the box centre: "do nothing")
cancels whatever the world does by itself (a bouncing ball, say) and keeps
what the action changed. The top principal directions of delta, up to
`energy` of its variance, are the rows of the projection. A planner that
compares states only there ignores uncontrollable distractors in the goal.
Nothing here is specific to the demo: any predictor(state, action) will do.
"""

from __future__ import annotations

import numpy as np
import torch


def controllable_subspace(
    predictor: torch.nn.Module,
    states: np.ndarray,
    action_low: np.ndarray,
    action_high: np.ndarray,
    energy: float = 0.9,
    max_dims: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """states (N, D) -> (projection (k, D) with orthonormal rows, fraction of variance kept)."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
    actions = rng.uniform(low, high, (states.shape[0], low.shape[0])).astype(np.float32)
    still = np.broadcast_to((low + high) / 2, actions.shape).astype(np.float32)
    with torch.inference_mode():
        z = torch.from_numpy(states.astype(np.float32))
        delta = (predictor(z, torch.from_numpy(actions)) - predictor(z, torch.from_numpy(still))).numpy()
    delta = delta - delta.mean(axis=0)
    _, singular, vt = np.linalg.svd(delta.astype(np.float64), full_matrices=False)
    share = np.cumsum(singular**2) / np.sum(singular**2)
    k = int(min(np.searchsorted(share, energy) + 1, max_dims))
    return vt[:k].astype(np.float32), float(share[k - 1])
