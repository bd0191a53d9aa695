"""Operations: health, readiness, the model list, metrics, unknown routes, start-up phases and broken entries."""


import json
import time

from tests.conftest import serving
from tests.support.toolkit import assert_error, b64


def test_health_readiness_models_and_metrics(client, photos):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {"demo": "ready"}
    models = client.get("/models").json()["models"]
    assert models[0]["name"] == "demo"
    assert models[0]["components"]["encoder"]["precision"] == "fp32"
    assert models[0]["components"]["encoder"]["device"] == "CPUExecutionProvider"
    client.post("/embed", json={"inputs": [{"image": b64(photos["coffee"])}]})
    text = client.get("/metrics").text
    assert 'jepa_requests_total{method="POST",route="/embed",status="200"} 1.0' in text
    assert 'jepa_batch_size_count{component="encoder",model="demo"}' in text
    assert 'jepa_model_parity_min_cosine{component="encoder",model="demo",precision="fp32"}' in text
    assert client.get("/docs").status_code == 200
    assert "/embed" in client.get("/openapi.json").json()["paths"]

def test_models_shows_no_empty_notes(client):
    """A manifest's notes for people (`image`, `normalize_tokens`, ...) are shown only where the export wrote one."""
    def empty_strings(value, where="") -> list[str]:
        if isinstance(value, dict):
            return [w for k, v in value.items() for w in empty_strings(v, f"{where}.{k}")]
        if isinstance(value, list):
            return [w for i, v in enumerate(value) for w in empty_strings(v, f"{where}[{i}]")]
        return [where] if value == "" else []

    model = client.get("/models").json()["models"][0]
    assert not empty_strings(model), empty_strings(model)
    assert model["input"]["frames_per_clip"] == 2  # the rest of the contract is all there
    assert model["predictor"]["action_dim"] == 2


def test_unknown_route_uses_the_error_shape(client):
    assert_error(client.get("/nope"), 404)
    assert_error(client.delete("/embed"), 405)
    assert client.request("OPTIONS", "/collections/c").headers["allow"] == "DELETE, GET, PUT"

def test_not_ready_without_models(tmp_path):
    from service.settings import Settings

    with serving(Settings(model_repository=tmp_path / "empty", data_dir=tmp_path / "d")) as bare:
        assert bare.get("/healthz").status_code == 200
        assert bare.get("/readyz").status_code == 503
        assert_error(bare.post("/embed", json={"inputs": [{"image": "aGk="}]}), 503, "not_ready")

def test_a_broken_model_entry_does_not_stop_the_others(demo_repository, tmp_path):
    import shutil

    from service.settings import Settings

    repo = tmp_path / "repo"
    shutil.copytree(demo_repository / "demo", repo / "demo")
    shutil.copytree(demo_repository / "demo", repo / "broken")
    (repo / "broken" / "encoder.onnx").write_bytes(b"garbage")
    (repo / "nomanifest").mkdir()
    manifest = json.loads((repo / "demo" / "manifest.json").read_text())
    with serving(Settings(model_repository=repo, data_dir=tmp_path / "d", precision="fp32")) as c:
        ready = c.get("/readyz").json()
        assert ready["models"]["demo"] == "ready"
        assert ready["models"]["broken"].startswith("failed")
        assert ready["models"]["nomanifest"].startswith("failed")
        assert (
            c.post("/predict_future", json={"model": "demo", "state": [0.0] * 128, "actions": [[0, 0]]}).status_code
            == 200
        )
        assert manifest["name"] == "demo"

def test_readyz_reports_the_phase_and_warmed_sizes(client):
    ready = client.get("/readyz").json()
    assert ready["phase"] == "ready"
    assert ready["status"] == "ready"
    text = client.get("/metrics").text
    # warm-up runs the engine directly (not through the batcher), so no batch was counted yet
    assert 'jepa_batch_size_count{component="encoder",model="demo"}' not in text

def test_serving_waits_while_warming(settings_factory, monkeypatch):
    import threading

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.model_pool import ModelPool

    release = threading.Event()
    original = ModelPool.warm_up

    def slow_warm_up(self):
        release.wait(10)
        original(self)

    monkeypatch.setattr(ModelPool, "warm_up", slow_warm_up)
    with TestClient(create_app(settings_factory().config)) as c:
        for _ in range(200):
            if c.get("/readyz").json()["phase"] == "warming":
                break
            time.sleep(0.01)
        warming = c.get("/readyz")
        assert warming.status_code == 503
        assert warming.json()["phase"] == "warming"
        assert c.get("/healthz").status_code == 200
        assert_error(c.post("/embed", json={"inputs": [{"image": "aGk="}]}), 503, "not_ready")
        release.set()
        for _ in range(500):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.01)
        assert c.get("/readyz").json()["phase"] == "ready"
