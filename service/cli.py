"""`jepa-serve`: run the HTTP server. Every setting is a JEPA_* environment variable (service/settings.py); the
flags below override two of them."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn
from fastapi import FastAPI

from service.api.stream import close_reason, error_message, message_too_big
from service.app import create_app
from service.connections import ConnectionLimits, WebSocketLimits, guarded_protocol, guarded_websocket_protocol
from service.index.dirlock import DataDirLock, DataDirLocked
from service.logs import configure_logging
from service.settings import Settings, SettingsError, did_you_mean, load_settings, unknown_variables


def server_config(app: FastAPI, settings: Settings, host: str, port: int, log_level: str) -> uvicorn.Config:
    """SIGTERM: uvicorn stops accepting, waits up to shutdown_timeout_s for in-flight requests, then the lifespan
    drains the batch queues and snapshots the logs (service/app.py). Connections: read timeouts and a connection
    cap on HTTP; on WebSockets, a client that stops reading is dropped and an oversized message is refused in the
    app's words (service/connections.py). No WebSocket pings: the stream's idle and send timers find a peer that is
    gone and close with 1001 and a reason (uvicorn's ping timeout closed with 1011, "server error")."""
    http = ConnectionLimits(header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
                            max_connections=settings.max_connections, discard_body_bytes=settings.discard_body_bytes)

    def too_big(size: int) -> tuple[dict, str]:
        error = message_too_big(size, settings.stream_max_message_bytes)
        return error_message(error), close_reason(error)

    ws = WebSocketLimits(stall_timeout_s=settings.stream_idle_timeout_s,
                         max_message_bytes=settings.stream_max_message_bytes, too_big=too_big)
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, log_config=None,
        timeout_graceful_shutdown=settings.shutdown_timeout_s, http=guarded_protocol(http),
        timeout_keep_alive=settings.keep_alive_timeout_s, ws=guarded_websocket_protocol(ws),
        ws_max_size=settings.stream_max_message_bytes, ws_ping_interval=None, ws_ping_timeout=None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jepa-serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-repository", help="overrides JEPA_MODEL_REPOSITORY")
    parser.add_argument("--data-dir", help="overrides JEPA_DATA_DIR")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"model_repository": args.model_repository, "data_dir": args.data_dir}.items() if v}
    try:
        settings = load_settings(os.environ, **overrides)
    except SettingsError as exc:
        print(f"jepa-serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, args.log_level)
    for name in unknown_variables(os.environ):
        meant = did_you_mean(name)
        logging.getLogger("service.settings").warning(
            "%s is not a jepa-serve setting: ignored (%s)", name,
            f"did you mean {meant}?" if meant else "see service/settings.py",
        )
    lock = None
    if settings.storage == "local":
        # Taken before anything starts and held until the process ends, so a second server on the same
        # directory stops here with one line instead of silently sharing (and truncating) the logs.
        try:
            lock = DataDirLock.acquire(settings.data_dir)
        except DataDirLocked as exc:
            print(f"jepa-serve: {exc}", file=sys.stderr)
            return 1
    app = create_app(settings, lock)
    server = uvicorn.Server(server_config(app, settings, args.host, args.port, args.log_level))
    exit_code = 0

    def stop_process(code: int) -> None:
        """Start-up gave up (service/app.py): shut down as on SIGTERM, then exit with `code`."""
        nonlocal exit_code
        exit_code = code
        server.should_exit = True

    app.state.stop_process = stop_process
    server.run()
    if not server.started and exit_code == 0:
        return 3  # uvicorn could not start (port in use, ...): its own start-up failure status
    return exit_code
