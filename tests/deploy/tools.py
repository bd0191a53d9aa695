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

from loadtests.server import free_port, wait_ready

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
    """One jepa-serve replica on a free port, ready when this returns; its log is workdir/<name>.log."""
    port = free_port()
    data = workdir / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "JEPA_MODEL_REPOSITORY": str(repository), "JEPA_DATA_DIR": str(data),
                "JEPA_MAX_QUEUE_DELAY_MS": "1", "JEPA_INTRA_OP_THREADS": "1", "JEPA_DECODE_THREADS": "1", **env}
    log = open(workdir / f"{name}.log", "w")
    process = subprocess.Popen([str(VENV_BIN / "jepa-serve"), "--host", "127.0.0.1", "--port", str(port)],
                               env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, workdir / f"{name}.log", 60)
    except RuntimeError as exc:
        process.kill()
        pytest.fail(f"{name}: {exc}")
    return process, url


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
