import asyncio
import threading

import numpy as np
import pytest

from service.batching import BatchPolicy, DynamicBatcher
from service.errors import DeadlineExceeded, EngineFailure, NotReady, Overloaded
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
        self.fail_always = False
        self.fail_size = 0  # fail the next batch of this size, once
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set once a batch reaches the engine

    def input_buffers(self, batch):
        return {}

    def run(self, inputs, outputs=None):
        self.entered.set()
        self.gate.wait(5)
        self.batches.append(len(inputs["x"]))
        if self.fail_always:
            raise RuntimeError("broken")
        if self.fail_size == len(inputs["x"]):
            self.fail_size = 0
            raise RuntimeError("boom")
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        return {"y": inputs["x"] * 2}


def make(engine, **policy) -> DynamicBatcher:
    return DynamicBatcher(engine, BatchPolicy(**policy), Metrics(), model="fake", component="encoder")


def item(value: float) -> dict:
    return {"x": np.full(3, value, np.float32)}


async def engine_busy(engine: DoublingEngine) -> None:
    """Until a batch has reached the (blocked) engine: its event, waited for off the loop."""
    assert await asyncio.get_running_loop().run_in_executor(None, engine.entered.wait, 5), "no batch reached the engine"


async def queued(batcher: DynamicBatcher, n: int) -> None:
    """Until n items wait in the batcher's queue (polled, bounded)."""
    for _ in range(5000):
        if batcher.queue_depth == n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"queue depth {batcher.queue_depth}, expected {n}")


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


async def test_lone_item_goes_at_once_when_nothing_else_is_announced():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=64, max_queue_delay_ms=600_000)
    batcher.start()
    # with a 10-minute delay, finishing at all shows the batch did not wait: nobody else was coming
    await asyncio.wait_for(batcher.infer([item(1)]), 30)
    await batcher.stop()
    assert engine.batches == [1]


async def test_batch_waits_for_announced_items_at_most_the_delay():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=64, max_queue_delay_ms=60)
    batcher.start()
    batcher.announce(2)  # two items decoding; only one ever arrives
    first = asyncio.ensure_future(batcher.infer([item(1)], announced=True))
    await queued(batcher, 1)  # held open: another announced item is still decoding
    second = asyncio.ensure_future(batcher.infer([item(2)]))  # not announced, but joins the open batch
    await asyncio.wait_for(asyncio.gather(first, second), 30)  # the delay (60 ms) ends the wait for the third
    await batcher.stop()
    assert engine.batches == [2]


async def test_withdrawn_announcement_stops_the_wait():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=64, max_queue_delay_ms=600_000)
    batcher.start()
    batcher.announce(2)
    pending = asyncio.ensure_future(batcher.infer([item(1)], announced=True))
    await queued(batcher, 1)
    assert not pending.done()  # waiting for the other announced item
    batcher.withdraw(1)  # the other item failed to decode
    await asyncio.wait_for(pending, 30)  # long before the 10-minute delay: the withdrawal ended the wait
    await batcher.stop()
    assert engine.batches == [1]


async def test_failed_batch_fails_its_callers_and_the_loop_survives():
    engine = DoublingEngine()
    engine.fail_always = True
    batcher = make(engine, max_batch_size=4, max_queue_delay_ms=5)
    batcher.start()
    outcomes = await asyncio.gather(batcher.infer([item(1)]), batcher.infer([item(2)]), return_exceptions=True)
    assert all(isinstance(o, EngineFailure) for o in outcomes)
    engine.fail_always = False
    (ok,) = await batcher.infer([item(3)])
    np.testing.assert_array_equal(ok["y"], np.full(3, 6, np.float32))
    await batcher.stop()


async def busy_with_item_0(**policy) -> tuple[DoublingEngine, DynamicBatcher, asyncio.Future]:
    """A started batcher whose (blocked) engine holds item 0, so that the next items queue behind it."""
    engine = DoublingEngine()
    engine.gate.clear()
    batcher = make(engine, max_queue_delay_ms=0, **policy)
    batcher.start()
    first = asyncio.ensure_future(batcher.infer([item(0)]))
    await engine_busy(engine)
    return engine, batcher, first


