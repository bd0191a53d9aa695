"""The load-test arithmetic on known inputs: schedules, the knee, spike recovery, memory trend, histogram deltas.

Pure Python and numpy: nothing here imports Locust.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtests import analysis, load_schedule, server_metrics


def test_step_schedule_holds_each_step_then_ends():
    s = load_schedule.step([1, 4, 16], 10)
    assert [p.users for p in s.phases] == [1, 4, 16]
    assert s.at(0).users == 1
    assert s.at(9.99).users == 1
    assert s.at(10).users == 4
    assert s.at(29.9).users == 16
    assert s.at(30) is None
    assert s.duration_s == 30


def test_spike_schedule_and_bad_input():
    s = load_schedule.spike(2, 40, 5, 10, 20)
    assert [(p.label, p.users, p.start_s, p.end_s) for p in s.phases] == [
        ("before", 2, 0, 5), ("spike", 40, 5, 15), ("after", 2, 15, 35)]
    with pytest.raises(ValueError, match="base < peak"):
        load_schedule.spike(40, 2, 5, 10, 20)
    with pytest.raises(ValueError, match="unknown shape 'ramp'"):
        load_schedule.from_options("ramp", users=1, spawn_rate=1, run_time_s=1, steps="1", step_seconds=1,
                                   spike_users="1,2", spike_seconds="1,1,1")


def test_constant_schedule_without_run_time_is_open_ended():
    s = load_schedule.constant(8, 4, None)
    assert s.at(1e9).users == 8


def steps(rps: list[float], mean: list[float]) -> list[dict]:
    return [
        {"users": 2**i, "ok_rps": r, "mean_ms": m, "p95_ms": 2 * m}
        for i, (r, m) in enumerate(zip(rps, mean, strict=True))
    ]


def test_knee_is_the_step_of_highest_throughput_per_latency():
    # power = rps / mean ms: 0.5, 0.864, 1.167, 0.529, 0.24
    knee = analysis.find_knee(steps([10, 19, 35, 37, 36], [20, 22, 30, 70, 150]))
    assert knee["users"] == 4
    assert not knee["at_first_step"]
    assert not knee["at_last_step"]
    assert knee["power"][2] == pytest.approx(35 / 30)
    assert knee["saturation"]["users"] == 8
    assert knee["saturation"]["gain"] == pytest.approx(37 / 35 - 1)
    assert knee["max_ok_rps"] == 37
    assert knee["max_ok_rps_users"] == 8


def test_knee_at_the_edge_of_the_range_says_so():
    rising = analysis.find_knee(steps([10, 20, 40], [10, 10, 10]))
    assert rising["users"] == 4
    assert rising["at_last_step"]
    assert rising["saturation"] is None
    queueing = analysis.find_knee(steps([30, 31, 32], [10, 50, 200]))
    assert queueing["users"] == 1
    assert queueing["at_first_step"]
    assert queueing["saturation"]["users"] == 2


def make_samples(rows: list[tuple[float, float, str, int]]) -> analysis.Samples:
    outcome = ["overload" if s == 429 else "ok" if 200 <= s < 300 else "fail" for _, _, _, s in rows]
    return analysis.Samples(
        t=np.array([r[0] for r in rows], dtype=float), ms=np.array([r[1] for r in rows], dtype=float),
        name=np.array([r[2] for r in rows], dtype=object), status=np.array([r[3] for r in rows]),
        outcome=np.array(outcome, dtype=object), users=np.ones(len(rows), dtype=int),
    )


def test_window_stats_keep_429_out_of_latency_and_count_5xx_as_failures():
    s = make_samples([(0, 10, "a", 200), (1, 20, "a", 200), (2, 1, "a", 429), (3, 500, "a", 503), (4, 30, "a", 200)])
    w = analysis.window_stats(s, 5.0)
    assert (w.requests, w.ok, w.overload, w.failures, w.server_errors) == (5, 3, 1, 1, 1)
    assert w.p50_ms == 20
    assert w.p99_ms == 30
    assert w.failure_ratio == pytest.approx(0.2)
    assert w.overload_ratio == pytest.approx(0.2)
    assert w.ok_rps == pytest.approx(0.6)


def test_spike_recovery_finds_the_first_calm_window():
    before = [(t, 10.0, "a", 200) for t in np.arange(0, 10, 0.1)]
    spike = [(t, 500.0, "a", 200 if i % 2 else 429) for i, t in enumerate(np.arange(10, 20, 0.1))]
    slow_tail = [(t, 300.0, "a", 200) for t in np.arange(20, 23, 0.1)]
    calm = [(t, 11.0, "a", 200) for t in np.arange(23, 40, 0.1)]
    s = make_samples(before + spike + slow_tail + calm)
    phases = [{"start_s": 0, "end_s": 10}, {"start_s": 10, "end_s": 20}, {"start_s": 20, "end_s": 40}]
    rec = analysis.spike_recovery(s, 0.0, phases)
    assert rec["baseline_p95_ms"] == 10
    assert rec["recovered_after_s"] == 3.0  # the window starting at 23 s is the first without the 300 ms tail
    assert rec["overload_total"] == 50
    assert rec["server_errors_total"] == 0


def test_memory_trend_slope():
    t = np.arange(0, 600, 10.0)
    rss = (100 + 2 * t / 60) * 2**20  # 2 MiB per minute
    m = analysis.memory_trend(t, rss)
    assert m["rss_slope_mb_per_min"] == pytest.approx(2.0)
    assert m["rss_growth_mb"] == pytest.approx(2 * (t[-1] - m["warmup_s"]) / 60, rel=0.05)


PROM_BEFORE = """
# TYPE jepa_queue_wait_seconds histogram
jepa_queue_wait_seconds_bucket{component="encoder",le="0.01",model="demo"} 10
jepa_queue_wait_seconds_bucket{component="encoder",le="0.1",model="demo"} 10
jepa_queue_wait_seconds_bucket{component="encoder",le="+Inf",model="demo"} 10
jepa_queue_wait_seconds_count{component="encoder",model="demo"} 10
jepa_queue_wait_seconds_sum{component="encoder",model="demo"} 0.05
"""
PROM_AFTER = """
# TYPE jepa_queue_wait_seconds histogram
jepa_queue_wait_seconds_bucket{component="encoder",le="0.01",model="demo"} 20
jepa_queue_wait_seconds_bucket{component="encoder",le="0.1",model="demo"} 110
jepa_queue_wait_seconds_bucket{component="encoder",le="+Inf",model="demo"} 110
jepa_queue_wait_seconds_count{component="encoder",model="demo"} 110
jepa_queue_wait_seconds_sum{component="encoder",model="demo"} 5.05
"""


def test_histogram_delta_and_quantile():
    d = server_metrics.histogram_delta(server_metrics.parse(PROM_BEFORE), server_metrics.parse(PROM_AFTER),
                                       "jepa_queue_wait_seconds", model="demo", component="encoder")
    assert d.count == 100
    assert d.mean == pytest.approx(0.05)
    # 10 of the 100 new observations are <= 10 ms, 90 in (10 ms, 100 ms]: p50 lies 40/90 into that bucket.
    assert d.quantile(0.5) == pytest.approx(0.01 + 0.09 * 40 / 90)
    assert d.quantile(0.05) == pytest.approx(0.005)
    empty = server_metrics.histogram_delta(server_metrics.parse(PROM_AFTER), server_metrics.parse(PROM_AFTER),
                                           "jepa_queue_wait_seconds", model="demo", component="encoder")
    assert empty.count == 0
    assert math.isnan(empty.mean)
    assert math.isnan(empty.quantile(0.95))


def test_fd_trend_reports_growth_after_warmup():
    import numpy as np

    from loadtests.analysis import fd_trend

    t = np.arange(10.0)
    fds = np.array([5, 40, 41, 41, 42, 41, 43, 44, 45, 47])
    trend = fd_trend(t, fds)
    assert trend == {"fd_start": 41, "fd_end": 47, "fd_max": 47, "fd_growth": 6}
    assert fd_trend(t[:2], fds[:2]) == {}
