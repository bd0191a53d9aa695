"""What a model's users (pipeline, world models, probe heads) need of a batcher: the core's `DynamicBatcher`
in this process, or a front's `RemoteBatcher` handle on it (service/ipc/remote.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

Arrays = dict[str, np.ndarray]


class EngineFacts(Protocol):
    name: str
    device: str
    precision: str


class QueuePolicy(Protocol):
    max_queue_size: int


class Batcher(Protocol):
    engine: EngineFacts
    policy: QueuePolicy

    @property
    def component(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def announce(self, n: int) -> None: ...
    def withdraw(self, n: int) -> None: ...
    async def infer(self, items: Sequence[Arrays], *, deadline: float | None = None, cost: int = 1,
                    announced: bool = False, outputs: Sequence[str] | None = None) -> list[Arrays]: ...
