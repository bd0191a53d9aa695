"""The server's side of a load test: scrape /metrics, and turn two scrapes into what happened between them.

Counters and histograms only mean something as differences, so every figure
here is `after - before`: batch size and fill, queue wait (mean and a p95
estimated from the histogram buckets, as Prometheus' histogram_quantile does),
inference time, requests by route and status, items refused.
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Snapshot = dict[tuple[str, Labels], float]

# Histograms reported per (model, component).
BATCHER_HISTOGRAMS = ("jepa_batch_size", "jepa_batch_fill_ratio", "jepa_queue_wait_seconds", "jepa_inference_seconds")
RSS_METRIC = "process_resident_memory_bytes"


def fetch_text(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> str:
    request = urllib.request.Request(url.rstrip("/") + "/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def parse(text: str) -> Snapshot:
    snapshot: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            snapshot[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return snapshot


def _select(snapshot: Snapshot, name: str, **labels: str) -> dict[Labels, float]:
    want = set(labels.items())
    return {lab: v for (n, lab), v in snapshot.items() if n == name and want <= set(lab)}


def components(snapshot: Snapshot) -> list[tuple[str, str]]:
    """(model, component) pairs that have batched at least once."""
    found = {(dict(lab)["model"], dict(lab)["component"]) for (n, lab) in snapshot if n == "jepa_batch_size_count"}
    return sorted(found)


@dataclass(frozen=True)
class HistogramDelta:
    count: float
    total: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Linear interpolation inside the bucket holding the q-th observation (Prometheus' histogram_quantile)."""
        if not self.count or not self.buckets:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower  # beyond the last finite bucket: its bound is all we know
                inside = cumulative - below
                return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
            lower, below = upper, cumulative
        return lower


def histogram_delta(before: Snapshot, after: Snapshot, name: str, **labels: str) -> HistogramDelta:
    def total(suffix: str) -> float:
        a = sum(_select(after, name + suffix, **labels).values())
        b = sum(_select(before, name + suffix, **labels).values())
        return a - b

    bounds: dict[float, float] = {}
    for snap, sign in ((after, 1.0), (before, -1.0)):
        for lab, value in _select(snap, name + "_bucket", **labels).items():
            le = float(dict(lab)["le"])
            bounds[le] = bounds.get(le, 0.0) + sign * value
    return HistogramDelta(count=total("_count"), total=total("_sum"), buckets=tuple(sorted(bounds.items())))


def counter_delta(before: Snapshot, after: Snapshot, name: str) -> dict[Labels, float]:
    a, b = _select(after, name), _select(before, name)
    return {lab: a[lab] - b.get(lab, 0.0) for lab in a if a[lab] - b.get(lab, 0.0) != 0}


def batcher_summary(before: Snapshot, after: Snapshot) -> dict[str, dict[str, float]]:
    """Per `model/component`: batches, items, mean batch and fill, queue wait mean/p95, inference mean."""
    out: dict[str, dict[str, float]] = {}
    for model, component in components(after):
        lab = {"model": model, "component": component}
        size = histogram_delta(before, after, "jepa_batch_size", **lab)
        fill = histogram_delta(before, after, "jepa_batch_fill_ratio", **lab)
        wait = histogram_delta(before, after, "jepa_queue_wait_seconds", **lab)
        infer = histogram_delta(before, after, "jepa_inference_seconds", **lab)
        if not size.count:
            continue
        out[f"{model}/{component}"] = {
            "batches": size.count,
            "items": size.total,
            "mean_batch_size": size.mean,
            "mean_fill_ratio": fill.mean,
            "queue_wait_mean_ms": wait.mean * 1000,
            "queue_wait_p95_ms": wait.quantile(0.95) * 1000,
            "inference_mean_ms": infer.mean * 1000,
        }
    return out


def route_latency(before: Snapshot, after: Snapshot) -> dict[str, dict[str, float]]:
    """Server-side time per route (from the request arriving to the reply): compare it with the client's latency
    to see how much of the wait was outside the server (connection queueing, a CPU-starved load generator)."""
    routes = sorted({dict(lab)["route"] for (n, lab) in after if n == "jepa_request_duration_seconds_count"})
    out = {}
    for route in routes:
        d = histogram_delta(before, after, "jepa_request_duration_seconds", route=route)
        if d.count:
            out[route] = {"requests": d.count, "mean_ms": d.mean * 1000, "p95_ms": d.quantile(0.95) * 1000}
    return out


def requests_by_route(before: Snapshot, after: Snapshot) -> list[dict[str, object]]:
    rows = []
    for lab, value in sorted(counter_delta(before, after, "jepa_requests_total").items()):
        d = dict(lab)
        rows.append(
            {"method": d.get("method", ""), "route": d.get("route", ""), "status": d.get("status", ""), "count": value}
        )
    return rows


def rejected(before: Snapshot, after: Snapshot) -> dict[str, float]:
    return {"/".join(v for _, v in lab): n for lab, n in counter_delta(before, after, "jepa_rejected_total").items()}


def rss_from_metrics(snapshot: Snapshot) -> float | None:
    values = _select(snapshot, RSS_METRIC)
    return sum(values.values()) if values else None


def interval_series(snapshots: list[tuple[float, Snapshot]], t0: float) -> dict[str, dict[str, list[float]]]:
    """Per `model/component`, for each pair of consecutive scrapes: mean batch and fill, queue wait mean and p95,
    and the queue depth at the second scrape. Intervals without a batch give NaN (nothing ran)."""
    out: dict[str, dict[str, list[float]]] = {}
    if not snapshots:
        return out
    for model, component in components(snapshots[-1][1]):
        lab = {"model": model, "component": component}
        rows: dict[str, list[float]] = {
            k: [] for k in ("t", "batch_mean", "fill_mean", "wait_mean_ms", "wait_p95_ms", "queue_depth")
        }
        for (_, before), (t, after) in zip(snapshots[:-1], snapshots[1:], strict=True):
            size = histogram_delta(before, after, "jepa_batch_size", **lab)
            wait = histogram_delta(before, after, "jepa_queue_wait_seconds", **lab)
            fill = histogram_delta(before, after, "jepa_batch_fill_ratio", **lab)
            depth = _select(after, "jepa_queue_depth", **lab)
            rows["t"].append(t - t0)
            rows["batch_mean"].append(size.mean)
            rows["fill_mean"].append(fill.mean)
            rows["wait_mean_ms"].append(wait.mean * 1000)
            rows["wait_p95_ms"].append(wait.quantile(0.95) * 1000)
            rows["queue_depth"].append(sum(depth.values()) if depth else math.nan)
        out[f"{model}/{component}"] = rows
    return out
