"""Asyncio dynamic batcher: many requests' items -> one engine call.

One visible asyncio task per (model, component) collects items; each engine
instance has one worker thread, so the event loop never blocks. While every
instance is busy, new items queue up; when one is free, a full batch (or one
whose oldest item has waited long enough) goes to it at once. With more than
one instance (Triton's instance groups) consecutive batches overlap: one
copies to the device while another computes. A batch is assembled in the
worker thread straight into the instance's reusable (on a GPU page-locked)
input buffers, and asks the engine only for the outputs its callers want. Items whose deadline has passed are
dropped before compute.

One caller's input must not cost the others their answers: an output the engine does not have is refused before
the item is queued; a batch that fails (in assembly or in the engine) is split in halves and run again until the
failing items stand alone, so they alone fail (with the request id in the log) and every other caller is answered;
delivering one caller's rows cannot fail another's. Nothing escapes a batch task: no exception is left unretrieved.

Waiting for a fuller batch only pays when more items are on their way:
callers `announce()` items while they decode them, and the batcher waits (up
to max_queue_delay_ms) only while announced items have not arrived yet. A lone
request therefore goes straight to the engine, with no timer in its latency.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.errors import DeadlineExceeded, EngineFailure, NotReady, Overloaded, UnprocessableInput
from service.logs import request_id_var
from service.metrics import Metrics
from service.runtime.engine import Engine

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class BatchPolicy:
    max_batch_size: int = 16
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 1024
    # Optional cost budget per batch (e.g. patch tokens), so clips and large images count for what they cost.
    max_batch_cost: int = 0
    # Engine-friendly sizes (e.g. TensorRT profiles): a batch is padded up to the next one.
    preferred_batch_sizes: tuple[int, ...] = ()
    # "announced": hold a batch open only while announced items are still decoding (no timer for a lone
    # request); "always": every non-full batch waits out max_queue_delay_ms (Triton's rule).
    wait: str = "announced"
    # Time every warm-up size and cap batches at the largest one that costs no more per item than the best:
    # on a CPU a big batch can be slower per image than a small one (measured: ViT-S/16 on 2 cores).
    tune: bool = False

    def __post_init__(self) -> None:
        if any(s < 1 or s > self.max_batch_size for s in self.preferred_batch_sizes):
            raise ValueError("preferred batch sizes must lie in 1..max_batch_size")

    def padded_size(self, n: int) -> int:
        sizes = sorted(self.preferred_batch_sizes)
        at = bisect.bisect_left(sizes, n)
        return sizes[at] if at < len(sizes) else n

    def warmup_sizes(self) -> list[int]:
        """Every shape the engine will see: the preferred sizes, else powers of two and the max."""
        if self.preferred_batch_sizes:
            return sorted(set(self.preferred_batch_sizes))
        sizes, size = [], 1
        while size < self.max_batch_size:
            sizes.append(size)
            size *= 2
        return [*sizes, self.max_batch_size]


@dataclass(eq=False)
class _Request:
    """One caller's items: one future, resolved when the batch of its last item returns.

    One future per request rather than per item (and no gather): at ViT-S speed on a GPU (10,000+ items a
    second) the event loop's work per item is what bounds the served path.
    """

    future: asyncio.Future[list[Arrays]]
    results: list[Arrays | None]
    remaining: int
    request_id: str | None = None  # the HTTP request's id, for the log when one of its items fails

    def deliver(self, index: int, value: Arrays) -> None:
        if self.future.done():
            return
        self.results[index] = value
        self.remaining -= 1
        if self.remaining == 0:
            self.future.set_result(self.results)  # type: ignore[arg-type]  # every slot is filled by now

    def fail(self, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(eq=False, slots=True)
class _Item:
    inputs: Arrays
    request: _Request
    index: int  # position in the request
    enqueued: float
    deadline: float | None
    cost: int
    outputs: tuple[str, ...] | None  # None = every output


def assemble(engine: Engine, rows: list[Arrays], size: int) -> Arrays:
    """Write the items into the engine's buffers of `size` rows (one copy each, no allocation).

    Rows past len(rows) keep what an earlier batch left there (or zeros): valid input whose outputs are
    dropped. An input without a fixed buffer shape is stacked instead (padded with the last item).
    """
    buffers = engine.input_buffers(size)
    batch: Arrays = {}
    for name, first in rows[0].items():
        buffer = buffers.get(name)
        if buffer is None or buffer.shape[1:] != first.shape:
            padded = rows + [rows[-1]] * (size - len(rows))
            batch[name] = np.stack([row[name] for row in padded])
            continue
        for index, row in enumerate(rows):
            buffer[index] = row[name]
        batch[name] = buffer
    return batch


def wanted_outputs(items: Sequence[_Item]) -> tuple[str, ...] | None:
    """The union of what the batch's callers asked for (None = everything)."""
    if any(item.outputs is None for item in items):
        return None
    return tuple(sorted({name for item in items for name in item.outputs or ()}))


