"""POST /plan on the exported demo model: shapes, bounds, cost against doing nothing, and bad input."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from models.demo import world


def b64_frame(agent, ball) -> str:
    frame = world.render(np.array([agent], float), np.array([ball], float))[0]
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


OBS = [b64_frame((12, 12), (40, 50)), b64_frame((13, 12), (42, 50))]
GOAL = b64_frame((20, 45), (40, 20))


def test_plan_returns_bounded_actions_no_worse_than_doing_nothing(client):
    body = {"observation": [{"image": o} for o in OBS], "goal": {"image": GOAL}, "horizon": 6, "samples": 64,
            "iterations": 3, "subspace": "full"}
    response = client.post("/plan", json=body)
    assert response.status_code == 200, response.text
    plan = response.json()
    actions = np.asarray(plan["actions"])
    assert actions.shape == (6, 2)
    assert np.abs(actions).max() <= 1.0
    assert np.asarray(plan["predicted_states"]).shape == (6, 128)
    assert len(plan["iteration_costs"]) == 3
    assert plan["subspace"] == "full"
    # the cost of doing nothing, computed independently through /predict_future and /embed
    stay = client.post(
        "/predict_future", json={"context": [{"image": o} for o in OBS], "actions": [[0.0, 0.0]] * 6}
    ).json()
    goal = client.post("/embed", json={"inputs": [{"image": GOAL}], "normalize": False}).json()["embeddings"][0]
    stay_cost = float(np.mean((np.asarray(stay["states"][-1]) - np.asarray(goal)) ** 2))
    assert plan["zero_action_cost"] == pytest.approx(stay_cost, rel=1e-3)
    assert plan["cost"] <= stay_cost + 1e-6
    # the predicted states are the predictor's rollout of the returned actions
    replay = client.post(
        "/predict_future", json={"context": [{"image": o} for o in OBS], "actions": plan["actions"]}
    ).json()
    np.testing.assert_allclose(replay["states"], plan["predicted_states"], atol=1e-4)
    again = client.post("/plan", json=body).json()
    assert again["actions"] == plan["actions"]  # seeded


def test_plan_in_the_controllable_subspace_and_from_a_goal_state(client):
    goal = client.post("/embed", json={"inputs": [{"image": GOAL}], "normalize": False}).json()["embeddings"][0]
    body = {"observation": [{"image": OBS[-1]}], "goal_state": goal, "horizon": 4, "samples": 32, "iterations": 2,
            "cost": "all_steps"}
    plan = client.post("/plan", json=body)
    assert plan.status_code == 200, plan.text
    assert plan.json()["subspace"] == "readout_and_controllable"  # auto: the demo ships both aids
    for space in ("controllable", "action_readout", "readout_and_controllable", "full"):
        plan = client.post("/plan", json={**body, "subspace": space})
        assert plan.status_code == 200, plan.text
        assert plan.json()["subspace"] == space
        assert plan.json()["cost"] <= plan.json()["zero_action_cost"] + 1e-6


def test_action_readout_distance_grows_with_the_distance_to_the_goal(client, demo_repository):
    """Through the shipped readout, farther agent positions are farther from the goal (a slope for CEM far away)."""
    readout = np.load(demo_repository / "demo" / "action_readout.npy")

    def embed(agent):
        clip = {"frames": [b64_frame(agent, (40, 50)), b64_frame(agent, (42, 51))]}
        return np.array(client.post("/embed", json={"inputs": [clip], "normalize": False}).json()["embeddings"][0])

    goal = embed((12, 32))
    distances = [float(np.linalg.norm(readout @ (embed((12 + dx, 32)) - goal))) for dx in (0, 6, 12, 24)]
    assert distances == sorted(distances)
    assert distances[-1] > 2 * distances[1]


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"horizon": 0}, 422),
        ({"horizon": 65}, 422),
        ({"samples": 1}, 422),
        ({"samples": 5000}, 422),
        ({"iterations": 0}, 422),
        ({"iterations": 33}, 422),
        ({"elites": 100, "samples": 10}, 422),
        ({"goal": None}, 422),
        ({"goal_state": [0.0] * 128}, 422),  # both goal and goal_state
        ({"cost": "mystery"}, 422),
        ({"observation": []}, 422),
        ({"observation": [{"image": OBS[0]}] * 3}, 422),
        ({"observation": [{"image": "aGk="}]}, 400),
        ({"model": "nope"}, 404),
    ],
)
def test_plan_bad_input_is_a_clear_4xx(client, change, status):
    body = {"observation": [{"image": OBS[0]}], "goal": {"image": GOAL}, "horizon": 3, "samples": 8, "iterations": 1}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post("/plan", json=body)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) >= {"code", "message", "detail"}


def test_plan_goal_state_of_the_wrong_size_is_422(client):
    body = {"observation": [{"image": OBS[0]}], "goal_state": [0.0] * 5, "horizon": 2, "samples": 4, "iterations": 1}
    assert client.post("/plan", json=body).status_code == 422


def test_plan_past_its_deadline_is_504(client):
    import base64 as b64mod

    from models.demo.world import render
    from tests.conftest import png_bytes

    now = b64mod.b64encode(png_bytes(render([[12, 12]], [[40, 50]])[0])).decode()
    goal = b64mod.b64encode(png_bytes(render([[22, 44]], [[40, 20]])[0])).decode()
    body = {"observation": [{"image": now}], "goal": {"image": goal}, "horizon": 8, "samples": 64, "iterations": 2}
    assert client.post("/plan", json=body, headers={"X-Request-Timeout-Ms": "60000"}).status_code == 200
    late = client.post("/plan", json={**body, "timeout_ms": 0.001})
    assert late.status_code == 504
    assert late.json()["error"]["code"] == "deadline_exceeded"
