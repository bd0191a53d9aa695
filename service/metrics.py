"""Prometheus metrics (`jepa_` prefix, base units), one registry per app: no globals.

Under `jepa-serve` every process (the core, each front) writes its samples into the folder named by
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode), and /metrics on any front adds them up:
counters and histograms summed, each gauge by its `multiprocess_mode` (a front's requests in flight summed over
the live fronts, a collection's size as last written).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FILL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("jepa_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram(
            "jepa_request_duration_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "jepa_batch_size", "items per engine call", ["model", "component"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_fill = Histogram(
            "jepa_batch_fill_ratio",
            "batch size / max batch size",
            ["model", "component"],
            buckets=FILL_BUCKETS,
            registry=r,
        )
        self.batch_limit = Gauge(
            "jepa_batch_limit", "largest batch the batcher forms (tuned at warm-up)", ["model", "component"],
            multiprocess_mode="max", registry=r
        )
        self.open_streams = Gauge("jepa_open_streams", "open /stream/surprise WebSocket connections",
                                  multiprocess_mode="livesum", registry=r)
        self.queue_depth = Gauge("jepa_queue_depth", "items waiting for a batch", ["model", "component"],
                                 multiprocess_mode="livesum", registry=r)
        self.queue_wait = Histogram(
            "jepa_queue_wait_seconds", "time from enqueue to engine call", ["model", "component"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference_seconds = Histogram(
            "jepa_inference_seconds",
            "engine time per batch",
            ["model", "component"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_seconds = Histogram(
            "jepa_decode_seconds", "decode + preprocess per item", buckets=LATENCY_BUCKETS, registry=r
        )
        self.rejected = Counter(
            "jepa_rejected", "items refused or failed", ["model", "component", "reason"], registry=r
        )
        self.index_points = Gauge("jepa_index_points", "points per collection", ["collection"],
                                  multiprocess_mode="mostrecent", registry=r)
        self.parity = Gauge(
            "jepa_model_parity_min_cosine",
            "export parity of the served artifact vs PyTorch",
            ["model", "component", "precision"],
            multiprocess_mode="max", registry=r,
        )
        self.models_loaded = Gauge("jepa_models_loaded", "models serving", multiprocess_mode="max", registry=r)
        self.models_failed = Gauge("jepa_models_failed", "models that failed to load", multiprocess_mode="max",
                                   registry=r)
        # Security and queue capacity: alert rules divide queue depth by capacity.
        self.auth_denied = Counter("jepa_auth_denied", "requests refused by auth", ["reason"], registry=r)
        self.rate_limited = Counter(
            "jepa_rate_limited", "requests refused by the per-key rate limit", ["key"], registry=r
        )
        self.rate_limiter_errors = Counter(
            "jepa_rate_limiter_errors", "rate-limit checks that could not reach Redis (let through)", registry=r
        )
        self.queue_capacity = Gauge(
            "jepa_queue_capacity", "max queued items before 429", ["model", "component"], multiprocess_mode="max",
            registry=r
        )
        self.in_flight = Gauge(
            "jepa_requests_in_flight", "requests being handled (counted by the concurrency limit)",
            multiprocess_mode="livesum", registry=r
        )
        self.concurrency_refused = Counter(
            "jepa_requests_refused", "requests refused with 429 at max_concurrent_requests", registry=r
        )
        self.embed_cache_hits = Counter(
            "jepa_embed_cache_hits", "inputs answered from the embedding cache", ["backend"], registry=r
        )
        self.embed_cache_misses = Counter(
            "jepa_embed_cache_misses", "inputs the embedding cache did not hold", ["backend"], registry=r
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text /metrics answers with, and its content type: every process's samples under `jepa-serve`,
        this registry's in a single process."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            written = list(multiprocess.MultiProcessCollector(None).collect())
            seen = {family.name for family in written}
            # metrics no process has written a sample of yet, declared as empty families (HELP and TYPE only), as
            # one process shows them: a dashboard's query of a counter that never counted still finds the name
            declared = [Metric(f.name, f.documentation, f.type) for f in self.registry.collect() if f.name not in seen]
            registry = CollectorRegistry()
            registry.register(_Families(written + declared))
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Families:
    """Metric families already collected, for a registry to expose."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families
