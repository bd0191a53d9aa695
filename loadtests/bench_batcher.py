"""The batcher's own cost per item: DynamicBatcher in front of an engine that does no work.

    python -m loadtests.bench_batcher                 # items/s for tiny and 224 x 224 items, 1 and 2 instances

Each of `--callers` coroutines sends one item at a time and waits for it, as concurrent requests do; the engine
copies nothing and returns a pooled row per item. What is left is the event loop's and the worker's work per
item (futures, queueing, assembly into the engine's buffer), the ceiling of the served path on a fast GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from service.batching import BatchPolicy, DynamicBatcher
from service.metrics import Metrics


class InstantEngine:
    """Owns reusable input buffers like OrtEngine, computes nothing."""

    name = "instant/encoder"
    device = "cpu"
    precision = "fp32"
    input_names = ("pixel_values",)
    output_names = ("pooled",)

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.buffers: dict[int, dict[str, np.ndarray]] = {}

    def input_buffers(self, batch: int) -> dict[str, np.ndarray]:
        return self.buffers.setdefault(batch, {"pixel_values": np.zeros((batch, *self.shape), np.float32)})

    def run(self, inputs, outputs=None):
        return {"pooled": np.zeros((len(inputs["pixel_values"]), 384), np.float32)}


async def items_per_second(shape: tuple[int, ...], instances: int, callers: int, seconds: float) -> float:
    engines = [InstantEngine(shape) for _ in range(instances)]
    batcher = DynamicBatcher(engines, BatchPolicy(max_batch_size=128, max_queue_size=1 << 16), Metrics(),
                             model="instant", component="encoder")
    batcher.start()
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    done, stop_at = 0, time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await batcher.infer([{"pixel_values": image}], outputs=["pooled"])
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    await batcher.stop()
    return done / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    for shape in ((3, 8, 8), (3, 224, 224)):
        for instances in (1, 2):
            rate = asyncio.run(items_per_second(shape, instances, args.callers, args.seconds))
            print(f"item {shape}, {instances} instance(s), {args.callers} callers: {rate:,.0f} items/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
