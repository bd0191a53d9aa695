"""The client on a scripted transport (no server; the waits are recorded, not slept): the retry policy on 429/503
and on transport failures, every transport failure as the client's own error, every method's request and typed
result, ids encoded in paths, index_folder's skips, retries around a refused file, and interruption."""

from __future__ import annotations

import httpx
import pytest
from jepa_serve_client import Client, RetryPolicy, errors


def scripted(*answers: tuple[int, dict, dict]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body, headers = queue.pop(0)
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handle), seen


def overloaded(code: str = "overloaded", retry_after: str | None = "3") -> tuple[int, dict, dict]:
    status = 503 if code in ("not_ready", "storage_unavailable") else 429
    return (
        status,
        {"error": {"code": code, "message": "busy", "detail": {}}},
        {"retry-after": retry_after} if retry_after else {},
    )


def test_429_and_503_are_retried_after_retry_after_then_succeed():
    transport, seen = scripted(overloaded(), overloaded("not_ready", None), (200, {"models": []}, {}))
    waits: list[float] = []
    with Client("http://jepa", transport=transport, sleep=waits.append, retry=RetryPolicy(backoff_s=0.25)) as client:
        assert client.models() == []
    assert waits == [3.0, 0.5]  # the server's Retry-After, then backoff 0.25 x 2^1
    assert len(seen) == 3


def test_retries_stop_at_the_cap_with_the_servers_error():
    transport, seen = scripted(*[overloaded("rate_limited", "100")] * 3)
    waits: list[float] = []
    policy = RetryPolicy(max_retries=2, max_backoff_s=5)
    with Client("http://jepa", transport=transport, sleep=waits.append, retry=policy) as client, \
            pytest.raises(errors.RateLimited) as caught:
        client.models()
    assert waits == [5.0, 5.0]
    assert len(seen) == 3
    assert caught.value.status == 429
    assert caught.value.message == "busy"
    assert caught.value.retry_after == 100


def test_other_errors_are_not_retried_and_unknown_codes_fall_back_to_their_status():
    transport, seen = scripted((404, {"error": {"code": "brand_new_code", "message": "m", "detail": {"x": 1}}}, {}))
    with Client("http://jepa", transport=transport, sleep=lambda s: None) as client, \
            pytest.raises(errors.NotFound) as caught:
        client.get_collection("c")
    assert len(seen) == 1
    assert caught.value.code == "brand_new_code"
    assert caught.value.detail == {"x": 1}


def test_every_error_code_of_the_service_has_a_client_type_of_the_same_status():
    from service.errors import ErrorCode

    for code in ErrorCode:
        cls = errors.BY_CODE.get(code.value)
        assert cls is not None, f"clients/python lacks an exception type for {code.value!r}"
        assert cls.status == code.status, f"{cls.__name__} is a {cls.status}; {code.value!r} is a {code.status}"
    assert set(errors.BY_CODE) == {code.value for code in ErrorCode}, "the client knows codes the server never sends"


