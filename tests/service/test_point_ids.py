"""Every id a backend stores can be fetched, searched by and deleted, and no id selects another point: the same
hostile ids (and metadata values) on every storage backend (local, redis, milvus: tests/service/conftest.py).

The milvus backend used to paste ids into its filter expressions unescaped: `x'] or id != 'zz' or id in ['`
deleted every point, `x' , 'keep1` fetched and deleted `keep1`, and an id with a backslash or a newline was
stored but could never be fetched or deleted again (500). An id with `/` was stored everywhere but
`GET .../points/a%2Fb` was a route miss.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np

from tests.conftest import serving
from tests.support.record import record

DIM = 4
KEEP = ["keep1", "keep2", "zz"]
HOSTILE = [
    "x'",
    'x"',
    "x' , 'keep1",
    "x'] or id != 'zz' or id in ['",
    '" or id != "zz" or id in ["',
    "a\\b",
    "trailing\\",
    "\\",
    "\\'",
    "line\nbreak",
    "cr\rlf\n",
    "tab\there",
    "a/b",
    "/",
    "a/",
    "/leading",
    "a//b",
    ".",
    "..",
    "../keep1",
    "%",
    "%2F",
    "100% sure",
    "a?b#c",
    "a b",
    "ünïcødé-猫-🐱",
    "id",
    "keep1 ",
    "'" * 256,
    ("\\'\"\n/%" * 43)[:256],  # as long as an id may be, every troublesome character in it
]
# Filter values a client sends: they reach an engine's expression only through a typed, hashed key.
HOSTILE_VALUES = ["x' or 1 == 1 or 'y", '") or true or ("', "a\\", "line\nbreak", 'match["x"]', "%"]


def encoded(point_id: str) -> str:
    """One path segment, as the Python client writes it: '.' and '..' as %2E (clients drop them as dot segments)."""
    return quote(point_id, safe="") if point_id not in (".", "..") else "%2E" * len(point_id)


def point_url(collection: str, point_id: str) -> str:
    """Encoded twice: Starlette's TestClient decodes the path a second time (`unquote(request.url.path)`), where a
    real server decodes it once (tests/e2e/test_server.py fetches such ids from a real server, encoded once)."""
    return f"/collections/{collection}/points/{quote(encoded(point_id), safe='')}"


def test_hostile_ids_are_stored_fetched_searched_and_deleted_exactly(store_settings, backend):
    ids = KEEP + HOSTILE
    vectors = np.random.default_rng(5).standard_normal((len(ids), DIM)).astype(np.float32)
    with serving(store_settings()) as client:
        assert client.put("/collections/h", json={"dim": DIM, "metric": "l2"}).status_code == 201
        stored = client.post("/collections/h/points", json={
            "ids": ids, "vectors": vectors.tolist(), "metadata": [{"name": i} for i in ids]})
        assert stored.status_code == 200, stored.text
        assert stored.json()["count"] == len(ids)

        # Ids that are not stored select nothing, however they are written.
        for probe in HOSTILE:
            assert client.get(point_url("h", probe[:250] + "-none")).status_code == 404
        missing = client.request("DELETE", "/collections/h/points", json={"ids": [p[:255] + "?" for p in HOSTILE]})
        assert missing.status_code == 200, missing.text
        assert missing.json() == {"deleted": 0, "count": len(ids)}

        for row, point_id in enumerate(ids):
            got = client.get(point_url("h", point_id))
            assert got.status_code == 200, (point_id, got.text)
            assert got.json()["id"] == point_id
            assert got.json()["metadata"] == {"name": point_id}
            np.testing.assert_allclose(got.json()["vector"], vectors[row], rtol=1e-6)
            near = client.post("/search", json={"collection": "h", "id": point_id, "k": len(ids)})
            assert near.status_code == 200, (point_id, near.text)
            assert sorted(h["id"] for h in near.json()["hits"]) == sorted(set(ids) - {point_id})
            filtered = client.post("/search", json={"collection": "h", "vector": [0.0] * DIM, "k": len(ids),
                                                    "filter": {"name": point_id}})
            assert [h["id"] for h in filtered.json()["hits"]] == [point_id], point_id

        left = len(ids)
        for point_id in HOSTILE:
            deleted = client.request("DELETE", "/collections/h/points", json={"ids": [point_id]})
            left -= 1
            assert deleted.status_code == 200, (point_id, deleted.text)
            assert deleted.json() == {"deleted": 1, "count": left}, point_id
            assert client.get(point_url("h", point_id)).status_code == 404
        assert all(client.get(point_url("h", k)).status_code == 200 for k in KEEP)
        record("hostile point ids (quotes, expression fragments, backslash, newline, '/', '%', unicode, 256 chars)",
               case=backend, refused=f"{len(HOSTILE)} stored, fetched, searched by and deleted; 0 others selected")


def test_hostile_metadata_values_filter_exactly(store_settings, backend):
    with serving(store_settings()) as client:
        assert client.put("/collections/m", json={"dim": DIM}).status_code == 201
        for n, value in enumerate(HOSTILE_VALUES):
            metadata = [{"tag": value}, {"tag": "other"}, {"tag": value + " "}, {"other": value}]
            r = client.post("/collections/m/points", json={
                "ids": [f"{n}a", f"{n}b", f"{n}c", f"{n}d"], "vectors": np.eye(DIM).tolist(), "metadata": metadata})
            assert r.status_code == 200, r.text
        for n, value in enumerate(HOSTILE_VALUES):
            for spec, expected in (({"tag": value}, [f"{n}a"]), ({"tag": {"in": [value, "nope"]}}, [f"{n}a"]),
                                   ({value: "x"}, []), ({"other": {"in": [value]}}, [f"{n}d"])):
                found = client.post("/search", json={"collection": "m", "vector": [1.0] * DIM, "k": 40,
                                                     "filter": spec})
                assert found.status_code == 200, found.text
                assert [h["id"] for h in found.json()["hits"]] == expected, spec


def test_ids_that_are_not_unicode_text_are_refused_before_anything_is_stored(store_settings):
    """A lone surrogate (valid JSON, `"\\ud800"`) cannot be written as UTF-8 by any engine nor in a response."""
    with serving(store_settings()) as client:
        assert client.put("/collections/s", json={"dim": DIM}).status_code == 201
        for bad in ("\ud800", "a\udfffb"):
            body = json.dumps({"ids": ["ok", bad], "vectors": np.eye(DIM)[:2].tolist()})  # ASCII: "\ud800" escaped
            r = client.post("/collections/s/points", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["detail"]["index"] == 1
        assert client.get("/collections/s").json()["count"] == 0
