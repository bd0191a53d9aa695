"""The host benchmark (make bench-host): its confinement holds where taskset's does not, its arithmetic, and a
smoke run that writes a table of real figures (tiny windows: the figures mean nothing, their presence does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loadtests import bench_host
from loadtests.host_cpuset import Confiner, CoreGroup, PlacementProbe, detect_confiner
from loadtests.host_measure import DECODE, JEPA, NAIVE, Measurement, summarise
from loadtests.host_report import Figures, goals
from loadtests.host_wrk import parse_summary, wrk_path

CPUS = sorted(os.sched_getaffinity(0))

# A process that does what ONNX Runtime does: widen its own affinity to every CPU, then run threads.
WIDENING = f"""
import os, threading, time
try:
    os.sched_setaffinity(0, {set(CPUS)!r})
except OSError:
    pass
def spin():
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        pass
threads = [threading.Thread(target=spin) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(sorted(os.sched_getaffinity(0)))
"""


def run_widening(group: CoreGroup) -> tuple[list[int], dict]:
    with PlacementProbe(group, interval_s=0.05) as probe:
        process = subprocess.Popen(group.command([sys.executable, "-c", WIDENING]), stdout=subprocess.PIPE, text=True)
        group.started(process.pid)
        output, _ = process.communicate(timeout=60)
    return json.loads(output), probe.placement.as_dict()


def test_a_cpuset_group_holds_a_process_that_widens_its_affinity_and_is_removed_after():
    confiner = detect_confiner()
    if not confiner.enforced:
        pytest.skip(f"no cpuset cgroup here: {confiner.reason}")
    with CoreGroup(confiner, "test", CPUS[:1]) as group:
        affinity, placement = run_widening(group)
        assert group.path is not None
        assert group.path.exists()
    assert affinity == CPUS[:1]
    assert placement["confined"], placement
    assert placement["threads"] >= 5  # the main thread and the four spinners were all sampled
    assert not group.path.exists()


def test_taskset_alone_lets_the_process_escape_and_the_probe_says_so():
    if len(CPUS) < 2:
        pytest.skip("one CPU: nothing to escape to")
    with CoreGroup(Confiner("taskset", reason="test"), "test", CPUS[:1]) as group:
        affinity, placement = run_widening(group)
    assert affinity == CPUS
    assert not placement["confined"]


def test_wrk_summary_line_is_read():
    output = ("Running 1s test\n"
              'WRK_JSON {"duration_us": 2000000, "requests": 10, "bytes": 1, "connect_errors": 0, "read_errors": 0, '
              '"write_errors": 0, "status_errors": 2, "timeouts": 0, "p50_us": 1500, "p90_us": 1, "p99_us": 9000, '
              '"mean_us": 1.0, "max_us": 1}\n')
    summary = parse_summary(output)
    assert summary["requests"] == 10
    assert summary["status_errors"] == 2
    with pytest.raises(RuntimeError, match="no summary"):
        parse_summary("Running 1s test\n")


def point(row: str, payload: str, cores: int, rate: float, repeat: int = 0, requests: int = 100) -> Measurement:
    detail = {"connections": 16, "requests": requests} if row in (JEPA, NAIVE) else {}
    return Measurement(row=row, model="tiny", payload=payload, cores=cores, repeat=repeat, img_per_s=rate,
                       placement={"confined": True, "seen_on": list(range(cores))}, detail=detail)


def test_goals_are_ratios_of_the_median_runs():
    measurements = [
        point(JEPA, "224x8", 1, 500), point(JEPA, "224x8", 1, 400, 1), point(JEPA, "224x8", 1, 600, 2),
        point(JEPA, "224x8", 2, 950), point(NAIVE, "224x8", 2, 700), point(DECODE, "224", 2, 1000),
        point(JEPA, "224x1", 1, 300), point(JEPA, "224x1", 2, 450, requests=20), point(NAIVE, "224x1", 2, 300),
    ]
    summaries = summarise(measurements)
    by_key = {s.key: s for s in summaries}
    assert by_key[(JEPA, "tiny", "224x8", 1)].img_per_s == 500
    assert (by_key[(JEPA, "tiny", "224x8", 1)].img_min, by_key[(JEPA, "tiny", "224x8", 1)].img_max) == (400, 600)
    verdicts = {g.text: (round(g.measured, 3) if g.measured is not None else None, g.verdict)
                for g in goals(Figures(summaries), 2, {}, None)}
    assert verdicts["8 × 224 px JPEGs: 2 cores ≥ 1.8× 1 core"] == (1.9, "met")
    assert verdicts["8 × 224 px JPEGs: ≥ 0.7 of the 2-core decode ceiling"] == (0.95, "met")
    assert verdicts["8 × 224 px JPEGs: ≥ 1.3× the naive app under uvicorn --workers 2"] == (1.357, "met")
    # 20 requests over 16 connections: too few for the rate to be trusted, whatever the ratio says
    assert verdicts["1-image requests: 2 cores ≥ 1.7× 1 core"][1].startswith("unreliable")
    assert verdicts["12 MP photos: ≥ 5× today's img/s per core"] == (None, "not measured")
    one_core = goals(Figures(summaries), 1, {}, None)  # one core count measured: no scaling to state
    assert one_core[0].verdict == "not measured"


@pytest.mark.e2e
@pytest.mark.slow
def test_smoke_run_writes_a_table_of_figures(tmp_path):
    cores = "1,2" if len(CPUS) >= 2 else "1"
    out = tmp_path / "out"
    code = bench_host.main(["--rows", "224x8,224x1", "--cores", cores, "--seconds", "1", "--warmup", "0",
                            "--repeats", "1", "--repository", str(tmp_path / "repository"), "--out", str(out)])
    assert code == 0
    report = (out / "host.md").read_text()
    result = json.loads((out / "host.json").read_text())
    rates = {(s["row"], s["payload"], s["cores"]): s["img_per_s"] for s in result["summary"]}
    expected = {(DECODE, "224", int(c)) for c in cores.split(",")}
    if wrk_path():
        expected |= {(row, payload, int(c)) for row in (JEPA, NAIVE) for payload in ("224x8", "224x1")
                     for c in cores.split(",")}
        assert all(s["errors"] == 0 for s in result["summary"])
        # every HTTP row says where its CPU went: jepa-serve's fronts decode on their threads, its core runs the engine
        jepa = next(s for s in result["summary"] if s["row"] == JEPA and s["payload"] == "224x8")
        by_role = jepa["detail"]["cpu_ms_per_request"]
        assert {"jepa-front loop", "jepa-front threads", "jepa-core loop", "jepa-core threads"} <= set(by_role)
        assert all(ms > 0 for ms in by_role.values())
        assert "## Where a request's CPU goes" in report
    else:
        assert "wrk is not installed" in report
    assert expected <= set(rates)
    assert min(rates[k] for k in expected) > 0
    assert "## Rows" in report
    assert "## Goals of issue 27" in report
    assert "Load average before the run" in report
    confiner = detect_confiner()
    assert confiner.describe() in report
    if confiner.enforced:
        assert all(m["placement"]["confined"] for m in result["measurements"])
        assert not list(confiner.root.glob(f"jepa-bench-{os.getpid()}-*"))  # the groups were removed
