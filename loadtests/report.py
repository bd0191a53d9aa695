"""report.md from summary.json: every figure in the report is a field of the summary, written by run.py."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


def locust_stats(path: Path) -> dict[str, Any]:
    """Locust's own `<prefix>_stats.csv`: one row per request name plus `Aggregated` (its times are rounded)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                {
                    "type": r["Type"],
                    "name": r["Name"],
                    "requests": int(r["Request Count"]),
                    "failures": int(r["Failure Count"]),
                    "median_ms": _num(r["Median Response Time"]),
                    "avg_ms": _num(r["Average Response Time"]),
                    "p95_ms": _num(r["95%"]),
                    "p99_ms": _num(r["99%"]),
                    "max_ms": _num(r["Max Response Time"]),
                    "rps": _num(r["Requests/s"]),
                }
            )
    aggregated = next((r for r in rows if r["name"] == "Aggregated"), None)
    return {"rows": [r for r in rows if r["name"] != "Aggregated"], "aggregated": aggregated}


def locust_final(path: Path) -> dict[str, int]:
    """Locust's final counts (`--json-file`, written after the users stopped; the CSV is rewritten only each second)."""
    import json

    entries = json.loads(path.read_text()) if path.exists() else []
    return {"requests": sum(e["num_requests"] for e in entries), "failures": sum(e["num_failures"] for e in entries)}


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _window_row(label: str, w: dict[str, Any]) -> list[str]:
    return [
        label,
        _f(w["users"], 0),
        _f(w["requests"], 0),
        _f(w["ok_rps"]),
        _f(w["mean_ms"]),
        _f(w["p50_ms"]),
        _f(w["p95_ms"]),
        _f(w["p99_ms"]),
        _pct(w["overload_ratio"]),
        _pct(w["failure_ratio"]),
        _f(w["server_errors"], 0),
    ]


WINDOW_HEADER = ["", "users", "requests", "2xx/s", "mean ms", "p50 ms", "p95 ms", "p99 ms", "429", "failed", "5xx"]


