"""POST /predict_future errors on the demo world model (a pooled-state predictor)."""


import pytest

from tests.support.toolkit import assert_error


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"state": [0.0] * 128, "actions": [[0.1, 0.1, 0.1]]}, 422),
        ({"state": [0.0] * 128, "actions": [[5.0, 0.0]]}, 422),
        ({"state": [0.0] * 127, "actions": [[0.1, 0.1]]}, 422),
        ({"state": [0.0] * 128, "actions": []}, 422),
        ({"state": [0.0] * 128, "actions": [[0.1, 0.1], [0.1]]}, 422),
        ({"actions": [[0.1, 0.1]]}, 422),
        ({"context": [], "actions": [[0.1, 0.1]]}, 422),
        ({"context": [{"image": "aGk="}] * 3, "actions": [[0.1, 0.1]]}, 422),
        ({"state": [0.0] * 128, "actions": [[0.0, 0.0]] * 1000}, 413),
        ({"model": "nope", "state": [0.0] * 128, "actions": [[0.0, 0.0]]}, 404),
    ],
)
def test_predict_bad_input_is_a_clear_4xx(client, payload, status):
    assert_error(client.post("/predict_future", json=payload), status)
