"""A real browser (headless Chromium) renders /docs from a server with no way out to the internet: every host
but 127.0.0.1 fails to resolve, so a page that needed a CDN would stay blank."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000",
           "--window-size=1280,1400"]


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *OFFLINE, f"--user-data-dir={cwd / 'profile'}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
@pytest.mark.parametrize(("page", "marks"), [
    ("/docs", ["opblock-summary-path", "/collections/{name}/points", "upsert_points", "/embed", "/readyz"]),
    ("/redoc", ["/collections/{name}/points", "Upsert Points", "Embed images"]),
])
def test_docs_render_offline_and_list_the_operations(server: str, tmp_path: Path, page: str, marks: list[str]):
    done = chromium("--dump-dom", f"{server}{page}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    missing = [mark for mark in marks if mark not in dom]
    assert not missing, f"{page} rendered without {missing}: {dom[:1500]}"
    if page == "/docs":
        shot = tmp_path / "docs.png"
        chromium(f"--screenshot={shot}", f"{server}{page}", cwd=tmp_path)
        assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
