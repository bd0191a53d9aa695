"""End-effector poses of V-JEPA 2-AC: (x, y, z, roll, pitch, yaw, gripper), numpy only.

An action is a pose delta: positions add, rotations compose (extrinsic x-y-z
Euler angles, delta applied after the current rotation), the gripper adds and
is clipped to [0, 1]: the rule of the authors' planning utilities. The
released planner keeps rotation deltas at zero, so there the rotation is unchanged.
"""

from __future__ import annotations

import numpy as np


def euler_to_matrix(angles: np.ndarray) -> np.ndarray:
    """(..., 3) extrinsic x-y-z angles -> (..., 3, 3) rotation matrices R = Rz @ Ry @ Rx."""
    x, y, z = (angles[..., i] for i in range(3))
    cx, sx, cy, sy, cz, sz = np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z)
    one, zero = np.ones_like(x), np.zeros_like(x)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(*x.shape, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*x.shape, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(*x.shape, 3, 3)
    return rz @ ry @ rx


def matrix_to_euler(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) extrinsic x-y-z angles (the inverse of euler_to_matrix away from gimbal lock)."""
    pitch = np.arcsin(np.clip(-matrix[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(matrix[..., 2, 1], matrix[..., 2, 2])
    yaw = np.arctan2(matrix[..., 1, 0], matrix[..., 0, 0])
    return np.stack([roll, pitch, yaw], -1)


def apply_action(pose: np.ndarray, action: np.ndarray) -> np.ndarray:
    """(..., 7) pose, (..., 7) delta -> the next pose."""
    rotation = euler_to_matrix(action[..., 3:6].astype(np.float64)) @ euler_to_matrix(pose[..., 3:6].astype(np.float64))
    return np.concatenate([
        pose[..., :3] + action[..., :3],
        matrix_to_euler(rotation).astype(pose.dtype),
        np.clip(pose[..., 6:] + action[..., 6:], 0.0, 1.0),
    ], axis=-1).astype(np.float32)


def pose_delta(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The action that takes `start` to `end` (for the transitions between observed frames)."""
    relative = euler_to_matrix(end[..., 3:6].astype(np.float64)) @ np.swapaxes(
        euler_to_matrix(start[..., 3:6].astype(np.float64)), -1, -2)
    return np.concatenate([end[..., :3] - start[..., :3], matrix_to_euler(relative), end[..., 6:] - start[..., 6:]],
                          axis=-1).astype(np.float32)
