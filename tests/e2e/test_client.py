"""The Python client (clients/python) against real `jepa-serve` processes: the README example word for word,
every kind of input, chunked uploads by the server's limits, typed results, ids that need encoding, errors as
types that name the bad item (a refused connection and a timeout included), the WebSocket stream, index_folder,
async."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from jepa_serve_client import AsyncClient, Client, Collection, Frames, Label, RetryPolicy, SurpriseResult, Video, errors
from PIL import Image

from tests.conftest import photo
from tests.support.servers import running_server
from tests.video_files import counting_video

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small_server(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Small limits, so chunking shows with few items: 4 media inputs, 100 vectors or 1 KiB of vectors per request."""
    with running_server(demo_repository, tmp_path_factory.mktemp("small"), max_request_items="4",
                        max_upsert_vectors="100", max_upsert_bytes="1024") as running:
        yield running.url


def readme_python_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Python client", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(server: str, tmp_path: Path):
    code = readme_python_example()
    assert len(code.strip().splitlines()) <= 12
    assert 'URL = "http://127.0.0.1:8000"' in code  # the one line that names the server: the tour's $URL
    (tmp_path / "cat.png").write_bytes(png(photo("chelsea")[::4, ::4]))
    (tmp_path / "example.py").write_text(code.replace('URL = "http://127.0.0.1:8000"', f'URL = "{server}"'))
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["(1,", "128)", "2", "doc-42"], done.stdout


