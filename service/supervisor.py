"""`jepa-serve`'s first process: it binds the port, starts the core and the fronts, and keeps them whole.

    supervisor ── core (one): batchers, engines, collections, embedding cache, the server-wide rate limit
               └─ front × N: HTTP on the one shared listening socket, decoding, validation, responses

The supervisor holds the data directory's lock (a second server is refused before anything starts) and hands
a duplicate of it to the core, which writes there. It never serves a request itself.

- A front that dies is started again (its places in the server-wide counts are cleared); one that keeps dying
  (more than `FRONT_RESTARTS` in `FRONT_RESTART_WINDOW_S`) takes the server down.
- A core that dies takes the server down: the fronts are stopped and the supervisor exits with the core's
  status (75 or 1 when start-up gave up, `EXIT_CORE_DIED` when it crashed). No half-alive server.
- SIGTERM or SIGINT: the fronts stop accepting and finish their requests (uvicorn's graceful shutdown), then
  the core drains its batch queues and snapshots the write-ahead logs, then the supervisor re-raises the
  signal on itself, as a single uvicorn process would.
- Every child dies with the supervisor (PR_SET_PDEATHSIG), kill -9 included, so a restarted server never
  finds an orphan holding the data directory.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from service.config import ProcessesConfig, ServerConfig
from service.index.dirlock import DataDirLock
from service.ipc.counters import ServerCounts

log = logging.getLogger("service.supervisor")

EXIT_CORE_DIED = 70  # EX_SOFTWARE: the core process ended without being asked to
EXIT_FRONTS_FAILING = 70
FRONT_RESTARTS = 5
FRONT_RESTART_WINDOW_S = 60.0
STOP_GRACE_S = 10.0  # beyond the settings' shutdown timeout, before a child that will not stop is killed
MAX_AUTO_FRONTS = 32


def front_count(processes: ProcessesConfig) -> int:
    """JEPA_WORKERS, or one front per usable core (the cpuset's, not the machine's), capped."""
    if processes.workers:
        return processes.workers
    return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_FRONTS))


def bind(host: str, port: int, *, listen: bool) -> socket.socket:
    """A socket on (host, port) in the port's SO_REUSEPORT group. Each front listens on its own, and the kernel
    spreads new connections evenly over the group. (On one shared listening socket the front that woke first
    took every connection of a burst: measured, one front served all 16 of wrk's while the other idled.)
    The supervisor's own stays bound and never listens: it holds the port while fronts come and go."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


class Supervisor:
    def __init__(self, config: ServerConfig, host: str, port: int, log_level: str,
                 data_dir_lock: DataDirLock | None) -> None:
        """`config`: built once from the environment; the core and every front receive this same object."""
        self.config, self.host, self.port, self.log_level = config, host, port, log_level
        self.lock = data_dir_lock
        self.fronts_wanted = front_count(config.processes)
        self.context = multiprocessing.get_context("spawn")
        self.core: BaseProcess | None = None
        self.fronts: dict[int, BaseProcess] = {}
        self.restarts: deque[float] = deque()
        self.stopping: int | None = None  # the signal being obeyed

    def run(self) -> int:
        try:
            sock = bind(self.host, self.port, listen=False)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.host, self.port, exc.strerror)
            return 3
        # The server's private folder: the core's socket, the shared counts, every process's metric samples.
        self.rundir = Path(tempfile.mkdtemp(prefix="jepa-serve-"))
        self.core_path = self.rundir / "core.sock"
        self.counts = ServerCounts.create(self.rundir, self.fronts_wanted)
        metrics_dir = self.rundir / "metrics"
        metrics_dir.mkdir()
        # Read by prometheus_client when the children import it: every process writes its samples there, and
        # /metrics on any front adds them up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # A signal wakes the wait below through this pipe (a handler alone would let the wait run to its timeout).
        self._wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_fd = signal.set_wakeup_fd(wakeup_w)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = self._serve(sock)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(self._wakeup_r)
            os.close(wakeup_w)
            sock.close()
            shutil.rmtree(self.rundir, ignore_errors=True)
        if code is None and self.stopping is not None:
            # Stopped by a signal: end the way a single uvicorn process does (re-raised: "terminated by SIGTERM").
            signal.signal(self.stopping, signal.SIG_DFL)
            os.kill(os.getpid(), self.stopping)
        return code or 0

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping is None:
            self.stopping = signum

    def _serve(self, sock: socket.socket) -> int | None:
        from service.core import run_core
        from service.front import run_front

        self.core = self.context.Process(
            target=run_core, name="jepa-core",
            args=(self.config, str(self.core_path), self.log_level, os.getpid(), self.lock, self.fronts_wanted))
        self.core.start()
        log.info("core process %d started; starting %d front process(es) on http://%s:%d", self.core.pid,
                 self.fronts_wanted, self.host, self.port)

        def start_front(index: int) -> None:
            process = self.context.Process(
                target=run_front, name=f"jepa-front-{index}",
                args=(self.config, index, (self.host, self.port), str(self.core_path), self.core.pid, self.counts,
                      self.log_level, os.getpid()))
            process.start()
            self.fronts[index] = process

        for index in range(self.fronts_wanted):
            start_front(index)
        while self.stopping is None:
            ended = wait([self._wakeup_r, self.core.sentinel, *(p.sentinel for p in self.fronts.values())])
            if self.stopping is not None:
                break
            if self.core.sentinel in ended:
                self.core.join(STOP_GRACE_S)  # the sentinel shows the exit a moment before the status can be read
                code = self.core.exitcode
                log.error("the core process exited (%s): stopping the server", code)
                self._stop_fronts()
                return code if code and code > 0 else EXIT_CORE_DIED
            for index, process in list(self.fronts.items()):
                if process.sentinel in ended:
                    process.join(STOP_GRACE_S)
                    if not self._may_restart():
                        log.error("front processes keep dying: stopping the server")
                        self._stop_fronts()
                        self._stop_core()
                        return EXIT_FRONTS_FAILING
                    log.error("front %d (pid %s) exited (%s): starting it again", index, process.pid,
                              process.exitcode)
                    self._forget(index, process)
                    start_front(index)
        log.info("stopping: fronts finish their requests, then the core drains and snapshots")
        self._stop_fronts()
        self._stop_core()
        return None

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > FRONT_RESTART_WINDOW_S:
            self.restarts.popleft()
        self.restarts.append(now)
        return len(self.restarts) <= FRONT_RESTARTS

    def _forget(self, index: int, process: BaseProcess) -> None:
        self.counts.clear(index)
        with contextlib.suppress(Exception):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(process.pid)
        process.close()

    def _stop_fronts(self) -> None:
        for process in self.fronts.values():
            if process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        self._join(list(self.fronts.values()), self.config.connections.shutdown_timeout_s + STOP_GRACE_S)

    def _stop_core(self) -> None:
        if self.core is not None and self.core.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.core.pid, signal.SIGTERM)
            self._join([self.core], STOP_GRACE_S + 60)

    @staticmethod
    def _join(processes: list[BaseProcess], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("%s (pid %s) did not stop in time: killed", process.name, process.pid)
                process.kill()
                process.join()
