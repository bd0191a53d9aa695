"""The Python client (clients/python) against real `jepa-serve` processes: the README example word for word,
every kind of input, chunked uploads by the server's limits, errors as types that name the bad item, async."""

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
from PIL import Image

from jepa_serve_client import AsyncClient, Client, Frames, Video, errors
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
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / "cat.png").write_bytes(png(photo("chelsea")[::4, ::4]))
    port = server.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-c", code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["(1,", "128)", "2", "doc-42"], done.stdout


def test_embed_takes_paths_bytes_arrays_videos_and_clips(server: str, tmp_path: Path):
    cat = png(photo("chelsea")[::4, ::4])
    (tmp_path / "cat.png").write_bytes(cat)
    (tmp_path / "clip.mp4").write_bytes(counting_video(6))
    with Client(server) as client:
        by_path, by_bytes = client.embed([tmp_path / "cat.png", cat])
        expected = httpx.post(f"{server}/embed", files={"files": ("cat.png", cat, "image/png")}).json()["embeddings"][0]
        np.testing.assert_allclose(by_path, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(by_path, by_bytes)
        model = client.models()["models"][0]
        size = model["input"]["image_size"]
        tensor = np.random.default_rng(0).standard_normal((3, *size)).astype(np.float32)
        video = client.embed([Video(tmp_path / "clip.mp4"), str(tmp_path / "clip.mp4")], num_frames=2)
        clip = client.embed([Frames([cat, cat])])
        tokens = client.embed([tensor], output="tokens", normalize=False)
    assert by_path.dtype == np.float32 and by_path.shape == (model["dim"],)
    assert abs(np.linalg.norm(by_path) - 1) < 1e-5
    np.testing.assert_allclose(video[0], video[1], rtol=1e-5, atol=1e-6)  # a path ending .mp4 is sent as a video
    np.testing.assert_allclose(clip[0], by_path, rtol=1e-4, atol=1e-5)  # one image is repeated to a clip
    assert tokens.ndim == 3 and tokens.shape[0] == 1 and tokens.shape[1] > 1  # (N, tokens, token dim)


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
        stored, metadata = client.get_point("chunked", "p200")
        np.testing.assert_allclose(stored, vectors[200] / np.linalg.norm(vectors[200]), rtol=1e-5)
        assert metadata == {"row": 200}
        results = client.search("chunked", vectors=vectors[:10], k=1)  # 10 queries, 4 per request
        assert [hits[0].id for hits in results] == ids[:10]
        pooled = client.embed([png(np.full((32, 32, 3), 20 * i, np.uint8)) for i in range(9)])  # 4 + 4 + 1
        assert pooled.shape[0] == 9 and len({row.tobytes() for row in pooled}) == 9
        assert client.delete("chunked", ids[:9]) == 9
        assert client.get_collection("chunked")["count"] == 241
        client.drop_collection("chunked")


def test_errors_are_one_type_per_code_and_name_the_item_across_chunks(small_server: str):
    good = png(np.full((32, 32, 3), 90, np.uint8))
    with Client(small_server) as client:
        with pytest.raises(errors.InvalidImage) as caught:
            client.embed([good] * 5 + [b"not an image"] + [good])  # the second request's item 1
        assert caught.value.index == 5 and caught.value.status == 400 and "decode" in caught.value.message
        with pytest.raises(errors.CollectionNotFound):
            client.get_collection("nothing-here")
        client.create_collection("errs", dim=4)
        bad = np.ones((30, 4), np.float32)
        bad[21, 2] = np.nan
        with pytest.raises(errors.InvalidVector) as caught:
            client.upsert("errs", [str(i) for i in range(30)], bad)
        assert caught.value.index == 21 and isinstance(caught.value, errors.UnprocessableEntity)
        with pytest.raises(errors.DimensionMismatch):
            client.search("errs", np.ones(5, np.float32))
        client.drop_collection("errs")


def test_async_client_embeds_upserts_and_searches(server: str):
    async def run() -> list:
        async with AsyncClient(server) as client:
            images = [png(np.full((32, 32, 3), 60 * i, np.uint8)) for i in range(3)]
            pooled = await client.embed(images)
            await client.create_collection("async-pets", dim=pooled.shape[1])
            await client.upsert("async-pets", ["a", "b", "c"], pooled)
            found = await asyncio.gather(*(client.search("async-pets", row, k=1) for row in pooled))
            await client.drop_collection("async-pets")
            return [hits[0].id for hits in found]

    assert asyncio.run(run()) == ["a", "b", "c"]


def test_predict_and_plan_return_arrays(server: str):
    with Client(server) as client:
        model = client.models()["models"][0]
        steps = np.full((3, model["predictor"]["action_dim"]), 0.5, np.float32)
        image = png(photo("chelsea")[::4, ::4])
        prediction = client.predict_future([image], steps)
        plan = client.plan([image], image, horizon=2, samples=16, iterations=1)
    assert prediction.states.shape == (3, model["dim"]) and prediction.initial_state.shape == (model["dim"],)
    assert plan.actions.shape == (2, model["predictor"]["action_dim"]) and np.isfinite(plan.cost)


def test_surprise_and_knn_classify(server: str):
    from models.demo import world

    pair = world.generate_violations(5, 1, "ball_teleport", steps=8, onset_range=(5, 6))
    frames = [png(f) for f in pair.violated.frames()[0]]
    with Client(server) as client:
        scored = client.surprise(frames, pair.violated.actions[0])
        pooled = client.embed(frames[:3])
        client.create_collection("client-knn", dim=pooled.shape[1])
        client.upsert("client-knn", ["a", "b", "c"], pooled, metadata=[{"kind": k} for k in ("x", "y", "y")])
        labels = client.classify(vectors=pooled[:1], collection="client-knn", k=1, label_field="kind")
        client.drop_collection("client-knn")
    assert scored["steps"] == list(range(2, 9)) and scored["surprising"][0] == 5
    assert labels == [[{"label": "x", "score": 1.0, "votes": 1}]]
