"""Media the server used to take silently, or refuse in the wrong words (issue 23 item 10, issue 26):

- a multi-frame GIF, TIFF or WebP was decoded as its first frame (a 3,000-frame GIF, a 500-page TIFF: 200);
- an image past Pillow's own bomb guard was refused with Pillow's limit (178956970 pixels), not ours;
- a PNG sent as `{"video": ...}` or uploaded as `clip.mp4` became a one-frame video, padded into a clip (200).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo, png_bytes
from tests.support.record import record
from tests.support.toolkit import assert_error
from tests.video_files import counting_video


def frames_of(n: int, mode: str = "RGB") -> list[Image.Image]:
    base = Image.fromarray(photo("coffee")).resize((48, 32)).convert(mode)
    return [base.rotate(i) for i in range(n)]


def multi_frame(fmt: str, n: int) -> bytes:
    frames = frames_of(n, "P" if fmt == "GIF" else "RGB")  # palette frames: a GIF of 3,000 is not quantised 3,000 times
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], **({"lossless": True}
                                                                                  if fmt == "WEBP" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "frames"), [("GIF", 3000), ("TIFF", 500), ("WEBP", 20), ("PNG", 5)])
def test_an_animated_or_multi_page_image_is_refused(client, fmt, frames):
    data = multi_frame(fmt, frames)
    answer = client.post("/embed", json={"inputs": [{"image": base64.b64encode(data).decode()}]})
    error = assert_error(answer, 415, "unsupported_image_format")
    assert "more than one frame" in error["message"]
    assert error["detail"]["max_frames"] == 1
    one = io.BytesIO()
    frames_of(1)[0].save(one, format=fmt)
    assert client.post("/embed", json={"inputs": [{"image": base64.b64encode(one.getvalue()).decode()}]}
                       ).status_code == 200  # one frame of the same format is an image
    record("multi-frame images sent as images", case=f"{frames}-frame {fmt}", refused="415 unsupported_image_format")


def test_the_pixel_limit_is_stated_as_ours_even_past_pillows_guard(client):
    # 20,000 x 20,000 one-bit PNG: 50 kB, 400 M pixels, past Pillow's own guard (2 x 89,478,485)
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")
    answer = client.post("/embed", files=[("files", ("bomb.png", buffer.getvalue(), "image/png"))])
    error = assert_error(answer, 413, "payload_too_large")
    assert "40000000" in error["message"]
    assert "178956970" not in error["message"]
    assert error["detail"]["max_pixels"] == 40_000_000


def test_a_still_image_sent_as_a_video_is_refused_and_told_to_send_an_image(client):
    png = png_bytes(photo("chelsea"), (96, 72))
    as_json = client.post("/embed", json={"inputs": [{"video": base64.b64encode(png).decode()}]})
    error = assert_error(as_json, 415, "unsupported_media_type")
    assert "still image (PNG)" in error["message"]
    assert "send it as an image" in error["message"]
    named = client.post("/embed", files=[("files", ("clip.mp4", png, "application/octet-stream"))])
    assert "send it as an image" in assert_error(named, 415, "unsupported_media_type")["message"]
    typed = client.post("/embed", files=[("files", ("upload", png, "video/mp4"))])
    assert_error(typed, 415, "unsupported_media_type")
    # what it is, sent as what it is, is served; and a real video named as one still is
    assert client.post("/embed", files=[("files", ("cat.png", png, "image/png"))]).status_code == 200
    video = counting_video(6, size=64)
    assert client.post("/embed", files=[("files", ("clip.mp4", video, "video/mp4"))]).status_code == 200
    surprise = client.post("/surprise", json={"observations": [{"video": base64.b64encode(png).decode()}],
                                              "actions": np.zeros((15, 2)).tolist()})
    assert_error(surprise, 415, "unsupported_media_type")
    record("a still image sent as a video", case="PNG as {video}, as clip.mp4, as video/mp4, to /surprise",
           refused="415 unsupported_media_type")
