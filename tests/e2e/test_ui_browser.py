"""The /ui page in a real browser (headless Chromium, every host but 127.0.0.1 unresolvable) against a real server
with API keys: it asks for the key, lists the collection, searches by an uploaded image with thumbnails, and draws
the surprise curve of an uploaded image sequence with the threshold line and the surprising steps marked.

UI_SCREENSHOTS_DIR=docs .venv/bin/python -m pytest tests/e2e/test_ui_browser.py writes docs/ui.png (the README's).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from jepa_serve_client import Client
from PIL import Image

from service.security import hash_key, new_key
from tests.support.browser import CHROMIUM, Chromium
from tests.support.servers import running_server

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make deploy-tools, or apt-get install -y chromium)")]
READER, WRITER = new_key(), new_key()
KEYS = f"reader:{hash_key(READER)}:read;writer:{hash_key(WRITER)}:read,write"
ALARM, THRESHOLD = (214, 40, 40), (217, 119, 6)  # ui.js's COLORS.alarm and COLORS.threshold


@pytest.fixture(scope="module")
def site(demo_repository: Path, photos: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A server with keys and thumbnails from a folder indexed by the client; teleport frames to score."""
    work = tmp_path_factory.mktemp("ui")
    folder = work / "photos"
    folder.mkdir()
    for name, data in photos.items():
        (folder / f"{name}.png").write_bytes(data)
    frames_dir = work / "teleport"
    frames_dir.mkdir()
    frames, actions = teleport_frames()
    paths = []
    for i, frame in enumerate(frames):
        paths.append(frames_dir / f"frame_{i:02d}.png")
        Image.fromarray(frame).save(paths[-1])
    with running_server(demo_repository, work, api_keys=KEYS, ui_media_dir=str(folder)) as server:
        with Client(server.url, api_key=WRITER) as client:
            client.create_collection("photos", model="demo")
            assert client.index_folder("photos", folder, progress=False).ok
            expected = client.surprise(paths, actions)
        yield {"url": server.url, "work": work, "folder": folder, "frames": paths, "actions": actions,
               "expected": expected}


def teleport_frames() -> tuple[list[np.ndarray], list[list[float]]]:
    from models.demo import world

    pair = world.generate_violations(5, 1, "ball_teleport", steps=8, onset_range=(5, 6))
    return list(pair.violated.frames()[0]), pair.violated.actions[0].tolist()


def save_screenshot(png: bytes, name: str, work: Path) -> Path:
    """Into the test's folder; also into UI_SCREENSHOTS_DIR when set, as a small 128-colour PNG."""
    (work / name).write_bytes(png)
    target = os.environ.get("UI_SCREENSHOTS_DIR")
    if target:
        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(128)
        image.save(Path(target) / name, optimize=True)
    return work / name


def test_the_page_asks_for_the_key_searches_and_draws_the_surprise_curve(site: dict, tmp_path: Path):
    url = site["url"]
    with Chromium(tmp_path, window=(1280, 1180)) as tab:
        tab.open(f"{url}/ui")
        assert "needs an API key" in tab.wait_for("document.getElementById('status').textContent.includes('API key')"
                                                  " && document.getElementById('status').textContent")
        assert tab.evaluate("document.querySelectorAll('#collections tbody tr').length") == 0

        tab.evaluate(f"document.getElementById('api-key').value = {json.dumps(READER)};"
                     "document.getElementById('key-form').requestSubmit()")
        tab.wait_for("document.body.dataset.collections === '1' && document.body.dataset.busy === '0'")
        row = tab.evaluate("[...document.querySelectorAll('#collections tbody tr td')].map(td => td.textContent)")
        assert row[:6] == ["photos", "4", "128", "cosine", "flat", "demo"], row

        tab.choose_files("#search-file", [site["folder"] / "chelsea.png"])
        tab.evaluate("document.getElementById('search-form').requestSubmit()")
        tab.wait_for("document.querySelectorAll('#hits li').length === 4")
        hits = tab.evaluate("[...document.querySelectorAll('#hits li')].map(li => [li.dataset.id, "
                            "li.querySelector('.score').textContent])")
        assert hits[0] == ["chelsea.png", "score 1.0000"], hits
        assert {hit[0] for hit in hits} == {"astronaut.png", "coffee.png", "chelsea.png", "rocket.png"}
        loaded = tab.wait_for("[...document.querySelectorAll('#hits li img.thumb')].every(img => "
                              "img.dataset.loaded === 'true' && img.complete && img.naturalWidth > 0) && "
                              "[...document.querySelectorAll('#hits li img.thumb')].map(img => img.naturalWidth)")
        assert loaded == [160] * 4  # the photos are 160 px wide: under the thumbnail size, sent as they are
        assert "path" in tab.evaluate("document.querySelector('#hits li dl').textContent")

        tab.choose_files("#surprise-files", site["frames"])
        tab.evaluate(f"document.getElementById('surprise-actions').value = {json.dumps(json.dumps(site['actions']))};"
                     "document.getElementById('surprise-form').requestSubmit()")
        tab.wait_for("document.getElementById('surprise-curve').dataset.marks")
        expected = site["expected"]
        drawn = tab.evaluate("""(() => {
            const canvas = document.getElementById('surprise-curve');
            const ctx = canvas.getContext('2d');
            const pixel = (x, y) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
            const marks = JSON.parse(canvas.dataset.marks);
            const row = Number(canvas.dataset.thresholdY);
            const line = [];
            for (let x = 0; x < canvas.width; x++) line.push(pixel(x, row));
            return {marks: marks.map(([x, y]) => pixel(x, y)), line, steps: Number(canvas.dataset.steps),
                    caption: document.getElementById('surprise-caption').textContent,
                    answer: window.jepaUI.lastSurprise};
        })()""")
        shot = save_screenshot(tab.screenshot(), "ui.png", tmp_path)
        tab.evaluate("document.getElementById('search-id').value = 'coffee.png';"
                     "document.getElementById('search-k').value = '2';"
                     "document.getElementById('search-form').requestSubmit()")
        by_id = tab.wait_for("document.getElementById('search-summary').textContent === '2 hit(s) in photos' && "
                             "[...document.querySelectorAll('#hits li')].map(li => li.dataset.id)")
        assert "coffee.png" not in by_id  # a search by a stored point leaves that point out
        with Client(url, api_key=READER) as client:
            assert by_id == [hit.id for hit in client.search("photos", id="coffee.png", k=2)]
        resources = tab.evaluate("performance.getEntriesByType('resource').map(entry => entry.name)")
        errors = [line for line in tab.console if line.startswith("exception")]

    assert drawn["answer"]["surprising"] == expected.surprising
    assert drawn["answer"]["scores"] == pytest.approx(list(expected.scores), rel=1e-4)
    assert drawn["steps"] == len(expected.steps)
    assert expected.surprising, "the teleport must be surprising for this test to mean anything"
    assert len(drawn["marks"]) == len(expected.surprising)
    assert all(close(pixel, ALARM) for pixel in drawn["marks"]), drawn["marks"]
    assert sum(close(pixel, THRESHOLD) for pixel in drawn["line"]) > 300  # the dashed line, across the plot
    assert ", ".join(map(str, expected.surprising)) in drawn["caption"]
    assert resources
    assert all(name.startswith(url) for name in resources), resources  # nothing off the server
    assert not errors, errors
    assert shot.stat().st_size > 20_000


def close(pixel: list[int], color: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, color, strict=True))