def test_embed_takes_paths_bytes_arrays_videos_and_clips(server: str, tmp_path: Path):
    cat = png(photo("chelsea")[::4, ::4])
    (tmp_path / "cat.png").write_bytes(cat)
    (tmp_path / "clip.mp4").write_bytes(counting_video(6))
    with Client(server) as client:
        embedded = client.embed([tmp_path / "cat.png", cat])
        by_path, by_bytes = embedded.vectors
        expected = httpx.post(f"{server}/embed", files={"files": ("cat.png", cat, "image/png")}).json()["embeddings"][0]
        np.testing.assert_allclose(by_path, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(by_path, by_bytes)
        model = client.models()[0]
        size = model.input["image_size"]
        tensor = np.random.default_rng(0).standard_normal((3, *size)).astype(np.float32)
        video = client.embed([Video(tmp_path / "clip.mp4"), str(tmp_path / "clip.mp4")], num_frames=2)
        clip = client.embed([Frames([cat, cat])]).vectors
        tokens = client.embed([tensor], output="tokens", normalize=False).vectors
    assert (embedded.model, embedded.space_id) == (model.name, model.space_id)
    assert video.sampling[0]["num_frames"] == 2  # how the server sampled each video, per input
    video = video.vectors
    assert by_path.dtype == np.float32
    assert by_path.shape == (model.dim,)
    assert abs(np.linalg.norm(by_path) - 1) < 1e-5
    np.testing.assert_allclose(video[0], video[1], rtol=1e-5, atol=1e-6)  # a path ending .mp4 is sent as a video
    np.testing.assert_allclose(clip[0], by_path, rtol=1e-4, atol=1e-5)  # one image is repeated to a clip
    assert tokens.ndim == 3
    assert tokens.shape[0] == 1
    assert tokens.shape[1] > 1


def test_uploads_are_split_by_the_servers_advertised_limits(small_server: str):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((250, 16)).astype(np.float32)
    ids = [f"p{i}" for i in range(250)]
    with Client(small_server) as client:
        assert client.limits()["max_upsert_bytes"] == 1024
        client.create_collection("chunked", dim=16)
        done = client.upsert("chunked", ids, vectors, metadata=[{"row": i} for i in range(250)])
        assert (done.upserted, done.count) == (250, 250)
        assert done.requests == 16  # 1024 bytes / (16 x 4) = 16 vectors per request -> ceil(250 / 16)
        stored = client.get_point("chunked", "p200")
        assert stored.id == "p200"
        np.testing.assert_allclose(stored.vector, vectors[200] / np.linalg.norm(vectors[200]), rtol=1e-5)
        assert stored.metadata == {"row": 200}
        results = client.search("chunked", vectors=vectors[:10], k=1)  # 10 queries, 4 per request
        assert [hits[0].id for hits in results] == ids[:10]
        pooled = client.embed([png(np.full((32, 32, 3), 20 * i, np.uint8)) for i in range(9)])  # 4 + 4 + 1
        assert len(pooled) == 9
        assert len({row.tobytes() for row in pooled.vectors}) == 9
        assert client.delete("chunked", ids[:9]) == 9
        assert client.get_collection("chunked").count == 241
        client.drop_collection("chunked")


def test_errors_are_one_type_per_code_and_name_the_item_across_chunks(small_server: str):
    good = png(np.full((32, 32, 3), 90, np.uint8))
    with Client(small_server) as client:
        with pytest.raises(errors.InvalidImage) as caught:
            client.embed([good] * 5 + [b"not an image"] + [good])  # the second request's item 1
        assert caught.value.index == 5
        assert caught.value.status == 400
        assert "decode" in caught.value.message
        with pytest.raises(errors.CollectionNotFound):
            client.get_collection("nothing-here")
        client.create_collection("errs", dim=4)
        bad = np.ones((30, 4), np.float32)
        bad[21, 2] = np.nan
        with pytest.raises(errors.InvalidVector) as caught:
            client.upsert("errs", [str(i) for i in range(30)], bad)
        assert caught.value.index == 21
        assert isinstance(caught.value, errors.UnprocessableEntity)
        with pytest.raises(errors.DimensionMismatch):
            client.search("errs", np.ones(5, np.float32))
        client.drop_collection("errs")


def test_async_client_embeds_upserts_and_searches(server: str):
    async def run() -> list:
        async with AsyncClient(server) as client:
            images = [png(np.full((32, 32, 3), 60 * i, np.uint8)) for i in range(3)]
            pooled = await client.embed(images)
            await client.create_collection("async-pets", model="demo")
            await client.upsert("async-pets", ["a", "b", "c"], pooled)
            found = await asyncio.gather(*(client.search("async-pets", row, k=1) for row in pooled.vectors))
            await client.drop_collection("async-pets")
            return [hits[0].id for hits in found]

    assert asyncio.run(run()) == ["a", "b", "c"]


def test_predict_and_plan_return_arrays(server: str):
    with Client(server) as client:
        model = client.models()[0]
        steps = np.full((3, model.predictor["action_dim"]), 0.5, np.float32)
        image = png(photo("chelsea")[::4, ::4])
        prediction = client.predict_future([image], steps)
        plan = client.plan([image], image, horizon=2, samples=16, iterations=1)
    assert prediction.states.shape == (3, model.dim)
    assert prediction.initial_state.shape == (model.dim,)
    assert plan.actions.shape == (2, model.predictor["action_dim"])
    assert np.isfinite(plan.cost)


def test_surprise_and_knn_classify(server: str):
    from models.demo import world

    pair = world.generate_violations(5, 1, "ball_teleport", steps=8, onset_range=(5, 6))
    frames = [png(f) for f in pair.violated.frames()[0]]
    with Client(server) as client:
        scored = client.surprise(frames, pair.violated.actions[0])
        pooled = client.embed(frames[:3])
        client.create_collection("client-knn", dim=pooled.dim)
        client.upsert("client-knn", ["a", "b", "c"], pooled.vectors, metadata=[{"kind": k} for k in ("x", "y", "y")])
        labels = client.classify(vectors=pooled.vectors[:1], collection="client-knn", k=1, label_field="kind")
        client.drop_collection("client-knn")
    assert isinstance(scored, SurpriseResult)
    assert scored.steps == list(range(2, 9))
    assert scored.surprising[0] == 5
    assert scored.scores.shape == (7,)
    assert labels.labels == [[Label("x", 1.0, 1)]]
    assert labels.top == ["x"]


ODD_IDS = ["q?x=1", "a/b/c.png", "50%", "☕ café", "..", ".", "#frag", "a%2Fb", " spaced "]


def test_ids_that_need_encoding_round_trip_and_collections_are_typed(server: str):
    with Client(server) as client:
        created = client.create_collection("odd-ids", dim=3)
        assert isinstance(created, Collection)
        assert (created.name, created.dim, created.metric, created.count) == ("odd-ids", 3, "cosine", 0)
        vectors = np.eye(len(ODD_IDS), 3, dtype=np.float32) + 0.1
        client.upsert("odd-ids", ODD_IDS, vectors, metadata=[{"i": i} for i in range(len(ODD_IDS))])
        for i, point_id in enumerate(ODD_IDS):
            point = client.get_point("odd-ids", point_id)
            assert (point.id, point.metadata) == (point_id, {"i": i}), point_id
        with pytest.raises(errors.PointNotFound):
            client.get_point("odd-ids", "q")  # "q?x=1" asked for "q" before ids were encoded
        assert "odd-ids" in [c.name for c in client.list_collections()]
        assert client.get_collection("odd-ids").count == len(ODD_IDS)
        assert client.delete("odd-ids", ODD_IDS[:2]) == 2
        client.drop_collection("odd-ids")
        with pytest.raises(errors.CollectionNotFound):
            client.get_collection("odd-ids")


def test_a_refused_connection_and_a_timeout_are_the_clients_errors(server: str):
    from tests.support.toolkit import free_port

    waits: list[float] = []
    with Client(f"http://127.0.0.1:{free_port()}", sleep=waits.append) as client, \
            pytest.raises(errors.APIConnectionError) as refused:
        client.models()
    assert refused.value.sent is False
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]  # RetryPolicy's backoff: nothing was sent, so it was safe to retry
    image = png(photo("chelsea")[::4, ::4])
    with Client(server, timeout_s=0.05, retry=RetryPolicy(max_retries=0)) as client, \
            pytest.raises(errors.APITimeoutError) as late:
        client.plan([image], image, horizon=8, samples=512, iterations=8)
    assert isinstance(late.value, errors.APIConnectionError)


