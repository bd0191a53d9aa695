"""Real `jepa-serve` processes for end-to-end tests, started the way `make serve` starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadtests.server import free_port, wait_ready

BIN = Path(sys.executable).parent


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(repository: Path, workdir: Path, port: int | None = None, **settings: str) -> RunningServer:
    """`jepa-serve` with JEPA_* settings (keyword names without the prefix), cwd = workdir (so ./data is there)."""
    port = port or free_port()
    env = {**os.environ, "JEPA_MODEL_REPOSITORY": str(repository)}
    env.update({f"JEPA_{k.upper()}": str(v) for k, v in settings.items()})
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"server-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(BIN / "jepa-serve"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, log_path, 90)
    return RunningServer(url, process, log_path)


def stop_server(server: RunningServer, sig: int = signal.SIGTERM) -> str:
    if server.process.poll() is None:
        server.process.send_signal(sig)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.log()


@contextmanager
def running_server(repository: Path, workdir: Path, **settings: str) -> Iterator[RunningServer]:
    server = start_server(repository, workdir, **settings)
    try:
        yield server
    finally:
        output = stop_server(server)
        assert "Traceback" not in output, output[-4000:]
