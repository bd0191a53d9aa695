"""One caller's input must not cost its batch-mates their answers (issue 23 item 3).

An outside test sent `"output": "frames"` to a model without that output among 20 pooled /embed requests: the
KeyError raised while delivering the batch's results left 3 to 12 of the 20 waiting for their deadline (504 after
30 s) and logged only "Task exception was never retrieved". Here a fake engine fails on one marked item among 20
good ones, in each place a batch can fail: assembly, the engine, and delivery; every good caller must get its
right answer, the bad one a clear error, and no task may end with an exception nobody retrieves.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import numpy as np
import pytest

from service.batching import BatchPolicy, DynamicBatcher
from service.errors import EngineFailure, UnprocessableInput
from service.logs import request_id_var
from service.metrics import Metrics
from tests.support.record import record

POISON = -1.0  # the value that marks the bad item
GOOD = 20


class PickyEngine:
    """y = 2x over fixed (batch, 3) input buffers; fails the way it is told to on a batch holding the poison."""

    name = "fake/encoder"
    device = "cpu"
    precision = "fp32"
    input_names = ("x",)
    output_names = ("y", "frames")  # claims "frames", returns it only when told to (a lying engine)

    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in
        self.batches: list[int] = []
        self._buffers: dict[int, dict[str, np.ndarray]] = {}

    def input_buffers(self, batch: int) -> dict[str, np.ndarray]:
        return self._buffers.setdefault(batch, {"x": np.zeros((batch, 3), np.float32)})

    def run(self, inputs, outputs=None):
        x = inputs["x"]
        self.batches.append(len(x))
        if x.shape[1:] != (3,):
            raise ValueError(f"input x has shape {x.shape[1:]}; this engine takes (3,)")
        if self.fail_in == "engine" and (x == POISON).any():
            raise RuntimeError("the engine cannot take this input")
        return {"y": x * 2}


def make(engine) -> DynamicBatcher:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_ms=50, wait="always")
    return DynamicBatcher(engine, policy, Metrics(), model="fake", component="encoder")


def good(i: int) -> dict:
    return {"x": np.full(3, i, np.float32)}


BAD_ITEMS = {
    "engine": ({"x": np.full(3, POISON, np.float32)}, None),  # the engine raises on it
    "assembly": ({"x": np.zeros(5, np.float32)}, None),  # does not fit the (3,) row of the batch buffer
    "delivery": (good(7), ("y", "frames")),  # asks for an output the engine does not return
}


@pytest.mark.parametrize("fail_in", sorted(BAD_ITEMS))
async def test_a_failing_item_among_20_good_ones_fails_alone(fail_in, caplog):
    loop = asyncio.get_running_loop()
    unretrieved: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    engine = PickyEngine(fail_in)
    batcher = make(engine)
    batcher.start()
    bad_input, bad_outputs = BAD_ITEMS[fail_in]

    async def bad_request():
        request_id_var.set("req-bad-1")  # what the HTTP middleware sets for a request
        return await batcher.infer([bad_input], outputs=bad_outputs)

    calls = [batcher.infer([good(i)], outputs=("y",)) for i in range(GOOD)]
    calls.insert(GOOD // 2, bad_request())
    with caplog.at_level(logging.ERROR, logger="service.batching.batcher"):
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        await batcher.stop()
    gc.collect()  # an exception left in a finished task is reported when the task is collected
    loop.set_exception_handler(previous)

    bad = outcomes.pop(GOOD // 2)
    assert isinstance(bad, EngineFailure), bad
    assert bad.detail == {"index": 0}
    answered = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(answered) == GOOD, [o for o in outcomes if isinstance(o, BaseException)]
    for i, (out,) in enumerate(answered):
        np.testing.assert_array_equal(out["y"], np.full(3, 2 * i, np.float32))
    assert not unretrieved, unretrieved
    assert [r for r in caplog.records if "failed on input" in r.getMessage()], caplog.text
    record("a failing input among 20 good ones in one batch", case=f"fails in {fail_in}",
           refused="the bad caller alone (inference_failed)", answered=len(answered), engine_runs=len(engine.batches))


async def test_the_bad_caller_is_named_in_the_log(caplog):
    """The request id travels with the item: the failure's log line carries it (the JSON log's request_id)."""
    engine = PickyEngine("engine")
    batcher = make(engine)
    batcher.start()
    seen: list[str | None] = []

    class Capture(logging.Handler):
        def emit(self, record):
            seen.append(request_id_var.get())

    handler = Capture(logging.ERROR)
    logging.getLogger("service.batching.batcher").addHandler(handler)
    try:
        request_id_var.set("req-42")
        with pytest.raises(EngineFailure):
            await batcher.infer([BAD_ITEMS["engine"][0]])
    finally:
        logging.getLogger("service.batching.batcher").removeHandler(handler)
        await batcher.stop()
    assert seen == ["req-42"]


async def test_an_output_the_engine_lacks_is_refused_before_queueing():
    engine = PickyEngine("none")
    engine.output_names = ("y",)
    batcher = make(engine)
    batcher.start()
    try:
        with pytest.raises(UnprocessableInput, match="no output 'frames'"):
            await batcher.infer([good(1)], outputs=("y", "frames"))
        assert batcher.queue_depth == 0
        assert engine.batches == []  # nothing was queued, nothing ran
    finally:
        await batcher.stop()