class DynamicBatcher:
    def __init__(
        self, engine: Engine | Sequence[Engine], policy: BatchPolicy, metrics: Metrics, *, model: str, component: str
    ) -> None:
        # One engine, or several instances of it (separate sessions: each has its own buffers and stream).
        self.engines: tuple[Engine, ...] = tuple(engine) if isinstance(engine, Sequence) else (engine,)
        self.engine = self.engines[0]
        self.policy = policy
        self._labels = {"model": model, "component": component}
        self._metrics = metrics
        # the per-item metrics, labelled once (a labels() lookup per item costs more than the observation)
        self._queue_wait = metrics.queue_wait.labels(**self._labels)
        self._queue_depth = metrics.queue_depth.labels(**self._labels)
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=len(self.engines), thread_name_prefix=f"engine-{model}-{component}"
        )
        self._idle: asyncio.Queue[Engine] | None = None  # instances free to take a batch (made on start)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._mean_batch_seconds = 0.05  # running mean, for Retry-After
        self._incoming = 0  # announced items still being decoded
        self.batch_limit = policy.max_batch_size  # lowered by a tuned warm-up

    @property
    def component(self) -> str:
        return self._labels["component"]

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def batches_in_flight(self) -> int:
        return len(self._in_flight)

    def start(self, on_stop: Callable[[], None] | None = None) -> None:
        """`on_stop`: told when the loop ends (a core tells its fronts, whose /healthz reports it)."""
        self._idle = asyncio.Queue()
        for engine in self.engines:
            self._idle.put_nowait(engine)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self._labels}")
        if on_stop is not None:
            self._task.add_done_callback(lambda _: on_stop())

    async def stop(self) -> None:
        """Finish what is queued and in flight, then stop the loop and the worker threads."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def warm_up(self, example: Arrays) -> list[int]:
        """Run every batch size (blocking; before serving) so no request pays for a first-shape plan.

        With `tune`, each size is also timed (best of 3) and the batch limit becomes the largest size
        within 5 % of the best time per item.
        """
        sizes = self.policy.warmup_sizes()
        per_item: dict[int, float] = {}
        for size in sizes:
            batch = {name: np.repeat(value[None], size, axis=0) for name, value in example.items()}
            for engine in self.engines:  # every instance plans (and on a GPU binds) every shape
                engine.run(batch)
            if self.policy.tune and not self.policy.preferred_batch_sizes:
                times = []
                for _ in range(3):
                    started = time.perf_counter()
                    self.engine.run(batch)
                    times.append(time.perf_counter() - started)
                per_item[size] = min(times) / size
        if per_item:
            best = min(per_item.values())
            self.batch_limit = max(s for s, t in per_item.items() if t <= best * 1.05)
            log.info("%s: batch limit %d (ms per item by size: %s)", self.engine.name, self.batch_limit,
                     {s: round(t * 1000, 2) for s, t in per_item.items()})
        self._metrics.batch_limit.labels(**self._labels).set(self.batch_limit)
        return sizes

    def announce(self, n: int) -> None:
        """n items will reach infer() soon (they are being decoded): worth waiting for."""
        self._incoming += n

    def withdraw(self, n: int) -> None:
        """Announced items that will not come after all (decoding failed), or that just came."""
        self._incoming = max(0, self._incoming - n)
        if not self._incoming:
            self._wakeup.set()  # stop waiting for them

    async def infer(
        self,
        items: Sequence[Arrays],
        *,
        deadline: float | None = None,
        cost: int = 1,
        announced: bool = False,
        outputs: Sequence[str] | None = None,
    ) -> list[Arrays]:
        """Queue every item of one request together and wait for all of them.

        `deadline` is a time.perf_counter() instant: past it the caller gets 504 and its
        queued items are dropped before compute. `cost` counts against max_batch_cost.
        `outputs` names the engine outputs wanted (None = all): a batch computes the union of its
        callers' wishes, and on a GPU only those cross to the host.
        """
        if announced:
            self.withdraw(len(items))
        if self._closing or not self.running:
            raise NotReady("model is shutting down or not started")
        if len(self._queue) + len(items) > self.policy.max_queue_size:
            self._metrics.rejected.labels(**self._labels, reason="queue_full").inc(len(items))
            raise Overloaded(
                "inference queue is full; retry later",
                retry_after_s=self._retry_after(),
                detail={"queue_depth": len(self._queue), "max_queue_size": self.policy.max_queue_size},
            )
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        if deadline is not None and deadline <= now:
            self._metrics.rejected.labels(**self._labels, reason="expired").inc(len(items))
            raise DeadlineExceeded("request deadline passed before inference")
        wanted = None if outputs is None else tuple(outputs)
        self._check_outputs(wanted)
        request = _Request(loop.create_future(), [None] * len(items), len(items), request_id_var.get())
        self._queue.extend(_Item(x, request, i, now, deadline, cost, wanted) for i, x in enumerate(items))
        self._queue_depth.set(len(self._queue))
        self._wakeup.set()
        if deadline is None:
            return await request.future
        # A timer, not wait_for: cheaper per request. Once the future has failed, the loop skips its items.
        timer = loop.call_later(deadline - now, self._expire, request, len(items))
        try:
            return await request.future
        finally:
            timer.cancel()

    def _check_outputs(self, wanted: tuple[str, ...] | None) -> None:
        """An output the engine does not have is refused here, before the item can share (and stall) a batch."""
        missing = sorted(set(wanted or ()) - set(self.engine.output_names))
        if missing:
            raise UnprocessableInput(f"{self.engine.name} has no output {', '.join(map(repr, missing))}; it has "
                                     f"{', '.join(map(repr, self.engine.output_names))}",
                                     {"outputs": list(self.engine.output_names)})

    def _expire(self, request: _Request, items: int) -> None:
        if not request.future.done():
            self._metrics.rejected.labels(**self._labels, reason="expired").inc(items)
            request.fail(DeadlineExceeded("request deadline passed while waiting for inference"))

    def _retry_after(self) -> float:
        """About how long the queue takes to drain, from the recent mean batch time."""
        batches = max(1, len(self._queue) // self.batch_limit)
        return max(1.0, batches * self._mean_batch_seconds)

    async def _run(self) -> None:
        assert self._idle is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            engine = await self._idle.get()  # a free instance first: items keep queueing meanwhile
            await self._wait_for_batch()
            batch = self._take_batch()
            if not batch:
                self._idle.put_nowait(engine)
                continue
            task = asyncio.get_running_loop().create_task(self._execute(batch, engine))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _wait_for_batch(self) -> None:
        delay = self.policy.max_queue_delay_ms / 1000.0
        while not self._batch_is_full() and not self._closing and (self._incoming > 0 or self.policy.wait == "always"):
            remaining = self._queue[0].enqueued + delay - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            except TimeoutError:
                return

    def _batch_is_full(self) -> bool:
        if len(self._queue) >= self.batch_limit:
            return True
        budget = self.policy.max_batch_cost
        return bool(budget) and sum(item.cost for item in self._queue) >= budget

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        spent = 0
        budget = self.policy.max_batch_cost
        now = time.perf_counter()
        while self._queue and len(batch) < self.batch_limit:
            item = self._queue[0]
            if item.request.future.done():  # cancelled, timed-out or failed callers cost nothing
                self._queue.popleft()
                continue
            if item.deadline is not None and item.deadline <= now:
                self._queue.popleft()
                self._metrics.rejected.labels(**self._labels, reason="expired").inc()
                item.request.fail(DeadlineExceeded("request deadline passed before inference"))
                continue
            if budget and batch and spent + item.cost > budget:
                break  # the next batch takes it; one item alone may exceed the budget
            self._queue.popleft()
            batch.append(item)
            spent += item.cost
        self._queue_depth.set(len(self._queue))
        return batch

    async def _execute(self, batch: list[_Item], engine: Engine) -> None:
        try:
            await self._execute_on(batch, engine)
        except Exception:
            # Nothing escapes a batch task (an exception nobody awaits is only logged at garbage collection, with
            # no caller answered): whatever went wrong, every caller still waiting gets an answer.
            log.exception("engine %s: a batch of %d failed outside the engine", engine.name, len(batch))
            for item in batch:
                item.request.fail(EngineFailure("inference failed"))
        finally:
            assert self._idle is not None
            self._idle.put_nowait(engine)
            self._wakeup.set()  # the loop may be waiting for this instance

    async def _execute_on(self, batch: list[_Item], engine: Engine) -> None:
        started = time.perf_counter()
        for item in batch:
            self._queue_wait.observe(started - item.enqueued)
        await self._run_isolating(batch, engine)
        elapsed = time.perf_counter() - started
        self._mean_batch_seconds = 0.8 * self._mean_batch_seconds + 0.2 * elapsed
        self._metrics.inference_seconds.labels(**self._labels).observe(elapsed)
        self._metrics.batch_size.labels(**self._labels).observe(len(batch))
        self._metrics.batch_fill.labels(**self._labels).observe(len(batch) / self.batch_limit)

    async def _run_isolating(self, items: list[_Item], engine: Engine) -> None:
        """Run `items` as one batch and deliver; if it fails, run each half again, down to single items, so that
        only the items that fail alone fail (a batch of n costs at most 2n - 1 runs, and only when it fails)."""
        items = [item for item in items if not item.request.future.done()]  # callers gone meanwhile cost nothing
        if not items:
            return
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._compute, items, engine)
        except Exception as exc:
            if len(items) == 1:
                self._fail_item(items[0], engine, exc)
                return
            log.warning("engine %s failed on a batch of %d (%s: %s); running its halves apart to find the failing "
                        "input", engine.name, len(items), type(exc).__name__, exc)
            half = len(items) // 2
            await self._run_isolating(items[:half], engine)
            await self._run_isolating(items[half:], engine)
            return
        self._deliver(items, outputs, engine)

    def _compute(self, items: list[_Item], engine: Engine) -> Arrays:
        """In the instance's worker thread: assemble the items into its buffers, run, check the rows."""
        size = self.policy.padded_size(len(items))
        outputs = engine.run(assemble(engine, [item.inputs for item in items], size), wanted_outputs(items))
        for name, value in outputs.items():
            if value.shape[0] != size:
                raise RuntimeError(f"engine output {name} has {value.shape[0]} rows for {size} inputs")
        return outputs

    def _deliver(self, items: list[_Item], outputs: Arrays, engine: Engine) -> None:
        for row, item in enumerate(items):
            try:
                names = outputs if item.outputs is None else item.outputs
                value = {name: outputs[name][row] for name in names}
            except Exception as exc:  # e.g. an output the engine did not return: this caller's, nobody else's
                self._fail_item(item, engine, exc)
                continue
            item.request.deliver(item.index, value)

    def _fail_item(self, item: _Item, engine: Engine, error: Exception) -> None:
        token = request_id_var.set(item.request.request_id)  # the log line names the request it failed
        try:
            log.error("engine %s failed on input %d of a request: %s: %s", engine.name, item.index,
                      type(error).__name__, error, exc_info=error)
        finally:
            request_id_var.reset(token)
        self._metrics.rejected.labels(**self._labels, reason="engine_error").inc()
        item.request.fail(EngineFailure("inference failed on this input (details in the server log)",
                                        {"index": item.index}))
