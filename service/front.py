"""A front process: HTTP, validation, decoding, preprocessing and responses, for one share of the connections.

Every front runs the same app (service/app.py) on the listening socket the supervisor bound, so the kernel
spreads connections over them; each has its own event loop, its own decode and storage threads, and no model,
collection or cache of its own: those are the core's, reached through `service.ipc` (its batchers as
`RemoteBatcher`s, its store as a `RemoteStore`). Pixels go into the front's shared-memory arena; only small
messages go to the core. /readyz reports the core's phase: a front whose core is not ready answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from service.config import CacheConfig, ConnectionsConfig, ServerConfig, StreamConfig
from service.embed_cache import EmbeddingCache, open_cache
from service.ipc.arena import Arena
from service.ipc.counters import Gate, ServerCounts
from service.ipc.link import CoreGone, CoreLink
from service.ipc.remote import RemoteBatcher, RemoteCache, RemoteStore
from service.logs import configure_logging
from service.model_pool import ModelPool, served_model
from service.processes import become_child, process_alive, return_large_blocks
from service.repository import scan_repository
from service.state import Executors, Services

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("service.front")

CORE_CONNECT_TIMEOUT_S = 60.0  # the core listens within a second or two of starting; longer means it is stuck


@dataclass(frozen=True)
class FrontRole:
    """What makes an app a front: its number, where the core listens, the server-wide counts."""

    index: int
    core_path: Path
    core_pid: int
    counts: ServerCounts
    arena_bytes: int


def run_front(config: ServerConfig, index: int, address: tuple[str, int], core_path: str, core_pid: int,
              counts: ServerCounts, log_level: str, parent_pid: int) -> None:
    """A front process's entry point (started by the supervisor): uvicorn on its own socket of the port."""
    import uvicorn

    from service.app import create_app
    from service.supervisor import bind

    become_child(f"jepa-front-{index}", parent_pid)
    return_large_blocks()
    configure_logging(config.logging.format, log_level)
    role = FrontRole(index, Path(core_path), core_pid, counts, config.processes.arena_bytes)
    app = create_app(config, front=role)
    uvicorn_config = server_config(app, config.connections, config.stream, log_level, counts.connections.gate(index))
    uvicorn.Server(uvicorn_config).run(sockets=[bind(*address, listen=True)])


def server_config(app: FastAPI, limits: ConnectionsConfig, stream: StreamConfig, log_level: str,
                  connections: Gate) -> uvicorn.Config:
    """SIGTERM: uvicorn stops accepting, waits up to shutdown_timeout_s for in-flight requests, then the lifespan
    closes this front (the core drains the batch queues and snapshots the logs once every front has gone).
    Connections: read timeouts and a connection cap on HTTP (`connections` counts every front's); on WebSockets,
    a client that stops reading is dropped and an oversized message is refused in the app's words
    (service/connections.py). No WebSocket pings: the stream's idle and send timers find a peer that is gone and
    close with 1001 and a reason (uvicorn's ping timeout closed with 1011, "server error")."""
    import uvicorn

    from service.api.stream import close_reason, error_message, message_too_big
    from service.connections import ConnectionLimits, WebSocketLimits, guarded_protocol, guarded_websocket_protocol

    http = ConnectionLimits(header_timeout_s=limits.header_timeout_s, body_timeout_s=limits.body_timeout_s,
                            max_connections=limits.max_connections, discard_body_bytes=limits.discard_body_bytes,
                            gate=connections)

    def too_big(size: int) -> tuple[dict, str]:
        error = message_too_big(size, stream.max_message_bytes)
        return error_message(error), close_reason(error)

    ws = WebSocketLimits(stall_timeout_s=stream.idle_timeout_s, max_message_bytes=stream.max_message_bytes,
                         too_big=too_big)
    return uvicorn.Config(
        app, log_level=log_level, access_log=False, log_config=None,
        timeout_graceful_shutdown=limits.shutdown_timeout_s, http=guarded_protocol(http),
        timeout_keep_alive=limits.keep_alive_timeout_s, ws=guarded_websocket_protocol(ws),
        ws_max_size=stream.max_message_bytes, ws_ping_interval=None, ws_ping_timeout=None,
    )


def open_arena(size: int) -> Arena | None:
    if size <= 0:
        return None
    try:
        return Arena(size)
    except OSError as exc:
        log.warning("no shared-memory arena of %d MiB (%s): items travel inside messages (slower); "
                    "give /dev/shm more room or lower JEPA_SHM_ARENA_MB", size >> 20, exc.strerror)
        return None


def front_cache(config: CacheConfig, link: CoreLink) -> EmbeddingCache | None:
    """A Redis cache is shared already: the front opens it itself. The in-memory one is the core's."""
    cache = open_cache(config)
    if cache is None or cache.backend != "memory":
        return cache
    return RemoteCache(link)