async def test_a_batch_that_fails_once_is_run_again_in_halves():
    engine, batcher, first = await busy_with_item_0(max_batch_size=4)
    rest = asyncio.ensure_future(asyncio.gather(batcher.infer([item(1)]), batcher.infer([item(2)])))
    await queued(batcher, 2)
    engine.fail_size = 2  # the batch of items 1 and 2 fails once
    engine.gate.set()
    await first
    (a,), (b,) = await rest
    await batcher.stop()
    np.testing.assert_array_equal(a["y"], np.full(3, 2, np.float32))
    np.testing.assert_array_equal(b["y"], np.full(3, 4, np.float32))
    assert engine.batches == [1, 2, 1, 1]


async def test_full_queue_is_refused_with_overloaded():
    engine = DoublingEngine()
    engine.gate.clear()  # the engine blocks, so the queue fills up
    batcher = make(engine, max_batch_size=2, max_queue_delay_ms=0, max_queue_size=4)
    batcher.start()
    first = asyncio.ensure_future(batcher.infer([item(0), item(0)]))
    await engine_busy(engine)  # first batch taken by the engine
    waiting = asyncio.ensure_future(batcher.infer([item(1)] * 4))
    await queued(batcher, 4)
    with pytest.raises(Overloaded) as refused:
        await batcher.infer([item(2)])
    assert refused.value.retry_after_s > 0
    engine.gate.set()
    await asyncio.gather(first, waiting)
    await batcher.stop()


async def test_cancelled_callers_cost_no_compute():
    engine, batcher, first = await busy_with_item_0(max_batch_size=1)
    abandoned = asyncio.ensure_future(batcher.infer([item(1)]))
    await queued(batcher, 1)
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


async def test_expired_items_are_dropped_before_compute():
    import time

    engine = DoublingEngine()
    engine.gate.clear()
    batcher = make(engine, max_batch_size=1, max_queue_delay_ms=0)
    batcher.start()
    first = asyncio.ensure_future(batcher.infer([item(0)]))
    await engine_busy(engine)  # the engine is busy with item 0
    with pytest.raises(DeadlineExceeded):
        await batcher.infer([item(1)], deadline=time.perf_counter() + 0.05)
    engine.gate.set()
    await first
    (ok,) = await batcher.infer([item(2)], deadline=time.perf_counter() + 5)
    await batcher.stop()
    assert engine.batches == [1, 1]  # item 1 expired in the queue and never ran
    np.testing.assert_array_equal(ok["y"], np.full(3, 4, np.float32))
    batcher2 = make(DoublingEngine())
    batcher2.start()
    try:
        with pytest.raises(DeadlineExceeded):  # already past: refused before it is queued
            await batcher2.infer([item(1)], deadline=time.perf_counter() - 1)
    finally:
        await batcher2.stop()


async def test_cost_budget_limits_a_batch():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=16, max_queue_delay_ms=30, max_batch_cost=100)
    batcher.start()
    await asyncio.gather(*(batcher.infer([item(i)], cost=40) for i in range(6)))
    await batcher.stop()
    assert sum(engine.batches) == 6
    assert max(engine.batches) == 2  # 2 x 40 fits in 100, 3 x 40 does not


async def test_preferred_sizes_pad_and_outputs_map_back():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=8, max_queue_delay_ms=20, preferred_batch_sizes=(4, 8))
    batcher.start()
    results = await asyncio.gather(*(batcher.infer([item(i)]) for i in range(3)))
    await batcher.stop()
    assert engine.batches == [4]  # 3 items padded to the engine's size 4
    assert [r[0]["y"][0] for r in results] == [0, 2, 4]


def test_policy_sizes():
    from service.batching import BatchPolicy

    assert BatchPolicy(max_batch_size=16).warmup_sizes() == [1, 2, 4, 8, 16]
    assert BatchPolicy(max_batch_size=12).warmup_sizes() == [1, 2, 4, 8, 12]
    policy = BatchPolicy(max_batch_size=16, preferred_batch_sizes=(8, 4, 16))
    assert policy.warmup_sizes() == [4, 8, 16]
    assert [policy.padded_size(n) for n in (1, 4, 5, 9, 16)] == [4, 4, 8, 16, 16]
    with pytest.raises(ValueError, match="preferred batch sizes"):
        BatchPolicy(max_batch_size=4, preferred_batch_sizes=(8,))


async def test_always_mode_holds_a_lone_item_for_company():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=2, max_queue_delay_ms=600_000, wait="always")
    batcher.start()
    lone = asyncio.ensure_future(batcher.infer([item(1)]))
    await queued(batcher, 1)
    assert not lone.done()  # nothing announced, yet it waits (announced mode would send it at once)
    await asyncio.wait_for(asyncio.gather(lone, batcher.infer([item(2)])), 30)  # a full batch goes at once
    await batcher.stop()
    assert engine.batches == [2]


