"""End-effector pose arithmetic of V-JEPA 2-AC rollouts (service/world/pose.py)."""

import numpy as np

from service.world.pose import apply_action, euler_to_matrix, matrix_to_euler, pose_delta


def test_euler_round_trip_and_orthonormal():
    angles = np.random.default_rng(0).uniform(-1.2, 1.2, (50, 3))
    matrices = euler_to_matrix(angles)
    np.testing.assert_allclose(matrices @ np.swapaxes(matrices, -1, -2), np.broadcast_to(np.eye(3), (50, 3, 3)),
                               atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(matrices), angles, atol=1e-9)


def test_positions_add_gripper_clips_and_zero_rotation_keeps_orientation():
    pose = np.array([0.1, 0.2, 0.3, 0.4, -0.2, 1.0, 0.9], np.float32)
    moved = apply_action(pose, np.array([0.05, -0.05, 0.01, 0, 0, 0, 0.5], np.float32))
    np.testing.assert_allclose(moved[:3], [0.15, 0.15, 0.31], atol=1e-6)
    np.testing.assert_allclose(moved[3:6], pose[3:6], atol=1e-6)
    assert moved[6] == 1.0


def test_delta_is_the_action_between_two_poses():
    rng = np.random.default_rng(1)
    start = np.concatenate([rng.normal(size=(20, 3)), rng.uniform(-1, 1, (20, 3)), rng.uniform(0, 1, (20, 1))], -1)
    action = np.concatenate([rng.normal(0, 0.05, (20, 3)), rng.uniform(-0.3, 0.3, (20, 3)), np.zeros((20, 1))], -1)
    end = apply_action(start.astype(np.float32), action.astype(np.float32))
    np.testing.assert_allclose(pose_delta(start.astype(np.float32), end), action, atol=1e-5)
