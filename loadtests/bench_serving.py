"""Serving benchmark: the raw engine, jepa-serve, a naive FastAPI app and LitServe, side by side.

    python -m loadtests.bench_serving                       # full run (make bench), writes docs/bench/serving.md + PNG
    python -m loadtests.bench_serving --duration 2 --concurrency 1,8 --models demo --out /tmp/b   # quick look

Every target serves the same ONNX file with the same decode + preprocess code
(service/media), on the same PNG photos, driven by the same asyncio load
generator running on this machine. Only the serving strategy differs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

from loadtests.server import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = {
    "vits16": ["vit", "--name", "vits16", "--image-size", "224", "--patch-size", "16", "--dim", "384", "--depth", "12",
               "--heads", "6"],
    "demo": ["demo", "--name", "demo"],
}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


@dataclass
class Point:
    target: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass
class RawFigures:
    batch_img_s: dict[int, float] = field(default_factory=dict)
    best_batch: int = 1
    best_img_s: float = 0.0
    single_p50_ms: float = 0.0
    decode_ms: float = 0.0
    with_decode_img_s: float = 0.0


def photos_png(size: int = 224) -> list[bytes]:
    from PIL import Image
    from skimage import data

    out = []
    for name in PHOTOS:
        image = getattr(data, name)()
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        buffer = io.BytesIO()
        Image.fromarray(image).resize((size, size)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def ensure_models(repository: Path, names: list[str]) -> None:
    for name in names:
        if not (repository / name / "manifest.json").exists():
            print(f"exporting {name} into {repository}", flush=True)
            subprocess.run([str(BIN / "jepa-export"), *MODELS[name], "--out", str(repository)], check=True)


def measure_raw(folder: Path, pngs: list[bytes], seconds: float) -> RawFigures:
    """The engine alone, in process, with jepa-serve's session options: the physical limit of this machine."""
    from loadtests.peers.common import as_model_item, clip_frames
    from service.media.images import ImageLimits, ImagePreprocess, decode_image
    from service.runtime.onnx import OrtEngine

    manifest = json.loads((folder / "manifest.json").read_text())
    spec = manifest["input"]
    preprocess = ImagePreprocess(height=spec["image_size"][0], width=spec["image_size"][1], resize=spec["resize"],
                                 mean=tuple(spec["mean"]), std=tuple(spec["std"]), dtype=spec.get("dtype", "float32"))
    limits = ImageLimits(max_bytes=1 << 26, max_pixels=1 << 30)
    engine = OrtEngine("raw", folder / "encoder.onnx", ["CPUExecutionProvider"], "fp32")
    frames = clip_frames(manifest)
    pixels = [as_model_item(preprocess.apply(decode_image(p, limits)), frames) for p in pngs]
    figures = RawFigures()
    for batch in (1, 2, 4, 8, 16):
        x = {"pixel_values": np.stack([pixels[i % len(pixels)] for i in range(batch)])}
        engine.run(x)
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            engine.run(x)
            runs += 1
        figures.batch_img_s[batch] = runs * batch / (time.perf_counter() - started)
    figures.best_batch = max(figures.batch_img_s, key=figures.batch_img_s.get)
    figures.best_img_s = figures.batch_img_s[figures.best_batch]
    single = []
    for i in range(50):
        started = time.perf_counter()
        engine.run({"pixel_values": pixels[i % len(pixels)][None]})
        single.append((time.perf_counter() - started) * 1000)
    figures.single_p50_ms = statistics.median(single)
    decode = []
    for i in range(50):
        started = time.perf_counter()
        as_model_item(preprocess.apply(decode_image(pngs[i % len(pngs)], limits)), frames)
        decode.append((time.perf_counter() - started) * 1000)
    figures.decode_ms = statistics.median(decode)
    batch, images, started = figures.best_batch, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        x = np.stack([as_model_item(preprocess.apply(decode_image(pngs[(images + i) % len(pngs)], limits)), frames)
                      for i in range(batch)])
        engine.run({"pixel_values": x})
        images += batch
    figures.with_decode_img_s = images / (time.perf_counter() - started)
    return figures


