"""Every malformed `proprio`, `actions` and `states` (ragged, wrong length, NaN, Inf, beyond float32, booleans,
strings, empty, too many steps, ...) sent to /predict_future, /plan, /surprise and WS /stream/surprise, for every
world-model family (the demo's pooled predictor, V-JEPA 2-AC, V-JEPA 2 with its mask predictor), is refused with a
4xx of the error table: never a 500, never accepted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.websockets import WebSocketDisconnect

from models.demo import world
from service.errors import ErrorCode
from tests.conftest import png_bytes, serving
from tests.support.ac_export import POSE, trajectory
from tests.support.future_export import drifting_frames
from tests.support.toolkit import b64

FAMILIES = ("demo", "ac", "vj")  # pooled action-conditioned, V-JEPA 2-AC (tokens), V-JEPA 2 (future tokens)
CLOSE_CODES = {1003, 1007, 1008, 1009}  # what a refused stream closes with (stream.py's close_code)


@pytest.fixture(scope="module")
def client(demo_repository: Path, ac_export, future_repository: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator:
    """One server with one model of each family."""
    from service.settings import Settings

    repository = tmp_path_factory.mktemp("worlds")
    for entry in (demo_repository / "demo", ac_export.repository / "ac", future_repository / "vj"):
        (repository / entry.name).symlink_to(entry, target_is_directory=True)
    settings = Settings(model_repository=repository, data_dir=tmp_path_factory.mktemp("data"), default_model="demo",
                        max_queue_delay_ms=1.0, predictor_max_batch_size=64, max_plan_samples=64, batch_tune=False)
    with serving(settings) as test_client:
        yield test_client


def row_variants(rows: list[list[float]]) -> dict[str, Any]:
    """Malformed versions of a valid list of rows (the last row spoilt, or the whole list)."""
    *head, last = rows
    first, rest = last[0], last[1:]
    spoilt = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "beyond_float32": 1e308,
              "-beyond_float32": -1e308, "true": True, "false": False, "numeric_string": "0.5", "word": "left",
              "null": None, "list": [first], "object": {"x": first}}
    variants = {f"value_{name}": [*head, [value, *rest]] for name, value in spoilt.items()}
    variants.update({
        "ragged": [*rows, last[:-1]],
        "row_short": [*head, last[:-1]],
        "row_long": [*head, [*last, 0.0]],
        "row_empty": [*head, []],
        "row_of_booleans": [*head, [True] * len(last)],
        "row_not_a_list": [*head, first],
        "not_rows": last,
        "string": "left",
        "number": 0.5,
        "empty": [],
        "too_many_steps": rows * 600,
    })
    return variants


def vector_variants(vector: list[float]) -> dict[str, Any]:
    """Malformed versions of one valid vector (a state, a stream message's action or proprio)."""
    variants = {name: value[0] for name, value in row_variants([vector]).items()
                if name.startswith(("value_", "row_")) and name != "row_not_a_list"}
    variants.update({"rows": [vector, vector], "string": "left", "number": 0.5, "empty": [], "object": {"x": 1}})
    return variants


def images(frames: np.ndarray) -> list[dict[str, str]]:
    return [{"image": b64(png_bytes(frame))} for frame in frames]


DEMO_FRAMES = world.generate_trajectories(4, 1, steps=3).frames()[0]  # 3 frames: the clip model scores one step
AC_FRAMES, AC_POSES, AC_ACTIONS = trajectory("rocket", 3)
VJ_FRAMES = drifting_frames(5, 6)  # one clip of the encoder's 6 frames


def frame_bodies(family: str) -> dict[str, dict[str, Any]]:
    """A valid body per endpoint, starting from frames."""
    if family == "demo":
        frames = images(DEMO_FRAMES)
        return {"predict": {"context": frames[:1], "actions": [[0.1, -0.2], [0.0, 0.3]]},
                "plan": {"observation": frames[:1], "goal": frames[2], "horizon": 2, "samples": 4, "iterations": 1},
                "surprise": {"observations": frames, "actions": [[0.1, -0.2], [0.0, 0.3]]}}
    if family == "ac":
        frames, poses = images(AC_FRAMES), AC_POSES.tolist()
        return {"predict": {"context": frames[:1], "proprio": poses[:1], "actions": [[0.01, 0, 0, 0, 0, 0, 0.1]] * 2},
                "plan": {"observation": frames[:1], "goal": frames[2], "proprio": poses[:1], "horizon": 2,
                         "samples": 4, "iterations": 1},
                "surprise": {"observations": frames, "proprio": poses, "actions": AC_ACTIONS.tolist()}}
    frames = images(VJ_FRAMES)
    return {"predict": {"context": frames[:2]}, "plan": {"observation": frames[:1], "goal": frames[5]},
            "surprise": {"observations": frames}}


PATHS = {"predict": "/predict_future", "plan": "/plan", "surprise": "/surprise"}
WIDTHS = {"demo": {"action": 2, "proprio": 7, "state": 128}, "ac": {"action": 7, "proprio": 7, "state": 64},
          "vj": {"action": 7, "proprio": 7, "state": 64}}


def bodies(family: str) -> Iterator[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(endpoint, a valid body, the fields to spoil in it): from frames, and from states where the endpoint takes
    them (a family that does not take states refuses them, malformed or not)."""
    state = [0.0] * WIDTHS[family]["state"]
    for endpoint, body in frame_bodies(family).items():
        rows = ("actions", "proprio") if endpoint != "plan" else ("proprio",)
        yield endpoint, body, rows
        if endpoint == "predict":
            yield endpoint, {**_without(body, "context"), "state": state}, ("state",)
        elif endpoint == "plan":
            yield endpoint, {**_without(body, "goal"), "goal_state": state}, ("goal_state",)
        else:
            states = {**_without(body, "observations"), "states": [state, state]}
            if "actions" in states:
                states["actions"] = states["actions"][:1]
            yield endpoint, states, ("states",)


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def malformed_requests(family: str) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(path, field, variant, body) for every malformed field each endpoint of the family's model takes."""
    widths = WIDTHS[family]
    for endpoint, body, fields in bodies(family):
        for field in fields:
            if field in ("state", "goal_state"):
                variants = vector_variants(body[field])
            else:
                width = widths["state" if field == "states" else field.removesuffix("s")]
                variants = row_variants(body.get(field) or [[0.0] * width] * 2)
            for variant, value in variants.items():
                yield PATHS[endpoint], field, variant, {**body, "model": family, field: value}


TABLE = {code.value: code.status for code in ErrorCode}


def refusal_problem(response) -> str | None:
    """Why the response is not a refusal from the error table, or None when it is one."""
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}"
    code = response.json().get("error", {}).get("code")
    if TABLE.get(code) != response.status_code:
        return f"{response.status_code} with code {code!r}, not one of the error table's"
    return None


@pytest.mark.parametrize("family", FAMILIES)
def test_every_malformed_input_to_every_endpoint_is_a_4xx(client, family):
    failures, sent = [], 0
    for path, field, variant, body in malformed_requests(family):
        response = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        sent += 1
        if (problem := refusal_problem(response)) is not None:
            failures.append(f"{path} {field} {variant}: {problem}: {response.text[:200]}")
    assert sent > 100
    assert failures == []


def stream_refusal(client, family: str, messages: list[dict[str, Any]]) -> tuple[dict, int]:
    """The error message a stream sends before it closes, and its close code (scores before it are skipped)."""
    with client.websocket_connect(f"/stream/surprise?model={family}") as ws:
        reply = ws.receive_json()
        if reply["type"] == "ready":
            for message in messages:
                ws.send_text(json.dumps(message))
            while (reply := ws.receive_json())["type"] == "score":
                pass
        with pytest.raises(WebSocketDisconnect) as closing:
            ws.receive_json()
    return reply, closing.value.code


def stream_messages(family: str, field: str, value: Any) -> list[dict[str, Any]]:
    """Valid frames up to the first that needs an action, then one with `field` malformed."""
    if family == "demo":  # a clip of two frames is the first state: the third frame needs its action
        frames = [b64(png_bytes(frame)) for frame in DEMO_FRAMES]
        last = {"frame": frames[2], "action": [0.1, 0.1], field: value}
        return [{"frame": frames[0]}, {"frame": frames[1]}, last]
    frames = [b64(png_bytes(frame)) for frame in AC_FRAMES]
    last = {"frame": frames[1], "proprio": AC_POSES[1].tolist(), "action": AC_ACTIONS[0].tolist(), field: value}
    return [{"frame": frames[0], "proprio": POSE.tolist()}, last]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_malformed_stream_message_closes_with_a_4xx(client, family):
    failures, sent = [], 0
    widths = WIDTHS[family]
    cases = [(field, variant, value) for field in ("action", "proprio")
             for variant, value in vector_variants([0.05] * widths[field]).items()]
    cases.append(("states", "not_a_stream_field", [[0.0] * widths["state"]] * 2))
    for field, variant, value in cases:
        reply, code = stream_refusal(client, family, stream_messages(family, field, value))
        sent += 1
        if not 400 <= TABLE.get(reply.get("error", {}).get("code"), 0) < 500 or code not in CLOSE_CODES:
            failures.append(f"{field} {variant}: {reply} closed with {code}")
    assert sent > 30
    assert failures == []


def test_a_model_without_a_predictor_refuses_every_world_endpoint(fake_repository, settings_factory):
    """EncoderOnly: the refusals every family inherits for what it cannot do."""
    from tests.support.fake_repository import SIZE

    frame = {"image": b64(png_bytes(np.zeros((SIZE, SIZE, 3), np.uint8)))}
    with serving(settings_factory(model_repository=fake_repository)) as fake:
        predict = fake.post("/predict_future", json={"context": [frame], "actions": [[0.0]]})
        plan = fake.post("/plan", json={"observation": [frame], "goal": frame})
        surprise = fake.post("/surprise", json={"observations": [frame] * 2, "actions": [[0.0]]})
        assert [r.json()["error"]["code"] for r in (predict, plan, surprise)] == [
            "no_predictor", "no_predictor", "no_surprise"]
        assert {r.status_code for r in (predict, plan, surprise)} == {422}
        with fake.websocket_connect("/stream/surprise") as ws:
            message = ws.receive_json()
            with pytest.raises(WebSocketDisconnect) as closing:
                ws.receive_json()
        assert (message["error"]["code"], closing.value.code) == ("no_surprise", 1008)
