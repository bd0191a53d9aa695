"""The front-core channel on its own: the shared-memory arena, requests and their answers, cancellation,
a lost core, and the server-wide counts."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.errors import ErrorCode, NotReady, Overloaded, UnprocessableInput
from service.ipc.arena import Arena, ArenaView
from service.ipc.counters import SharedCounts
from service.ipc.link import CoreGone, CoreLink
from service.ipc.server import CoreServer, FrontConnection
from service.ipc.wire import ArrayRef


@pytest.fixture
def arena(tmp_path):
    made = Arena(1 << 16, tmp_path)
    yield made
    made.close()


def test_arena_items_are_read_in_place_by_the_core(arena):
    view = ArenaView(arena.path, arena.size)
    arena.unlink()  # the core has it mapped: the name can go, the memory stays
    a = np.arange(300, dtype=np.float32).reshape(3, 100)
    b = np.full((2, 5), 7, np.uint8)
    ref_a, ref_b = arena.put(a), arena.put(b)
    np.testing.assert_array_equal(view.array(ref_a), a)
    np.testing.assert_array_equal(view.array(ref_b), b)
    assert not view.array(ref_a).flags.writeable  # the core cannot scribble on a front's memory
    with pytest.raises(ValueError, match="outside the arena"):
        view.array(ArrayRef(arena.size - 8, (4,), "<f4"))
    view.close()


def test_arena_blocks_are_reused_and_merged_when_freed(arena):
    size = arena.size
    refs = [arena.put(np.zeros(size // 4, np.uint8)) for _ in range(4)]
    assert all(r is not None for r in refs)
    assert arena.put(np.zeros(1, np.uint8)) is None  # full: the caller sends the item in its message
    arena.free(refs[1])
    arena.free(refs[2])  # two neighbours: one free block of half the arena
    middle = arena.put(np.zeros(size // 2, np.uint8))
    assert middle is not None
    assert middle.offset == refs[1].offset
    for ref in (refs[0], refs[3], middle):
        arena.free(ref)
    assert arena.used == 0
    assert arena.put(np.zeros(size, np.uint8)) is not None  # everything merged back into one block


class Core:
    """A CoreServer with test handlers, on a socket in tmp_path."""

    def __init__(self, path):
        self.release_seen = asyncio.Event()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.announced: list[int] = []
        self.gone = asyncio.Event()
        self.phase = "loading"
        self.server = CoreServer(
            path,
            requests={"sum": self.sum, "fail": self.fail, "crash": self.crash, "wait": self.wait},
            notifications={"announce": lambda front, n: self.announced.append(n)},
            state=lambda: {"phase": self.phase},
            on_disconnect=lambda front: self.gone.set(),
        )

    async def sum(self, front: FrontConnection, ref) -> float:
        return float(front.array(ref).sum())

    async def fail(self, front: FrontConnection, kind: str):
        if kind == "overloaded":
            raise Overloaded("queue full", retry_after_s=2.5, detail={"queue_depth": 9})
        raise UnprocessableInput("bad proprio", {"index": 3}, code=ErrorCode.INVALID_PROPRIO)

    async def crash(self, front: FrontConnection):
        raise KeyError("frames")

    async def wait(self, front: FrontConnection):
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await self.gate.wait()  # still reading the arena: the answer comes only now
            raise
        return "done"


async def connected(tmp_path, arena: Arena | None = None):
    core = Core(tmp_path / "core.sock")
    await core.server.start()
    states: list[dict] = []
    link = CoreLink(tmp_path / "core.sock", on_state=states.append)
    hello = {"front": 0, "arena": None if arena is None else (str(arena.path), arena.size)}
    first = await link.connect(hello, timeout_s=5)
    return core, link, first, states


async def test_a_request_reads_the_front_arena_and_errors_keep_their_code(tmp_path, arena):
    core, link, first, states = await connected(tmp_path, arena)
    assert first == {"phase": "loading"}
    ref = arena.put(np.full(1000, 0.5, np.float32))
    assert await link.call("sum", ref) == 500.0
    with pytest.raises(UnprocessableInput) as raised:
        await link.call("fail", "proprio")
    assert raised.value.code is ErrorCode.INVALID_PROPRIO
    assert raised.value.detail == {"index": 3}
    with pytest.raises(Overloaded) as overloaded:
        await link.call("fail", "overloaded")
    assert overloaded.value.retry_after_s == 2.5
    assert overloaded.value.status == 429
    with pytest.raises(Exception) as crashed:  # noqa: PT011 - the class is the point: a generic 500, no KeyError
        await link.call("crash")
    assert getattr(crashed.value, "code", None) is ErrorCode.INTERNAL_ERROR
    core.phase = "ready"
    core.server.broadcast_state()
    link.notify("announce", 4)
    assert await link.call("sum", np.ones(3, np.float32)) == 3.0  # an inline array; and a round trip later...
    assert states == [{"phase": "ready"}]  # ...the state notification has arrived
    assert core.announced == [4]
    await link.aclose()
    await core.server.close()


async def test_a_cancelled_request_releases_its_blocks_only_when_the_core_answers(tmp_path):
    core, link, _, _ = await connected(tmp_path)
    released = asyncio.Event()
    caller = asyncio.create_task(link.call("wait", release=released.set))
    await asyncio.wait_for(core.entered.wait(), 5)
    caller.cancel()
    await asyncio.wait_for(core.cancelled.wait(), 5)  # the cancel reached the core's task
    assert not released.is_set()  # the core may still read the arena
    core.gate.set()
    await asyncio.wait_for(released.wait(), 5)
    with pytest.raises(asyncio.CancelledError):
        await caller
    await link.aclose()
    await core.server.close()


async def test_a_lost_core_fails_every_waiting_caller_and_a_gone_front_is_noticed(tmp_path):
    core, link, _, _ = await connected(tmp_path)
    released = []
    waiting = asyncio.create_task(link.call("wait", release=lambda: released.append(True)))
    await asyncio.wait_for(core.entered.wait(), 5)
    await core.server.close()  # the core goes away with a request in flight
    with pytest.raises(CoreGone) as gone:
        await asyncio.wait_for(waiting, 5)
    assert isinstance(gone.value, NotReady)  # 503: not a 500
    assert released == [True]
    assert not link.connected
    with pytest.raises(CoreGone):
        await link.call("sum", np.ones(1, np.float32))
    await asyncio.wait_for(core.gone.wait(), 5)
    await asyncio.wait_for(core.server.fronts_gone(5), 6)
    assert not core.server.fronts
    core.gate.set()


def test_a_limit_holds_across_fronts_and_a_dead_front_gives_its_places_back(tmp_path):
    made = SharedCounts(tmp_path / "counts", 2, create=True)
    front0 = made.gate(0)
    front1 = SharedCounts(tmp_path / "counts", 2).gate(1)  # another process maps the same file
    assert [front0.enter(3), front1.enter(3), front1.enter(3)] == [True, True, True]
    assert not front0.enter(3)  # the third place went to the other front
    assert (front0.count, front0.own, front1.own) == (3, 1, 2)
    made.clear(1)  # front 1 died with two requests in flight
    assert front0.enter(3)
    assert front0.count == 2
    front0.leave()
    front0.leave()
    assert front1.count == 0


def test_the_image_decode_budget_holds_for_the_whole_server(tmp_path):
    from service.media.memory import DecodeMemory

    counts = SharedCounts(tmp_path / "decode", 2, create=True)
    front0 = DecodeMemory(100, counts.gate(0))
    front1 = DecodeMemory(100, SharedCounts(tmp_path / "decode", 2).gate(1))
    with front0.reserve(80):
        assert not front1._take(40)  # 80 + 40 > 100: the other front's decode waits
        assert front1._take(20)
        assert counts.total() == 100
        front1.shared.leave(20)
        front1._held -= 20
    assert front1._take(40)  # released: it fits now
    assert counts.total() == 40