@contextmanager
def server(target: str, repository: Path, model: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PEER_MODEL_DIR": str(repository / model), "PYTHONPATH": str(ROOT)}
    if target == "jepa-serve":
        # The cache would answer repeated photos without the model, and the peers log nothing per request.
        env.update(JEPA_MODEL_REPOSITORY=str(repository), JEPA_DEFAULT_MODEL=model, JEPA_DATA_DIR=str(workdir / "data"),
                   JEPA_EMBED_CACHE="off", JEPA_ACCESS_LOG="false")
        command = [str(BIN / "jepa-serve"), "--port", str(port), "--log-level", "warning"]
    elif target == "naive-fastapi":
        command = [str(BIN / "uvicorn"), "loadtests.peers.naive_app:app", "--port", str(port), "--log-level", "warning",
                   "--no-access-log"]
    elif target == "litserve":
        command = [sys.executable, "-m", "loadtests.peers.litserve_app", "--port", str(port)]
    else:
        raise ValueError(target)
    log = open(workdir / f"{target}-{model}.log", "w")  # noqa: SIM115
    # A session of its own: LitServe forks workers, and the whole group must go when the point is done.
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, Path(log.name), 120)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


async def drive(
    url: str, bodies: list[bytes], concurrency: int, seconds: float, warmup: float
) -> tuple[list[float], int, float]:
    """`concurrency` closed-loop clients posting /embed; latencies of requests that finished in the window."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        window = (start + warmup, start + warmup + seconds)

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < window[1]:
                sent = time.perf_counter()
                try:
                    response = await client.post("/embed", content=bodies[i % len(bodies)],
                                                 headers={"content-type": "application/json"})
                    status = response.status_code
                except httpx.TransportError:
                    status = -1  # the connection failed: an error, counted like any non-200
                done = time.perf_counter()
                i += 1
                if window[0] <= sent and done <= window[1]:
                    if status == 200:
                        latencies.append((done - sent) * 1000)
                    else:
                        errors += 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, errors, seconds


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def sweep(target: str, url: str, bodies: list[bytes], levels: list[int], seconds: float) -> list[Point]:
    points = []
    for c in levels:
        latencies, errors, window = asyncio.run(drive(url, bodies, c, seconds, warmup=1.0))
        point = Point(target, c, len(latencies), errors, window, len(latencies) / window,
                      percentile(latencies, 50), percentile(latencies, 95), percentile(latencies, 99))
        print(f"  {target:14s} c={c:3d}  {point.rps:7.1f} req/s  p50 {point.p50_ms:7.1f}  p95 {point.p95_ms:7.1f}  "
              f"p99 {point.p99_ms:7.1f} ms  errors {errors}", flush=True)
        points.append(point)
    return points


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
    for col, model in enumerate(models):
        raw: RawFigures = results[model]["raw"]
        for target, points in results[model]["http"].items():
            xs = [p.concurrency for p in points]
            axes[0][col].plot(xs, [p.rps for p in points], marker="o", label=target)
            axes[1][col].plot(xs, [p.p50_ms for p in points], marker="o", label=f"{target} p50")
            axes[1][col].plot(xs, [p.p99_ms for p in points], linestyle="--", alpha=0.6, label=f"{target} p99")
        axes[0][col].axhline(raw.best_img_s, color="k", linestyle=":", label=f"raw engine (batch {raw.best_batch})")
        axes[0][col].axhline(raw.with_decode_img_s, color="grey", linestyle=":", label="raw engine + decode")
        for row, label in ((0, "requests/s (1 image each)"), (1, "latency (ms)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(label)
            ax.set_title(model)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[1][col].set_yscale("log")
    fig.tight_layout()
    path = out / "serving.png"
    fig.savefig(path, dpi=110)
    return path


def report(results: dict, args: argparse.Namespace, out: Path, started: str, load: tuple[float, ...]) -> Path:
    lines = [
        "# Serving benchmark",
        "",
        f"Made by `{' '.join(['python -m loadtests.bench_serving', *sys.argv[1:]])}` on {started} UTC.",
        f"Machine: {machine()}; no GPU. Load average when the run started: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "The load generator (asyncio + httpx, closed loop) runs on the same cores as the servers.",
        f"Each point: {args.duration:g} s measured after 1 s of warm-up; every request embeds one PNG ({len(PHOTOS)} real "
        "photos from scikit-image, 224x224), sent as base64 JSON. jepa-serve runs with its embedding cache and "
        "access log off (`JEPA_EMBED_CACHE=off`, `JEPA_ACCESS_LOG=false`), so it does the same work as the peers.",
        "The graphs' own CPU figures (fused attention against the unfused graph, the folded normalisation, drafted "
        "JPEG decoding) are in [cpu-graphs.md](cpu-graphs.md); the host path over 1 and 2 cores in [host.md](host.md).",
        "",
        "![throughput and latency](serving.png)",
        "",
    ]
    for model, result in results.items():
        raw: RawFigures = result["raw"]
        lines += [
            f"## {model}",
            "",
            "Raw engine (ONNX Runtime fp32, in process, no HTTP): "
            + ", ".join(f"batch {b}: {v:.1f} img/s" for b, v in raw.batch_img_s.items())
            + f". Best: {raw.best_img_s:.1f} img/s at batch {raw.best_batch}; with decoding: {raw.with_decode_img_s:.1f} img/s. "
            f"Single image: {raw.single_p50_ms:.2f} ms p50; decode + preprocess {raw.decode_ms:.2f} ms.",
            "",
            "| target | clients | req/s | p50 ms | p95 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for target, points in result["http"].items():
            for p in points:
                lines.append(
                    f"| {target} | {p.concurrency} | {p.rps:.1f} | {p.p50_ms:.1f} | {p.p95_ms:.1f} | {p.p99_ms:.1f} | {p.errors} |"
                )
        best = {t: max(p.rps for p in pts) for t, pts in result["http"].items()}
        lines += ["", "Best throughput over the sweep, and ratios:", ""]
        ours = best.get("jepa-serve", float("nan"))
        lines.append(f"- jepa-serve {ours:.1f} req/s = {ours / raw.best_img_s:.2f}x the raw engine without decoding, "
                     f"{ours / raw.with_decode_img_s:.2f}x with decoding")
        for peer in ("naive-fastapi", "litserve"):
            if peer in best:
                lines.append(f"- {peer} {best[peer]:.1f} req/s; jepa-serve / {peer} = {ours / best[peer]:.2f}x")
        c1 = next((p for p in result["http"].get("jepa-serve", []) if p.concurrency == 1), None)
        if c1 is not None:
            lines.append(
                f"- at concurrency 1, jepa-serve p50 {c1.p50_ms:.1f} ms vs raw single-image {raw.single_p50_ms:.1f} ms "
                f"+ decode {raw.decode_ms:.1f} ms = {raw.single_p50_ms + raw.decode_ms:.1f} ms "
                f"(overhead {c1.p50_ms - raw.single_p50_ms - raw.decode_ms:.1f} ms)"
            )
        lines.append("")
    path = out / "serving.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "serving.json").write_text(json.dumps(
        {m: {"raw": asdict(r["raw"]), "http": {t: [asdict(p) for p in pts] for t, pts in r["http"].items()}}
         for m, r in results.items()}, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vits16,demo")
    parser.add_argument("--targets", default="jepa-serve,naive-fastapi,litserve")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per point")
    parser.add_argument("--raw-seconds", type=float, default=3.0)
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "bench_repository")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()
    models, targets = args.models.split(","), args.targets.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    ensure_models(args.repository, models)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = ROOT / "build" / "bench_work"
    workdir.mkdir(parents=True, exist_ok=True)
    pngs = photos_png()
    bodies = [json.dumps({"inputs": [{"image": base64.b64encode(p).decode()}]}).encode() for p in pngs]
    results: dict = {}
    for model in models:
        print(f"[{model}] raw engine", flush=True)
        raw = measure_raw(args.repository / model, pngs, args.raw_seconds)
        print(
            f"  best {raw.best_img_s:.1f} img/s at batch {raw.best_batch}; with decode {raw.with_decode_img_s:.1f}",
            flush=True,
        )
        results[model] = {"raw": raw, "http": {}}
        for target in targets:
            print(f"[{model}] {target}", flush=True)
            with server(target, args.repository, model, workdir) as url:
                results[model]["http"][target] = sweep(target, url, bodies, levels, args.duration)
    path = report(results, args, args.out, started, load)
    plot(results, args.out)
    print(f"wrote {path} and {args.out / 'serving.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
