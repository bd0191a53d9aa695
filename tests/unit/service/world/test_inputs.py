"""The world models' input checks (service/world/inputs.py): lists of numbers in, float32 arrays or a 4xx out."""

import numpy as np
import pytest

from contract import PredictorSpec
from service.errors import ErrorCode, ServiceError
from service.world.inputs import check_actions, check_proprio, check_state, check_states, check_step_count

SPEC = PredictorSpec(state_dim=3, action_dim=2, action_low=[-1.0, -1.0], action_high=[1.0, 1.0], proprio_dim=7)


def refused(check, *args) -> ErrorCode:
    with pytest.raises(ServiceError) as caught:
        check(*args)
    return caught.value.code


@pytest.mark.parametrize("values", [
    [[0.1, 0.2], [0.3]],  # ragged
    [[0.1, 0.2, 0.3]],
    [[]],
    [[float("nan"), 0.0]],
    [[float("inf"), 0.0]],
    [[1e308, 0.0]],  # finite, but Inf in float32
    [["a", 0.0]],  # not numbers (the edge refuses them first; a direct caller is refused too)
    [[None, 0.0]],
])
def test_malformed_actions_are_invalid_action(values):
    assert refused(check_actions, values, SPEC) is ErrorCode.INVALID_ACTION


def test_actions_in_range_come_back_as_float32_and_the_box_is_optional():
    actions = check_actions([[0.5, -1], [1, 0.25]], SPEC)
    assert actions.dtype == np.float32
    np.testing.assert_array_equal(actions, [[0.5, -1.0], [1.0, 0.25]])
    assert refused(check_actions, [[2.0, 0.0]], SPEC) is ErrorCode.INVALID_ACTION
    np.testing.assert_array_equal(check_actions([[2.0, 0.0]], SPEC, False), [[2.0, 0.0]])  # recorded, not planned


def test_the_step_limit_is_a_413_naming_its_setting():
    check_step_count(4, 4, "max_rollout_steps")
    with pytest.raises(ServiceError) as caught:
        check_step_count(5, 4, "max_rollout_steps")
    assert (caught.value.code, caught.value.detail) == (ErrorCode.TOO_MANY_STEPS, {"max_rollout_steps": 4})


@pytest.mark.parametrize("values", [[[0.0] * 7, [0.0] * 6], [[0.0] * 8], [[3.5e38] + [0.0] * 6],
                                    [[float("nan")] * 7]])
def test_malformed_proprio_is_invalid_proprio(values):
    assert refused(check_proprio, values, 7) is ErrorCode.INVALID_PROPRIO


def test_states_of_the_wrong_size_are_a_dimension_mismatch_and_non_finite_ones_invalid():
    assert refused(check_states, [[0.0] * 3, [0.0] * 2], 3) is ErrorCode.DIMENSION_MISMATCH
    assert refused(check_state, [0.0] * 4, 3) is ErrorCode.DIMENSION_MISMATCH
    assert refused(check_states, [[0.0, 0.0, -1e39]], 3) is ErrorCode.INVALID_VECTOR
    np.testing.assert_array_equal(check_state([3e38, 0, -3e38], 3), np.float32([3e38, 0, -3e38]))
    assert check_proprio([], 7).shape == (0, 7)  # none given: the count is checked against the frames later
