"""Exact search of a flat collection on the GPU (service/index/device_search.py) against FAISS on the CPU.

    python -m loadtests.bench_gpu_search                       # on a GPU machine (make bench-gpu): 1M x 384
    python -m loadtests.bench_gpu_search --device cpu --points 5000 --dim 32 --seconds 0.2 --out /tmp/b  # dry run

Rows, on random unit vectors (cosine), k = 10:
1. in process, the device path: one `Collection` searched with `SearchDevice` (CUDA, or ONNX Runtime's CPU
   provider with --device cpu): batched queries/s at each batch size, single-query latency (p50, p99), the
   first search's upload of every vector, and recall@k against numpy brute force (1.0 apart from fp16 ties);
2. in process, FAISS on the CPU (the default without a GPU), the same queries;
3. HTTP: a jepa-serve process with JEPA_SEARCH_DEVICE set, the collection loaded 10,000 points a request,
   `POST /search` single queries one at a time (p50) and batches of 64 query vectors from several clients.
Writes <out>/gpu_search.json and gpu_search.md; goals (issue 25): batched >= 50,000 q/s, single p50 <= 2 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOAL_BATCHED_QPS = 50_000
GOAL_SINGLE_P50_MS = 2.0
K = 10
UPSERT_POINTS = 10_000  # per request: the server's default max_upsert_vectors
HTTP_BATCH = 64  # query vectors per request: the server's default max_request_items


@dataclass
class SearchFigures:
    device: str
    points: int
    dim: int
    upload_s: float = 0.0  # the first search: every vector converted and copied to the device
    recall: float = 0.0
    device_batched: dict[int, float] = field(default_factory=dict)  # batch -> queries/s
    device_single_ms: dict[str, float] = field(default_factory=dict)  # p50, p99
    faiss_batched: dict[int, float] = field(default_factory=dict)
    faiss_single_ms: dict[str, float] = field(default_factory=dict)
    http_single_ms: dict[str, float] = field(default_factory=dict)
    http_batched_qps: float = 0.0
    notes: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build(stored: np.ndarray, device) -> object:
    """A flat cosine collection of `stored` (unit rows), ids p0, p1, ..., searched on `device` (None: FAISS)."""
    from service.index.collection import Collection, CollectionConfig

    collection = Collection(CollectionConfig(name="bench", dim=stored.shape[1], metric="cosine"), background=False,
                            device=device)
    for lo in range(0, len(stored), 100_000):
        chunk = stored[lo : lo + 100_000]
        collection.upsert([f"p{i}" for i in range(lo, lo + len(chunk))], chunk, [{}] * len(chunk))
    return collection


def batched_rate(collection, queries: np.ndarray, batch: int, seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        lo = (done // batch * batch) % max(1, len(queries) - batch + 1)
        collection.search(queries[lo : lo + batch], K)
        done += batch
    return done / (time.perf_counter() - started)


def latency_ms(call, queries: np.ndarray, repeats: int) -> dict[str, float]:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        call(queries[i % len(queries)])
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def recall_at_k(collection, queries: np.ndarray, stored: np.ndarray) -> float:
    truth = np.argsort(-(queries @ stored.T), axis=1, kind="stable")[:, :K]
    found = collection.search(queries, K)
    hits = sum(len({f"p{j}" for j in row} & {h.id for h in got}) for row, got in zip(truth, found, strict=True))
    return hits / (K * len(queries))


def measure_in_process(args: argparse.Namespace, figures: SearchFigures) -> None:
    from service.index.device_search import SearchDevice

    provider = "CUDAExecutionProvider" if args.device == "cuda" else "CPUExecutionProvider"
    device = SearchDevice(provider, max_bytes=args.max_bytes, workspace_bytes=args.workspace_bytes)
    log(f"loading {args.points:,} x {args.dim} into a flat collection")
    stored = unit_vectors(np.random.default_rng(0), args.points, args.dim)
    collection = build(stored, device)
    queries = unit_vectors(np.random.default_rng(1), max(args.batches) * 2, args.dim)
    started = time.perf_counter()
    collection.search(queries[:1], K)
    figures.upload_s = time.perf_counter() - started
    log(f"first search (upload of every vector to {provider}): {figures.upload_s:.2f} s")
    figures.recall = recall_at_k(collection, queries[:64], stored)
    for batch in args.batches:
        figures.device_batched[batch] = batched_rate(collection, queries, batch, args.seconds)
        log(f"device, batch {batch}: {figures.device_batched[batch]:,.0f} queries/s")
    figures.device_single_ms = latency_ms(lambda q: collection.search(q[None, :], K), queries, args.single)
    single = figures.device_single_ms
    log(f"device, single query: p50 {single['p50']:.2f} ms, p99 {single['p99']:.2f} ms")
    collection.release_device()
    if args.skip_faiss:
        return
    plain = build(stored, None)
    for batch in args.batches:
        figures.faiss_batched[batch] = batched_rate(plain, queries, batch, args.seconds)
        log(f"faiss (CPU), batch {batch}: {figures.faiss_batched[batch]:,.0f} queries/s")
    figures.faiss_single_ms = latency_ms(lambda q: plain.search(q[None, :], K), queries, args.single)


def measure_http(args: argparse.Namespace, figures: SearchFigures, scratch: Path) -> None:
    """Through a `python -m service` process (no venv scripts, no client package: it runs on the GPU kit too)."""
    repository = args.repository or export_demo(scratch / "model_repository")
    process, url = start_server(args, repository, scratch)
    try:
        log(f"HTTP: loading {args.points:,} points")
        call(url, "PUT", "/collections/bench", {"dim": args.dim, "metric": "cosine", "index": "flat"})
        rng = np.random.default_rng(0)
        for lo in range(0, args.points, UPSERT_POINTS):
            chunk = unit_vectors(rng, min(UPSERT_POINTS, args.points - lo), args.dim)
            call(url, "POST", "/collections/bench/points", {
                "ids": [f"p{i}" for i in range(lo, lo + len(chunk))],
                "vectors": {"data": base64.b64encode(chunk.tobytes()).decode(), "dtype": "float32",
                            "shape": list(chunk.shape)}})
        queries = unit_vectors(np.random.default_rng(2), 256, args.dim)
        search = lambda q: call(url, "POST", "/search", {"collection": "bench", "vector": q.tolist(), "k": K})  # noqa: E731
        search(queries[0])  # the upload of every vector to the device
        figures.http_single_ms = latency_ms(search, queries, args.single)
        log(f"HTTP single query: p50 {figures.http_single_ms['p50']:.2f} ms")
        figures.http_batched_qps = http_batched(url, queries[:HTTP_BATCH], args.http_clients, args.seconds)
        log(f"HTTP, batches of {HTTP_BATCH} from {args.http_clients} clients: {figures.http_batched_qps:,.0f} q/s")
    finally:
        process.terminate()
        process.wait(60)


def export_demo(out: Path) -> Path:
    log(f"exporting the demo model into {out}")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-m", "export", "demo", "--name", "demo", "--out", str(out)], check=True,
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.DEVNULL)
    return out


def start_server(args: argparse.Namespace, repository: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    from loadtests.server import free_port, wait_ready

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "JEPA_MODEL_REPOSITORY": str(repository), "JEPA_DATA_DIR": str(workdir / "data"), "JEPA_FSYNC": "false",
           "JEPA_WARMUP": "false", "JEPA_ACCESS_LOG": "false",
           "JEPA_SEARCH_DEVICE": "cuda" if args.device == "cuda" else "onnx_cpu",
           "JEPA_SEARCH_DEVICE_MAX_BYTES": str(args.max_bytes),
           "JEPA_SEARCH_DEVICE_WORKSPACE_BYTES": str(args.workspace_bytes)}
    log_path = workdir / "server.log"
    with open(log_path, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"],
                                   cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, log_path, 600)
    return process, url


def call(url: str, method: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def http_batched(url: str, queries: np.ndarray, clients: int, seconds: float) -> float:
    done = [0] * clients
    body = {"collection": "bench", "vectors": queries.tolist(), "k": K}

    def run(slot: int) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            call(url, "POST", "/search", body)
            done[slot] += len(queries)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def report(figures: SearchFigures, out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_search.json").write_text(json.dumps(asdict(figures), indent=2))
    best = max(figures.device_batched.values(), default=0.0)
    p50 = figures.device_single_ms.get("p50", float("inf"))
    met = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    lines = [
        f"# Exact search on the {figures.device} — {figures.points:,} x {figures.dim}, cosine, k = {K}", "",
        f"`{command}` on {platform.node()} ({platform.processor() or platform.machine()}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"- first search (every vector uploaded, fp16): {figures.upload_s:.2f} s; recall@{K} against numpy: "
        f"{figures.recall:.4f}",
        f"- batched ≥ {GOAL_BATCHED_QPS:,} q/s: {best:,.0f} — {met(best >= GOAL_BATCHED_QPS)}",
        f"- single query p50 ≤ {GOAL_SINGLE_P50_MS} ms: {p50:.2f} ms — {met(p50 <= GOAL_SINGLE_P50_MS)}", "",
        "| path | " + " | ".join(f"batch {b}" for b in figures.device_batched) + " | single p50 / p99 (ms) |",
        "|---|" + "---:|" * (len(figures.device_batched) + 1),
        row("device (ONNX Runtime)", figures.device_batched, figures.device_single_ms),
    ]
    if figures.faiss_batched:
        lines.append(row("FAISS flat on the CPU", figures.faiss_batched, figures.faiss_single_ms))
    if figures.http_single_ms:
        lines += ["", f"HTTP `POST /search`: single query p50 {figures.http_single_ms['p50']:.2f} ms, p99 "
                  f"{figures.http_single_ms['p99']:.2f} ms; batches of {HTTP_BATCH} query vectors: "
                  f"{figures.http_batched_qps:,.0f} queries/s."]
    lines += ["", *figures.notes, ""]
    path = out / "gpu_search.md"
    path.write_text("\n".join(lines))
    return path


def row(name: str, batched: dict[int, float], single: dict[str, float]) -> str:
    cells = " | ".join(f"{v:,.0f}" for v in batched.values())
    return f"| {name} | {cells} | {single.get('p50', 0):.2f} / {single.get('p99', 0):.2f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64, 256, 1024, 4096])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per batched point")
    parser.add_argument("--single", type=int, default=500, help="single queries timed one after another")
    parser.add_argument("--max-bytes", type=int, default=8 << 30, help="JEPA_SEARCH_DEVICE_MAX_BYTES")
    parser.add_argument("--workspace-bytes", type=int, default=2 << 30, help="JEPA_SEARCH_DEVICE_WORKSPACE_BYTES")
    parser.add_argument("--http-clients", type=int, default=8)
    parser.add_argument("--repository", type=Path, help="a model repository for the server (default: the demo)")
    parser.add_argument("--skip-faiss", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    args = parser.parse_args(argv)
    figures = SearchFigures(device="GPU (CUDA)" if args.device == "cuda" else "CPU (dry run, ONNX Runtime CPU)",
                            points=args.points, dim=args.dim)
    measure_in_process(args, figures)
    if not args.skip_http:
        with tempfile.TemporaryDirectory(prefix="bench-gpu-search-") as scratch:
            measure_http(args, figures, Path(scratch))
    command = " ".join(sys.argv[1:] if argv is None else argv)
    path = report(figures, args.out, f"python -m loadtests.bench_gpu_search {command}".strip())
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
