"""The host benchmark's reference rows, run as a process inside the cores' group (`python -m loadtests.host_workers`):

    decode     the decode ceiling: a process per core, each pinned to its core, decoding the JPEGs in a loop
               (PIL decode, resize to the model's input, normalise: all the per-image work a server must do)
    inprocess  the in-process ceiling of a real encoder: decode a batch, run ONNX Runtime on it, at each batch
               size (the best batch is the ceiling; decoding included)

Each prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np


def load_images(folder: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(folder.glob("*.jpg"))]


def decode_plain(data: bytes, preprocess, draft: bool) -> np.ndarray:
    """PIL decode (at full size, or with libjpeg's DCT scaling to at least the model's input size), RGB,
    the model's resize and normalisation."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if draft:
        image.draft("RGB", (preprocess.width, preprocess.height))
    image = image.convert("RGB")
    return preprocess.apply(image)


def _decode_worker(cpu: int, images: list[bytes], preprocess, draft: bool, seconds: float, start, queue) -> None:
    os.sched_setaffinity(0, {cpu})
    decode_plain(images[0], preprocess, draft)  # warm: first-use imports and allocations
    start.wait()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        decode_plain(images[done % len(images)], preprocess, draft)
        done += 1
    queue.put((cpu, done, time.perf_counter() - started))


def decode_ceiling(images: list[bytes], preprocess, cpus: list[int], draft: bool, seconds: float) -> dict:
    context = multiprocessing.get_context("fork")
    start, queue = context.Barrier(len(cpus)), context.Queue()
    workers = [context.Process(target=_decode_worker, args=(cpu, images, preprocess, draft, seconds, start, queue))
               for cpu in cpus]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    return {"img_per_s": sum(done / elapsed for _, done, elapsed in results),
            "per_cpu": {cpu: done / elapsed for cpu, done, elapsed in results}}


def inprocess_ceiling(images: list[bytes], folder: Path, batches: list[int], seconds: float) -> dict:
    """Decode `batch` images with the service's decoder, run the session on them; img/s per batch size."""
    from loadtests.peers.common import LIMITS, as_model_item, load_entry
    from service.media.images import decode_image

    session, preprocess, frames = load_entry(folder)
    rates = {}
    for batch in batches:
        chosen = [images[i % len(images)] for i in range(batch)]

        def step(chosen=chosen) -> None:
            pixels = np.stack([as_model_item(preprocess.apply(decode_image(d, LIMITS)), frames) for d in chosen])
            session.run(["pooled"], {"pixel_values": pixels})

        step()  # warm: this batch shape's first run
        runs, started = 0, time.perf_counter()
        while runs < 2 or time.perf_counter() - started < seconds:
            step()
            runs += 1
        rates[batch] = runs * batch / (time.perf_counter() - started)
    return {"img_per_s": max(rates.values()), "by_batch": rates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["decode", "inprocess"])
    parser.add_argument("--images", type=Path, required=True, help="folder of *.jpg")
    parser.add_argument("--model-dir", type=Path, required=True, help="model entry (its manifest's preprocessing)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cpus", default="", help="decode: one process per CPU listed (default: this process's)")
    parser.add_argument("--draft", action="store_true", help="decode: DCT-scaled JPEG decoding (Image.draft)")
    parser.add_argument("--batches", default="1,2,4,8,16,32", help="inprocess: batch sizes")
    args = parser.parse_args(argv)
    images = load_images(args.images)
    if args.kind == "decode":
        from loadtests.peers.common import preprocess_of

        cpus = [int(c) for c in args.cpus.split(",") if c] or sorted(os.sched_getaffinity(0))
        preprocess = preprocess_of(json.loads((args.model_dir / "manifest.json").read_text()))
        result = decode_ceiling(images, preprocess, cpus, args.draft, args.seconds)
    else:
        result = inprocess_ceiling(images, args.model_dir, [int(b) for b in args.batches.split(",")], args.seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
