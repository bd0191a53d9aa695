"""The one interface the batcher sees: named arrays in, the named arrays asked for out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Engine(Protocol):
    name: str
    device: str
    precision: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_dtypes: dict[str, np.dtype]  # what each input's graph takes (uint8 pixels for a graph that normalises)

    def input_buffers(self, batch: int) -> dict[str, np.ndarray]:
        """Reusable host arrays of `batch` rows to assemble a batch into (page-locked on a GPU).

        The batcher writes each item into its row and passes these arrays to `run`, so a batch costs
        one host copy per item and no allocation. Owned by the engine: valid until its next `run`.
        """
        ...

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every input and output has the batch on axis 0. Only `outputs` (None = all) are returned, and on
        a GPU only they are copied to the host. One call at a time per engine: the batcher runs each
        engine instance from one worker; more instances, more batches in flight."""
        ...


class HostBuffers:
    """Per-batch-size host arrays for `Engine.input_buffers`, allocated once (zeros: valid padding rows)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype], lock_pages=None) -> None:
        self._shapes, self._dtypes = shapes, dtypes
        self._lock_pages = lock_pages  # e.g. cudaHostRegister: page-locked memory copies to a GPU by DMA
        self._by_batch: dict[int, dict[str, np.ndarray]] = {}

    def get(self, batch: int) -> dict[str, np.ndarray]:
        buffers = self._by_batch.get(batch)
        if buffers is None:
            buffers = {name: np.zeros((batch, *shape), self._dtypes[name]) for name, shape in self._shapes.items()}
            if self._lock_pages is not None:
                for array in buffers.values():
                    self._lock_pages(array)
            self._by_batch[batch] = buffers
        return buffers
