"""Host-path benchmark (issue 27): how far one machine's cores carry jepa-serve over HTTP (`make bench-host`).

    python -m loadtests.bench_host                                   # the full run: docs/bench/host.md + host.json
    python -m loadtests.bench_host --rows 224x8 --repeats 1 --seconds 3 --out /tmp/host     # a quick look
    python -m loadtests.bench_host --server-env JEPA_WORKERS=2 --baseline docs/bench/host.json

Rows, each in the same run and on the same cores (a cpuset cgroup per core count, so that no thread of the
measured processes runs elsewhere; the load generator gets the other cores where there are any):
  jepa-serve  a near-zero-cost model (1-block, 32-wide ViT at 224 px, `jepa-export vit`) served over HTTP with
              its embedding cache off; wrk (C, Debian's package) posts multipart bodies of real JPEGs:
              224 px or 12 MP (4000 x 3000, ~1 MB) photos, 8 or 1 a request, over 16 connections
  naive       the peer: a plain FastAPI handler (decode, run the same graph; no batching) under
              `uvicorn --workers N`, one worker per core
  decode      the decode ceiling: PIL decode + resize + normalise in a loop, a process per core (for 12 MP
              photos also with DCT-scaled decoding, `decode-draft`)
  vits        a real encoder: ViT-S/16 fp32 (random weights), 16 clients of one image each, beside the
              in-process ceiling (decode + ONNX Runtime at its best batch) and the naive app on the same graph
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadtests.bench_gpu import multipart
from loadtests.host_cpuset import Confiner, CoreGroup, detect_confiner
from loadtests.host_launch import ROOT, Served, run_worker, start_jepa_serve, start_naive
from loadtests.host_measure import DECODE, DECODE_DRAFT, INPROCESS, JEPA, Measurement, Window, summarise
from loadtests.host_payloads import CONTENT_TYPE, Inputs, Payload, build_inputs
from loadtests.host_report import write_report
from loadtests.host_wrk import run_wrk, wrk_path

MODELS = {  # `jepa-export vit` arguments
    "tiny": ["--image-size", "224", "--patch-size", "16", "--dim", "32", "--depth", "1", "--heads", "2"],
    "vits16": ["--image-size", "224", "--patch-size", "16", "--dim", "384", "--depth", "12", "--heads", "6"],
}
DEFAULT_ROWS = "224x8,224x1,12mpx1,vits"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Plan:
    payloads: list[Payload]  # the tiny model's HTTP rows
    vits: bool
    cores: list[int]
    allowed: list[int]  # the CPUs this bench may use, in order
    notes: list[str] = field(default_factory=list)

    def split(self, count: int) -> tuple[list[int], list[int], bool]:
        """(server CPUs, load-generator CPUs, shared): the first `count` CPUs serve, wrk gets the rest, or all
        of them when none are left."""
        server = self.allowed[:count]
        rest = self.allowed[count:]
        return server, rest or list(self.allowed), not rest


def export_model(name: str, repository: Path) -> Path:
    """`jepa-export vit` (fp32 only) into a repository of its own (jepa-serve loads every entry it finds)."""
    folder = repository / name / name
    if not (folder / "manifest.json").exists():
        log(f"exporting {name} (jepa-export vit {' '.join(MODELS[name])})")
        command = [sys.executable, "-m", "export", "vit", "--name", name, *MODELS[name], "--no-fp16", "--force",
                   "--out", str(folder.parent)]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder


class Bench:
    def __init__(self, args: argparse.Namespace, plan: Plan, confiner: Confiner, inputs: Inputs,
                 workdir: Path) -> None:
        self.args = args
        self.plan = plan
        self.confiner = confiner
        self.inputs = inputs
        self.workdir = workdir
        self.measurements: list[Measurement] = []
        self.cosines: dict[str, float] = {}
        self.http = wrk_path() is not None

    # HTTP rows ---------------------------------------------------------------------------------------------

    def measure_http(self, served: Served, group: CoreGroup, model: str, payload: Payload, repeat: int,
                     connections: int, load_threads: int) -> None:
        seconds = self.args.seconds_12mp if payload.size == "12mp" else self.args.seconds
        bodies = self.inputs.bodies[payload.key]
        wrk_log = self.workdir / "wrk.log"
        if self.args.warmup > 0:
            run_wrk(served.url, bodies, CONTENT_TYPE, payload.per_request, connections=connections,
                    threads=load_threads, seconds=self.args.warmup, log_path=wrk_log)
        with Window(group, served.pids) as window:
            result = run_wrk(served.url, bodies, CONTENT_TYPE, payload.per_request, connections=connections,
                             threads=load_threads, seconds=seconds, log_path=wrk_log)
        m = window.fill(Measurement(
            row=served.name, model=model, payload=payload.key, cores=len(group.cpus), repeat=repeat,
            img_per_s=result.img_per_s, req_per_s=result.req_per_s, p50_ms=result.p50_ms, p99_ms=result.p99_ms,
            errors=result.errors, wrk_cores=result.wrk_cores, detail={"connections": connections,
                                                                     "requests": result.requests}), server=True)
        self.measurements.append(m)
        log(f"  {served.name:10s} {model} {payload.key:7s} {len(group.cpus)} cores: {m.img_per_s:8,.1f} img/s "
            f"{m.req_per_s:7,.1f} req/s p50 {m.p50_ms:7.1f} ms p99 {m.p99_ms:7.1f} ms; server "
            f"{m.server_cores:.2f} cores, wrk {m.wrk_cores:.2f}; errors {m.errors}")

    # reference rows ----------------------------------------------------------------------------------------

    def measure_decode(self, group: CoreGroup, size: str, draft: bool, model_dir: Path, repeat: int) -> None:
        seconds = self.args.seconds_12mp if size == "12mp" else self.args.seconds
        args = ["decode", "--images", str(self.inputs.images[size][0].parent), "--model-dir", str(model_dir),
                "--seconds", str(seconds), "--cpus", ",".join(map(str, group.cpus))] + (["--draft"] if draft else [])
        with Window(group) as window:
            result = run_worker(group, args, self.workdir / "workers.log", seconds + 300)
        m = window.fill(Measurement(row=DECODE_DRAFT if draft else DECODE, model=model_dir.name, payload=size,
                                    cores=len(group.cpus), repeat=repeat, img_per_s=result["img_per_s"],
                                    detail={"per_cpu": result["per_cpu"]}), server=False)
        self.measurements.append(m)
        log(f"  {m.row:10s} {size:4s} {len(group.cpus)} cores: {m.img_per_s:8,.1f} img/s")

    def measure_inprocess(self, group: CoreGroup, model_dir: Path, repeat: int) -> None:
        args = ["inprocess", "--images", str(self.inputs.images["224"][0].parent), "--model-dir", str(model_dir),
                "--seconds", str(max(1.0, self.args.seconds / 3)), "--batches", self.args.inprocess_batches]
        with Window(group) as window:
            result = run_worker(group, args, self.workdir / "workers.log", 1800)
        m = window.fill(Measurement(row=INPROCESS, model=model_dir.name, payload="224", cores=len(group.cpus),
                                    repeat=repeat, img_per_s=result["img_per_s"],
                                    detail={"by_batch": result["by_batch"]}), server=False)
        self.measurements.append(m)
        log(f"  inprocess  {model_dir.name} {len(group.cpus)} cores: {m.img_per_s:8,.1f} img/s "
            + ", ".join(f"b{b}: {v:,.1f}" for b, v in result["by_batch"].items()))

    # groups ------------------------------------------------------------------------------------------------

    def start_servers(self, group: CoreGroup, model_dir: Path) -> list[Served]:
        if not self.http:
            return []
        servers: list[Served] = []
        try:
            servers.append(start_jepa_serve(group, model_dir.parent, model_dir.name, self.workdir,
                                            self.args.server_env, self.args.ready_timeout))
            servers.append(start_naive(group, model_dir, self.workdir, self.args.ready_timeout))
        except BaseException:
            for served in servers:
                served.stop()
            raise
        return servers

    def tiny_group(self, count: int, model_dir: Path) -> None:
        server_cpus, load_cpus, shared = self.plan.split(count)
        self.note_split(f"tiny model, {count} core(s)", server_cpus, load_cpus, shared)
        os.sched_setaffinity(0, load_cpus)  # wrk and the probe inherit it; the group's processes get their cpuset
        sizes = sorted({p.size for p in self.plan.payloads})
        with CoreGroup(self.confiner, f"tiny-{count}", server_cpus) as group:
            servers = self.start_servers(group, model_dir)
            try:
                self.check_cosine(servers, model_dir)
                for repeat in range(self.args.repeats):
                    for payload in self.plan.payloads:
                        for served in servers:
                            self.measure_http(served, group, model_dir.name, payload, repeat,
                                              self.args.connections, self.load_threads(load_cpus, shared))
                    for size in sizes:
                        for draft in (False, True) if size == "12mp" else (False,):
                            self.measure_decode(group, size, draft, model_dir, repeat)
            finally:
                for served in servers:
                    served.stop()

    def vits_group(self, model_dir: Path) -> None:
        count = self.args.vits_cores or max(self.plan.cores)
        server_cpus, load_cpus, shared = self.plan.split(count)
        self.note_split(f"ViT-S/16, {count} core(s)", server_cpus, load_cpus, shared)
        os.sched_setaffinity(0, load_cpus)
        with CoreGroup(self.confiner, f"vits-{count}", server_cpus) as group:
            servers = self.start_servers(group, model_dir)
            try:
                self.check_cosine(servers, model_dir)
                for repeat in range(self.args.repeats):
                    for served in servers:
                        self.measure_http(served, group, model_dir.name, Payload.parse("224x1"), repeat,
                                          self.args.vits_clients, self.load_threads(load_cpus, shared))
                    self.measure_inprocess(group, model_dir, repeat)
            finally:
                for served in servers:
                    served.stop()

    def note_split(self, label: str, server_cpus: list[int], load_cpus: list[int], shared: bool) -> None:
        note = (f"{label}: servers and reference loops on CPUs {server_cpus}, wrk on CPUs {load_cpus}"
                + (" (shared with the server: no CPU is left over)" if shared else ""))
        if note not in self.plan.notes:
            self.plan.notes.append(note)
        log(f"== {note}")

    @staticmethod
    def load_threads(load_cpus: list[int], shared: bool) -> int:
        # one wrk thread per spare core (up to 4); one when it shares the server's cores
        return 1 if shared else min(4, len(load_cpus))

    # quality -----------------------------------------------------------------------------------------------

    def check_cosine(self, servers: list[Served], model_dir: Path) -> None:
        """jepa-serve's embedding of each 12 MP photo against the same graph run here on a full-size decode
        (once per model)."""
        jepa = next((s for s in servers if s.name == JEPA), None)
        if jepa is None or "12mp" not in self.inputs.images or model_dir.name in self.cosines:
            return
        photos = [p.read_bytes() for p in self.inputs.images["12mp"]]
        self.cosines[model_dir.name] = cosine_to_full_decode(jepa.url, model_dir, photos)
        log(f"  {model_dir.name}: cosine of served 12 MP embeddings to a full-size decode, worst of {len(photos)}: "
            f"{self.cosines[model_dir.name]:.6f}")


def cosine_to_full_decode(url: str, model_dir: Path, photos: list[bytes]) -> float:
    from PIL import Image

    from loadtests.peers.common import load_entry

    session, preprocess, _ = load_entry(model_dir)
    worst = 1.0
    for photo in photos:
        body, content_type = multipart([photo], "JPEG")
        request = urllib.request.Request(f"{url}/embed", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=120) as response:
            served = np.asarray(json.loads(response.read())["embeddings"][0], np.float64)
        pixels = preprocess.apply(Image.open(io.BytesIO(photo)).convert("RGB"))
        reference = session.run(["pooled"], {"pixel_values": pixels[None]})[0][0].astype(np.float64)
        worst = min(worst, float(served @ reference / (np.linalg.norm(served) * np.linalg.norm(reference))))
    return worst


def plan_from(args: argparse.Namespace) -> Plan:
    keys = [k for k in args.rows.split(",") if k]
    try:
        payloads = [Payload.parse(k) for k in keys if k != "vits"]
    except ValueError as exc:
        raise SystemExit(f"--rows: {exc} (or 'vits')") from exc
    allowed = sorted(os.sched_getaffinity(0))
    cores = sorted({int(c) for c in args.cores.split(",") if c})
    if not cores or max(cores + [args.vits_cores]) > len(allowed) or min(cores) < 1:
        raise SystemExit(f"--cores {args.cores} / --vits-cores {args.vits_cores}: this process may use "
                         f"{len(allowed)} CPUs ({allowed})")
    return Plan(payloads=payloads, vits="vits" in keys, cores=cores, allowed=allowed)


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server-env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=DEFAULT_ROWS,
                        help="tiny-model payloads (224xN, 12mpxN: N JPEGs a request) and/or 'vits'")
    parser.add_argument("--cores", default="1,2", help="server core counts (each its own cpuset group)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per point")
    parser.add_argument("--seconds-12mp", type=float, default=20.0,
                        help="window of the 12 MP points (their requests take longer)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load before each HTTP point")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every point (median and range reported)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the tiny-model rows")
    parser.add_argument("--vits-clients", type=int, default=16, help="connections of one image each (vits row)")
    parser.add_argument("--vits-cores", type=int, default=0, help="cores of the vits rows (default: most of --cores)")
    parser.add_argument("--inprocess-batches", default="1,2,4,8,16,32")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of every jepa-serve started (repeatable), e.g. JEPA_WORKERS=2")
    parser.add_argument("--baseline", type=Path, help="an earlier host.json: its jepa-serve figures beside these")
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "bench-host" / "repository",
                        help="where the models are exported (kept between runs)")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds a server may take to be ready")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench", help="host.md and host.json go here")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the logs, payloads and server data")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    args.server_env = parse_env(args.server_env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    confiner = detect_confiner()
    context = {"started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "loadavg_before": os.getloadavg(), "confiner": confiner.describe(), "cpus": plan.allowed}
    log(f"confinement: {confiner.describe()}; load average {context['loadavg_before']}")
    if wrk_path() is None:
        plan.notes.append("wrk is not installed (`make bench-host` installs it as root): the HTTP rows were skipped")
        log(plan.notes[-1])
    workdir = Path(tempfile.mkdtemp(prefix="bench-host-"))
    try:
        payloads = plan.payloads + ([Payload.parse("224x1")] if plan.vits else [])
        extra = [Payload.parse("12mpx1")] if plan.vits and not any(p.size == "12mp" for p in payloads) else []
        inputs = build_inputs(workdir, list({p.key: p for p in payloads + extra}.values()))
        bench = Bench(args, plan, confiner, inputs, workdir)
        run_rows(bench, args, plan)
        context["loadavg_after"] = os.getloadavg()
        context["image_bytes"] = inputs.image_bytes
        path = write_report(args, plan, context, bench.measurements, summarise(bench.measurements), bench.cosines)
        log(f"wrote {path}")
    finally:
        os.sched_setaffinity(0, plan.allowed)
        if args.keep_workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_rows(bench: Bench, args: argparse.Namespace, plan: Plan) -> None:
    if plan.payloads:
        tiny = export_model("tiny", args.repository)
        for count in plan.cores:
            bench.tiny_group(count, tiny)
    if plan.vits:
        bench.vits_group(export_model("vits16", args.repository))


if __name__ == "__main__":
    raise SystemExit(main())
