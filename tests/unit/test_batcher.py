import asyncio
import threading

import numpy as np
import pytest

from service.batching import BatchPolicy, DynamicBatcher
from service.batching.batcher import EngineFailure
from service.errors import NotReady, Overloaded
from service.metrics import Metrics


class DoublingEngine:
    """Fake engine: y = 2x, records batch sizes; can be told to fail or to block."""

    name = "fake/encoder"
    device = "cpu"
    precision = "fp32"
    input_names = ("x",)
    output_names = ("y",)

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.fail_next = False
        self.gate = threading.Event()
        self.gate.set()

    def run(self, inputs):
        self.gate.wait(5)
        self.batches.append(len(inputs["x"]))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        return {"y": inputs["x"] * 2}


def make(engine, **policy) -> DynamicBatcher:
    return DynamicBatcher(engine, BatchPolicy(**policy), Metrics(), model="fake", component="encoder")


def item(value: float) -> dict:
    return {"x": np.full(3, value, np.float32)}


async def test_items_from_many_requests_coalesce_and_map_back():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=8, max_queue_delay_ms=50)
    batcher.start()
    results = await asyncio.gather(*(batcher.infer([item(i)]) for i in range(20)))
    await batcher.stop()
    for i, (out,) in enumerate(results):
        np.testing.assert_array_equal(out["y"], np.full(3, 2 * i, np.float32))
    assert sum(engine.batches) == 20
    assert max(engine.batches) == 8
    assert len(engine.batches) <= 4  # 20 items at max 8 -> 3 batches, one spare for timing


async def test_lone_item_waits_at_most_the_delay():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=64, max_queue_delay_ms=20)
    batcher.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await batcher.infer([item(1)])
    elapsed = loop.time() - started
    await batcher.stop()
    assert engine.batches == [1]
    assert 0.015 <= elapsed < 1.0


async def test_failed_batch_fails_its_callers_and_the_loop_survives():
    engine = DoublingEngine()
    engine.fail_next = True
    batcher = make(engine, max_batch_size=4, max_queue_delay_ms=5)
    batcher.start()
    outcomes = await asyncio.gather(batcher.infer([item(1)]), batcher.infer([item(2)]), return_exceptions=True)
    assert all(isinstance(o, EngineFailure) for o in outcomes)
    (ok,) = await batcher.infer([item(3)])
    np.testing.assert_array_equal(ok["y"], np.full(3, 6, np.float32))
    await batcher.stop()


async def test_full_queue_is_refused_with_overloaded():
    engine = DoublingEngine()
    engine.gate.clear()  # the engine blocks, so the queue fills up
    batcher = make(engine, max_batch_size=2, max_queue_delay_ms=0, max_queue_size=4)
    batcher.start()
    first = asyncio.ensure_future(batcher.infer([item(0), item(0)]))
    await asyncio.sleep(0.05)  # first batch taken by the engine
    queued = asyncio.ensure_future(batcher.infer([item(1)] * 4))
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as refused:
        await batcher.infer([item(2)])
    assert refused.value.retry_after_s > 0
    engine.gate.set()
    await asyncio.gather(first, queued)
    await batcher.stop()


async def test_cancelled_callers_cost_no_compute():
    engine = DoublingEngine()
    engine.gate.clear()
    batcher = make(engine, max_batch_size=1, max_queue_delay_ms=0)
    batcher.start()
    first = asyncio.ensure_future(batcher.infer([item(0)]))
    await asyncio.sleep(0.05)
    abandoned = asyncio.ensure_future(batcher.infer([item(1)]))
    await asyncio.sleep(0.01)
    abandoned.cancel()
    engine.gate.set()
    await first
    await batcher.infer([item(2)])
    await batcher.stop()
    assert engine.batches == [1, 1]  # item 1 never reached the engine


async def test_stopped_batcher_refuses_work():
    batcher = make(DoublingEngine())
    batcher.start()
    await batcher.stop()
    with pytest.raises(NotReady):
        await batcher.infer([item(1)])
