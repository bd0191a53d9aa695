"""Asyncio dynamic batcher: many requests' items -> one engine call.

One visible asyncio task per (model, component) collects items and one worker
thread runs the engine, so the event loop never blocks. While the engine runs,
new items queue up; when it returns, a full batch (or one whose oldest item
has waited long enough) goes at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.errors import NotReady, Overloaded, ServiceError
from service.metrics import Metrics
from service.runtime.engine import Engine

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class BatchPolicy:
    max_batch_size: int = 16
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 1024


class EngineFailure(ServiceError):
    """The engine raised on a batch; every caller in it gets this (details only in the log)."""

    status = 500
    code = "inference_failed"


@dataclass
class _Item:
    inputs: Arrays
    future: asyncio.Future[Arrays]
    enqueued: float


class DynamicBatcher:
    def __init__(self, engine: Engine, policy: BatchPolicy, metrics: Metrics, *, model: str, component: str) -> None:
        self.engine = engine
        self.policy = policy
        self._labels = {"model": model, "component": component}
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{model}-{component}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def component(self) -> str:
        return self._labels["component"]

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self._labels}")

    async def stop(self) -> None:
        """Finish what is queued, then stop the loop and the worker thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def infer(self, items: Sequence[Arrays]) -> list[Arrays]:
        """Queue every item of one request together and wait for all of them."""
        if self._closing or not self.running:
            raise NotReady("model is shutting down or not started")
        if len(self._queue) + len(items) > self.policy.max_queue_size:
            self._metrics.rejected.labels(**self._labels, reason="queue_full").inc(len(items))
            raise Overloaded(
                "inference queue is full; retry later",
                retry_after_s=1.0,
                detail={"queue_depth": len(self._queue), "max_queue_size": self.policy.max_queue_size},
            )
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        pending = [_Item(inputs=dict(x), future=loop.create_future(), enqueued=now) for x in items]
        self._queue.extend(pending)
        self._metrics.queue_depth.labels(**self._labels).set(len(self._queue))
        self._wakeup.set()
        # gather cancels the futures if the caller goes away; the loop skips them.
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_batch()
            batch = self._take_batch()
            if batch:
                await self._execute(batch, loop)

    async def _wait_for_batch(self) -> None:
        delay = self.policy.max_queue_delay_ms / 1000.0
        while len(self._queue) < self.policy.max_batch_size and not self._closing:
            remaining = self._queue[0].enqueued + delay - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        while self._queue and len(batch) < self.policy.max_batch_size:
            item = self._queue.popleft()
            if not item.future.done():  # cancelled callers cost nothing
                batch.append(item)
        self._metrics.queue_depth.labels(**self._labels).set(len(self._queue))
        return batch

    async def _execute(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        started = time.perf_counter()
        for item in batch:
            self._metrics.queue_wait.labels(**self._labels).observe(started - item.enqueued)
        try:
            stacked = {name: np.stack([item.inputs[name] for item in batch]) for name in batch[0].inputs}
            outputs = await loop.run_in_executor(self._executor, self.engine.run, stacked)
            for name, value in outputs.items():
                if value.shape[0] != len(batch):
                    raise RuntimeError(f"engine output {name} has {value.shape[0]} rows for {len(batch)} inputs")
        except Exception:
            # One bad batch must not end the loop: fail its callers, keep serving.
            log.exception("engine %s failed on a batch of %d", self.engine.name, len(batch))
            self._metrics.rejected.labels(**self._labels, reason="engine_error").inc(len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(EngineFailure("inference failed"))
            return
        self._metrics.inference_seconds.labels(**self._labels).observe(time.perf_counter() - started)
        self._metrics.batch_size.labels(**self._labels).observe(len(batch))
        self._metrics.batch_fill.labels(**self._labels).observe(len(batch) / self.policy.max_batch_size)
        for row, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result({name: value[row] for name, value in outputs.items()})
