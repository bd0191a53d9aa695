"""Images cost memory the limits did not bound (issue 23 item 10): four concurrent 1.9 kB lossless 6000 x 6000
WebPs took a real server from 557 to 1,424 MB of RSS, never given back. Each image decode now reserves its
estimated peak (one such WebP: about 550 MB, decoder buffers included) from JEPA_IMAGE_DECODE_BUDGET_BYTES, shared
by the whole server (every front reserves from one count), so they decode one after another. The server's peak RSS
is the sum of its processes' RSS, read from /proc every 10 ms while the requests run (each process's own peak,
VmHWM, would add the peaks of decodes that ran one after another in different fronts)."""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.support.record import record
from tests.support.servers import rss_bytes, running_server

pytestmark = pytest.mark.e2e

SIDE = 6000
REQUESTS = 4
BUDGET_MB = 600
# The budget, and what the allocator keeps around it: 688 MB measured (2 cores, glibc), 1,100 MB before the budget.
BOUND_MB = BUDGET_MB + 150


class RssWatch:
    """The server's RSS (every process added up), read every 10 ms on a thread of its own until the block ends."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(0.01):  # a sampling interval: the reading is the point, not an ordering
            self.peak = max(self.peak, rss_bytes(self.pid) or 0.0)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid) or 0.0)


def lossless_webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE), (10, 200, 30)).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def test_four_6000px_lossless_webps_at_once_stay_within_the_decode_budget(demo_repository, tmp_path):
    image = lossless_webp()
    body = {"inputs": [{"image": base64.b64encode(image).decode()}]}
    with running_server(demo_repository, tmp_path, decode_threads="2", embed_cache="off",
                        image_decode_budget_bytes=str(BUDGET_MB * 2**20), max_image_pixels=str(36_000_000)) as server:
        url = server.url
        small = Image.new("RGB", (64, 64))
        warm = io.BytesIO()
        small.save(warm, format="WEBP", lossless=True)  # the codec loaded, the pools up
        assert httpx.post(f"{url}/embed", timeout=60,
                          json={"inputs": [{"image": base64.b64encode(warm.getvalue()).decode()}]}).status_code == 200
        before = rss_bytes(server.pid)
        with ThreadPoolExecutor(REQUESTS + 1) as pool, RssWatch(server.pid) as watch:
            answers = list(pool.map(lambda _: httpx.post(f"{url}/embed", json=body, timeout=120), range(REQUESTS)))
        growth_mb = (watch.peak - before) / 2**20
    assert [a.status_code for a in answers] == [200] * REQUESTS, [a.text[:200] for a in answers]
    assert growth_mb < BOUND_MB, f"server peak RSS grew {growth_mb:.0f} MB"
    record(f"image memory: {REQUESTS} lossless {SIDE}x{SIDE} WebPs ({len(image)} bytes each) at once, 2 decode threads",
           requests=REQUESTS, answered_200=REQUESTS, peak_rss_growth_mb=round(growth_mb, 1),
           decode_budget_mb=BUDGET_MB, bound_mb=BOUND_MB)
