"""docs/bench/host.md and host.json of the host benchmark: the machine, the rows, the ratios, issue 27's goals."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.host_launch import ROOT, SERVER_DEFAULTS
from loadtests.host_measure import (
    DECODE,
    DECODE_DRAFT,
    INPROCESS,
    JEPA,
    MIN_REQUESTS_PER_CONNECTION,
    NAIVE,
    Measurement,
    Summary,
)

QUIET_LOAD = 0.3  # a 1-minute load average above this before the run: the figures are suspect
ROW_NAMES = {JEPA: "jepa-serve", NAIVE: "naive app (uvicorn --workers N)", DECODE: "decode loop (ceiling)",
             DECODE_DRAFT: "decode loop, DCT-scaled", INPROCESS: "in-process ceiling (best batch)"}
GOAL_12MP_GAIN = 5.0
GOAL_COSINE = 0.999


@dataclass
class Goal:
    text: str
    target: float
    measured: float | None
    how: str
    shaky: bool = False  # a row it rests on completed too few requests in its window

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "not measured"
        if self.shaky:
            return "unreliable: too few requests in a window (raise --seconds)"
        return "met" if self.measured >= self.target else "**not met**"


Key = tuple[str, str, str, int]  # (row, model, payload, cores)


class Figures:
    """Lookup of summarised rows by (row, model, payload, cores)."""

    def __init__(self, summaries: list[Summary]) -> None:
        self.by_key = {s.key: s for s in summaries}

    def rate(self, row: str, model: str, payload: str, cores: int) -> float | None:
        found = self.by_key.get((row, model, payload, cores))
        return found.img_per_s if found else None

    def compare(self, text: str, target: float, num: Key, den: Key, how: str) -> Goal:
        a, b = self.by_key.get(num), self.by_key.get(den)
        if num == den:  # a scaling goal with one core count measured: nothing to compare
            a = b = None
        return Goal(text, target, ratio(a.img_per_s if a else None, b.img_per_s if b else None), how,
                    shaky=any(s is not None and s.few_requests for s in (a, b)))


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def fmt(value: float | None, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if value is not None else "–"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def versions() -> str:
    import onnxruntime

    wrk = shutil.which("wrk")
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split(" [")[0] if wrk else "none"
    return f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, {wrk_version}"


def goals(figures: Figures, n: int, cosines: dict[str, float], baseline: Figures | None) -> list[Goal]:
    c = figures.compare
    vits = max((s.cores for s in figures.by_key.values() if s.model == "vits16"), default=n)
    return [
        c(f"8 × 224 px JPEGs: {n} cores ≥ 1.8× 1 core", 1.8, (JEPA, "tiny", "224x8", n), (JEPA, "tiny", "224x8", 1),
          f"jepa-serve {n}c ÷ 1c"),
        c(f"8 × 224 px JPEGs: ≥ 0.7 of the {n}-core decode ceiling", 0.7, (JEPA, "tiny", "224x8", n),
          (DECODE, "tiny", "224", n), f"jepa-serve ÷ decode loop, {n}c"),
        c(f"8 × 224 px JPEGs: ≥ 1.3× the naive app under uvicorn --workers {n}", 1.3, (JEPA, "tiny", "224x8", n),
          (NAIVE, "tiny", "224x8", n), f"jepa-serve ÷ naive, {n}c"),
        c(f"1-image requests: {n} cores ≥ 1.7× 1 core", 1.7, (JEPA, "tiny", "224x1", n), (JEPA, "tiny", "224x1", 1),
          f"jepa-serve {n}c ÷ 1c"),
        c("1-image requests: ≥ 1.3× the naive app", 1.3, (JEPA, "tiny", "224x1", n), (NAIVE, "tiny", "224x1", n),
          f"jepa-serve ÷ naive, {n}c"),
        twelve_mp_goal(figures, baseline),
        Goal(f"12 MP photos: embeddings within cosine {GOAL_COSINE} of a full-size decode", GOAL_COSINE,
             min(cosines.values()) if cosines else None,
             "worst photo, " + ", ".join(cosines) if cosines else "served vs full decode"),
        c("ViT-S/16, 16 clients of 1 image: ≥ 0.95 of the in-process ceiling", 0.95, (JEPA, "vits16", "224x1", vits),
          (INPROCESS, "vits16", "224", vits), f"jepa-serve ÷ in-process, {vits}c"),
        c("ViT-S/16: ≥ 1.0× the naive app on the same graph", 1.0, (JEPA, "vits16", "224x1", vits),
          (NAIVE, "vits16", "224x1", vits), f"jepa-serve ÷ naive, {vits}c"),
    ]


def twelve_mp_goal(figures: Figures, baseline: Figures | None) -> Goal:
    """jepa-serve's 12 MP img/s per core against the baseline run's (--baseline), else against the full-size
    decode loop per core: the most any server that decodes at full size (today's) could reach."""
    rows = sorted((s for s in figures.by_key.values() if s.row == JEPA and s.model == "tiny"
                   and s.payload.startswith("12mp")), key=lambda s: (s.cores, s.payload))
    text = f"12 MP photos: ≥ {GOAL_12MP_GAIN:.0f}× today's img/s per core"
    if not rows:
        return Goal(text, GOAL_12MP_GAIN, None, "no 12 MP row")
    row = rows[0]  # the fewest cores: per core at its cleanest
    if baseline and row.key in baseline.by_key:
        before = baseline.by_key[row.key]
        how = f"jepa-serve {row.payload} {row.cores}c ÷ the baseline run's"
    else:
        before = figures.by_key.get((DECODE, "tiny", "12mp", row.cores))
        how = f"jepa-serve {row.payload} {row.cores}c ÷ full-size decode loop (no baseline row)"
    return Goal(text, GOAL_12MP_GAIN, ratio(row.img_per_s, before.img_per_s if before else None), how,
                shaky=row.few_requests or bool(before and before.few_requests))


def rows_table(summaries: list[Summary], baseline: Figures | None) -> list[str]:
    head = ("| row | model | request | cores | img/s | range | req/s | p50 ms | p99 ms | server CPU | "
            "busy CPU | wrk CPU | errors | threads seen on |")
    lines = [head + (" baseline img/s |" if baseline else ""), "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
             "---:|---:|---|" + ("---:|" if baseline else "")]
    order = {JEPA: 0, NAIVE: 1, DECODE: 2, DECODE_DRAFT: 3, INPROCESS: 4}
    def place(s: Summary) -> tuple:
        size, _, per_request = s.payload.partition("x")
        return (s.model != "tiny", size != "224", s.cores, -int(per_request or 0), order[s.row])

    for s in sorted(summaries, key=place):
        seen = ",".join(map(str, s.seen_on)) + ("" if s.confined else " **escaped**")
        flag = " †" if s.few_requests else ""
        line = (f"| {ROW_NAMES[s.row]} | {s.model} | {s.payload} | {s.cores} | {fmt(s.img_per_s)}{flag} | "
                f"{fmt(s.img_min, 0)}–{fmt(s.img_max, 0)} | {fmt(s.req_per_s)} | {fmt(s.p50_ms)} | {fmt(s.p99_ms)} | "
                f"{fmt(s.server_cores, 2)} | {fmt(s.busy_cores, 2)} | {fmt(s.wrk_cores, 2)} | {s.errors} | {seen} |")
        if baseline:
            line += f" {fmt(baseline.rate(*s.key))} |"
        lines.append(line)
    return lines


def ratios_table(figures: Figures, payloads: list[str], cores: list[int]) -> list[str]:
    n, f = max(cores), figures.rate
    scaling = n > 1 and 1 in cores
    lines = [("| request | " + (f"jepa-serve {n}÷1 | naive {n}÷1 | decode {n}÷1 | " if scaling else "")
              + " | ".join(f"jepa ÷ decode ({c}c) | jepa ÷ naive ({c}c)" for c in cores) + " |"),
             "|---|" + "---:|" * (3 * scaling + 2 * len(cores))]
    for payload in payloads:
        size = payload.split("x")[0]
        cells = [fmt_ratio(ratio(f(row, "tiny", key, n), f(row, "tiny", key, 1)))
                 for row, key in ((JEPA, payload), (NAIVE, payload), (DECODE, size)) if scaling]
        for c in cores:
            cells += [fmt_ratio(ratio(f(JEPA, "tiny", payload, c), f(DECODE, "tiny", size, c))),
                      fmt_ratio(ratio(f(JEPA, "tiny", payload, c), f(NAIVE, "tiny", payload, c)))]
        lines.append(f"| {payload} | " + " | ".join(cells) + " |")
    return lines


def confinement_lines(measurements: list[Measurement], context: dict) -> list[str]:
    escaped = [m for m in measurements if not m.placement.get("confined")]
    threads = sum(m.placement.get("threads", 0) for m in measurements)
    samples = sum(m.placement.get("samples", 0) for m in measurements)
    if not escaped:
        verdict = (f"every thread of every measured process stayed on its group's CPUs: {threads} thread-points "
                   f"over {samples} samples (CPU last run on, from /proc/PID/task/TID/stat, and each thread's "
                   "affinity, sampled every 0.2 s during each point).")
    else:
        verdict = "**threads ran outside their group** in: " + "; ".join(
            f"{m.row} {m.payload} {m.cores}c (seen on {m.placement.get('seen_on')})" for m in escaped[:6])
    return [f"Confinement: {context['confiner']}; {verdict}"]


def header(args: argparse.Namespace, plan, context: dict) -> list[str]:
    load = context["loadavg_before"]
    quiet = "" if load[0] <= QUIET_LOAD else (f" **Not quiet** (1-minute load above {QUIET_LOAD}): "
                                               "treat these figures as a smoke run.")
    env = {**SERVER_DEFAULTS, **args.server_env}
    sizes = ", ".join(f"{k}: {v / 1024:,.0f} kB" for k, v in context.get("image_bytes", {}).items())
    lines = [
        "# Host-path benchmark",
        "",
        f"Generated by `python -m loadtests.bench_host {' '.join(args.argv)}` (`make bench-host`) on "
        f"{context['started']}, commit {commit()}.",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs (this run used {plan.allowed}); Linux {platform.release()}; "
        f"{versions()}.",
        f"Load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after: "
        + " ".join(f"{x:.2f}" for x in context.get("loadavg_after", ())) + "." + quiet,
        "",
        *confinement_lines(context["measurements"], context),
        "",
        f"Load generator: wrk, {args.connections} connections (ViT-S: {args.vits_clients}), multipart bodies "
        f"of real JPEGs (scikit-image photos; mean encoded size {sizes}); on the CPUs the server does not use, "
        "and sharing the server's CPUs where none are left (stated per group below). Its own CPU use is the "
        "`wrk CPU` column (cores busy: user + system time of the finished wrk ÷ the window).",
        f"jepa-serve environment: {' '.join(f'{k}={v}' for k, v in env.items())} (the rest default).",
        f"Each point: {args.warmup:g} s of unmeasured load, then {args.seconds:g} s measured "
        f"({args.seconds_12mp:g} s for 12 MP); {args.repeats} runs, interleaved; img/s is the median, with the "
        "range; req/s, latencies and CPU are medians.",
    ]
    return lines + [f"- {note}" for note in plan.notes]


LEGEND = [
    "",
    "Columns: `server CPU`: cores' worth of CPU used by the measured server's processes (all threads) during the "
    "window; `busy CPU`: the group's CPUs busy with anything (from /proc/stat; includes wrk when it shares them, "
    "and other tenants of the machine); `threads seen on`: the CPUs the group's threads were seen running on. "
    f"†: a run completed fewer than {MIN_REQUESTS_PER_CONNECTION} requests per connection in its window, so "
    "the requests cut off at its ends bias the rate low: raise --seconds (or --seconds-12mp).",
    "Rows: `decode loop`: PIL decode at full size + resize + normalise, a process pinned per core (the ceiling "
    "of any server that decodes this way); `decode loop, DCT-scaled`: the same with `Image.draft` decoding the "
    "JPEG to at least the model's input size; `naive app`: a sync FastAPI handler decoding the request's images "
    "with the service's decoder and running the same ONNX graph on them (one call per request, no batching "
    "across requests) under `uvicorn --workers N`; `in-process ceiling`: one process decoding a batch and "
    "running ONNX Runtime on it, at each batch size, the best kept.",
]


def write_report(args: argparse.Namespace, plan, context: dict, measurements: list[Measurement],
                 summaries: list[Summary], cosines: dict[str, float]) -> Path:
    figures = Figures(summaries)
    baseline = load_baseline(args.baseline) if args.baseline else None
    n = max(plan.cores)
    context = {**context, "measurements": measurements}
    lines = header(args, plan, context)
    lines += ["", "## Rows", "", *rows_table(summaries, baseline), *LEGEND]
    bench = max((s.bench_cores for s in summaries if s.bench_cores is not None), default=None)
    if bench is not None:
        lines.append(f"The bench process itself (the placement sampler; it runs beside wrk) used at most "
                     f"{bench:.2f} cores in any window.")
    payloads = [p.key for p in plan.payloads]
    if payloads:
        lines += ["", "## Ratios", "", *ratios_table(figures, payloads, plan.cores)]
    inprocess = [s for s in summaries if s.row == INPROCESS]
    if inprocess:
        lines += ["", "In-process ceiling by batch (img/s, median run): " + "; ".join(
            f"{s.model} {s.cores}c: " + ", ".join(f"b{b}: {v:,.1f}" for b, v in s.detail["by_batch"].items())
            for s in inprocess)]
    lines += cpu_table(summaries)
    goal_list = goals(figures, n, cosines, baseline)
    lines += ["", f"## Goals of issue 27 ({n} cores)", "", "| goal | measured | how | |", "|---|---:|---|---|"]
    lines += [f"| {g.text} | {fmt_ratio(g.measured) if g.target != GOAL_COSINE else fmt(g.measured, 6)} | {g.how} "
              f"| {g.verdict} |" for g in goal_list]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "host.md"
    path.write_text("\n".join(lines) + "\n")
    context.pop("measurements")
    (args.out / "host.json").write_text(json.dumps({
        "command": ["python", "-m", "loadtests.bench_host", *args.argv], "context": context,
        "server_env": {**SERVER_DEFAULTS, **args.server_env}, "cosines": cosines,
        "summary": [asdict(s) for s in summaries], "goals": [{**asdict(g), "verdict": g.verdict} for g in goal_list],
        "measurements": [m.as_dict() for m in measurements]}, indent=1))
    return path


def cpu_table(summaries: list[Summary]) -> list[str]:
    """Where a request's CPU goes, per server and row (the median run): milliseconds of CPU per request by role."""
    rows = [s for s in summaries if s.detail.get("cpu_ms_per_request")]
    if not rows:
        return []
    roles = sorted({role for s in rows for role in s.detail["cpu_ms_per_request"]})
    lines = ["", "## Where a request's CPU goes", "",
             "CPU milliseconds per request in the median run, by process and thread (`loop`: the process's main "
             "thread, its event loop; `threads`: its other threads; fronts and uvicorn workers added up; "
             "loadtests/host_cpuset.py `cpu_seconds_by_role`). For jepa-serve the fronts' threads are the decoding, "
             "the core's threads the engine (its worker and ONNX Runtime's pool). The naive app is `uvicorn` alone "
             "with one worker, and `uvicorn` with its `python` workers with more.", "",
             "| server | model | request | cores | " + " | ".join(roles) + " | total |",
             "|---|---|---|---:|" + "---:|" * (len(roles) + 1)]
    for s in rows:
        by_role = s.detail["cpu_ms_per_request"]
        cells = " | ".join(fmt(by_role.get(role), 2) if role in by_role else "" for role in roles)
        lines.append(f"| {s.row} | {s.model} | {s.payload} | {s.cores} | {cells} | {fmt(sum(by_role.values()), 2)} |")
    return lines


def load_baseline(path: Path) -> Figures:
    raw = json.loads(path.read_text())
    return Figures([Summary(**s) for s in raw["summary"]])
