"""Writes dashboards/jepa-serve.json, the provisioned Grafana dashboard (run after editing the panels here).

    python deploy/grafana/make_dashboard.py

Metric names are those of service/metrics.py; tests/deploy check that each one exists.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "dashboards" / "jepa-serve.json"
DS = {"type": "prometheus", "uid": "prometheus"}
NOT_OPS = 'route!~"/metrics|/healthz|/readyz"'

# (title, unit, [(legend, expr)], width)
PANELS: list[tuple[str, str, list[tuple[str, str]], int]] = [
    ("Request rate by route and status", "reqps",
     [("{{route}} {{status}}", "sum by (route, status) (rate(jepa_requests_total[1m]))")], 12),
    ("Latency percentiles (all API routes)", "s",
     [(f"p{q}", f"histogram_quantile(0.{q}, sum by (le) (rate(jepa_request_duration_seconds_bucket{{{NOT_OPS}}}[1m])))")
      for q in ("50", "95", "99")], 12),
    ("Batch fill (batch size / max batch size)", "percentunit",
     [("mean {{model}}/{{component}}", "sum by (model, component) (rate(jepa_batch_fill_ratio_sum[1m]))"
       " / sum by (model, component) (rate(jepa_batch_fill_ratio_count[1m]))"),
      ("mean batch size {{model}}/{{component}}", "sum by (model, component) (rate(jepa_batch_size_sum[1m]))"
       " / sum by (model, component) (rate(jepa_batch_size_count[1m]))")], 12),
    ("Queue depth and capacity", "short",
     [("{{instance}} {{model}}/{{component}}", "sum by (instance, model, component) (jepa_queue_depth)"),
      ("capacity {{model}}/{{component}}", "max by (model, component) (jepa_queue_capacity)"),
      ("p95 queue wait (s) {{component}}",
       "histogram_quantile(0.95, sum by (le, component) (rate(jepa_queue_wait_seconds_bucket[1m])))")], 12),
    ("Embedding cache hit ratio", "percentunit",
     [("hit ratio", "sum(rate(jepa_embed_cache_hits_total[5m])) / clamp_min(sum(rate(jepa_embed_cache_hits_total[5m]))"
       " + sum(rate(jepa_embed_cache_misses_total[5m])), 1e-9)")], 12),
    ("Index size (points per collection)", "short",
     [("{{collection}}", "max by (collection) (jepa_index_points)")], 12),
    ("Refused: 429 queue full, rate limited, auth", "reqps",
     [("queue full", 'sum(rate(jepa_rejected_total{reason="queue_full"}[1m]))'),
      ("rate limited {{key}}", "sum by (key) (rate(jepa_rate_limited_total[1m]))"),
      ("auth {{reason}}", "sum by (reason) (rate(jepa_auth_denied_total[1m]))")], 12),
    ("Replicas up / models loaded", "short",
     [("up {{instance}}", 'up{job="jepa-api"}'), ("models {{instance}}", "jepa_models_loaded")], 12),
]


def panel(index: int, title: str, unit: str, targets: list[tuple[str, str]], width: int) -> dict:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": (index % 2) * 12, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        # every field the timeseries panel schema requires (@grafana/schema: legend calcs + showLegend, tooltip sort)
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (legend, expr) in enumerate(targets)],
    }


def dashboard() -> dict:
    return {
        "uid": "jepa-serve",
        "title": "jepa-serve",
        "tags": ["jepa-serve"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
