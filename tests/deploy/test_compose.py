"""The compose files: valid for docker-compose, and wired the way docs/deploy.md says.

`docker-compose config` is the real validator (Debian's docker-compose; no
engine needed). The YAML checks then pin the topology: replicas behind the
balancer, health-gated start, Redis AOF on a volume, every replica scraped,
settings that the service really has.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from service.settings import Settings
from tests.deploy.tools import ROOT, need

BASE = ROOT / "docker-compose.yml"
GPU = ROOT / "docker-compose.gpu.yml"


def compose_config(*files) -> dict:
    exe = need("docker-compose")
    args = [exe]
    for f in files:
        args += ["-f", str(f)]
    done = subprocess.run([*args, "config"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def base() -> dict:
    return compose_config(BASE)


@pytest.fixture(scope="module")
def gpu() -> dict:
    return compose_config(BASE, GPU)


def api_services(config: dict) -> dict[str, dict]:
    return {name: s for name, s in config["services"].items() if re.fullmatch(r"api-\d+", name)}


def test_two_or_more_api_replicas_built_from_the_cpu_runtime(base):
    apis = api_services(base)
    assert len(apis) >= 2
    for name, service in apis.items():
        assert service["build"]["target"] == "runtime-cpu", name
        assert service["healthcheck"]["test"][-1].count("/readyz") == 1
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["keygen"]["condition"] == "service_completed_successfully"
        assert "stop_grace_period" in service


def test_api_environment_names_real_settings(base):
    fields = {f"JEPA_{name.upper()}" for name in Settings.model_fields}
    for name, service in api_services(base).items():
        unknown = {k for k in service["environment"] if k.startswith("JEPA_")} - fields
        assert not unknown, f"{name} sets variables the service does not read: {unknown}"
        # rate-limit counters in the shared Redis: one budget per key across replicas
        assert service["environment"]["JEPA_RATE_LIMIT_REDIS_URL"].startswith("redis://redis:")


def test_balancer_waits_for_healthy_replicas_and_routes_to_each(base):
    lb = base["services"]["lb"]
    apis = api_services(base)
    assert {n: lb["depends_on"][n]["condition"] for n in apis} == {n: "service_healthy" for n in apis}
    nginx = (ROOT / "deploy/nginx/nginx.conf").read_text()
    upstream = re.search(r"upstream jepa_api \{(.*?)\}", nginx, re.S).group(1)
    assert sorted(re.findall(r"server (api-\d+):8000", upstream)) == sorted(apis)
    assert any(v.endswith("/etc/nginx/nginx.conf:ro") for v in lb["volumes"])


def test_redis_keeps_an_append_only_file_on_a_volume(base):
    redis = base["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command
    assert any(v.startswith("redis-data:/data") for v in redis["volumes"])
    assert "redis-data" in base["volumes"]
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_prometheus_scrapes_every_replica_and_loads_the_rules(base):
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "jepa-api")
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:8000" for name in api_services(base)}
    assert prom["rule_files"] == ["rules/*.yml"]
    assert any(v.endswith("/etc/prometheus:ro") for v in base["services"]["prometheus"]["volumes"])


def test_grafana_is_provisioned_and_locust_is_behind_a_profile(base):
    grafana = base["services"]["grafana"]
    mounts = {v.split(":")[1] for v in grafana["volumes"]}
    assert {"/etc/grafana/provisioning", "/etc/grafana/dashboards"} <= mounts
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    locust = base["services"]["locust"]
    assert locust["profiles"] == ["load"] and "http://lb" in locust["command"]
    # only the balancer is published on all interfaces; dashboards stay on loopback
    for name, service in base["services"].items():
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
            assert name in ("lb", "lb-milvus") or published.startswith("127.0.0.1:"), (name, port)


def test_milvus_profile_runs_standalone_milvus_and_points_replicas_at_it(base):
    services = base["services"]
    profiled = {name for name, service in services.items() if service.get("profiles") == ["milvus"]}
    assert {"milvus", "milvus-etcd", "milvus-minio", "api-milvus-1", "api-milvus-2", "lb-milvus"} <= profiled
    milvus = services["milvus"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "milvus-etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "milvus-minio:9000"
    assert {milvus["depends_on"][n]["condition"] for n in ("milvus-etcd", "milvus-minio")} == {"service_healthy"}
    assert any(v.startswith("milvus-data:/var/lib/milvus") for v in milvus["volumes"])
    fields = {f"JEPA_{name.upper()}" for name in Settings.model_fields}
    for name in ("api-milvus-1", "api-milvus-2"):
        api = services[name]
        env = api["environment"]
        assert env["JEPA_STORAGE"] == "milvus" and env["JEPA_MILVUS_URI"] == "http://milvus:19530"
        assert not {k for k in env if k.startswith("JEPA_")} - fields
        assert api["depends_on"]["milvus"]["condition"] == "service_healthy"
        assert api["build"]["target"] == "runtime-cpu"
        Settings(**{k[5:].lower(): v for k, v in env.items() if k.startswith("JEPA_") and v != ""})  # values parse
    assert {services["lb-milvus"]["depends_on"][n]["condition"] for n in ("api-milvus-1", "api-milvus-2")} == {"service_healthy"}
    nginx = (ROOT / "deploy/nginx/nginx-milvus.conf").read_text()
    upstream = re.search(r"upstream jepa_api \{(.*?)\}", nginx, re.S).group(1)
    assert sorted(re.findall(r"server (api-milvus-\d+):8000", upstream)) == ["api-milvus-1", "api-milvus-2"]
    # the image the replicas run has the client in it
    assert '.[cpu,otel,milvus]' in (ROOT / "Dockerfile").read_text()


def test_gpu_override_reserves_gpus_and_caches_engines(gpu):
    apis = api_services(gpu)
    assert len(apis) >= 2
    for name, service in apis.items():
        assert service["build"]["target"] == "runtime-gpu"
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        assert any(v.startswith("engine-cache:/var/cache/jepa/engines") for v in service["volumes"]), name
        assert service["environment"]["ORT_TENSORRT_CACHE_PATH"] == "/var/cache/jepa/engines"
        # the base settings survive the merge
        assert service["environment"]["JEPA_API_KEYS_FILE"] == "/run/jepa/api_keys"
    assert "engine-cache" in gpu["volumes"]
    assert gpu["services"]["api-2"]["depends_on"]["api-1"]["condition"] == "service_healthy"


def test_compose_rejects_a_broken_file(tmp_path):
    """The validator is real: a file with an unknown key fails."""
    exe = need("docker-compose")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n    replicaz: 2\n")
    done = subprocess.run([exe, "-f", str(broken), "config", "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "replicaz" in done.stderr
