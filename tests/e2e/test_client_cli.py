"""The `jepa-serve-client` command against a real server: the README's index example word for word (after the
tour's lines that make its files), the progress bar with rate and ETA, the summary of skipped and failed files with
reasons, exit statuses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import photo, png_bytes

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMMAND = str(BIN / "jepa-serve-client")


def readme_block(section: str, containing: str) -> list[str]:
    text = (ROOT / "README.md").read_text().split(section, 1)[1]
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if containing in b)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_readme_index_example_runs_as_written_after_the_tour(server: str, tmp_path: Path):
    tour = readme_block("## A 30-second tour", "export TOUR")
    makes_files = [line for line in tour if line.startswith(("export TOUR", "URL=", ".venv/bin/python"))]
    assert len(makes_files) == 5  # TOUR, URL, and the three lines that write cat.png, now/goal.png, teleport.json
    example = readme_block("## Python client", "jepa-serve-client")
    assert [line.split()[3] for line in example] == ["index", "search", "embed"]
    script = ["set -euo pipefail"]
    for line in makes_files + example + example[:1]:  # the index line twice: the second run resumes
        script.append(line.replace("URL=http://127.0.0.1:8000", f"URL={server}").replace(".venv/bin/", f"{BIN}/"))
    script.append('echo "TOUR=$TOUR"')
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "tour: 3 indexed, 1 skipped, 0 failed of 4 files" in out, out
    assert "skipped 1, not an image or video (by its suffix): teleport.json" in out
    assert "tour: 0 indexed, 5 skipped, 0 failed of 5 files" in out, out  # the second run: nothing sent again
    assert "skipped 3, already indexed (same size and mtime): cat.png, goal.png, now.png" in out
    first_hit = next(line for line in out.splitlines() if line.startswith("1\t"))
    rank, score, point_id, metadata = first_hit.split("\t")
    assert (score, point_id) == ("1.0000", "cat.png")
    assert json.loads(metadata)["path"] == "cat.png"
    tour_dir = Path(out.split("TOUR=")[-1].strip())
    try:
        assert np.load(tour_dir / "vectors.npy").shape == (2, 128)
    finally:
        shutil.rmtree(tour_dir)
    assert "(2, 128) float32 from model demo" in out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(("chelsea", "rocket", "coffee")):
        (root / ("sub" if i else ".") / f"{name}.png").write_bytes(png_bytes(photo(name), (64, 48)))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n not really")
    (root / "notes.md").write_text("hello")
    return root


def test_index_shows_progress_with_rate_and_eta_and_fails_when_a_file_failed(server: str, folder: Path):
    done = cli("--url", server, "index", str(folder), "--collection", "cli-photos", "--model", "demo",
               "--batch-size", "2", "--progress", cwd=folder.parent)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"4/4 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+file/s\]", done.stderr), done.stderr  # rate and ETA
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cli-photos: 3 indexed, 1 skipped, 1 failed of 5 files in ")
    assert "skipped 1, not an image or video (by its suffix): notes.md" in lines
    assert any(line.startswith("failed: broken.png: invalid_image: ") for line in lines), lines
    (folder / "broken.png").unlink()
    again = cli("--url", server, "index", str(folder), "--collection", "cli-photos", "--no-progress", cwd=folder)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stderr == ""
    assert again.stdout.startswith("cli-photos: 0 indexed, 4 skipped, 0 failed of 4 files")

    by_id = cli("--url", server, "search", "--id", "sub/rocket.png", "--collection", "cli-photos", "-k", "2",
                cwd=folder)
    assert by_id.returncode == 0, by_id.stderr
    assert [line.split("\t")[2] for line in by_id.stdout.splitlines()] != []
    assert "sub/rocket.png\t" not in by_id.stdout  # a search by a stored point leaves that point out
    embedded = cli("--url", server, "embed", "chelsea.png", "sub/coffee.png", cwd=folder)
    rows = [json.loads(line) for line in embedded.stdout.splitlines()]
    assert [(r["file"], r["model"], len(r["embedding"])) for r in rows] == [
        ("chelsea.png", "demo", 128), ("sub/coffee.png", "demo", 128)]


def test_usage_and_server_errors_exit_non_zero_with_one_line(server: str, folder: Path):
    from tests.support.toolkit import free_port

    missing = cli("--url", server, "index", str(folder), "--collection", "never-made", cwd=folder)
    assert missing.returncode == 1
    assert "collection 'never-made' does not exist" in missing.stderr
    both = cli("--url", server, "search", "chelsea.png", "--id", "x", "--collection", "c", cwd=folder)
    assert both.returncode == 2
    unknown = cli("--url", server, "search", "--id", "x", "--collection", "no-such", cwd=folder)
    assert unknown.returncode == 1
    assert "collection_not_found" in unknown.stderr
    down = cli("--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2", "--retries", "0", "embed", "chelsea.png",
               cwd=folder)
    assert down.returncode == 1
    assert "connection_error" in down.stderr
    assert "Traceback" not in down.stderr
    negative = cli("--url", server, "--retries", "-1", "embed", "chelsea.png", cwd=folder)
    assert negative.returncode == 2
    assert "must be 0 or more" in negative.stderr