def test_the_client_imports_without_the_server_torch_or_onnxruntime():
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    client_dir = Path(__file__).resolve().parents[3] / "clients" / "python"
    declared = tomllib.loads((client_dir / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(d.split(">")[0] for d in declared) == ["httpx", "numpy", "tqdm", "websockets"]
    probe = ("import sys, jepa_serve_client; heavy = {'torch', 'fastapi', 'service', 'onnxruntime', 'PIL', 'faiss'}; "
             "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=client_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_surprise_sends_arrays_as_lists_proprio_included():
    import json

    import numpy as np

    transport, seen = scripted((200, SURPRISE, {}))
    with Client("http://jepa", transport=transport) as client:
        client.surprise(states=np.zeros((2, 3)), actions=np.ones((1, 7)), proprio=np.full((2, 7), 0.5), model="ac")
    body = json.loads(seen[0].content)
    assert body == {"model": "ac", "states": [[0.0] * 3] * 2, "actions": [[1.0] * 7], "proprio": [[0.5] * 7] * 2}


SURPRISE = {"model": "demo", "space_id": "s1", "steps": [2, 3], "scores": [0.5, 4.0], "distances": [0.1, 0.9],
            "threshold": 3.0, "surprising": [3], "calibration": {"metric": "mse"}, "timings_ms": {}}
LIMITS = {"max_body_bytes": 1 << 20, "max_request_items": 4, "max_upsert_vectors": 100, "max_upsert_bytes": 1 << 20,
          "max_image_bytes": 1000, "max_video_bytes": 5000}
COLLECTION = {"name": "pets", "dim": 2, "metric": "cosine", "index": "flat", "space_id": "s1", "model": "demo",
              "count": 1, "memory_bytes": 8, "index_in_use": "flat", "tombstones": 0, "params": {},
              "a_field_of_a_newer_server": 1}


def routed(answers: dict[tuple[str, str], object]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A fake server: (method, raw path) -> a JSON answer, a (status, body) pair, or a function of the request."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[(request.method, request.url.raw_path.decode().split("?")[0])]
        if callable(answer):
            answer = answer(request)
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status)

    return httpx.MockTransport(handle), seen


def b64(array):
    import base64

    import numpy as np

    array = np.asarray(array, np.float32)
    return {"data": base64.b64encode(array.tobytes()).decode(), "dtype": "float32", "shape": list(array.shape)}


def test_every_method_sends_its_request_and_returns_its_typed_result():
    import json

    import numpy as np
    from jepa_serve_client import ClassifyResult, Collection, Embeddings, Hit, Label, Model, Point, SurpriseResult

    point = {"id": "a/b", "vector": [0.6, 0.8], "metadata": {"k": 1}}
    hit = {"id": "a/b", "score": 0.9, "metadata": {"k": 1}}
    transport, seen = routed({
        ("GET", "/limits"): LIMITS,
        ("POST", "/embed"): {"model": "demo", "space_id": "s1", "dim": 2, "embeddings": b64([[1, 0]]),
                             "timings_ms": {}, "cached": [False]},
        ("PUT", "/collections/pets"): (201, COLLECTION),
        ("GET", "/collections/pets"): COLLECTION,
        ("GET", "/collections"): [COLLECTION],
        ("DELETE", "/collections/pets"): (204, None),
        ("POST", "/collections/pets/points"): {"upserted": 1, "count": 1},
        ("DELETE", "/collections/pets/points"): {"deleted": 1, "count": 0},
        ("GET", "/collections/pets/points/a%2Fb"): point,
        ("POST", "/search"): {"hits": [hit], "results": [[hit]], "metric": "cosine"},
        ("POST", "/predict_future"): {"states": b64([[1, 0]]), "initial_state": b64([0, 1]), "model": "demo"},
        ("POST", "/plan"): {"actions": b64([[0.5, 0.0]]), "cost": 1.0, "zero_action_cost": 2.0,
                            "predicted_states": b64([[1, 0]])},
        ("POST", "/surprise"): SURPRISE,
        ("POST", "/classify"): {"model": "demo", "head": None, "collection": "pets", "timings_ms": {},
                                "labels": [[{"label": "cat", "score": 1.0, "votes": 1}]]},
        ("GET", "/models"): {"models": [{"name": "demo", "family": "demo", "space_id": "s1", "dim": 2,
                                         "input": {"kind": "image"}, "predictor": None, "surprise": None,
                                         "heads": {}}], "failed": {}},
    })
    with Client("http://jepa", transport=transport) as client:
        embedded = client.embed([np.zeros((3, 4, 4), np.float32)])
        assert isinstance(embedded, Embeddings)
        assert (embedded.model, embedded.space_id, embedded.dim, embedded.cached) == ("demo", "s1", 2, [False])
        np.testing.assert_array_equal(np.asarray(embedded), [[1, 0]])
        created = client.create_collection("pets", model="demo")
        assert isinstance(created, Collection)
        assert (created.name, created.dim, created.count, created.space_id) == ("pets", 2, 1, "s1")
        assert created.response["a_field_of_a_newer_server"] == 1
        assert client.get_collection("pets") == created
        assert client.list_collections() == [created]
        assert client.drop_collection("pets") is None
        assert client.upsert("pets", ["a/b"], embedded).upserted == 1
        assert json.loads(seen[-1].content)["space_id"] == "s1"  # declared from the Embeddings
        assert client.delete("pets", ["a/b"]) == 1
        got = client.get_point("pets", "a/b")
        assert isinstance(got, Point)
        assert (got.id, got.metadata) == ("a/b", {"k": 1})
        np.testing.assert_allclose(got.vector, [0.6, 0.8])
        assert client.search("pets", [1.0, 0.0]) == [Hit("a/b", 0.9, {"k": 1})]
        assert client.search("pets", vectors=np.eye(2, dtype=np.float32)) == [[Hit("a/b", 0.9, {"k": 1})]]
        assert client.predict_future(state=[0, 1], actions=[[0.5, 0.0]]).states.shape == (1, 2)
        assert client.plan([np.zeros((3, 4, 4), np.float32)], goal_state=[1, 0]).cost == 1.0
        scored = client.surprise(states=np.zeros((3, 2)), actions=np.zeros((2, 2)))
        assert isinstance(scored, SurpriseResult)
        assert (scored.steps, scored.surprising, scored.threshold) == ([2, 3], [3], 3.0)
        np.testing.assert_allclose(scored.scores, [0.5, 4.0])
        labels = client.classify(vectors=[[1, 0]], collection="pets", label_field="kind")
        assert isinstance(labels, ClassifyResult)
        assert labels.labels == [[Label("cat", 1.0, 1)]]
        assert labels.top == ["cat"]
        assert client.models() == [Model("demo", "demo", "s1", 2, {"kind": "image"}, None, None, {})]
        assert client.limits() == LIMITS


@pytest.mark.parametrize(("point_id", "raw"), [
    ("q?x=1", "q%3Fx%3D1"), ("a/b", "a%2Fb"), ("50%", "50%25"), ("☕ café", "%E2%98%95%20caf%C3%A9"),
    ("..", "%2E%2E"), (".", "%2E"), ("#frag", "%23frag"),
])
def test_ids_are_one_encoded_path_segment(point_id, raw):
    transport, seen = routed({("GET", f"/collections/c%20d/points/{raw}"): {"id": point_id, "vector": [1.0],
                                                                              "metadata": {}}})
    with Client("http://jepa", transport=transport) as client:
        assert client.get_point("c d", point_id).id == point_id
    assert seen[0].url.raw_path.decode() == f"/collections/c%20d/points/{raw}"


def failing(exc: Exception, then: list | None = None) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """Raises exc for every request, or for the first ones and then answers `then`."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if then and len(seen) > len(then[0]):
            return httpx.Response(200, json=then[1])
        raise exc

    return httpx.MockTransport(handle), seen


@pytest.mark.parametrize(("exc", "expected", "sent", "retried"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), errors.APIConnectionError, False, True),
    (httpx.ConnectTimeout("connect timed out"), errors.APITimeoutError, False, True),
    (httpx.ReadTimeout("read timed out"), errors.APITimeoutError, True, False),
    (httpx.WriteTimeout("write timed out"), errors.APITimeoutError, True, False),
    (httpx.RemoteProtocolError("peer closed connection"), errors.APIConnectionError, True, False),
    (httpx.ReadError("connection reset"), errors.APIConnectionError, True, False),
])
def test_transport_failures_are_the_clients_errors_retried_only_when_nothing_was_sent(exc, expected, sent, retried):
    transport, seen = failing(exc)
    waits: list[float] = []
    policy = RetryPolicy(max_retries=3, backoff_s=0.5)
    with Client("http://jepa", transport=transport, sleep=waits.append, retry=policy) as client, \
            pytest.raises(expected) as caught:
        client.get_collection("c")
    assert type(caught.value) is expected
    assert isinstance(caught.value, errors.JepaServeError)
    assert caught.value.sent is sent
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    assert "GET http://jepa/collections/c" in str(caught.value)
    assert waits == ([0.5, 1.0, 2.0] if retried else [])
    assert len(seen) == (4 if retried else 1)


def test_a_refused_connection_is_retried_until_the_server_answers_and_not_at_all_when_told():
    transport, seen = failing(httpx.ConnectError("refused"), then=[[1, 2], COLLECTION])
    waits: list[float] = []
    with Client("http://jepa", transport=transport, sleep=waits.append) as client:
        assert client.get_collection("pets").name == "pets"
    assert waits == [0.5, 1.0]
    transport, seen = failing(httpx.ConnectError("refused"))
    with Client("http://jepa", transport=transport, sleep=waits.append,
                retry=RetryPolicy(retry_connect=False)) as client, pytest.raises(errors.APIConnectionError):
        client.get_collection("pets")
    assert len(seen) == 1


def test_an_answer_that_is_not_json_is_an_unexpected_response():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>proxy</html>",
                                                                   headers={"content-type": "text/html"}))
    with Client("http://jepa", transport=transport) as client, pytest.raises(errors.UnexpectedResponse) as caught:
        client.list_collections()
    assert "text/html" in str(caught.value)


def test_async_client_wraps_transport_failures_too():
    import asyncio

    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async def run() -> None:
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        async with AsyncClient("http://jepa", transport=httpx.MockTransport(handle), sleep=sleep,
                               retry=RetryPolicy(max_retries=1)) as client:
            with pytest.raises(errors.APIConnectionError):
                await client.models()
        assert waits == [0.5]

    from jepa_serve_client import AsyncClient

    asyncio.run(run())


def test_transport_errors_are_not_server_codes():
    assert "connection_error" not in errors.BY_CODE
    assert errors.BY_STATUS[404] is errors.NotFound
    assert isinstance(errors.error_from_body({"error": {"code": "invalid_action", "message": "m"}}),
                      errors.InvalidAction)


def photo_folder(root) -> None:
    """a.png, sub/b.png, sub/deep/c.png, clip.mp4, notes.txt, .hidden.png, big.png (over the 1000-byte limit)"""
    (root / "sub" / "deep").mkdir(parents=True)
    for name in ("a.png", "sub/b.png", "sub/deep/c.png", ".hidden.png"):
        (root / name).write_bytes(b"\x89PNG" + name.encode())
    (root / "clip.mp4").write_bytes(b"\0\0\0\x18ftypisom")
    (root / "notes.txt").write_text("not media")
    (root / "big.png").write_bytes(b"x" * 2000)


def indexing_server(stored: dict[str, dict], refuse: str | None = None):
    """A fake server for index_folder: GET points answer from `stored`, upserts store; an upsert holding the
    file `refuse` is refused naming its index."""
    import json

    def get_point(request: httpx.Request):
        from urllib.parse import unquote

        point_id = unquote(request.url.raw_path.decode().rsplit("/points/", 1)[1])
        if point_id not in stored:
            return 404, {"error": {"code": "point_not_found", "message": "no such point", "detail": {}}}
        return {"id": point_id, "vector": [1.0], "metadata": stored[point_id]}

    def upsert(request: httpx.Request):
        body = json.loads(request.content)
        if refuse in body["ids"]:
            index = body["ids"].index(refuse)
            refusal = {"code": "invalid_image", "message": "cannot decode image", "detail": {"index": index}}
            return 400, {"error": refusal}
        stored.update(zip(body["ids"], body["metadata"], strict=True))
        return {"upserted": len(body["ids"]), "count": len(stored)}

    answers = {("GET", "/limits"): LIMITS, ("POST", "/collections/photos/points"): upsert}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        if path.startswith("/collections/photos/points/"):
            answer = get_point(request)
        else:
            answer = answers[(request.method, path)]
            answer = answer(request) if callable(answer) else answer
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


def test_index_folder_stores_paths_and_file_metadata_and_skips_what_is_stored(tmp_path):
    photo_folder(tmp_path)
    stored: dict[str, dict] = {}
    with Client("http://jepa", transport=indexing_server(stored, refuse="sub/b.png")) as client:
        report = client.index_folder("photos", tmp_path, batch_size=2, concurrency=2, progress=False)
        assert sorted(report.indexed) == ["a.png", "clip.mp4", "sub/deep/c.png"]
        assert sorted(report.failed) == [
            ("big.png", "payload_too_large: 2000 bytes; the server takes images up to 1000"),
            ("sub/b.png", "invalid_image: cannot decode image")]
        assert report.skipped == [("notes.txt", "not an image or video (by its suffix)")]
        assert not report.ok
        stat = (tmp_path / "sub/deep/c.png").stat()
        assert stored["sub/deep/c.png"] == {"path": "sub/deep/c.png", "size": stat.st_size,
                                            "mtime": round(stat.st_mtime, 3), "kind": "image"}
        assert stored["clip.mp4"]["kind"] == "video"
        (tmp_path / "a.png").write_bytes(b"\x89PNG changed")  # a new size: sent again
        (tmp_path / "sub/b.png").unlink()
        (tmp_path / "big.png").unlink()
        again = client.index_folder("photos", tmp_path, progress=False)
    assert again.indexed == ["a.png"]
    assert sorted(again.skipped)[:2] == [("clip.mp4", "already indexed (same size and mtime)"),
                                         ("notes.txt", "not an image or video (by its suffix)")]
    assert again.ok


def test_index_folder_stops_when_the_server_cannot_be_reached_and_says_what_is_left(tmp_path):
    for i in range(10):
        (tmp_path / f"{i}.png").write_bytes(b"\x89PNG")
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/limits":
            return httpx.Response(200, json=LIMITS)
        raise httpx.ConnectError("refused")

    with Client("http://jepa", transport=httpx.MockTransport(handle), retry=RetryPolicy(max_retries=0)) as client:
        report = client.index_folder("photos", tmp_path, batch_size=2, concurrency=1, progress=False)
    assert report.interrupted.startswith("connection_error")
    assert not report.ok
    assert report.not_attempted == 8  # the first batch failed; the four after it were never sent
    assert report.indexed == []
    assert len(calls) == 2  # /limits, then one GET point


def test_async_index_folder_matches_the_sync_one(tmp_path):
    import asyncio

    from jepa_serve_client import AsyncClient

    photo_folder(tmp_path)
    stored: dict[str, dict] = {}
    sync = indexing_server(stored)

    async def handle(request: httpx.Request) -> httpx.Response:
        return sync.handle_request(request)

    async def run():
        async with AsyncClient("http://jepa", transport=httpx.MockTransport(handle)) as client:
            return await client.index_folder("photos", tmp_path, batch_size=2, progress=False)

    report = asyncio.run(run())
    assert sorted(report.indexed) == ["a.png", "clip.mp4", "sub/b.png", "sub/deep/c.png"]
    assert [name for name, _ in report.failed] == ["big.png"]


def test_long_paths_get_a_hashed_id():
    from jepa_serve_client.indexing import point_id

    assert point_id("a/b.png") == "a/b.png"
    long = "d/" * 200 + "x.png"
    assert point_id(long).startswith("sha256:")
    assert len(point_id(long)) <= 256


def test_stream_messages_urls_and_error_mapping():
    import json

    from jepa_serve_client.stream import closed_error, frame_messages, parse_answer, parse_ready, stream_url
    from websockets.exceptions import ConnectionClosedError
    from websockets.frames import Close

    assert stream_url("https://host:8443/prefix/", "demo", 2.5) == "wss://host:8443/prefix/stream/surprise?model=demo&threshold=2.5"
    assert stream_url("http://127.0.0.1:8000", None, None) == "ws://127.0.0.1:8000/stream/surprise"
    assert frame_messages(b"png") == [b"png"]
    text, data = frame_messages(b"png", action=[0.5, 0], proprio=None)
    assert (json.loads(text), data) == ({"action": [0.5, 0.0]}, b"png")
    score = parse_answer(json.dumps({"type": "score", "step": 3, "score": 4.5, "distance": 0.2, "surprising": True}))
    assert (score.step, score.score, score.surprising) == (3, 4.5, True)
    error = {"type": "error", "error": {"code": "invalid_action", "message": "frame 2 needs the action",
                                        "detail": {}}}
    with pytest.raises(errors.InvalidAction, match="frame 2 needs the action"):
        parse_answer(json.dumps(error))
    with pytest.raises(errors.ModelNotFound):
        parse_ready(json.dumps({"type": "error", "error": {"code": "model_not_found", "message": "m"}}))
    with pytest.raises(errors.UnexpectedResponse):
        parse_ready("not json")
    busy = ConnectionClosedError(Close(1013, "too_many_connections: 64 streams are open"), None)
    assert isinstance(closed_error(busy), errors.TooManyConnections)
    gone = ConnectionClosedError(Close(1001, ""), None)
    assert isinstance(closed_error(gone), errors.APIConnectionError)
