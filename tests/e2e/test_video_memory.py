"""A small video must not cost the server gigabytes: the outside test's 1,030-frame 768x768 case, against a real server.

It used to take 2.3 GB per request: every sampled frame was kept as a full-resolution RGB image, and the
requested num_frames (1,024) was checked against the model's clip length only after decoding. The server's
peak RSS is read from /proc (VmHWM, reset through clear_refs just before), so a regression fails here.
"""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests.support.record import record
from tests.support.servers import running_server, server_processes

pytestmark = pytest.mark.e2e

FRAMES, SIZE = 1030, 768
BOUND_MB = 200


@pytest.fixture(scope="module")
def long_video() -> bytes:
    """1,030 frames of 768x768 H.264 (a diagonal ramp that moves: small on disk, quick to encode and decode)."""
    ramp = (np.add.outer(np.arange(SIZE), np.arange(SIZE)) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "35"}
        for i in range(FRAMES):
            gray = np.roll(ramp, i, axis=1)
            frame = av.VideoFrame.from_ndarray(np.stack([gray, gray, gray], axis=-1), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def start_peaks(pid: int) -> dict[int, int]:
    """Peak RSS from here on, for every process of the server (the supervisor, its core and fronts): writing 5 to
    clear_refs resets VmHWM to the current RSS. -> each process's RSS now (kB)."""
    before = {}
    for process in server_processes(pid):
        Path(f"/proc/{process}/clear_refs").write_text("5")
        before[process] = status_kb(process, "VmRSS")
    return before


def peak_growth_mb(before: dict[int, int]) -> float:
    """How far the server's processes rose above `before` at their peaks, added up (peaks of different moments
    added: an upper bound of the server's own peak)."""
    return sum(status_kb(process, "VmHWM") - kb for process, kb in before.items()) / 1024


def test_the_1030_frame_768px_video_stays_under_the_memory_bound(demo_repository, tmp_path, long_video):
    body = base64.b64encode(long_video).decode()
    with running_server(demo_repository, tmp_path, decode_threads="4") as server:
        url = server.url
        small = httpx.post(f"{url}/embed", timeout=60,
                           json={"inputs": [{"video": body}], "stride": 1, "num_frames": 1})  # codecs loaded, pools up
        assert small.status_code == 200, small.text
        before = start_peaks(server.pid)

        asks = {
            # the outside test's request: 1,024 frames one by one, for a model whose clip is far shorter
            "stride 1, num_frames 1024": {"stride": 1, "num_frames": 1024},
            # the model's own clip length, spread over the whole video: every frame of it is decoded
            "uniform over all 1030 frames": {},
        }
        jobs = [(name, ask) for name, ask in asks.items() for _ in range(3)]  # three of each at once

        def send(job):
            name, ask = job
            r = httpx.post(f"{url}/embed", timeout=120, json={"inputs": [{"video": body}], **ask})
            return name, r.status_code, r.json()

        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(send, jobs))
        growth_mb = peak_growth_mb(before)

    statuses = {name: sorted({status for n, status, _ in answers if n == name}) for name in asks}
    refused = [payload for name, status, payload in answers if name == "stride 1, num_frames 1024"]
    assert statuses["stride 1, num_frames 1024"] == [422], answers
    assert all(p["error"]["code"] == "invalid_clip" for p in refused), refused
    assert statuses["uniform over all 1030 frames"] == [200], answers
    sampled = [p["sampling"][0] for name, status, p in answers if name == "uniform over all 1030 frames"]
    assert sampled[0]["source"]["frames"] == FRAMES
    assert sampled[0]["frame_indices"][-1] > FRAMES // 2
    assert growth_mb < BOUND_MB, f"server peak RSS grew {growth_mb:.0f} MB"
    record(f"video memory: {FRAMES}-frame {SIZE}x{SIZE} H.264 ({len(long_video) / 1e6:.1f} MB), 6 requests at once",
           requests=len(answers), refused_422_before_decoding=len(refused),
           decoded_whole_video_200=len(answers) - len(refused),
           peak_rss_growth_mb=round(growth_mb, 1), bound_mb=BOUND_MB)