def test_tuned_warm_up_caps_batches_where_cost_per_item_stops_falling():
    import time as clock

    class KneeEngine(DoublingEngine):
        """Per-item cost falls until 4 items, then rises: batches of 8 and 16 are slower per item."""

        def run(self, inputs, outputs=None):
            n = len(inputs["x"])
            clock.sleep(0.002 * n * (1.0 if n <= 4 else 2.0) + 0.004)
            return {"y": inputs["x"] * 2}

    batcher = make(KneeEngine(), max_batch_size=16, tune=True)
    assert batcher.warm_up({"x": np.zeros(3, np.float32)}) == [1, 2, 4, 8, 16]
    assert batcher.batch_limit == 4
    untuned = make(KneeEngine(), max_batch_size=16)
    untuned.warm_up({"x": np.zeros(3, np.float32)})
    assert untuned.batch_limit == 16


async def test_batches_respect_the_tuned_limit():
    engine = DoublingEngine()
    batcher = make(engine, max_batch_size=16, max_queue_delay_ms=20)
    batcher.batch_limit = 3
    batcher.start()
    await asyncio.gather(*(batcher.infer([item(i)]) for i in range(9)))
    await batcher.stop()
    assert max(engine.batches) == 3
    assert sum(engine.batches) == 9


class BufferedEngine(DoublingEngine):
    """Owns one input buffer per batch size (as OrtEngine does) and records what run() was given."""

    output_names = ("y", "z")

    def __init__(self) -> None:
        super().__init__()
        self.buffers: dict[int, dict] = {}
        self.given: list[tuple[bool, tuple | None]] = []  # (inputs were our buffer, outputs asked for)

    def input_buffers(self, batch):
        return self.buffers.setdefault(batch, {"x": np.zeros((batch, 3), np.float32)})

    def run(self, inputs, outputs=None):
        self.given.append((inputs["x"] is self.buffers.get(len(inputs["x"]), {}).get("x"), outputs))
        names = self.output_names if outputs is None else outputs
        every = {"y": inputs["x"] * 2, "z": inputs["x"] * 3}
        return {name: every[name] for name in names}


async def test_batches_are_assembled_in_the_engines_buffer_and_ask_only_for_wanted_outputs():
    engine = BufferedEngine()
    batcher = make(engine, max_batch_size=8, max_queue_delay_ms=50, preferred_batch_sizes=(4, 8))
    batcher.start()
    only_y = await asyncio.gather(*(batcher.infer([item(i)], outputs=["y"]) for i in range(3)))
    both = await batcher.infer([item(10)])
    await batcher.stop()
    assert all(in_buffer for in_buffer, _ in engine.given)  # no stacked copy: the engine's own buffer
    assert engine.given[0][1] == ("y",)
    assert engine.given[-1][1] is None
    for i, (out,) in enumerate(only_y):
        assert set(out) == {"y"}
        np.testing.assert_array_equal(out["y"], np.full(3, 2 * i, np.float32))
    assert set(both[0]) == {"y", "z"}
    assert both[0]["z"][0] == 30


async def test_two_instances_keep_two_batches_in_flight():
    """Each instance runs in its own worker: a second batch starts while the first is still running."""
    started = threading.Barrier(2, timeout=5)

    class MeetingEngine(DoublingEngine):
        def run(self, inputs, outputs=None):
            started.wait()  # raises BrokenBarrierError unless another batch runs at the same time
            return super().run(inputs, outputs)

    engines = [MeetingEngine(), MeetingEngine()]
    batcher = DynamicBatcher(engines, BatchPolicy(max_batch_size=2), Metrics(), model="fake", component="encoder")
    batcher.start()
    results = await asyncio.gather(*(batcher.infer([item(i)]) for i in range(4)))
    await batcher.stop()
    assert [out["y"][0] for (out,) in results] == [0, 2, 4, 6]
    assert all(engine.batches for engine in engines)  # both instances took work
    assert not started.broken


async def test_one_instance_runs_one_batch_at_a_time():
    running, most = 0, 0
    lock = threading.Lock()

    class CountingEngine(DoublingEngine):
        def run(self, inputs, outputs=None):
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            try:
                return super().run(inputs, outputs)
            finally:
                with lock:
                    running -= 1

    batcher = make(CountingEngine(), max_batch_size=1)
    batcher.start()
    await asyncio.gather(*(batcher.infer([item(i)]) for i in range(6)))
    await batcher.stop()
    assert most == 1
