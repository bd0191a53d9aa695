"""Processes of the host benchmark started inside a core group: jepa-serve, the naive peer under uvicorn, and the
reference loops of loadtests/host_workers.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loadtests.host_cpuset import CoreGroup
from loadtests.server import free_port, server_processes, venv_script, wait_ready

ROOT = Path(__file__).resolve().parents[1]
# What every jepa-serve of the bench runs with, before --server-env: the cache off (each image is decoded and
# embedded, as the peers do) and no per-request log line (the peers write none).
SERVER_DEFAULTS = {"JEPA_EMBED_CACHE": "off", "JEPA_ACCESS_LOG": "false", "JEPA_LOG_FORMAT": "text"}


@dataclass
class Served:
    """A server process running in a group: its root pid, URL and log."""

    name: str
    process: subprocess.Popen
    url: str
    log_path: Path

    def pids(self) -> list[int]:
        return server_processes(self.process.pid) if self.process.poll() is None else []

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _python_path() -> str:
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def start_in_group(group: CoreGroup, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                   ready_timeout_s: float) -> Served:
    """Start `argv` inside `group` (its own session, so that it and its workers stop together) and wait for
    its /readyz."""
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    with open(log_path, "w") as log:
        process = subprocess.Popen(group.command(argv), cwd=ROOT, env={**os.environ, **env}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    group.started(process.pid)
    served = Served(name, process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_ready(served.url, process, log_path, ready_timeout_s)
    except RuntimeError:
        served.stop()
        raise
    return served


def start_jepa_serve(group: CoreGroup, repository: Path, model: str, workdir: Path, server_env: dict[str, str],
                     ready_timeout_s: float) -> Served:
    env = {"JEPA_MODEL_REPOSITORY": str(repository), "JEPA_DEFAULT_MODEL": model,
           "JEPA_DATA_DIR": str(workdir / f"data-{model}-{len(group.cpus)}"), **SERVER_DEFAULTS, **server_env}
    argv = [venv_script("jepa-serve"), "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    return start_in_group(group, "jepa-serve", argv, env, workdir / f"jepa-serve-{model}-{len(group.cpus)}.log",
                          ready_timeout_s)


def start_naive(group: CoreGroup, model_dir: Path, workdir: Path, ready_timeout_s: float) -> Served:
    """The naive peer: `uvicorn --workers N`, N = the group's cores."""
    workers = len(group.cpus)
    env = {"PEER_MODEL_DIR": str(model_dir), "PYTHONPATH": _python_path()}
    argv = [venv_script("uvicorn"), "loadtests.peers.naive_multipart_app:app", "--host", "127.0.0.1",
            "--port", "{port}", "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    return start_in_group(group, "naive", argv, env, workdir / f"naive-{model_dir.name}-{workers}.log",
                          ready_timeout_s)


def run_worker(group: CoreGroup, args: list[str], log_path: Path, timeout_s: float) -> dict:
    """`python -m loadtests.host_workers ARGS` inside the group; its JSON line."""
    argv = [sys.executable, "-m", "loadtests.host_workers", *args]
    with open(log_path, "a") as log:
        process = subprocess.Popen(group.command(argv), cwd=ROOT, env={**os.environ, "PYTHONPATH": _python_path()},
                                   stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        group.started(process.pid)
        try:
            output, _ = process.communicate(timeout=timeout_s)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"host_workers {args[0]} exited with {process.returncode} (log: {log_path})")
    return json.loads(output.strip().splitlines()[-1])
