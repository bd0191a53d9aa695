"""A real server process started the way `make serve` starts it, driven with real PNG files.

It also runs the README's curl tour word for word (port swapped), so the
README cannot drift from what the server does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_embed_store_search_predict_with_real_pngs(server: str, photos: dict[str, bytes], tmp_path: Path):
    import base64

    files = {}
    for name, data in photos.items():
        files[name] = tmp_path / f"{name}.png"
        files[name].write_bytes(data)
    with httpx.Client(base_url=server, timeout=30) as http:
        uploads = [("files", (p.name, p.read_bytes(), "image/png")) for p in files.values()]
        embedded = http.post("/embed", files=uploads)
        assert embedded.status_code == 200, embedded.text
        vectors = np.asarray(embedded.json()["embeddings"])
        assert vectors.shape == (4, 128)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

        assert http.put("/collections/e2e", json={"model": "demo"}).status_code == 201
        names = list(files)
        stored = http.post("/collections/e2e/points", json={
            "ids": names,
            "inputs": [{"image": base64.b64encode(files[n].read_bytes()).decode()} for n in names],
            "metadata": [{"file": files[n].name} for n in names],
        })
        assert stored.json()["count"] == 4
        hits = http.post("/search", json={"collection": "e2e", "vectors": vectors.tolist(), "k": 1}).json()["results"]
        assert [h[0]["id"] for h in hits] == names

        predicted = http.post("/predict_future", json={
            "context": [{"image": base64.b64encode(files["rocket"].read_bytes()).decode()}],
            "actions": [[0.2, 0.1]] * 4,
        })
        assert predicted.status_code == 200
        assert len(predicted.json()["states"]) == 4
        assert "jepa_batch_size_bucket" in http.get("/metrics").text


def readme_tour() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A 30-second tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_tour_works_as_written(server: str, tmp_path: Path):
    lines = readme_tour()
    assert sum(line.startswith("curl") for line in lines) >= 7
    assert "URL=http://127.0.0.1:8000" in lines, "the tour names the server once, in $URL"
    assert not [line for line in lines if ":8000" in line and not line.startswith("URL=")], "only $URL names it"
    script = ["set -euo pipefail"]
    for line in lines:
        line = line.replace("URL=http://127.0.0.1:8000", f"URL={server}").replace(".venv/bin/python", sys.executable)
        # -f: any HTTP error fails the tour
        script.append(line.replace("curl -s ", "curl -sf ", 1))
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list(tmp_path.iterdir()), "the tour left files in the folder it was run from"
    assert '"hits":[{"id":"cat"' in done.stdout
    assert '"states":[[' in done.stdout
    assert "jepa_batch_size_count" in done.stdout


def test_ids_with_slashes_percent_signs_and_line_breaks_are_fetched_and_deleted(server: str):
    """Through a real server, which decodes the path once (the in-process suite, tests/service/test_point_ids.py,
    quotes twice for Starlette's TestClient): `a%2Fb` used to be a route miss."""
    from urllib.parse import quote

    ids = ["a/b", "/", "a/", "%", "%2F", "100% sure", "line\nbreak", "a?b#c", "...", "./", ".", ".."]
    with httpx.Client(base_url=server, timeout=10) as http:
        assert http.put("/collections/ids-http", json={"dim": 2}).status_code in (200, 201)
        stored = http.post("/collections/ids-http/points",
                           json={"ids": ids, "vectors": [[1.0, float(i)] for i in range(len(ids))]})
        assert stored.status_code == 200, stored.text
        for point_id in ids:
            # as the Python client writes a segment: '.' and '..' as %2E, or HTTP clients drop them
            segment = quote(point_id, safe="") if point_id not in (".", "..") else "%2E" * len(point_id)
            url = f"/collections/ids-http/points/{segment}"
            got = http.get(url)
            assert got.status_code == 200, (point_id, got.text)
            assert got.json().get("id") == point_id, (point_id, got.text)
        deleted = http.request("DELETE", "/collections/ids-http/points", json={"ids": ids})
        assert deleted.json() == {"deleted": len(ids), "count": 0}
        assert http.delete("/collections/ids-http").status_code == 204