class CoreView:
    """The front's picture of the core, from its state notifications: the phase, the collections' recovery,
    which batchers run; and the front's models, made once the core says which it serves."""

    def __init__(self, services: Services, link: CoreLink, arena: Arena | None) -> None:
        self.services, self.link, self.arena = services, link, arena
        self.running: dict[tuple[str, str], bool] = {}
        self.building: asyncio.Task[None] | None = None
        self._built = False
        self._state: dict[str, Any] = {}

    async def connect(self, role: FrontRole) -> None:
        hello = {"front": role.index, "arena": None if self.arena is None else (str(self.arena.path),
                                                                              self.arena.size)}
        try:
            state = await self.link.connect(hello, CORE_CONNECT_TIMEOUT_S, lambda: process_alive(role.core_pid))
        except CoreGone as exc:  # the supervisor saw it too, says so, and stops this front: one line is enough
            log.warning("front %d: %s", role.index, exc)
            self.services.set_phase("failed")
            return
        except Exception:
            log.exception("front %d could not reach the core", role.index)
            self.services.set_phase("failed")
            return
        if self.arena is not None:
            self.arena.unlink()  # the core has it mapped: no name left behind, whatever happens next
        self.apply(state)

    def apply(self, state: dict[str, Any]) -> None:
        self._state = state
        store = self.services.store
        assert isinstance(store, RemoteStore)
        store.recovered, store.failures = state["recovered"], state["collections_failed"]
        self.services.models.failures = dict(state["failures"])
        for model, components in state["models"].items():
            for component, facts in components.items():
                self.running[(model, component)] = facts["running"]
        if state["models"] and not self._built and self.building is None:
            self.building = asyncio.get_running_loop().create_task(self._build(state), name="front-models")
        phase = state["phase"]
        if phase == "ready" and not (self._built and state["fronts_up"]):
            phase = "warming"  # the core is ready, this front (or, at first start, another one) not yet
        self.services.set_phase(phase, state["retrying"])

    async def _build(self, state: dict[str, Any]) -> None:
        """The front's ServedModels: the repository's manifests, read here too, around handles on the core's
        batchers."""
        services = self.services
        try:
            entries, _ = await asyncio.get_running_loop().run_in_executor(
                services.executors.storage, scan_repository, services.config.models.repository)
            for entry in entries:
                components = state["models"].get(entry.name)
                if components is None:
                    continue
                batchers = {
                    name: RemoteBatcher(self.link, self.arena, entry.name, name, facts["engine"],
                                        facts["max_queue_size"], self._is_running(entry.name, name))
                    for name, facts in components.items()
                }
                try:
                    services.models.add(served_model(entry, batchers, services.config.limits.world))
                except Exception as exc:  # a model this front cannot hold must not stop the others
                    log.exception("model %s failed to load in this front", entry.name)
                    services.models.failures[entry.name] = f"failed to load: {type(exc).__name__}"
        finally:
            self._built = True
            self.link.notify("built")
            self.apply(self._state)

    def _is_running(self, model: str, component: str):
        return lambda: self.running.get((model, component), False)

    def lost(self) -> None:
        if self.services.phase != "stopping":
            self.services.set_phase("failed", {"reason": "the core process is gone"})


@asynccontextmanager
async def front_lifespan(app: FastAPI) -> AsyncIterator[None]:
    config: ServerConfig = app.state.config
    role: FrontRole = app.state.front
    link: CoreLink = app.state.core_link
    arena = open_arena(role.arena_bytes)
    executors = Executors.from_config(config.processes, config.media, share=role.counts.fronts,
                                      decode_bytes=role.counts.decode_bytes.gate(role.index))
    services = Services(config=config, metrics=app.state.metrics, models=ModelPool(), store=RemoteStore(link),
                        executors=executors, streams=role.counts.streams.gate(role.index))
    services.embed_cache = front_cache(config.cache, link)
    app.state.services = services
    view = CoreView(services, link, arena)
    link.on_state = view.apply
    # Before accepting: connect (the core listens a moment after it starts), and if the core is serving already
    # (this front replaces one that died), take its models first, so this front's share of new connections is
    # never answered "not ready". At first start the core is still loading: accept at once, /readyz says so.
    await view.connect(role)
    if view.building is not None and services.phase == "warming":
        await asyncio.shield(view.building)
    watching = asyncio.create_task(_watch(link, view), name="core-watch")
    try:
        yield
    finally:
        services.set_phase("stopping")
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await link.aclose()
        if services.embed_cache is not None:
            services.embed_cache.close()
        services.executors.shutdown()
        if arena is not None:
            arena.close()
        await app.state.guard.aclose()


async def _watch(link: CoreLink, view: CoreView) -> None:
    await link.closed.wait()
    view.lost()
