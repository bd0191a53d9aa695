"""GPU benchmark: PyTorch eager, the raw ONNX Runtime engine, the served path in process, and HTTP, on one device.

    python -m loadtests.bench_gpu                          # on a GPU machine (make bench-gpu): docs/bench/gpu.md
    python -m loadtests.bench_gpu --device cpu --models tiny --seconds 0.5 --out /tmp/b   # CPU dry run (tested)

For each model (ViT-S/16 and ViT-L/16 at 224 px, exported by `jepa-export vit`, and a V-JEPA 2-shaped clip
encoder, ViT-L on 16 frames of 256 x 256 in tubelets of 2, exported by `jepa-export vjepa2-random`; random weights):
1. reference: PyTorch eager of the same architecture and weights (fp16, SDPA attention on a GPU);
2. raw engine: the ONNX Runtime session alone, input already on the device, outputs left there, best batch;
   one row per graph: the attention of `--attention` (mha, onnx, unfused), with ONNX Runtime's LayerNorm/GELU
   fusions (`+ort`) for those of `--ort-fusions`, and the fastest again replaying CUDA graphs (`cuda-graph`);
3. served in process: DynamicBatcher + OrtEngine instances, many concurrent callers of one image (clip) each,
   numpy in, pooled out (the whole path below HTTP), on the fastest row-2 graph, CUDA graphs off and on;
4. HTTP: a jepa-serve process and a load generator (several processes) posting JPEG or PNG images as
   multipart, a concurrency sweep (images only).
The bench may import torch as a reference; the service it measures never does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIT_ARGS = {
    "vits16": ["--image-size", "224", "--patch-size", "16", "--dim", "384", "--depth", "12", "--heads", "6"],
    "vitl16": ["--image-size", "224", "--patch-size", "16", "--dim", "1024", "--depth", "24", "--heads", "16"],
    "tiny": ["--image-size", "32", "--patch-size", "8", "--dim", "32", "--depth", "2", "--heads", "2"],
}
# V-JEPA 2-shaped clip encoders (`jepa-export vjepa2-random`): 2,048 tokens a clip for vjepa2l
CLIP_ARGS = {
    # one probe clip in its parity gates: a 2,048-token ViT-L clip costs seconds on the GPU machine's CPU
    "vjepa2l": ["--frames", "16", "--image-size", "256", "--patch-size", "16", "--tubelet", "2", "--dim", "1024",
                "--depth", "24", "--heads", "16", "--mlp-hidden", "4096", "--probes", "1"],
    "vjepa2-tiny": ["--frames", "4", "--image-size", "32", "--patch-size", "8", "--tubelet", "2", "--dim", "48",
                    "--depth", "2", "--heads", "2", "--mlp-hidden", "96"],
}
GOAL_ENGINE = {"image": 1.1, "clip": 1.0}  # raw engine / PyTorch eager (issue 25)
GOAL_SERVED = 0.85  # served path in process / raw engine
GOAL_HTTP = 0.6  # HTTP / raw engine (ViT-L; decoding on the CPU bounds small models)


@dataclass
class ModelFigures:
    model: str
    params_m: float = 0.0
    eager: dict[int, float] = field(default_factory=dict)  # batch -> img/s
    engine: dict[str, dict[int, float]] = field(default_factory=dict)  # graph -> batch -> img/s
    served: dict[str, float] = field(default_factory=dict)  # "instances=2 max_batch=64" -> img/s
    http: dict[str, float] = field(default_factory=dict)  # "jpeg x8 c=32" -> img/s
    http_errors: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unit: str = "img/s"  # clips/s for a clip encoder

    @property
    def eager_best(self) -> float:
        return max(self.eager.values(), default=0.0)

    @property
    def engine_best(self) -> float:
        return max((v for graph in self.engine.values() for v in graph.values()), default=0.0)

    @property
    def served_best(self) -> float:
        return max(self.served.values(), default=0.0)

    @property
    def http_best(self) -> float:
        return max(self.http.values(), default=0.0)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def export_model(name: str, repository: Path) -> Path:
    """`jepa-export vit` (fp32 + gated fp16) into a scratch repository; the ONNX files are not carried around."""
    folder = repository / name
    if not (folder / "manifest.json").exists():
        log(f"exporting {name}")
        command = [sys.executable, "-m", "export", *export_args(name), "--name", name, "--out", str(repository)]
        # keep the caller's PYTHONPATH: on the GPU machine the service's dependencies are found through it
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": path})
    return folder


def is_clip(name: str) -> bool:
    return name.removesuffix("-unfused") in CLIP_ARGS


def export_args(name: str) -> list[str]:
    """`jepa-export` arguments of a bench model; NAME-unfused is the same model with attention written out."""
    base = name.removesuffix("-unfused")
    unfused = ["--attention", "unfused"] if name != base else []
    return (["vjepa2-random", *CLIP_ARGS[base]] if base in CLIP_ARGS else ["vit", *VIT_ARGS[base]]) + unfused


def clip_config(name: str):
    from models.vjepa2 import VJepa2Config

    a = dict(zip(CLIP_ARGS[name][::2], CLIP_ARGS[name][1::2], strict=True))
    return VJepa2Config(image_size=int(a["--image-size"]), patch_size=int(a["--patch-size"]),
                        tubelet=int(a["--tubelet"]), dim=int(a["--dim"]), depth=int(a["--depth"]),
                        heads=int(a["--heads"]), mlp_hidden=int(a["--mlp-hidden"])), int(a["--frames"])


def vit_config(name: str):
    from models.vit import ViTConfig

    a = dict(zip(VIT_ARGS[name][::2], VIT_ARGS[name][1::2], strict=True))
    return ViTConfig(image_size=int(a["--image-size"]), patch_size=int(a["--patch-size"]), dim=int(a["--dim"]),
                     depth=int(a["--depth"]), heads=int(a["--heads"]))


def count_parameters(name: str) -> float:
    """Millions of parameters of the bench's ViT (built on the meta device: no memory, no time)."""
    import torch

    from models.vit import ViTEncoder
    from models.vjepa2 import VJepa2Encoder

    with torch.device("meta"):
        model = VJepa2Encoder(clip_config(name)[0]) if is_clip(name) else ViTEncoder(vit_config(name))
        return sum(p.numel() for p in model.parameters()) / 1e6