def teleport() -> tuple[list[bytes], np.ndarray]:
    from models.demo import world

    pair = world.generate_violations(5, 1, "ball_teleport", steps=8, onset_range=(5, 6))
    return [png(f) for f in pair.violated.frames()[0]], pair.violated.actions[0]


def test_stream_surprise_scores_like_post_surprise_sync_and_async(server: str):
    frames, actions = teleport()
    with Client(server) as client:
        posted = client.surprise(frames, actions)
        with client.stream_surprise() as stream:
            assert stream.ready["type"] == "ready"
            assert stream.ready["model"] == "demo"
            first = stream.send(frames[0])
            assert (first.step, first.score, first.surprising) == (0, None, False)
            second = stream.send(frames[1], actions[0])  # the action that led to this frame
            rest = list(stream.scores(frames[2:], actions[1:]))  # as many actions as frames: one per frame
    assert [s.step for s in [second, *rest]] == list(range(1, len(frames)))

    async def run() -> list:
        async with AsyncClient(server) as client, client.stream_surprise(threshold=3.0) as stream:
            return [step async for step in stream.scores(frames, actions)]

    streamed = asyncio.run(run())
    scored = [s for s in streamed if s.score is not None]
    assert [s.step for s in scored] == posted.steps
    np.testing.assert_allclose([s.score for s in scored], posted.scores, rtol=1e-4, atol=1e-4)
    assert [s.step for s in scored if s.surprising] == posted.surprising


def test_stream_errors_are_the_error_codes_classes(server: str, tmp_path: Path):
    frames, actions = teleport()
    with Client(server) as client:
        with pytest.raises(errors.ModelNotFound):
            client.stream_surprise(model="no-such-model")
        with client.stream_surprise() as stream:
            stream.send(frames[0])
            stream.send(frames[1], actions[0])
            with pytest.raises(errors.InvalidAction):
                stream.send(frames[2])  # no action: the model has a state now and needs one
        with client.stream_surprise() as stream, pytest.raises(errors.InvalidImage):
            stream.send(b"not an image")
    from tests.support.toolkit import free_port

    with Client(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(errors.APIConnectionError):
        client.stream_surprise()


def test_stream_and_index_refused_without_the_right_key(demo_repository: Path, tmp_path: Path):
    from service.security import hash_key, new_key

    reader = new_key()
    with running_server(demo_repository, tmp_path, api_keys=f"reader:{hash_key(reader)}:read") as running:
        # The server refuses a key before accepting the WebSocket: the handshake's only answer is an HTTP 403.
        with Client(running.url) as anonymous, pytest.raises(errors.Forbidden) as refused:
            anonymous.stream_surprise()
        assert refused.value.status == 403
        assert "API key" in refused.value.message
        with Client(running.url, api_key="jepa_wrong") as wrong, pytest.raises(errors.Forbidden):
            wrong.stream_surprise()
        with Client(running.url, api_key=reader) as client:
            with client.stream_surprise() as stream:
                assert stream.ready["model"] == "demo"
            with pytest.raises(errors.Unauthorized):
                Client(running.url).list_collections()
            with pytest.raises(errors.Forbidden):
                client.create_collection("nope", dim=2)


def test_index_folder_embeds_images_and_videos_and_resumes(server: str, tmp_path: Path):
    folder = tmp_path / "media"
    (folder / "sub dir").mkdir(parents=True)
    (folder / "cat.png").write_bytes(png(photo("chelsea")[::4, ::4]))
    (folder / "sub dir" / "rocket ☄.png").write_bytes(png(photo("rocket")[::4, ::4]))
    (folder / "clip.mp4").write_bytes(counting_video(6))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "readme.txt").write_text("no")
    with Client(server) as client:
        client.create_collection("indexed", model="demo")
        report = client.index_folder("indexed", folder, batch_size=2, concurrency=2, progress=False)
        assert sorted(report.indexed) == ["cat.png", "clip.mp4", "sub dir/rocket ☄.png"]
        assert [(name, why.split(":")[0]) for name, why in report.failed] == [("broken.png", "invalid_image")]
        assert report.skipped == [("readme.txt", "not an image or video (by its suffix)")]
        point = client.get_point("indexed", "sub dir/rocket ☄.png")
        assert point.metadata["kind"] == "image"
        assert point.metadata["size"] == (folder / "sub dir" / "rocket ☄.png").stat().st_size
        assert client.get_point("indexed", "clip.mp4").metadata["kind"] == "video"
        hits = client.search("indexed", input=folder / "cat.png", k=1)
        assert hits[0].id == "cat.png"
        (folder / "broken.png").unlink()
        again = asyncio.run(async_index(server, folder))
        assert again.ok
        assert again.indexed == []
        assert sorted(name for name, why in again.skipped if why.startswith("already")) == sorted(report.indexed)
        assert client.get_collection("indexed").count == 3
        client.drop_collection("indexed")


async def async_index(server: str, folder: Path):
    async with AsyncClient(server) as client:
        return await client.index_folder("indexed", folder, progress=False)
