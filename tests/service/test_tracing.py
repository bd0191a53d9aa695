"""OpenTelemetry: FastAPI's native server spans carry our request id and key name; JSON logs carry the trace id."""

from __future__ import annotations

import json

import pytest

from service.logs import JsonFormatter
from service.security import hash_key, new_key
from tests.conftest import serving
from tests.support.toolkit import captured_log


@pytest.fixture
def model_repository(fake_repository):
    """The torch-free fake model: these tests are about the HTTP edge, not what a real model computes."""
    return fake_repository

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed (the `otel` extra)")


@pytest.fixture(scope="module")
def spans():
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the global provider FastAPI uses; settable once per process
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another test already installed a global tracer provider")
    return exporter


def test_server_span_has_request_id_and_key_and_logs_have_its_trace_id(spans, settings_factory):
    key = new_key()
    with captured_log("jepa.access", JsonFormatter()) as stream, \
            serving(settings_factory(api_keys=f"tracer:{hash_key(key)}:read")) as client:
        spans.clear()
        response = client.get("/collections", headers={"X-Request-ID": "span-1", "Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    server = [s for s in spans.get_finished_spans() if s.attributes.get("http.route") == "/collections"]
    assert len(server) == 1, [s.name for s in spans.get_finished_spans()]
    attributes = server[0].attributes
    assert attributes["jepa.request_id"] == "span-1" and attributes["jepa.key"] == "tracer"
    assert attributes["http.response.status_code"] == 200
    line = next(json.loads(x) for x in stream.getvalue().splitlines() if '"span-1"' in x)
    assert line["trace_id"] == f"{server[0].context.trace_id:032x}"