def timed_rate(step, items: int, seconds: float, sync=lambda: None) -> float:
    """items per second of `step` (after one warm call), timed for at least `seconds`."""
    step()
    sync()
    runs, started = 0, time.perf_counter()
    while True:
        step()
        runs += 1
        if runs % 4 == 0 or runs < 4:
            sync()
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return runs * items / elapsed


def measure_eager(name: str, device: str, batches: list[int], seconds: float, figures: ModelFigures) -> None:
    """PyTorch eager: fp16 + SDPA attention on a GPU (what a user would run), fp32 on the CPU."""
    import torch
    import torch.nn.functional as F

    from models.jepa_blocks import Attention
    from models.vit import ViTEncoder

    def sdpa_forward(self, x, rope=None, mask=None):  # the ViT's blocks pass neither
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, h, N, hs)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    torch.manual_seed(0)
    model = ViTEncoder(vit_config(name)).eval()
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = model.to(device=device, dtype=dtype)
    if device == "cuda":
        for module in model.modules():
            if isinstance(module, Attention):
                module.forward = sdpa_forward.__get__(module)
    size = model.config.image_size
    time_eager(model, lambda batch: torch.randn(batch, 3, size, size, device=device, dtype=dtype), device, batches,
               seconds, figures)


def time_eager(model, batch_of, device: str, batches: list[int], seconds: float, figures: ModelFigures) -> None:
    """Row 1 at each batch size (`batch_of(batch)`: a random input), until one does not fit; frees the model."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for batch in batches:
        x = batch_of(batch)
        with torch.inference_mode():
            try:
                figures.eager[batch] = timed_rate(lambda x=x, model=model: model(x), batch, seconds, sync)
            except torch.OutOfMemoryError:
                figures.notes.append(f"eager batch {batch}: out of memory")
                break
        log(f"  eager batch {batch}: {figures.eager.get(batch, 0):,.1f} {figures.unit}")
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def measure_clip_eager(name: str, device: str, batches: list[int], seconds: float, figures: ModelFigures) -> None:
    """PyTorch eager of the clip encoder (the exported seed's weights): fp16 + SDPA on a GPU, the 3-D rotary
    positions applied to q and k first (models/jepa_blocks.py's fused attention), fp32 on the CPU."""
    import torch

    from export.vjepa2_random import random_vjepa2
    from models.jepa_blocks import use_fused_attention

    config, frames = clip_config(name)
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = random_vjepa2(config, seed=0).to(device=device, dtype=dtype)
    if device == "cuda":
        use_fused_attention(model)
    size = config.image_size
    time_eager(model, lambda batch: torch.randn(batch, 3, frames, size, size, device=device, dtype=dtype), device,
               batches, seconds, figures)


def providers_for(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def random_input(session, batch: int) -> np.ndarray:
    """A batch for the session's one input: uint8 pixels for a graph that normalises them, else float32."""
    spec = session.get_inputs()[0]
    shape = (batch, *[int(d) for d in spec.shape[1:]])
    rng = np.random.default_rng(batch)
    return rng.integers(0, 256, shape, np.uint8) if spec.type == "tensor(uint8)" else rng.standard_normal(
        shape, np.float32)


def measure_engine(graphs: dict[str, Path], device: str, batches: list[int], seconds: float,
                   figures: ModelFigures) -> None:
    """Each graph's session alone: input resident on the device, every output written to device memory."""
    import onnxruntime as ort

    for graph, path in graphs.items():
        session = ort.InferenceSession(str(path), providers=providers_for(device))
        name = session.get_inputs()[0].name
        results: dict[int, float] = {}
        for batch in batches:
            x = random_input(session, batch)
            if device == "cuda":
                binding = session.io_binding()
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
                for output in session.get_outputs():
                    binding.bind_output(output.name, "cuda", 0)

                def step(binding=binding, session=session):
                    session.run_with_iobinding(binding)
            else:
                def step(x=x, session=session, name=name):
                    session.run(None, {name: x})
            results[batch] = timed_rate(step, batch, seconds)
            log(f"  engine ({graph}, {path.name}) batch {batch}: {results[batch]:,.1f} {figures.unit}")
        figures.engine.setdefault(graph, {}).update(results)
        del session


def measure_engine_cuda_graph(graph: str, path: Path, device: str, batches: list[int], seconds: float,
                              figures: ModelFigures) -> None:
    """One graph replaying a captured CUDA graph per batch size (service/runtime/cuda_graphs.py), inputs and
    outputs in fixed device buffers. On the CPU (dry run) the same fixed bindings run without a graph."""
    import onnxruntime as ort

    from service.runtime.cuda_graphs import CudaGraphs, OrtDeviceIO
    from service.runtime.onnx import ORT_DTYPES, static_shape

    label = f"{graph} cuda-graph"
    cuda = [("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), providers=cuda if device == "cuda" else ["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime refuses graphs for this model: say so, measure the rest
        figures.notes.append(f"{label}: not measured ({(str(exc).splitlines() or [''])[0][:200]})")
        return
    io = {kind: {v.name: (static_shape(v.shape), np.dtype(ORT_DTYPES[v.type])) for v in values}
          for kind, values in (("in", session.get_inputs()), ("out", session.get_outputs()))}
    graphs = CudaGraphs(session, OrtDeviceIO(device, 0), io["in"], io["out"], "on", label)
    name = session.get_inputs()[0].name
    for batch in batches:
        prepared = graphs.get(batch)
        prepared.inputs[name].update_inplace(random_input(session, batch))
        rate = timed_rate(lambda p=prepared: session.run_with_iobinding(p.binding, p.run_options), batch, seconds)
        figures.engine.setdefault(label, {})[batch] = rate
        log(f"  engine ({label}, {path.name}) batch {batch}: {rate:,.1f} {figures.unit}")
    if device != "cuda":
        figures.notes.append(f"{label}: on the CPU the fixed bindings only (no CUDA graph): a dry run of the code")


def graph_variants(folder: Path, repository: Path, device: str, kinds: list[str], ort_kinds: list[str],
                   figures: ModelFigures) -> dict[str, Path]:
    """The row-2 graphs of an exported entry, label -> file for this device (fp16 on a GPU where the export kept
    it): the attention it was exported with, the other fused operator by rewriting its nodes, the unfused graph
    from a second export (`NAME-unfused`), and ONNX Runtime's LayerNorm/GELU fusions of those in `ort_kinds`."""
    from export.attention import to_onnx_attention

    manifest = json.loads((folder / "manifest.json").read_text())
    encoder = manifest["components"]["encoder"]
    precision = "fp16" if device == "cuda" and "fp16" in encoder["files"] else "fp32"
    sources = {encoder["attention"][precision]: {p: folder / f for p, f in encoder["files"].items()}}
    for kind in [k for k in kinds if k not in sources]:
        if kind == "unfused":
            other = export_model(f"{folder.name}-unfused", repository)
            files = json.loads((other / "manifest.json").read_text())["components"]["encoder"]["files"]
            sources[kind] = {p: other / f for p, f in files.items()}
        elif kind == "onnx" and "mha" in sources:
            sources[kind] = {}
            for p, source in sources["mha"].items():
                sources[kind][p] = source.with_name(source.name.removesuffix(".onnx") + ".attn-onnx.onnx")
                shutil.copyfile(source, sources[kind][p])  # beside it: external weights resolve the same
                to_onnx_attention(sources[kind][p])
        else:
            figures.notes.append(f"no {kind} attention graph: the export kept {sorted(sources)}")
    graphs = {kind: files[precision] for kind, files in sources.items() if kind in kinds and precision in files}
    for kind in [k for k in ort_kinds if k in sources and precision in sources[k]]:
        fused = ort_fused(f"{kind}+ort", sources[kind], precision, manifest, device, figures)
        if fused is not None:
            graphs[f"{kind}+ort"] = fused
    return graphs


def ort_fused(label: str, files: dict[str, Path], precision: str, manifest: dict, device: str,
              figures: ModelFigures) -> Path | None:
    """ONNX Runtime's transformer fusions of one graph (export/fusion.py), kept if it matches the graph on this
    device to the gate of its precision."""
    from export.fusion import FP16_GATE, FP32_GATE, fuse_graph, infer_heads
    from export.parity import compare_outputs, run_onnx

    heads = int(manifest.get("architecture", {}).get("heads", 0)) or infer_heads(manifest)
    source = files[precision]
    target = source.with_name(source.name.removesuffix(".onnx") + ".ort.onnx")
    providers = providers_for(device)
    try:
        stats = fuse_graph(files["fp32"], target, heads, int(manifest["output"]["dim"]), fp16=precision == "fp16")
        import onnxruntime as ort

        feeds = {"pixel_values": random_input(ort.InferenceSession(str(source), providers=providers), 2)}
        report = compare_outputs(run_onnx(source, feeds, providers), run_onnx(target, feeds, providers))
    except Exception as exc:
        figures.notes.append(f"{label}: ONNX Runtime's fusions failed ({(str(exc).splitlines() or [''])[0]})")
        return None
    gate = FP16_GATE if precision == "fp16" else FP32_GATE
    figures.notes.append(f"{label}: {stats}, min cosine {report.min_cosine:.7f} vs the graph before")
    return target if report.min_cosine >= gate else None


def fastest_graph(figures: ModelFigures, graphs: dict[str, Path]) -> str:
    """The row-2 graph with the best throughput at any batch size."""
    return max(graphs, key=lambda graph: max(figures.engine.get(graph, {0: 0.0}).values()))


async def drive_batcher(batcher, image: np.ndarray, callers: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await batcher.infer([{"pixel_values": image}], outputs=["pooled"])
            done += 1

    await asyncio.gather(*(caller() for _ in range(min(callers, 8))))  # warm: first shapes, first binds
    done, started = 0, time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(caller() for _ in range(callers)))
    return done / (time.perf_counter() - started)


def measure_served(folder: Path, device: str, instances: list[int], max_batches: list[int], callers: int,
                   seconds: float, figures: ModelFigures, path: Path | None = None,
                   cuda_graphs: tuple[str, ...] = ("off",)) -> None:
    """DynamicBatcher + OrtEngine(s) exactly as the service builds them; callers each send one item at a time.
    `path`: the graph to serve (default: the entry's for this device); each CUDA graph mode is a row of its own."""
    from service.batching import BatchPolicy, DynamicBatcher
    from service.metrics import Metrics
    from service.runtime.onnx import OrtEngine

    manifest = json.loads((folder / "manifest.json").read_text())
    files = manifest["components"]["encoder"]["files"]
    path = path or folder / files["fp16" if device == "cuda" and "fp16" in files else "fp32"]
    precision = "fp16" if ".fp16" in path.name else "fp32"
    shape = manifest["components"]["encoder"]["inputs"]["pixel_values"][1:]
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, shape, np.uint8) if manifest["input"].get("dtype") == "uint8" else \
        rng.standard_normal(shape).astype(np.float32)
    metrics = Metrics()  # one registry: metrics register their names once
    for mode, count in ((mode, count) for mode in cuda_graphs for count in instances):
        # on the CPU (dry run) the graph path's fixed bindings run without graphs: the code, not a figure
        bind = {"bind_device": "cpu"} if mode != "off" and device != "cuda" else {}
        engines = [OrtEngine(f"{folder.name}/encoder", path, providers_for(device), precision, cuda_graphs=mode,
                             **bind) for _ in range(count)]
        for max_batch in max_batches:
            policy = BatchPolicy(max_batch_size=max_batch, max_queue_delay_ms=2.0, max_queue_size=1 << 16)

            async def run(engines=engines, policy=policy) -> float:
                batcher = DynamicBatcher(engines, policy, metrics, model=folder.name, component="encoder")
                batcher.warm_up({"pixel_values": image})
                batcher.start()
                try:
                    return await drive_batcher(batcher, image, callers, seconds)
                finally:
                    await batcher.stop()

            key = f"instances={count} max_batch={max_batch}" + (f" cuda_graphs={mode}" if mode != "off" else "")
            figures.served[key] = asyncio.run(run())
            log(f"  served {key} ({callers} callers): {figures.served[key]:,.1f} {figures.unit}")
        del engines


def encoded_images(size: int, fmt: str) -> list[bytes]:
    from PIL import Image
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = getattr(data, name)()[..., :3]
        buffer = io.BytesIO()
        Image.fromarray(image).resize((size, size)).save(
            buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {})
        )
        out.append(buffer.getvalue())
    return out


def multipart(images: list[bytes], fmt: str) -> tuple[bytes, str]:
    boundary = "jepabenchboundary"
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    parts = [b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="output"\r\n\r\npooled\r\n']
    for i, data in enumerate(images):
        parts.append(b"--" + boundary.encode() + f'\r\nContent-Disposition: form-data; name="files"; '
                     f'filename="{i}.img"\r\nContent-Type: {mime}\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def load_process(
    url: str, body: bytes, content_type: str, concurrency: int, warmup: float, seconds: float, queue
) -> None:
    """One load-generator process: `concurrency` closed-loop clients; puts (ok, errors) counted in the window."""
    import httpx

    async def main() -> tuple[int, int]:
        ok = errors = 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
            start = time.perf_counter()
            window = (start + warmup, start + warmup + seconds)

            async def worker() -> None:
                nonlocal ok, errors
                while time.perf_counter() < window[1]:
                    sent = time.perf_counter()
                    try:
                        status = (
                            await client.post("/embed", content=body, headers={"content-type": content_type})
                        ).status_code
                    except httpx.TransportError:
                        status = -1
                    if window[0] <= sent and time.perf_counter() <= window[1]:
                        ok, errors = (ok + 1, errors) if status == 200 else (ok, errors + 1)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok, errors

    queue.put(asyncio.run(main()))


def start_server(
    folder: Path, device: str, max_batch: int, workdir: Path, decode_threads: int
) -> tuple[subprocess.Popen, str]:
    from loadtests.server import free_port, wait_ready

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "JEPA_MODEL_REPOSITORY": str(folder.parent), "JEPA_DEFAULT_MODEL": folder.name,
           "JEPA_DATA_DIR": str(workdir / "data"), "JEPA_EMBED_CACHE": "off", "JEPA_ACCESS_LOG": "false",
           "JEPA_PROVIDERS": device, "JEPA_MAX_BATCH_SIZE": str(max_batch), "JEPA_DECODE_THREADS": str(decode_threads),
           "JEPA_MAX_QUEUE_SIZE": "65536", "JEPA_BATCH_TUNE": "false", "JEPA_LOG_FORMAT": "text"}
    log_path = workdir / f"server-{folder.name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"],
        cwd=workdir,
        env=env,
        stdout=open(log_path, "w"),  # noqa: SIM115 - the child writes to it for its whole life; closed with it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, log_path, 600)
    return process, url


def measure_http(
    folder: Path,
    device: str,
    levels: list[int],
    per_request: int,
    processes: int,
    max_batch: int,
    seconds: float,
    workdir: Path,
    figures: ModelFigures,
    formats: tuple[str, ...] = ("JPEG", "PNG"),
) -> None:
    size = json.loads((folder / "manifest.json").read_text())["input"]["image_size"][0]
    decode_threads = max(2, (os.cpu_count() or 4) - processes - 1)
    process, url = start_server(folder, device, max_batch, workdir, decode_threads)
    context = multiprocessing.get_context("spawn")
    try:
        for fmt in formats:
            body, content_type = multipart(encoded_images(size, fmt)[:1] * per_request, fmt)
            for level in levels:
                queue = context.Queue()
                per_process = max(1, math.ceil(level / processes))
                workers = [context.Process(target=load_process,
                                           args=(url, body, content_type, per_process, 2.0, seconds, queue))
                           for _ in range(processes)]
                for worker in workers:
                    worker.start()
                counts = [queue.get(timeout=seconds + 300) for _ in workers]
                for worker in workers:
                    worker.join()
                ok, errors = sum(c[0] for c in counts), sum(c[1] for c in counts)
                key = f"{fmt.lower()} x{per_request} c={per_process * processes}"
                figures.http[key] = ok * per_request / seconds
                figures.http_errors[key] = errors
                log(f"  http {key}: {figures.http[key]:,.0f} img/s ({errors} errors)")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def gpu_description(device: str) -> str:
    if device != "cuda":
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        return f"CPU only: {os.cpu_count()} cores ({cpu})"
    smi = shutil.which("nvidia-smi")
    name = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout.strip() if smi else "unknown GPU"
    return f"{name}; {os.cpu_count()} CPU cores"


def versions() -> str:
    import onnxruntime as ort

    parts = [f"Python {platform.python_version()}", f"onnxruntime {ort.__version__}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(results: list[ModelFigures], args: argparse.Namespace, started: str, out: Path) -> Path:
    lines = [
        "# GPU serving benchmark",
        "",
        f"Generated by `python -m loadtests.bench_gpu {' '.join(args.argv)}` (`make bench-gpu`) on {started}.",
        f"Device: {gpu_description(args.device)}. {versions()}.",
        "",
        "Rows: (1) PyTorch eager of the same architecture and weights (fp16 + SDPA attention on a GPU);",
        "(2) the raw ONNX Runtime session, input on the device and outputs left there, best batch, one row per graph: "
        "its attention (mha = com.microsoft.MultiHeadAttention, onnx = the ONNX Attention operator, unfused = MatMul + "
        "Softmax + MatMul), `+ort` with ONNX Runtime's LayerNorm/GELU fusions, `cuda-graph` replaying CUDA graphs;",
        "(3) the served path in process on the fastest row-2 graph: DynamicBatcher + OrtEngine instances, "
        f"{args.callers} concurrent callers of one image ({args.clip_callers} of one clip) each, numpy in, pooled "
        "out, CUDA graphs off unless the key says so;",
        f"(4) HTTP: jepa-serve and {args.load_processes} load-generator processes posting "
        f"{args.per_request} images per multipart request. img/s (clips/s for clip encoders) throughout.",
        "",
    ]
    for fig in results:
        lines += [f"## {fig.model} ({fig.params_m:.1f}M parameters)", "",
                  f"| row | best {fig.unit} | detail |", "|---|---:|---|"]
        lines.append(f"| 1. PyTorch eager | {fig.eager_best:,.0f} | "
                     + ", ".join(f"b{b}: {v:,.0f}" for b, v in fig.eager.items()) + " |")
        for graph, by_batch in fig.engine.items():
            lines.append(f"| 2. raw engine, {graph} | {max(by_batch.values()):,.0f} | "
                         + ", ".join(f"b{b}: {v:,.0f}" for b, v in by_batch.items()) + " |")
        lines.append(f"| 3. served in process | {fig.served_best:,.0f} | "
                     + ", ".join(f"{k}: {v:,.0f}" for k, v in fig.served.items()) + " |")
        if fig.http:
            lines.append(
                f"| 4. HTTP | {fig.http_best:,.0f} | "
                + ", ".join(
                    f"{k}: {v:,.0f}" + (f" ({fig.http_errors[k]} err)" if fig.http_errors.get(k) else "")
                    for k, v in fig.http.items()
                )
                + " |"
            )
        engine, eager = fig.engine_best, fig.eager_best
        goal = GOAL_ENGINE["clip" if is_clip(fig.model) else "image"]
        lines += ["", "| goal | measured | |", "|---|---|---|",
                  f"| engine ≥ {goal}× PyTorch eager | {ratio(engine, eager)} | "
                  f"{verdict(engine >= goal * eager) if eager else 'not measured'} |",
                  f"| served in process ≥ {GOAL_SERVED}× raw engine | {ratio(fig.served_best, engine)} | "
                  f"{verdict(fig.served_best >= GOAL_SERVED * engine)} |"]
        if fig.http:
            lines.append(f"| HTTP ≥ {GOAL_HTTP}× raw engine | {ratio(fig.http_best, engine)} | "
                         f"{verdict(fig.http_best >= GOAL_HTTP * engine)} |")
        lines += [""] + [f"- {note}" for note in fig.notes] + [""]
    path = out / "gpu.md"
    path.write_text("\n".join(lines))
    (out / "gpu.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    return path


def load_previous(out: Path) -> list[ModelFigures]:
    path = out / "gpu.json"
    if not path.exists():
        return []
    previous = []
    for raw in json.loads(path.read_text()):
        raw["eager"] = {int(k): v for k, v in raw["eager"].items()}
        raw["engine"] = {g: {int(k): v for k, v in b.items()} for g, b in raw["engine"].items()}
        previous.append(ModelFigures(**raw))
    return previous


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--models", default="vits16,vitl16,vjepa2l",
                        help=f"of {', '.join([*VIT_ARGS, *CLIP_ARGS])}")
    parser.add_argument("--repository", type=Path, help="exported models (default: a scratch folder)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per point")
    parser.add_argument("--batches", default="1,8,32,64,128,256")
    parser.add_argument("--instances", default="1,2,3")
    parser.add_argument("--max-batches", default="64,128")
    parser.add_argument("--callers", type=int, default=512)
    add_graph_arguments(parser)
    parser.add_argument("--http-levels", default="16,64,128")
    parser.add_argument("--http-seconds", type=float, default=10.0,
                        help="timing window per HTTP point (long enough for many request latencies)")
    parser.add_argument("--http-formats", default="jpeg,png", help="image formats posted over HTTP")
    parser.add_argument("--per-request", type=int, default=8)
    parser.add_argument("--load-processes", type=int, default=4)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-eager", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other models' figures already in OUT/gpu.json (one model per run, runs in a row)",
    )
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    repository = args.repository or scratch / "repository"
    previous = {f.model: f for f in load_previous(args.out)} if args.merge else {}
    names = args.models.split(",")
    results = [f for model, f in previous.items() if model not in names]
    try:
        for name in names:
            log(f"== {name} on {args.device}")
            # --merge: rows this run skips keep their earlier figures; the points it measures replace theirs
            figures = previous.get(name) or ModelFigures(name)
            figures.notes = [n for n in figures.notes if n.startswith("run: ")] + [f"run: {' '.join(args.argv)}"]
            measure_model(name, args, repository, scratch, figures)
            results.append(figures)
            report(results, args, started, args.out)  # after every model: a partial report survives a time-out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    path = report(results, args, started, args.out)
    log(f"wrote {path}")
    return 0


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    """Which graphs row 2 measures, CUDA graph modes, and the clip encoders' batch sizes."""
    parser.add_argument("--attention", default="mha,onnx,unfused",
                        help="row-2 graphs by attention: mha, onnx (rewritten from mha), unfused (a second export)")
    parser.add_argument("--ort-fusions", default="mha,unfused",
                        help="attention graphs also measured with ONNX Runtime's LayerNorm/GELU fusions ('' for none)")
    parser.add_argument("--cuda-graphs", default="off,on",
                        help="CUDA graph modes measured: 'on' adds a row-2 row for the fastest graph and row-3 rows")
    parser.add_argument("--clip-batches", default="1,4,8,16", help="row 1-2 batch sizes of clip encoders")
    parser.add_argument("--clip-max-batches", default="8,16", help="row 3 batch limits of clip encoders")
    parser.add_argument("--clip-callers", type=int, default=64, help="row 3 callers of clip encoders")


def measure_model(name: str, args: argparse.Namespace, repository: Path, scratch: Path,
                  figures: ModelFigures) -> None:
    """Every row of one model."""
    clip = is_clip(name)
    batches = parse_ints(args.clip_batches if clip else args.batches)
    max_batches = parse_ints(args.clip_max_batches if clip else args.max_batches)
    modes = tuple(args.cuda_graphs.split(","))
    figures.unit = "clips/s" if clip else "img/s"
    folder = export_model(name, repository)
    figures.params_m = count_parameters(name)
    graphs = graph_variants(folder, repository, args.device, args.attention.split(","),
                            [k for k in args.ort_fusions.split(",") if k], figures)
    if not args.skip_eager:
        (measure_clip_eager if clip else measure_eager)(name, args.device, batches, args.seconds, figures)
    measure_engine(graphs, args.device, batches, args.seconds, figures)
    best = fastest_graph(figures, graphs)
    if "on" in modes:
        measure_engine_cuda_graph(best, graphs[best], args.device, batches, args.seconds, figures)
    served = serve_graph(folder, args.device, best, graphs[best], figures)
    measure_served(folder, args.device, parse_ints(args.instances), max_batches,
                   args.clip_callers if clip else args.callers, args.seconds, figures, served, modes)
    if not args.skip_http and not clip:
        measure_http(folder, args.device, parse_ints(args.http_levels), args.per_request, args.load_processes,
                     max(max_batches), args.http_seconds, scratch, figures,
                     tuple(f.upper() for f in args.http_formats.split(",")))


def serve_graph(folder: Path, device: str, best: str, path: Path, figures: ModelFigures) -> Path:
    """Rows 3-4 serve the fastest row-2 graph: it takes the place of the entry's file for this device (the
    exported one kept as `.exported.onnx`), so the HTTP server loads it too."""
    manifest = json.loads((folder / "manifest.json").read_text())
    encoder = manifest["components"]["encoder"]
    precision = "fp16" if device == "cuda" and "fp16" in encoder["files"] else "fp32"
    entry_file = folder / encoder["files"][precision]
    figures.notes.append(f"rows 3-4 serve the {best} graph ({path.name})")
    if path == entry_file:
        return path
    if precision in encoder.get("external_data", {}):
        return path  # its weights file is named after it: rows 3 only (no HTTP row for such models anyway)
    entry_file.replace(entry_file.with_name(entry_file.name.removesuffix(".onnx") + ".exported.onnx"))
    shutil.copyfile(path, entry_file)
    return entry_file


if __name__ == "__main__":
    raise SystemExit(main())
