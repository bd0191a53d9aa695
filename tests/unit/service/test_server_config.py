"""The uvicorn configuration a `jepa-serve` front runs with: its WebSocket limits are the app's (issue 23 item 9),
its connection cap counted with the other fronts'."""

from __future__ import annotations

import uvicorn

from service.app import create_app
from service.connections import GuardedHttpToolsProtocol, GuardedWebSocketProtocol
from service.front import server_config
from service.ipc.counters import LocalGate
from service.settings import Settings


def test_websockets_use_the_apps_limit_no_pings_and_the_guarded_protocols(tmp_path):
    settings = Settings(model_repository=tmp_path, data_dir=tmp_path / "data", stream_max_message_bytes=123_456,
                        stream_idle_timeout_s=7)
    gate = LocalGate()
    config = server_config(create_app(settings.config), settings.config.connections, settings.config.stream, "info",
                           gate)
    assert isinstance(config, uvicorn.Config)
    # uvicorn's own 16 MiB limit refused messages the app never saw: now the library refuses exactly what the
    # app would, and the refusal is the app's (GuardedWebSocketProtocol)
    assert config.ws_max_size == 123_456
    # uvicorn's ping timeout closed with 1011 ("server error"); the stream's own idle and send timers close a peer
    # that is gone with 1001 and a reason instead
    assert config.ws_ping_interval is None
    assert config.ws.func is GuardedWebSocketProtocol
    assert config.ws.keywords["limits"].stall_timeout_s == 7
    message, reason = config.ws.keywords["limits"].too_big(200_000)
    assert message["error"]["code"] == "payload_too_large"
    assert "123456" in reason
    assert config.http.func is GuardedHttpToolsProtocol
    assert config.http.keywords["limits"].gate is gate
