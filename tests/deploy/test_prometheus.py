"""Prometheus files pass promtool; alert rules behave as documented; every metric they use is real.

`promtool check metrics` runs on the live /metrics of a real replica (api-2 of
the topology fixture) after real traffic, and the metric names of the alert
rules and the Grafana dashboard are looked up in that same output.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess

import httpx
import pytest
import yaml

from tests.deploy.conftest import Cluster
from tests.deploy.tools import ROOT, need

PROM = ROOT / "deploy/prometheus"
DASHBOARD = ROOT / "deploy/grafana/dashboards/jepa-serve.json"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([need("promtool"), *args], input=stdin, capture_output=True, text=True, cwd=PROM, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_promtool_check_config_and_rules():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml").stdout
    assert "SUCCESS" in promtool("check", "rules", "rules/alerts.yml").stdout


def test_alert_rules_fire_as_documented():
    """promtool's rule unit tests (deploy/prometheus/tests/alerts_test.yml) feed series and expect alerts."""
    done = promtool("test", "rules", "tests/alerts_test.yml")
    assert "SUCCESS" in done.stdout


def expressions() -> list[str]:
    rules = yaml.safe_load((PROM / "rules/alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return exprs


def exposed_names(text: str) -> set[str]:
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for kind_line in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = kind_line
        names |= {name if name.endswith("_total") or kind != "counter" else f"{name}_total"}
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.fixture(scope="module")
def live_metrics(cluster: Cluster, photos) -> str:
    url = cluster.replicas["api-2"]
    image = base64.b64encode(photos["coffee"]).decode()
    headers = cluster.auth("admin")
    httpx.post(f"{url}/embed", json={"inputs": [{"image": image}] * 3}, headers=headers, timeout=30).raise_for_status()
    httpx.put(f"{url}/collections/promcheck", json={"dim": 4}, headers=headers, timeout=10).raise_for_status()
    httpx.post(f"{url}/collections/promcheck/points", json={"ids": ["a"], "vectors": [[1, 0, 0, 0]]},
               headers=headers, timeout=10).raise_for_status()
    httpx.get(f"{url}/collections", timeout=10)  # a 401: the auth counter gets a series
    return httpx.get(f"{url}/metrics", timeout=10).text


def test_promtool_check_metrics_on_live_output(live_metrics: str):
    done = promtool("check", "metrics", stdin=live_metrics)
    assert done.stdout.strip() == "", done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stdout + done.stderr


def test_every_metric_in_rules_and_dashboard_exists(live_metrics: str):
    exposed = exposed_names(live_metrics)
    assert "jepa_batch_fill_ratio_bucket" in exposed
    assert "jepa_queue_capacity" in exposed
    used = {m for e in expressions() for m in re.findall(r"\bjepa_[a-z_]+\b", e)}
    missing = used - exposed
    assert not missing, f"rules or dashboard use metrics the service does not export: {missing}"


def test_dashboard_is_generated_and_covers_the_panels():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_dashboard", ROOT / "deploy/grafana/make_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text() == module.render(), "run python deploy/grafana/make_dashboard.py"
    titles = " ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for needed in ("request rate", "latency percentiles", "batch fill", "queue depth", "cache hit ratio", "index size"):
        assert needed in titles
