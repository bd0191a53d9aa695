"""docs/reliability.md: run the fault and hostile-input tests, and tabulate what each one saw.

    python -m loadtests.reliability            # (make reliability) a few minutes

The figures are the ones the tests assert on: each test appends what it measured
(tests/support/record.py) while this script runs it, so the table and the tests
cannot disagree. A failing test fails this script too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/service/test_embed_api.py",
    "tests/service/test_search_api.py",
    "tests/service/test_collections_api.py",
    "tests/service/test_collection_backends.py",
    "tests/service/test_point_ids.py",
    "tests/service/test_classify_api.py",
    "tests/service/test_predict_api.py",
    "tests/service/test_health_api.py",
    "tests/e2e/test_fuzz.py",
    "tests/e2e/test_overload.py",
    "tests/e2e/test_crash.py",
    "tests/e2e/test_milvus_replicas.py",
    "tests/e2e/test_redis_replicas.py",
    "tests/e2e/test_redis_outage.py",
    "tests/e2e/test_disk_full.py",
    "tests/e2e/test_graceful_shutdown.py",
    "tests/e2e/test_shared_data_dir.py",
    "tests/unit/models/test_hf_folder_integrity.py",
    "tests/e2e/test_video_memory.py",
    "tests/e2e/test_connections.py",
    "tests/e2e/test_startup_backend.py",
    "tests/unit/service/batching/test_batch_isolation.py",
    "tests/service/test_batch_isolation.py",
    "tests/service/test_media_refusals.py",
    "tests/e2e/test_image_memory.py",
    "tests/e2e/test_stream.py",
    "tests/e2e/test_startup_models.py",
]


def run_tests(record: Path) -> int:
    env = {**os.environ, "JEPA_RELIABILITY_RECORD": str(record)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT, env=env)
    return done.returncode


def render(lines: list[dict], returncode: int) -> str:
    hostile = [line for line in lines if line["scenario"] == "hostile input"]
    by_route: dict[str, Counter] = defaultdict(Counter)
    for line in hostile:
        by_route[line["route"]][line["status"]] += 1
    rows = []
    for route, statuses in sorted(by_route.items()):
        shown = ", ".join(f"{n}x {status}" for status, n in sorted(statuses.items()))
        # 503 (not ready) and 504 (deadline) are answers the tests asked for; a server error is anything else >= 500.
        errors = sum(n for s, n in statuses.items() if s >= 500 and s not in (503, 504, 507))
        rows.append(f"| bad input on `{route}` | {sum(statuses.values())} | {shown}; server errors: {errors} | 0 |")
    # A scenario recorded once per case (a "case" field) is one row counting its cases and their outcomes.
    cases: dict[str, list[dict]] = defaultdict(list)
    for line in lines:
        if "case" in line:
            cases[line["scenario"]].append(line)
    for scenario, records in cases.items():
        outcomes = Counter(str(r.get("refused", "accepted")) for r in records)
        shown = ", ".join(f"{n}x {outcome}" for outcome, n in sorted(outcomes.items()))
        kinds = "; ".join(r["case"] for r in records)
        rows.append(f"| {scenario} | {len(records)} | {shown} ({kinds}) | 0 |")
    others: dict[str, dict] = {}
    for line in lines:
        if line["scenario"] != "hostile input" and "case" not in line:
            others[line["scenario"]] = line  # the last record of a scenario holds its totals
    for scenario, figures in others.items():
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in figures.items() if k != "scenario" and k != "lost")
        rows.append(f"| {scenario} | 1 run | {shown} | {figures.get('lost', 0)} |")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    status = "all passed" if returncode == 0 else f"pytest exited {returncode}: SOME TESTS FAILED, see its output"
    return "\n".join(
        [
            "# Reliability: bad days, tried on purpose",
            "",
            f"Made by `python -m loadtests.reliability` on {stamp}, on a {os.cpu_count()}-core CPU machine without a GPU "
            f"(the tests below: {status}).",
            "Every row is a test in `make test`; the figures are what that test measured in this run.",
            "",
            "| what was tried | cases | what happened | acknowledged writes lost |",
            "|---|---:|---|---:|",
            *rows,
            "",
            "Statuses: 400 undecodable, 404 unknown name, 405 wrong method, 408 headers not received in time,",
            "409 space conflict, 413 too large, 415 wrong type, 422 invalid, 429 queue full (with Retry-After),",
            "503 not ready, Redis down or too many connections (with Retry-After), 504 deadline, 507 disk full. Tests: "
            + ", ".join(f"`{t}`" for t in TESTS)
            + ".",
            "",
            "The soak (minutes of steady mixed load; server RSS and open file descriptors sampled from /proc, the run fails",
            "if either keeps growing) is not part of `make test`: `make soak` (also run by `make bench`). The report of the",
            "last run kept in the tree, with its command, machine and date, is [docs/soak/report.md](soak/report.md).",
            "",
        ]
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record.jsonl"
        returncode = run_tests(record)
        lines = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    out = ROOT / "docs" / "reliability.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(render(lines, returncode))
    print(f"wrote {out} ({len(lines)} records)")
    return returncode


if __name__ == "__main__":
    raise SystemExit(main())
