"""Numbers from a load test's per-request record: time series, per-phase stats, the knee, spike recovery, memory.

Latency percentiles are over successful (2xx) requests only; a 429 is the
service refusing work quickly, so it is counted (overload ratio) but kept out
of the latency figures. Failures are everything else that is not 2xx or 429.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

KNEE_MIN_GAIN = 0.10  # a step that adds less than 10% throughput is past the knee
RECOVERY_WINDOW_S = 5.0
RECOVERY_P95_FACTOR = 1.5


@dataclass
class Samples:
    t: np.ndarray  # request start, unix seconds
    ms: np.ndarray
    name: np.ndarray
    status: np.ndarray
    outcome: np.ndarray  # "ok" | "overload" | "fail"
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    def between(self, lo: float, hi: float) -> Samples:
        keep = (self.t >= lo) & (self.t < hi)
        return Samples(*(getattr(self, f)[keep] for f in ("t", "ms", "name", "status", "outcome", "users")))


def load_samples(path: Path) -> Samples:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return Samples(
        t=np.array([float(r["t"]) for r in rows]),
        ms=np.array([float(r["ms"]) for r in rows]),
        name=np.array([r["name"] for r in rows], dtype=object),
        status=np.array([int(r["status"]) for r in rows]),
        outcome=np.array([r["outcome"] for r in rows], dtype=object),
        users=np.array([int(r["users"]) for r in rows]),
    )


def _pct(values: np.ndarray, q: float) -> float:
    # nearest rank (the smallest latency that q% of requests did not exceed), as Locust defines it
    return float(np.percentile(values, q, method="inverted_cdf")) if len(values) else math.nan


@dataclass
class WindowStats:
    seconds: float
    requests: int
    ok: int
    overload: int
    failures: int
    server_errors: int  # 5xx
    rps: float
    ok_rps: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    failure_ratio: float
    overload_ratio: float
    users: int  # median over the requests: the load level of a phase
    users_max: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def window_stats(samples: Samples, seconds: float) -> WindowStats:
    ok = samples.ms[samples.outcome == "ok"]
    n = len(samples)
    n_over = int((samples.outcome == "overload").sum())
    n_fail = int((samples.outcome == "fail").sum())
    seconds = max(seconds, 1e-9)
    return WindowStats(
        seconds=seconds,
        requests=n,
        ok=len(ok),
        overload=n_over,
        failures=n_fail,
        server_errors=int((samples.status >= 500).sum()),
        rps=n / seconds,
        ok_rps=len(ok) / seconds,
        mean_ms=float(ok.mean()) if len(ok) else math.nan,
        p50_ms=_pct(ok, 50),
        p95_ms=_pct(ok, 95),
        p99_ms=_pct(ok, 99),
        failure_ratio=n_fail / n if n else math.nan,
        overload_ratio=n_over / n if n else math.nan,
        users=int(np.median(samples.users)) if n else 0,
        users_max=int(samples.users.max()) if n else 0,
    )


def per_name(samples: Samples, seconds: float) -> dict[str, WindowStats]:
    return {
        str(name): window_stats(_mask(samples, samples.name == name), seconds) for name in sorted(set(samples.name))
    }


def _mask(samples: Samples, keep: np.ndarray) -> Samples:
    return Samples(*(getattr(samples, f)[keep] for f in ("t", "ms", "name", "status", "outcome", "users")))


def time_series(samples: Samples, t0: float, t1: float, bin_s: float) -> dict[str, np.ndarray]:
    """Per bin: users, rps by outcome, p50/p95/p99 of successes, failure and overload ratios."""
    edges = np.arange(t0, t1 + bin_s, bin_s)
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "t",
            "users",
            "ok_rps",
            "overload_rps",
            "fail_rps",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "failure_ratio",
            "overload_ratio",
        )
    }
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        w = window_stats(samples.between(lo, hi), hi - lo)
        out["t"].append(lo - t0)
        out["users"].append(w.users)
        out["ok_rps"].append(w.ok_rps)
        out["overload_rps"].append(w.overload / w.seconds)
        out["fail_rps"].append(w.failures / w.seconds)
        for key in ("p50_ms", "p95_ms", "p99_ms", "failure_ratio", "overload_ratio"):
            out[key].append(getattr(w, key))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def settle_time(length_s: float) -> float:
    """Seconds cut from the start of a phase: the ramp and the queue filling up are not the steady state."""
    return min(5.0, 0.25 * length_s)


def phase_stats(samples: Samples, t0: float, phases: list[dict], run_end: float) -> list[dict]:
    rows = []
    for phase in phases:
        end = phase["end_s"] if phase["end_s"] is not None else run_end - t0
        lo = t0 + phase["start_s"] + settle_time(end - phase["start_s"])
        hi = t0 + end
        stats = window_stats(samples.between(lo, hi), hi - lo)
        rows.append({"label": phase["label"], "users": phase["users"], "start_s": phase["start_s"], "end_s": end,
                     **stats.as_dict()})
    return rows


def find_knee(steps: list[dict], min_gain: float = KNEE_MIN_GAIN) -> dict:
    """The knee of a step test, two ways.

    - knee: the step with the highest *power*, 2xx/s divided by mean latency (Kleinrock's optimal operating
      point): below it more users buy throughput at little latency cost, above it they mostly buy queueing.
    - saturation: the first step that added less than `min_gain` throughput over the step before.
    """
    power = [s["ok_rps"] / s["mean_ms"] if s["mean_ms"] and not math.isnan(s["mean_ms"]) else 0.0 for s in steps]
    k = max(range(len(steps)), key=lambda i: power[i])
    best = max(steps, key=lambda s: s["ok_rps"])
    out = {"index": k, "users": steps[k]["users"], "ok_rps": steps[k]["ok_rps"], "mean_ms": steps[k]["mean_ms"],
           "p95_ms": steps[k]["p95_ms"], "power": power, "at_first_step": k == 0, "at_last_step": k == len(steps) - 1,
           "max_ok_rps": best["ok_rps"], "max_ok_rps_users": best["users"], "min_gain": min_gain, "saturation": None}
    for i in range(1, len(steps)):
        prev, cur = steps[i - 1], steps[i]
        gain = cur["ok_rps"] / prev["ok_rps"] - 1 if prev["ok_rps"] else math.inf
        if gain < min_gain:
            out["saturation"] = {"users": cur["users"], "previous_users": prev["users"], "gain": gain,
                                 "ok_rps": cur["ok_rps"], "p95_ms": cur["p95_ms"], "previous_p95_ms": prev["p95_ms"]}
            break
    return out


def spike_recovery(samples: Samples, t0: float, phases: list[dict]) -> dict:
    """How the service came through the spike: 429s and 5xx in it, and seconds until latency was back to normal."""
    before, during, after = phases
    base = samples.between(
        t0 + before["start_s"] + settle_time(before["end_s"] - before["start_s"]), t0 + before["end_s"]
    )
    base_p95 = _pct(base.ms[base.outcome == "ok"], 95)
    target = RECOVERY_P95_FACTOR * base_p95
    spike_end = t0 + during["end_s"]
    recovered_after = None
    t = spike_end
    while t + RECOVERY_WINDOW_S <= t0 + after["end_s"]:
        w = samples.between(t, t + RECOVERY_WINDOW_S)
        ok = w.ms[w.outcome == "ok"]
        if len(ok) and _pct(ok, 95) <= target and not (w.outcome == "overload").any():
            recovered_after = t - spike_end
            break
        t += 1.0
    whole = samples.between(t0, t0 + after["end_s"])
    return {
        "baseline_p95_ms": base_p95,
        "recovery_p95_target_ms": target,
        "recovered_after_s": recovered_after,
        "window_s": RECOVERY_WINDOW_S,
        "server_errors_total": int((whole.status >= 500).sum()),
        "failures_total": int((whole.outcome == "fail").sum()),
        "overload_total": int((whole.outcome == "overload").sum()),
    }


def fd_trend(t: np.ndarray, fds: np.ndarray, warmup_fraction: float = 0.2) -> dict:
    """Open file descriptors after warm-up: first, last, max and growth."""
    if len(t) < 3:
        return {}
    keep = t >= t[0] + warmup_fraction * (t[-1] - t[0])
    kept = fds[keep]
    return {
        "fd_start": int(kept[0]),
        "fd_end": int(kept[-1]),
        "fd_max": int(kept.max()),
        "fd_growth": int(kept[-1] - kept[0]),
    }


def memory_trend(t: np.ndarray, rss: np.ndarray, warmup_fraction: float = 0.2) -> dict:
    """RSS after warm-up: first, last, max, growth and the least-squares slope (MB per minute)."""
    if len(t) < 3:
        return {"available": False}
    cut = t[0] + warmup_fraction * (t[-1] - t[0])
    keep = t >= cut
    tt, mb = t[keep], rss[keep] / 2**20
    slope = float(np.polyfit((tt - tt[0]) / 60.0, mb, 1)[0]) if len(tt) >= 2 and tt[-1] > tt[0] else math.nan
    return {
        "available": True,
        "samples": int(len(tt)),
        "warmup_s": float(cut - t[0]),
        "rss_start_mb": float(mb[0]),
        "rss_end_mb": float(mb[-1]),
        "rss_max_mb": float(mb.max()),
        "rss_growth_mb": float(mb[-1] - mb[0]),
        "rss_slope_mb_per_min": slope,
        "rss_before_load_mb": float(rss[0] / 2**20),
    }
