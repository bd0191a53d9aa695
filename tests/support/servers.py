"""Real `jepa-serve` processes for end-to-end tests: loadtests/server.py's LocalServer (the one launcher), with the
service's INFO log (the tests read it) in `server-<port>.log` under the test's folder."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loadtests.server import LocalServer, open_fds, rss_bytes, server_processes

__all__ = ["LocalServer", "open_fds", "rss_bytes", "server_processes", "running_server", "start_server", "stop_server"]


def start_server(repository: Path, workdir: Path, port: int | None = None, **settings: str) -> LocalServer:
    """`jepa-serve` with JEPA_* settings (keyword names without the prefix); its data folder is workdir/data."""
    env = {f"JEPA_{k.upper()}": str(v) for k, v in settings.items()}
    server = LocalServer(repository, workdir, env, log_level="info", port=port, log_name="server-{port}.log")
    return server.start(timeout_s=90)


def stop_server(server: LocalServer, sig: int = signal.SIGTERM) -> str:
    return server.stop(sig)


@contextmanager
def running_server(repository: Path, workdir: Path, **settings: str) -> Iterator[LocalServer]:
    server = start_server(repository, workdir, **settings)
    try:
        yield server
    finally:
        output = stop_server(server)
        assert "Traceback" not in output, output[-4000:]