def render(summary: dict[str, Any]) -> str:  # noqa: C901 - the report top to bottom, one branch per optional section
    run, totals = summary["run"], summary["totals"]
    lines = [f"# Load test report: {run['shape']}", ""]
    lines += [
        f"- date (UTC): {run['date_utc']}",
        f"- command: `{run['command']}`",
        f"- target: {run['host']} ({'started by the runner' if run['server_started'] else 'given with --host'})",
        f"- machine: {run['machine']['cpus']} CPUs ({run['machine']['cpu_model']}), no GPU used; "
        f"load average before {run['machine']['loadavg_before']}, after {run['machine']['loadavg_after']}"
        + ("; Locust ran on the same machine as the server" if run["server_started"] else ""),
        f"- Locust {run['locust_version']}, exit code {run['locust_rc']}; run length {_f(run['duration_s'])} s",
    ]
    if run.get("server_env"):
        lines.append("- server settings: " + ", ".join(f"`{k}={v}`" for k, v in run["server_env"].items()))
    meta = summary.get("locust", {})
    if meta:
        lines.append(
            f"- user classes (weights): {meta.get('user_classes')}; think time {meta.get('wait_ms')} ms; "
            f"API key: {'sent' if meta.get('api_key') else 'none'}; "
            f"images: {meta.get('images', {}).get('source')} at {', '.join(f'{w}x{h} {f}' for w, h, f, _ in meta.get('images', {}).get('sizes', []))}"
        )
        for cls, why in (meta.get("disabled") or {}).items():
            lines.append(f"- not run: {cls}: {why}")
    lines += ["", "## Result", ""]
    verdict = "PASSED" if summary["passed"] else "FAILED"
    lines.append(f"**{verdict}**" + ("" if summary["thresholds"] else " (no thresholds given)"))
    if summary["thresholds"]:
        lines += [""] + _table(
            ["threshold", "limit", "measured", "result"],
            [
                [t["name"], _f(t["limit"], 4), _f(t["value"], 4), "pass" if t["passed"] else "BROKEN"]
                for t in summary["thresholds"]
            ],
        )
    for problem in summary.get("problems", []):
        lines.append(f"- problem: {problem}")

    lines += ["", "## Totals (per-request record; latency of 2xx only)", ""]
    lines += _table(WINDOW_HEADER, [_window_row("whole run", totals | {"users": f"up to {totals['users_max']}"})])
    lines += ["", f"{totals['requests']} requests: {totals['ok']} 2xx, {totals['overload']} 429 (shed), "
                  f"{totals['failures']} failed ({totals['server_errors']} of them 5xx)."]
    lines += ["", "### By request name", ""]
    lines += _table(["name"] + WINDOW_HEADER[1:], [_window_row(n, w) for n, w in summary["by_name"].items()])

    agg = summary["locust_csv"]["aggregated"]
    if agg:
        lines += [
            "",
            "### Locust's own statistics (`locust_stats.csv`; times rounded by Locust, 429 rows listed apart)",
            "",
        ]
        rows = [
            [
                r["type"],
                r["name"],
                _f(r["requests"], 0),
                _f(r["failures"], 0),
                _f(r["median_ms"], 0),
                _f(r["p95_ms"], 0),
                _f(r["p99_ms"], 0),
                _f(r["rps"]),
            ]
            for r in summary["locust_csv"]["rows"]
        ]
        rows.append(
            [
                "",
                "Aggregated",
                _f(agg["requests"], 0),
                _f(agg["failures"], 0),
                _f(agg["median_ms"], 0),
                _f(agg["p95_ms"], 0),
                _f(agg["p99_ms"], 0),
                _f(agg["rps"]),
            ]
        )
        lines += _table(["type", "name", "requests", "failures", "median ms", "p95 ms", "p99 ms", "req/s"], rows)
        final = summary.get("locust_final") or {}
        if final:
            lines += [
                "",
                f"Locust's final count (`locust_stats.json`, after the users stopped; the CSV is rewritten each "
                f"second and may miss the last one): {final['requests']} requests, {final['failures']} failures.",
            ]

    phases = summary.get("phases") or []
    if summary.get("knee"):
        knee = summary["knee"]
        lines += ["", "## Step test: where is the knee?", ""]
        lines += _table(["step"] + WINDOW_HEADER[1:], [_window_row(p["label"], p) for p in phases])
        lines.append("")
        lines.append(f"Each step's first {_f(phases[0]['end_s'] - phases[0]['start_s'] - phases[0]['seconds'], 0)} s "
                     "(ramp, queue filling) are left out of its row.")
        lines.append(
            f"**Knee: {knee['users']} users**: {_f(knee['ok_rps'])} 2xx/s at mean {_f(knee['mean_ms'])} ms, "
            f"p95 {_f(knee['p95_ms'])} ms. It is the step with the highest power (2xx/s divided by mean latency: "
            + ", ".join(f"{p['users']} users {_f(w, 3)}" for p, w in zip(phases, knee["power"], strict=True))
            + "); below it more users bought throughput cheaply, above it they mostly bought queueing.")
        if knee["at_first_step"]:
            lines.append("The knee is the first step tested: it may lie lower; start the steps lower.")
        if knee["at_last_step"]:
            lines.append("The knee is the last step tested: it may lie higher; test more users.")
        sat = knee["saturation"]
        if sat:
            lines.append(
                f"Saturation: going from {sat['previous_users']} to {sat['users']} users added {_pct(sat['gain'])} "
                f"throughput (less than {_pct(knee['min_gain'])}) while p95 went from {_f(sat['previous_p95_ms'])} to "
                f"{_f(sat['p95_ms'])} ms.")
        else:
            lines.append(f"Throughput rose by at least {_pct(knee['min_gain'])} at every step (no flat top in range).")
        lines.append(f"Highest throughput: {_f(knee['max_ok_rps'])} 2xx/s at {knee['max_ok_rps_users']} users.")
    if summary.get("spike"):
        spike = summary["spike"]
        lines += ["", "## Spike test: overload and recovery", ""]
        lines += _table(["phase"] + WINDOW_HEADER[1:], [_window_row(p["label"], p) for p in phases])
        lines.append("")
        rec = spike["recovered_after_s"]
        lines.append(
            f"Across the run: {spike['overload_total']} requests shed with 429, {spike['server_errors_total']} 5xx, "
            f"{spike['failures_total']} failures in all. Baseline p95 {_f(spike['baseline_p95_ms'])} ms; "
            + (f"recovered {_f(rec)} s after the spike ended (first {_f(spike['window_s'], 0)} s window with p95 <= "
               f"{_f(spike['recovery_p95_target_ms'])} ms and no 429)." if rec is not None else
               f"did NOT recover to p95 <= {_f(spike['recovery_p95_target_ms'])} ms before the run ended."))
    memory = summary.get("memory") or {}
    if memory.get("available"):
        lines += ["", "## Server memory (RSS)", ""]
        lines.append(
            f"Source: {memory['source']}. {memory['samples']} readings after a {_f(memory['warmup_s'], 0)} s warm-up."
        )
        lines += [""] + _table(
            ["before load MiB", "after warm-up MiB", "end MiB", "max MiB", "growth MiB", "slope MiB/min"],
            [
                [
                    _f(memory["rss_before_load_mb"]),
                    _f(memory["rss_start_mb"]),
                    _f(memory["rss_end_mb"]),
                    _f(memory["rss_max_mb"]),
                    _f(memory["rss_growth_mb"]),
                    _f(memory["rss_slope_mb_per_min"], 2),
                ]
            ],
        )
        if "fd_start" in memory:
            lines.append(
                f"\nOpen file descriptors after warm-up: {memory['fd_start']} at the start, {memory['fd_end']} at the end, "
                f"{memory['fd_max']} at most (growth {memory['fd_growth']})."
            )
    elif memory:
        lines += ["", "## Server memory", "", f"Not measured: {memory.get('why', 'no readings')}."]

    server = summary.get("server") or {}
    if server.get("unavailable"):
        lines += [
            "",
            "## Server side",
            "",
            f"Not measured: no /metrics from {server.get('metrics_url') or '(skipped)'}.",
        ]
    if server.get("batchers"):
        lines += ["", f"## Server side (/metrics of {server.get('metrics_url')}, after minus before)", ""]
        lines += _table(["model/component", "batches", "items", "mean batch", "mean fill", "queue wait mean ms",
                         "queue wait p95 ms", "inference mean ms"], [
            [k, _f(v["batches"], 0), _f(v["items"], 0), _f(v["mean_batch_size"], 2), _f(v["mean_fill_ratio"], 3),
             _f(v["queue_wait_mean_ms"], 2), _f(v["queue_wait_p95_ms"], 2), _f(v["inference_mean_ms"], 2)]
            for k, v in server["batchers"].items()])
        lines += ["", "Queue wait p95 is estimated from the histogram buckets (linear inside a bucket)."]
    if server.get("route_latency"):
        lines += [
            "",
            "Time inside the server per route (`jepa_request_duration_seconds`; p95 estimated from its buckets). "
            "The client's latency minus this is time spent outside the server's handlers: connection queueing, "
            "and a load generator short of CPU.",
            "",
        ]
        lines += _table(
            ["route", "requests", "mean ms", "p95 ms"],
            [
                [route, _f(v["requests"], 0), _f(v["mean_ms"]), _f(v["p95_ms"])]
                for route, v in server["route_latency"].items()
            ],
        )
    if server.get("requests"):
        lines += ["", "Requests seen by the server:", ""]
        lines += _table(["method", "route", "status", "count"],
                        [[r["method"], r["route"], r["status"], _f(r["count"], 0)] for r in server["requests"]])
    if server.get("rejected"):
        lines += [
            "",
            "Items refused by the batchers: " + ", ".join(f"{k}: {v:.0f}" for k, v in server["rejected"].items()),
        ]

    lines += ["", "## Files", ""]
    for label, name in summary["files"].items():
        if name:
            lines.append(
                f"- {label}: [{name}]({name})" + (f"\n\n  ![{label}]({name})" if name.endswith(".png") else "")
            )
    return "\n".join(lines) + "\n"
