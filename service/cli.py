"""`jepa-serve`: run the HTTP server. Every setting is a JEPA_* environment variable (service/settings.py); the
flags below override two of them."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from service.app import create_app
from service.connections import ConnectionLimits, guarded_protocol
from service.index.dirlock import DataDirLock, DataDirLocked
from service.logs import configure_logging
from service.settings import SettingsError, did_you_mean, load_settings, unknown_variables


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
    # SIGTERM: uvicorn stops accepting, waits up to shutdown_timeout_s for in-flight requests, then the
    # lifespan drains the batch queues and snapshots the logs (service/app.py).
    # Connections: read timeouts and a connection cap (service/connections.py), on uvicorn's httptools protocol.
    limits = ConnectionLimits(header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
                              max_connections=settings.max_connections,
                              discard_body_bytes=settings.discard_body_bytes)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, log_config=None,
        timeout_graceful_shutdown=settings.shutdown_timeout_s, http=guarded_protocol(limits),
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )
    server = uvicorn.Server(config)
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
