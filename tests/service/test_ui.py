"""The /ui page on the real app (TestClient): served offline and without a key, its thumbnails only from
JEPA_UI_MEDIA_DIR and only with a key, never a path outside that folder."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from service.api.ui import ASSETS_DIR, THUMBNAIL_PX
from service.security import hash_key, new_key
from tests.conftest import png_bytes, serving

READER = new_key()
KEYS = f"reader:{hash_key(READER)}:read"


@pytest.fixture
def model_repository(fake_repository):
    return fake_repository


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """A thumbnail folder with photos, a text file, a symlink pointing out of it and a secret beside it."""
    folder = tmp_path / "media"
    (folder / "sub dir").mkdir(parents=True)
    (folder / "big.png").write_bytes(png_bytes(Image.new("RGB", (1000, 500), (200, 30, 30))))
    (folder / "sub dir" / "chat ☕.png").write_bytes(png_bytes(Image.new("RGB", (60, 40), (10, 200, 10))))
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "secret.png").write_bytes(png_bytes(Image.new("RGB", (8, 8), (0, 0, 0))))
    os.symlink(tmp_path / "secret.png", folder / "out.png")
    os.symlink(tmp_path, folder / "up")
    return folder


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {READER}"}


def test_the_page_and_its_assets_need_no_key_and_name_nothing_off_the_server(settings_factory):
    with serving(settings_factory(api_keys=KEYS)) as client:
        page = client.get("/ui")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert 'data-thumbnails="off"' in page.text
        for asset in ("/ui/assets/ui.js", "/ui/assets/ui.css"):
            assert asset in page.text
            assert client.get(asset).status_code == 200
        assert client.get("/collections").status_code == 401  # the data still needs the key the page asks for
    for asset in ASSETS_DIR.iterdir():  # no CDN, no font service: every URL is relative to this server
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", asset.read_text()), asset.name


def test_thumbnails_are_scaled_jpegs_of_images_in_the_folder_and_need_the_key(settings_factory, media: Path):
    with serving(settings_factory(api_keys=KEYS, ui_media_dir=media)) as client:
        assert 'data-thumbnails="on"' in client.get("/ui").text
        assert client.get("/ui/media/big.png").status_code == 401
        big = client.get("/ui/media/big.png", headers=bearer())
        assert big.status_code == 200, big.text
        assert big.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(big.content)).size == (THUMBNAIL_PX, THUMBNAIL_PX // 2)
        small = client.get("/ui/media/sub%20dir/chat%20%E2%98%95.png", headers=bearer())
        assert small.status_code == 200, small.text
        assert Image.open(io.BytesIO(small.content)).size == (60, 40)  # never scaled up
        text = client.get("/ui/media/notes.txt", headers=bearer())
        assert text.status_code == 400
        assert text.json()["error"]["code"] == "invalid_image"  # a file that is not an image is not sent


@pytest.mark.parametrize("path", [
    "../secret.png",  # normalised away by the HTTP client: still must not escape
    "..%2Fsecret.png",  # an encoded slash
    "sub%20dir%2F..%2F..%2Fsecret.png",
    "%2E%2E/secret.png",
    "%2Fetc%2Fpasswd",  # absolute
    "/etc/passwd",
    "out.png",  # a symlink out of the folder
    "up/secret.png",  # a folder symlink out of it
    "missing.png",
    "big.png%00.txt",
    "..%5Csecret.png",  # a backslash
])
def test_no_path_outside_the_folder_is_served(settings_factory, media: Path, path: str):
    with serving(settings_factory(ui_media_dir=media)) as client:
        answer = client.get(f"/ui/media/{path}")
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
        assert answer.json()["error"]["code"] in ("media_not_found", "not_found")


def test_thumbnails_are_off_without_the_setting(client):
    answer = client.get("/ui/media/anything.png")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "media_not_found"
    assert "JEPA_UI_MEDIA_DIR" in answer.json()["error"]["message"]


def test_an_image_over_the_byte_limit_is_refused_before_it_is_read(settings_factory, media: Path):
    with serving(settings_factory(ui_media_dir=media, max_image_bytes=1000)) as client:
        answer = client.get("/ui/media/big.png")
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "payload_too_large"
