"""wrk (a C load generator, Debian's package) driving one server with multipart bodies: throughput, latency
percentiles and wrk's own CPU use (from the kernel's accounting of the finished process, all its threads)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk") / "multipart_bodies.lua"
TIMEOUT = "120s"  # a 12 MP request behind 15 others can take seconds: never count it as an error


def wrk_path() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkResult:
    seconds: float
    requests: int  # completed with a 2xx
    errors: int  # non-2xx answers, timeouts, socket errors
    p50_ms: float
    p99_ms: float
    wrk_cpu_s: float  # user + system CPU of wrk over the run
    per_request: int

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def img_per_s(self) -> float:
        return self.requests * self.per_request / self.seconds

    @property
    def wrk_cores(self) -> float:
        return self.wrk_cpu_s / self.seconds

    def as_dict(self) -> dict:
        return {**asdict(self), "req_per_s": self.req_per_s, "img_per_s": self.img_per_s,
                "wrk_cores": self.wrk_cores}


def parse_summary(output: str) -> dict:
    line = next((line for line in output.splitlines() if line.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    return json.loads(line.removeprefix("WRK_JSON "))


def run_wrk(url: str, bodies: list[Path], content_type: str, per_request: int, *, connections: int,
            threads: int, seconds: float, log_path: Path) -> WrkResult:
    """One closed-loop run of `connections` connections for `seconds`; the caller's CPU affinity (the load
    generator's cores) is inherited by wrk and its threads."""
    command = [wrk_path() or "wrk", "-t", str(max(1, min(threads, connections))), "-c", str(connections),
               "-d", f"{max(1, round(seconds))}s", "--timeout", TIMEOUT, "-s", str(SCRIPT), f"{url}/embed",
               "--", content_type, *map(str, bodies)]
    with open(log_path, "a") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        started = time.monotonic()
        output = process.stdout.read() if process.stdout else ""
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log.write(output)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode} after {time.monotonic() - started:.0f} s: {output}")
    summary = parse_summary(output)
    errors = sum(summary[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return WrkResult(seconds=summary["duration_us"] / 1e6, requests=summary["requests"] - summary["status_errors"],
                     errors=errors, p50_ms=summary["p50_us"] / 1000, p99_ms=summary["p99_us"] / 1000,
                     wrk_cpu_s=usage.ru_utime + usage.ru_stime, per_request=per_request)
