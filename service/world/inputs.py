"""The checks of a world model's numeric inputs, written once for every endpoint and every family.

Actions, end-effector states (`proprio`) and state embeddings arrive as lists of numbers (request bodies, stream
messages) and leave as float32 arrays, or are refused with a 4xx of the error table before anything is decoded.
What a value *is* is the edge's job (a JSON `true` or "1.5" is not a number: the request schemas and the stream's
message parser refuse them); these check count, shape and range: every row as long as the model's contract says
(a ragged list is a row of the wrong length), every value a finite float32 (1e308 is finite in JSON but not in
float32, where it would become Inf).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contract import PredictorSpec
from service.errors import ErrorCode, PayloadTooLarge, UnprocessableInput

FLOAT32_MAX = float(np.finfo(np.float32).max)

Rows = Sequence[Sequence[float]]


@dataclass(frozen=True)
class WorldLimits:
    """The server's bounds on world-model requests (settings), given to each world model when it is built."""

    max_rollout_steps: int  # actions in one /predict_future request
    max_surprise_steps: int  # scored steps (actions) in one /surprise request
    max_plan_horizon: int
    max_plan_samples: int
    max_plan_iterations: int


def float32_rows(values: Rows, width: int) -> np.ndarray | None:
    """Rows of `width` numbers -> (n, width) float32; None when a row has another length or a value is not a
    finite float32 (NaN fails the comparison too)."""
    if any(len(row) != width for row in values):
        return None
    try:
        array = np.asarray(values, np.float64).reshape(len(values), width)
    except (TypeError, ValueError):  # not numbers: the edge refuses these, a direct caller might not
        return None
    if not (np.abs(array) <= FLOAT32_MAX).all():
        return None
    return array.astype(np.float32)


def check_step_count(steps: int, limit: int, setting: str) -> None:
    if steps > limit:
        raise PayloadTooLarge(f"{steps} steps; the limit is {limit}", {setting: limit}, code=ErrorCode.TOO_MANY_STEPS)


def check_actions(values: Rows, spec: PredictorSpec, within_box: bool = True) -> np.ndarray:
    """(T, action_dim) finite float32, and (within_box) inside the action box the predictor was trained on.

    V-JEPA 2-AC's box is where its planner searches, not what a recorded arm does (wrists turn): actions observed
    in a trajectory (/surprise, the stream) are checked for size and range only."""
    actions = float32_rows(values, spec.action_dim)
    if actions is None:
        raise UnprocessableInput(f"each action must have {spec.action_dim} finite float32 values",
                                 {"action_dim": spec.action_dim}, code=ErrorCode.INVALID_ACTION)
    low, high = np.asarray(spec.action_low, np.float32), np.asarray(spec.action_high, np.float32)
    if within_box and ((actions < low).any() or (actions > high).any()):
        raise UnprocessableInput("actions outside the model's action range",
                                 {"action_low": spec.action_low, "action_high": spec.action_high},
                                 code=ErrorCode.INVALID_ACTION)
    return actions


def check_proprio(values: Rows, dim: int) -> np.ndarray:
    """(n, proprio_dim) end-effector states, each a finite float32."""
    poses = float32_rows(values, dim)
    if poses is None:
        raise UnprocessableInput(f"every proprio state must have {dim} finite float32 values", {"proprio_dim": dim},
                                 code=ErrorCode.INVALID_PROPRIO)
    return poses


def check_states(values: Rows, dim: int) -> np.ndarray:
    """(n, state_dim) raw state embeddings, each value a finite float32."""
    if any(len(row) != dim for row in values):
        raise UnprocessableInput(f"every state must have {dim} values", {"state_dim": dim},
                                 code=ErrorCode.DIMENSION_MISMATCH)
    states = float32_rows(values, dim)
    if states is None:
        raise UnprocessableInput("states hold values beyond float32, NaN or Inf", code=ErrorCode.INVALID_VECTOR)
    return states


def check_state(value: Sequence[float], dim: int) -> np.ndarray:
    """One (state_dim,) state embedding (a goal, a start)."""
    return check_states([value], dim)[0]


def refuse_proprio(given: bool, who: str) -> None:
    """Only V-JEPA 2-AC takes end-effector states; elsewhere they are refused, not ignored (a client that sends
    them expects them to count)."""
    if given:
        raise UnprocessableInput(f"{who} takes no 'proprio' (only V-JEPA 2-AC does)", code=ErrorCode.INVALID_PROPRIO)


def refuse_context(given: bool, message: str) -> None:
    """A starting point the family does not take (pooled states, a clip predictor's actions) is refused, not
    ignored."""
    if given:
        raise UnprocessableInput(message, code=ErrorCode.INVALID_CONTEXT)
