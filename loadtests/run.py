"""Run a Locust load test against jepa-serve and write a report folder; exit non-zero when a threshold breaks.

    python -m loadtests.run --shape step                      # starts its own server (demo model)
    python -m loadtests.run --host http://10.0.0.5:8000 --shape spike --max-failure-ratio 0
    python -m loadtests.run --shape constant -u 8 -t 60 --max-p95-ms 250 --max-failure-ratio 0.01

Locust runs as a subprocess (it monkey-patches the process with gevent), with
the locustfile writing one row per request; this process scrapes the server's
/metrics (and, for a server it started itself, its RSS from /proc) every few
seconds meanwhile. The folder gets report.md, summary.json, Locust's HTML and
CSVs, the /metrics text before and after, and PNG plots.

Exit codes: 0 all thresholds held, 1 a threshold broke, 2 the run itself went wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from loadtests import analysis, plots, report, server_metrics
from loadtests.server import LocalServer, model_repository, open_fds, rss_bytes

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SHAPES = ("constant", "step", "spike", "soak")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", help="target base URL; without it a local jepa-serve is started on a free port")
    p.add_argument("--shape", choices=SHAPES, default="constant",
                   help="constant: -u users for -t s; step: --steps; spike: --spike-users/--spike-seconds; "
                        "soak: constant load for -t s with the memory trend reported")
    p.add_argument("-u", "--users", type=int, default=20, help="constant/soak: users")
    p.add_argument("-r", "--spawn-rate", type=float, default=4.0, help="constant/soak: users started per second")
    p.add_argument("-t", "--run-time", type=float, default=60.0, help="constant/soak: seconds")
    p.add_argument("--steps", default="10,20,30,40,60,80", help="step: users of each step")
    p.add_argument("--step-seconds", type=float, default=30.0, help="step: seconds per step")
    p.add_argument("--spike-users", default="10,150", help="spike: BASE,PEAK users")
    p.add_argument("--spike-seconds", default="20,20,40", help="spike: BEFORE,SPIKE,AFTER seconds")
    p.add_argument("--mix", default="embed=6,search=3,predict=1,plan=1", help="user class weights")
    p.add_argument("--wait-ms", default="500,1500", help="think time between a user's requests: MIN,MAX ms")
    p.add_argument("--api-key", default=os.environ.get("JEPA_API_KEY", ""),
                   help="sent as 'Authorization: Bearer KEY' (default: $JEPA_API_KEY); never written to the report")
    p.add_argument("--collection", default="loadtest", help="collection the search users create and query")
    p.add_argument("--collection-size", type=int, default=1000, help="points upserted into it before the load starts")
    p.add_argument("--out", type=Path, help="report folder (default: reports/loadtest-<shape>-<UTC time>)")
    p.add_argument("--metrics-interval", type=float, default=2.0, help="seconds between /metrics scrapes")
    p.add_argument("--metrics-url", help="where to scrape /metrics (default: the target; behind a balancer give one "
                                         "replica's URL, since each scrape may reach another replica); 'none' to skip")
    p.add_argument("--bin-seconds", type=float, default=0.0, help="time-series bin for plots (0 = by run length)")
    # Only when the runner starts the server.
    p.add_argument(
        "--model-repository",
        type=Path,
        help="models for the local server (default: ./model_repository, else the demo exported to a temp dir)",
    )
    p.add_argument("--server-env", action="append", default=[], metavar="JEPA_KEY=VALUE",
                   help="setting for the local server (repeatable), e.g. JEPA_MAX_QUEUE_SIZE=64")
    # Thresholds: any broken one makes the exit code 1.
    p.add_argument("--max-p95-ms", type=float, help="p95 latency of 2xx replies over the whole run")
    p.add_argument("--max-failure-ratio", type=float, help="share of requests that failed (5xx, other 4xx, errors)")
    p.add_argument("--max-429-ratio", type=float, help="share of requests shed with 429")
    p.add_argument("--max-rss-growth-mb", type=float, help="server RSS growth after warm-up (soak)")
    p.add_argument(
        "--max-fd-growth", type=int, help="growth of the server's open file descriptors after warm-up (soak)"
    )
    p.add_argument(
        "--require-recovery", action="store_true", help="spike: fail unless latency recovers after the spike"
    )
    args = p.parse_args(argv)
    for item in args.server_env:
        if "=" not in item or not item.startswith("JEPA_"):
            p.error(f"--server-env wants JEPA_KEY=VALUE, got {item!r}")
    if args.host and (args.server_env or args.model_repository):
        p.error("--server-env and --model-repository are for the server the runner starts; not with --host")
    return args


def locust_command(args: argparse.Namespace, host: str, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
           "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "locust.html"),
           "--json-file", str(out / "locust_stats"),
           "--exit-code-on-error", "0", "--only-summary", "--jepa-samples-csv", str(out / "requests.csv"),
           "--stop-timeout", "30",  # stopped users finish the request in flight instead of hanging up
           "--jepa-mix", args.mix, "--jepa-wait-ms", args.wait_ms, "--jepa-collection", args.collection,
           "--jepa-collection-size", str(args.collection_size)]
    if args.shape in ("constant", "soak"):
        cmd += [
            "--jepa-shape",
            "constant",
            "-u",
            str(args.users),
            "-r",
            str(args.spawn_rate),
            "-t",
            f"{math.ceil(args.run_time)}s",
        ]
    elif args.shape == "step":
        cmd += ["--jepa-shape", "step", "--jepa-steps", args.steps, "--jepa-step-seconds", str(args.step_seconds)]
    else:
        cmd += [
            "--jepa-shape",
            "spike",
            "--jepa-spike-users",
            args.spike_users,
            "--jepa-spike-seconds",
            args.spike_seconds,
        ]
    return cmd


def planned_seconds(args: argparse.Namespace) -> float:
    if args.shape in ("constant", "soak"):
        return args.run_time
    if args.shape == "step":
        return len([s for s in args.steps.split(",") if s.strip()]) * args.step_seconds
    return sum(float(s) for s in args.spike_seconds.split(","))


def redacted_command(argv: list[str]) -> str:
    words, hide = [], False
    for word in argv:
        if hide:
            words.append("***")
            hide = False
        elif word == "--api-key":
            words.append(word)
            hide = True
        elif word.startswith("--api-key="):
            words.append("--api-key=***")
        else:
            words.append(word)
    return "python -m loadtests.run " + shlex.join(words)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class Sampler:
    """/metrics snapshots and RSS readings, taken from this process while Locust runs."""

    def __init__(self, host: str | None, headers: dict[str, str], pid: int | None) -> None:
        self.host, self.headers, self.pid = host, headers, pid
        self.snapshots: list[tuple[float, server_metrics.Snapshot]] = []
        self.rss: list[tuple[float, float]] = []
        self.fds: list[tuple[float, int]] = []  # open file descriptors of a server started here
        self.errors = 0

    def sample(self) -> None:
        now = time.time()
        snap = None
        try:
            if self.host is not None:
                snap = server_metrics.parse(server_metrics.fetch_text(self.host, self.headers))
        except OSError:
            self.errors += 1  # an overloaded server may not answer a scrape in time; the next one will do
            snap = None
        if snap is not None:
            self.snapshots.append((now, snap))
        value = (
            rss_bytes(self.pid) if self.pid is not None else (server_metrics.rss_from_metrics(snap) if snap else None)
        )
        if value is not None:
            self.rss.append((now, value))
        fds = open_fds(self.pid) if self.pid is not None else None
        if fds is not None:
            self.fds.append((now, fds))

    @property
    def rss_source(self) -> str:
        return f"/proc/{self.pid}/status VmRSS of the server process" if self.pid is not None else \
            f"the server's {server_metrics.RSS_METRIC} metric"


def thresholds(
    args: argparse.Namespace, totals: dict[str, Any], memory: dict[str, Any], spike: dict | None
) -> list[dict]:
    checks = []

    def check(name: str, limit: float | None, value: float | None) -> None:
        if limit is None:
            return
        ok = value is not None and not math.isnan(value) and value <= limit
        checks.append({"name": name, "limit": limit, "value": value, "passed": bool(ok)})

    check("p95 latency of 2xx (ms)", args.max_p95_ms, totals["p95_ms"])
    check("failure ratio", args.max_failure_ratio, totals["failure_ratio"])
    check("429 ratio", args.max_429_ratio, totals["overload_ratio"])
    check("RSS growth after warm-up (MiB)", args.max_rss_growth_mb, memory.get("rss_growth_mb"))
    check("open file descriptors growth after warm-up", args.max_fd_growth, memory.get("fd_growth"))
    if args.require_recovery and spike is not None:
        rec = spike["recovered_after_s"]
        checks.append({"name": "recovered after the spike (s)", "limit": None, "value": rec, "passed": rec is not None})
    return checks


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_load(args: argparse.Namespace, out: Path, scratch: Path, log) -> dict[str, Any]:
    """Start the server if needed, run Locust, sample the server; returns what the analysis needs."""
    api_headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    server = None
    server_env = dict(item.split("=", 1) for item in args.server_env)
    host = args.host
    if host is None:
        repo = model_repository(args.model_repository, scratch, log)
        server = LocalServer(repo, out / "server", server_env, api_key=args.api_key or None)
        log(f"starting jepa-serve ({repo}) ...")
        server.start()
        host = server.url
    host = host.rstrip("/")
    metrics_url = None if (args.metrics_url or "").lower() == "none" else (args.metrics_url or host).rstrip("/")
    sampler = Sampler(metrics_url, api_headers, server.pid if server else None)
    result: dict[str, Any] = {"host": host, "server_started": server is not None, "server_env": server_env,
                              "metrics_url": metrics_url, "metrics": None}

    def scrape(name: str) -> str | None:
        if metrics_url is None:
            return None
        try:
            text = server_metrics.fetch_text(metrics_url, api_headers)
        except OSError as exc:  # e.g. /metrics not routed through a balancer: the client side still counts
            log(f"no /metrics from {metrics_url}: {exc}")
            return None
        (out / name).write_text(text)
        return text

    try:
        before = scrape("metrics_before.prom")
        sampler.sample()
        result["loadavg_before"] = loadavg()
        env = {**os.environ, "LOCUST_JEPA_API_KEY": args.api_key}  # a secret: not on the command line
        cmd = locust_command(args, host, out)
        log(f"locust: {shlex.join(cmd[1:])}")
        started = time.time()
        deadline = time.monotonic() + planned_seconds(args) + 180
        with open(out / "locust.log", "w") as locust_log:
            process = subprocess.Popen(cmd, stdout=locust_log, stderr=subprocess.STDOUT, env=env)
            while process.poll() is None:
                if time.monotonic() > deadline:
                    process.terminate()
                    result["timed_out"] = True
                    break
                time.sleep(args.metrics_interval)
                sampler.sample()
            result["locust_rc"] = process.wait(timeout=60)
        result["wall_s"] = time.time() - started
        sampler.sample()
        after = scrape("metrics_after.prom")
        if before is not None and after is not None:
            result["metrics"] = (server_metrics.parse(before), server_metrics.parse(after))
        result["loadavg_after"] = loadavg()
    finally:
        if server is not None:
            server_log = server.stop()
            result["server_traceback"] = "Traceback" in server_log
    result["sampler"] = sampler
    return result


def analyse(  # noqa: C901 - the run's checks in order, each adds one problem line to the report
    args: argparse.Namespace, out: Path, ran: dict[str, Any], argv: list[str]
) -> dict[str, Any]:
    problems: list[str] = []
    if ran.get("locust_rc") != 0:
        problems.append(f"Locust exited with {ran.get('locust_rc')} (see locust.log)")
    if ran.get("timed_out"):
        problems.append("Locust ran past its planned time and was stopped")
    samples_path = out / "requests.csv"
    meta_path = out / "requests.csv.meta.json"
    if not samples_path.exists() or not meta_path.exists():
        raise RuntimeError(f"Locust wrote no per-request record; see {out / 'locust.log'}")
    samples = analysis.load_samples(samples_path)
    meta = json.loads(meta_path.read_text())
    if not len(samples):
        raise RuntimeError(f"no request was made; see {out / 'locust.log'}")
    exceptions_csv = out / "locust_exceptions.csv"
    if exceptions_csv.exists() and len(exceptions_csv.read_text().strip().splitlines()) > 1:
        problems.append("the locustfile raised exceptions (locust_exceptions.csv): the load was not what was planned")
    if ran.get("server_traceback"):
        problems.append("the server logged a traceback (server/server.log)")

    t0 = meta["shape_started_at"] or float(samples.t.min())
    phases = meta["schedule"]
    planned_end = phases[-1]["end_s"]
    run_end = t0 + planned_end if planned_end is not None else float((samples.t + samples.ms / 1000).max())
    run_end = min(run_end, float((samples.t + samples.ms / 1000).max()))
    whole = samples  # every request Locust counted, so totals match its own
    seconds = run_end - t0
    totals = analysis.window_stats(whole, seconds).as_dict()
    by_name = {k: v.as_dict() for k, v in analysis.per_name(whole, seconds).items()}

    bin_s = args.bin_seconds or (1.0 if seconds <= 180 else 2.0 if seconds <= 900 else 5.0)
    series = analysis.time_series(samples, t0, run_end, bin_s)
    phase_rows = analysis.phase_stats(samples, t0, phases, run_end) if args.shape in ("step", "spike") else []
    knee = analysis.find_knee(phase_rows) if args.shape == "step" else None
    spike = analysis.spike_recovery(samples, t0, phases) if args.shape == "spike" else None

    sampler: Sampler = ran["sampler"]
    if sampler.rss:
        rss_t = np.array([t for t, _ in sampler.rss]) - t0
        rss_v = np.array([v for _, v in sampler.rss])
        memory = analysis.memory_trend(rss_t, rss_v) | {"source": sampler.rss_source}
        if sampler.fds:
            memory |= analysis.fd_trend(
                np.array([t for t, _ in sampler.fds]) - t0, np.array([n for _, n in sampler.fds])
            )
    else:
        rss_t, rss_v = np.array([]), np.array([])
        memory = {"available": False, "why": "the server was not started here and exposes no "
                                             f"{server_metrics.RSS_METRIC} metric"}
    if ran["metrics"] is not None:
        before, after = ran["metrics"]
        server = {
            "metrics_url": ran["metrics_url"],
            "batchers": server_metrics.batcher_summary(before, after),
            "requests": server_metrics.requests_by_route(before, after),
            "route_latency": server_metrics.route_latency(before, after),
            "rejected": server_metrics.rejected(before, after),
            "scrape_errors": sampler.errors,
        }
    else:
        server = {"metrics_url": ran["metrics_url"], "unavailable": True}
    intervals = server_metrics.interval_series(sampler.snapshots, t0)

    files = {
        "throughput plot": plots.throughput(series, phases, out / "throughput.png"),
        "latency plot": plots.latency(series, phases, out / "latency.png"),
        "failure plot": plots.failures(series, phases, out / "failures.png"),
        "server plot": plots.server_side(intervals, phases, out / "server.png"),
        "memory plot": plots.memory(rss_t, rss_v, phases, out / "memory.png"),
    }
    if knee is not None:
        files["step plot"] = plots.steps(phase_rows, knee, out / "steps.png")
    files |= {"Locust HTML report": "locust.html", "Locust stats CSV": "locust_stats.csv",
              "Locust history CSV": "locust_stats_history.csv",
              "Locust final stats JSON": "locust_stats.json", "per-request record": "requests.csv",
              "server time series": "server_timeseries.json", "summary": "summary.json", "Locust log": "locust.log"}
    files |= {f"/metrics {w}": f"metrics_{w}.prom" for w in ("before", "after") if (out / f"metrics_{w}.prom").exists()}
    (out / "server_timeseries.json").write_text(json.dumps(_json_safe(
        {"intervals": intervals, "rss": [[t - t0, v] for t, v in sampler.rss]}), indent=1))

    checks = thresholds(args, totals, memory, spike)
    return {
        "run": {
            "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            "command": redacted_command(argv),
            "shape": args.shape,
            "host": ran["host"],
            "server_started": ran["server_started"],
            "server_env": ran["server_env"],
            "machine": {
                "cpus": os.cpu_count(),
                "cpu_model": cpu_model(),
                "loadavg_before": ran.get("loadavg_before"),
                "loadavg_after": ran.get("loadavg_after"),
            },
            "locust_version": version("locust"),
            "locust_rc": ran.get("locust_rc"),
            "duration_s": seconds,
            "bin_s": bin_s,
        },
        "locust": {
            k: meta.get(k) for k in ("user_classes", "disabled", "images", "wait_ms", "model", "collection", "api_key")
        },
        "totals": totals,
        "by_name": by_name,
        "locust_csv": report.locust_stats(out / "locust_stats.csv"),
        "locust_final": report.locust_final(out / "locust_stats.json"),
        "phases": phase_rows,
        "knee": knee,
        "spike": spike,
        "memory": memory,
        "server": server,
        "thresholds": checks,
        "problems": problems,
        "passed": all(c["passed"] for c in checks) and not problems,
        "files": {k: v for k, v in files.items() if v},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out or Path("reports") / f"loadtest-{args.shape}-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"[loadtest] {message}", flush=True)

    try:
        with tempfile.TemporaryDirectory(prefix="jepa-loadtest-") as scratch:
            ran = run_load(args, out, Path(scratch), log)
        summary = analyse(args, out, ran, argv)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log(f"run failed: {exc}")
        locust_log = out / "locust.log"
        if locust_log.exists():  # the locustfile's own complaint (wrong key, no model, ...) says more
            for line in locust_log.read_text().splitlines():
                if line.startswith(("RuntimeError", "ValueError")):
                    log(f"locust: {line}")
        return 2
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2))
    (out / "report.md").write_text(report.render(_json_safe(summary)))
    t = summary["totals"]
    log(f"report: {out / 'report.md'}")
    log(f"{t['requests']} requests, {t['ok_rps']:.1f} 2xx/s, p95 {t['p95_ms']:.1f} ms, "
        f"429 {100 * t['overload_ratio']:.2f}%, failed {100 * t['failure_ratio']:.2f}%")
    for check in summary["thresholds"]:
        log(f"threshold {check['name']}: limit {check['limit']}, measured {check['value']}: "
            f"{'pass' if check['passed'] else 'BROKEN'}")
    for problem in summary["problems"]:
        log(f"problem: {problem}")
    if summary["problems"]:
        return 2
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
