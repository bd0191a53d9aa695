"""Where the deployment tests find their tools (installed by `make deploy-tools`), and real processes for them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.server import LocalServer

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SEARCH = [VENV_BIN / "tools" / "bin", VENV_BIN.parent / "tools" / "bin", VENV_BIN]


def tool(name: str) -> str | None:
    for folder in SEARCH:
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    return shutil.which(name)


def need(name: str) -> str:
    path = tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed (`make deploy-tools` installs it where a registry has it)")
    return path


def wait_port(port: int, process: subprocess.Popen, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port} in {timeout} s")


def start_server(repository: Path, workdir: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen, str]:
    """One jepa-serve replica (loadtests/server.py's LocalServer) on a free port, ready when this returns; its log is
    workdir/<name>.log, its data workdir/<name>-data."""
    data = workdir / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    settings = {"JEPA_DATA_DIR": str(data), "JEPA_MAX_QUEUE_DELAY_MS": "1", "JEPA_INTRA_OP_THREADS": "1",
                "JEPA_DECODE_THREADS": "1", **env}
    server = LocalServer(repository, workdir, settings, log_level="info", log_name=f"{name}.log")
    try:
        server.start(timeout_s=60)
    except RuntimeError as exc:
        pytest.fail(f"{name}: {exc}")
    return server.process, server.url


