"""The planning aids fitted on a predictor at export (export/planning.py), on a toy torch world model."""

import numpy as np
import torch

from export.planning import action_readout, controllable_subspace

LOW, HIGH = -np.ones(2, np.float32), np.ones(2, np.float32)


class ToyPredictor(torch.nn.Module):
    """State = (x, y, ball_x, ball_y, zeros...): the action moves (x, y) by 0.5 a; the ball drifts by itself."""

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out = state.clone()
        out[:, :2] += 0.5 * action
        out[:, 2:4] += torch.tensor([0.3, -0.2])
        return out


def states(n: int = 256) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 6)).astype(np.float32)


def test_action_readout_reads_the_action_off_a_state_change_and_ignores_the_drift():
    readout, r2 = action_readout(ToyPredictor(), states(), LOW, HIGH, ridge=1e-6)
    assert readout.shape == (2, 6) and r2 > 0.99
    np.testing.assert_allclose(readout[:, :2], 2.0 * np.eye(2), atol=1e-2)  # 0.5 a per step -> a = 2 delta
    assert np.abs(readout[:, 2:]).max() < 1e-2  # the ball and the unused dimensions do not count
    # distances through the readout count action steps: 3 full steps along x read as 3
    assert abs(float(np.linalg.norm(readout @ np.array([1.5, 0, 0.9, -0.6, 0, 0], np.float32))) - 3.0) < 0.05


def test_controllable_subspace_spans_what_the_actions_move():
    projection, kept = controllable_subspace(ToyPredictor(), states(), LOW, HIGH, energy=0.99)
    assert projection.shape == (2, 6) and kept > 0.99
    np.testing.assert_allclose(projection @ projection.T, np.eye(2), atol=1e-5)
    assert np.abs(projection[:, 2:]).max() < 1e-5
