"""A jepa-serve process for a load test when no --host is given: free port, demo model, memory readings."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float,
               headers: dict[str, str] | None = None) -> None:
    """Poll `url`/readyz until it answers 200; RuntimeError with the log's tail if the process exits first or
    the time runs out. The one readiness wait of every launcher (load tests, benchmarks, test fixtures)."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url + "/readyz", headers=headers or {})
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early ({process.returncode}):\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):  # not listening yet, or 503 while loading / warming
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready in {timeout_s:.0f} s:\n{_tail(log_path)}")


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def venv_script(name: str) -> str:
    """The script next to this interpreter (the venv's), else whatever is on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed (run `make install`)")
    return found


def model_repository(given: Path | None, scratch: Path, log) -> Path:
    """The given repository, else ./model_repository if it holds a model, else the demo exported into scratch."""
    if given is not None:
        if not any(given.glob("*/manifest.json")):
            raise FileNotFoundError(f"{given} holds no model (no */manifest.json)")
        return given
    default = Path("model_repository")
    if any(default.glob("*/manifest.json")):
        return default
    out = scratch / "model_repository"
    log(f"exporting the demo model into {out} (jepa-export demo)")
    subprocess.run([venv_script("jepa-export"), "demo", "--name", "demo", "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def server_processes(pid: int) -> list[int]:
    """A local server's processes: `jepa-serve` (the supervisor) and every process under it (core, fronts); for
    any other root, it and every process below it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss_bytes(pid: int) -> float | None:
    """Resident memory of a local server, all its processes together, from /proc/<pid>/status (VmRSS, in kB).
    (Memory shared between them, as the libraries, counts once per process: an upper bound, steady under load.)"""
    total, seen = 0.0, False
    for process in server_processes(pid):
        try:
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += float(line.split()[1]) * 1024
                    seen = True
        except OSError:
            continue
    return total if seen else None


def open_fds(pid: int) -> int | None:
    """Open file descriptors of a local server, all its processes (a leak of sockets or files shows here before
    memory)."""
    total, seen = 0, False
    for process in server_processes(pid):
        try:
            total += len(os.listdir(f"/proc/{process}/fd"))
            seen = True
        except OSError:
            continue
    return total if seen else None


class LocalServer:
    """`jepa-serve` on a free port with its own data folder; `url` once ready, `stop()` returns its log.

    The one launcher of a served process: load tests, benchmarks and the end-to-end tests (tests/support/servers.py).
    """

    def __init__(
        self,
        repository: Path,
        workdir: Path,
        env: dict[str, str],
        api_key: str | None = None,
        *,
        log_level: str = "warning",
        port: int | None = None,
        log_name: str = "server.log",  # may name the port: "server-{port}.log"
    ) -> None:
        self.repository = repository
        self.workdir = workdir
        self.env = env
        self.api_key = api_key
        self.log_level = log_level
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / log_name.format(port=self.port)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 120.0) -> LocalServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "JEPA_MODEL_REPOSITORY": str(self.repository.resolve()),
               "JEPA_DATA_DIR": str((self.workdir / "data").resolve()), **self.env}
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [venv_script("jepa-serve"), "--host", "127.0.0.1", "--port", str(self.port), "--log-level", self.log_level],
            cwd=self.workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            wait_ready(self.url, self.process, self.log_path, timeout_s, headers)
        except RuntimeError:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "_log"):
            self._log.close()
        return self.log()
