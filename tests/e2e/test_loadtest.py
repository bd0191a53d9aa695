"""The load-test runner end to end: Locust as a subprocess against a real server, a report read back.

Locust is never imported here (gevent would monkey-patch the test process):
the runner is started with `python -m loadtests.run`, as a user would.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import running_server

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None, reason="locust is not installed (the load/dev extra)"
    ),
]

REPORT_FILES = (
    "report.md",
    "summary.json",
    "locust.html",
    "locust_stats.csv",
    "locust_stats.json",
    "locust_stats_history.csv",
    "requests.csv",
    "metrics_before.prom",
    "metrics_after.prom",
    "throughput.png",
    "latency.png",
    "failures.png",
    "server.png",
)


def run_loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtests.run", *args], cwd=ROOT, capture_output=True, text=True, timeout=150
    )


def locust_aggregated(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")


@pytest.fixture(scope="module")
def uncached_server(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    # The suite reuses a few images: with the embedding cache on, the encoder would see almost none of them.
    with running_server(demo_repository, tmp_path_factory.mktemp("uncached"), embed_cache="off") as running:
        yield running.url


def test_short_run_writes_a_report_whose_numbers_agree(uncached_server: str, tmp_path: Path):
    server = uncached_server
    out = tmp_path / "report"
    done = run_loadtest(
        "--host",
        server,
        "-u",
        "10",
        "-r",
        "10",
        "-t",
        "6",
        "--wait-ms",
        "10,60",
        "--collection-size",
        "200",
        "--metrics-interval",
        "1",
        "--out",
        str(out),
        "--max-failure-ratio",
        "0",
        "--max-p95-ms",
        "60000",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name

    summary = json.loads((out / "summary.json").read_text())
    totals = summary["totals"]
    assert totals["requests"] >= 20
    assert totals["failures"] == 0
    assert totals["server_errors"] == 0
    assert totals["ok"] + totals["overload"] == totals["requests"]
    assert 0 < totals["p50_ms"] <= totals["p95_ms"] <= totals["p99_ms"] < 60_000
    assert 0 < totals["ok_rps"] < 10_000
    # The mix ran: every class the demo model supports made requests; /plan is on (the demo has a predictor).
    names = set(summary["by_name"])
    assert any(n.startswith("/embed") for n in names)
    assert any(n.startswith("/search") for n in names)
    assert any(n.startswith("/predict_future") for n in names)
    assert "PlanUser" not in summary["locust"]["disabled"], summary["locust"]["disabled"]

    # Locust's own final count is the per-request record's; its CSV (rewritten each second) is not ahead of it.
    assert summary["locust_final"] == {"requests": totals["requests"], "failures": 0}
    assert 0 < int(locust_aggregated(out / "locust_stats.csv")["Request Count"]) <= totals["requests"]
    # The server saw at least what the client recorded (Locust drops requests in flight when it stops).
    server_embeds = sum(
        r["count"] for r in summary["server"]["requests"] if r["route"] == "/embed" and r["status"] == "200"
    )
    client_embeds = sum(w["ok"] for n, w in summary["by_name"].items() if n.startswith("/embed"))
    assert server_embeds >= client_embeds > 0
    assert summary["server"]["route_latency"]["/embed"]["requests"] >= client_embeds
    encoder = summary["server"]["batchers"]["demo/encoder"]
    assert encoder["items"] >= client_embeds
    assert encoder["mean_batch_size"] >= 1
    assert 0 < encoder["mean_fill_ratio"] <= 1
    assert encoder["queue_wait_mean_ms"] >= 0

    report = (out / "report.md").read_text()
    assert f"{totals['requests']} requests: {totals['ok']} 2xx" in report
    assert "**PASSED**" in report
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_impossible_threshold_makes_the_runner_fail(demo_repository: Path, tmp_path: Path):
    out = tmp_path / "report"
    # No --host: the runner starts (and stops) its own server, and reads its memory from /proc.
    done = run_loadtest("-u", "3", "-r", "3", "-t", "4", "--collection-size", "64", "--metrics-interval", "1",
                        "--model-repository", str(demo_repository), "--out", str(out), "--max-p95-ms", "0.001")
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["server_started"] is True
    assert summary["passed"] is False
    [check] = summary["thresholds"]
    assert check["passed"] is False
    assert check["value"] > 0.001
    assert summary["memory"]["available"]
    assert summary["memory"]["rss_end_mb"] > 10
    assert "BROKEN" in (out / "report.md").read_text()
    assert "threshold p95 latency" in done.stdout
