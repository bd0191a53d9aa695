"""Planning aids exported beside a model with an action-conditioned predictor.

Both are fitted on delta = predictor(z, a) - predictor(z, a0) for states z
from real data and random actions a in the action box (a0 = the box centre:
"do nothing"). The difference cancels whatever the world does by itself (a
bouncing ball, say) and keeps what the action changed. Nothing here is
specific to the demo: any predictor(state, action) will do.

- The controllable subspace: the top principal directions of delta, up to
  `energy` of its variance. A planner that compares states only there
  ignores uncontrollable distractors in the goal. Its distances are local,
  though: in an embedding that codes position by local features, two states
  20 steps apart are about as far from each other as two 40 steps apart, so
  a cost there has no slope far from the goal.
- The action readout: the linear map W (action_dim x D) with W delta ~ a, a
  linear inverse model fitted by ridge regression. W reads off "how many
  action steps" separate two states along each action axis; summed over a
  path, it measures displacement, so |W (z - goal)| keeps growing with the
  distance to the goal (where the embedding codes position linearly enough,
  which a linear probe of the served embedding shows). A planner's cost there
  has a slope everywhere and ignores what actions do not move.
"""

from __future__ import annotations

import numpy as np
import torch


def action_deltas(
    predictor: torch.nn.Module, states: np.ndarray, action_low: np.ndarray, action_high: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """states (N, D) -> (random actions (N, A), delta = predictor(z, a) - predictor(z, centre) (N, D))."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
    actions = rng.uniform(low, high, (states.shape[0], low.shape[0])).astype(np.float32)
    still = np.broadcast_to((low + high) / 2, actions.shape).astype(np.float32)
    with torch.inference_mode():
        z = torch.from_numpy(states.astype(np.float32))
        delta = (predictor(z, torch.from_numpy(actions)) - predictor(z, torch.from_numpy(still))).numpy()
    return actions - still, delta


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
    _, delta = action_deltas(predictor, states, action_low, action_high, seed)
    delta = delta - delta.mean(axis=0)
    _, singular, vt = np.linalg.svd(delta.astype(np.float64), full_matrices=False)
    share = np.cumsum(singular**2) / np.sum(singular**2)
    k = int(min(np.searchsorted(share, energy) + 1, max_dims))
    return vt[:k].astype(np.float32), float(share[k - 1])


def action_readout(
    predictor: torch.nn.Module,
    states: np.ndarray,
    action_low: np.ndarray,
    action_high: np.ndarray,
    ridge: float = 1e-2,
    ignore_drift: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """states (N, D) -> (W (A, D) with W delta ~ action - centre, R^2 of that fit on the action samples).

    With `ignore_drift`, the fit also asks W (predictor(z, centre) - z) ~ 0: the change the world makes without an
    action reads as no action, so a goal image's distractors move the readout less.

    The ridge is relative to the mean variance of delta, so the fit does not depend on the embedding's scale.
    """
    actions, delta = action_deltas(predictor, states, action_low, action_high, seed)
    x, y = delta.astype(np.float64), actions.astype(np.float64)
    if ignore_drift:
        # what the world does by itself (predictor(z, centre) - z: a bouncing ball) must read as no action at all
        low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
        still = np.broadcast_to((low + high) / 2, (states.shape[0], low.shape[0])).astype(np.float32)
        with torch.inference_mode():
            z = torch.from_numpy(states.astype(np.float32))
            drift = (predictor(z, torch.from_numpy(still)) - z).numpy().astype(np.float64)
        x, y = np.concatenate([x, drift]), np.concatenate([y, np.zeros_like(y)])
    gram = x.T @ x + ridge * len(x) * float(x.var(axis=0).mean()) * np.eye(x.shape[1])
    w = np.linalg.solve(gram, x.T @ y)  # (D, A)
    fitted = delta.astype(np.float64) @ w
    r2 = 1 - ((fitted - actions) ** 2).sum() / ((actions - actions.mean(axis=0)) ** 2).sum()
    return w.T.astype(np.float32), float(r2)
