"""CUDA graphs for one ONNX Runtime session: one captured graph per batch size, replayed for every batch of it.

A CUDA graph replays the kernel launches of one run, for one set of shapes and one set of device addresses: the
launch overhead of a few hundred kernels a batch goes, which is what small models at small batches pay most.
So each batch size gets its own IO binding whose input and output buffers never move (inputs are copied into
them, the outputs asked for are copied out of them) and its own graph id (ONNX Runtime's `gpu_graph_id` run
option: the batch size). ONNX Runtime captures a graph on a run after two ordinary ones; the first batch of a
size (at warm-up: the batcher runs every size) runs its binding until then.

Modes (`JEPA_CUDA_GRAPHS`): `on` replays every batch size's graph; `auto` times, per batch size at that first
batch, replays against ordinary runs of the same binding (graph id -1: no capture, no replay) and keeps the
faster; `off` builds the session without graphs. A session ONNX Runtime will not build with graphs (a node it
must run on the CPU between device kernels, an output whose shape the input does not fix) runs without them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

CUDA_GRAPH_MODES = ("off", "on", "auto")
NO_GRAPH = -1  # ONNX Runtime's graph id for a run that neither captures nor replays
CAPTURE_RUNS = 3  # two ordinary runs, then the one ONNX Runtime captures (it replays from then on)
TIMED_RUNS = 5  # auto: best of this many runs of each kind


class DeviceIO(Protocol):
    """What the bookkeeping asks of ONNX Runtime (a fake in tests)."""

    def value(self, shape: Sequence[int], dtype: np.dtype) -> Any:
        """A tensor in device memory that stays where it is."""
        ...

    def run_options(self, graph_id: int) -> Any:
        ...


class OrtDeviceIO:
    def __init__(self, device: str, device_id: int) -> None:
        self._device, self._device_id = device, device_id

    def value(self, shape: Sequence[int], dtype: np.dtype) -> Any:
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self._device, self._device_id)

    def run_options(self, graph_id: int) -> Any:
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", str(graph_id))
        return options


@dataclass
class GraphBatch:
    """One batch size's fixed buffers and how it runs."""

    binding: Any
    inputs: dict[str, Any]  # name -> device tensor the batch is copied into
    outputs: dict[str, Any]  # name -> device tensor every output is written to
    run_options: Any
    replay: bool  # False: auto found ordinary runs faster for this size


Shapes = Mapping[str, tuple[tuple[int, ...], np.dtype]]  # name -> (shape of one item, dtype)


def graph_shapes_missing(inputs: Mapping[str, tuple[int, ...] | None],
                         outputs: Mapping[str, tuple[int, ...] | None]) -> list[str]:
    """The inputs and outputs whose item shape the graph does not fix: a captured graph cannot have them."""
    return [name for name, shape in {**inputs, **outputs}.items() if shape is None]


class CudaGraphs:
    """Per batch size: bind fixed device buffers, capture the graph, and (auto) keep it only if it is faster."""

    def __init__(self, session: Any, io: DeviceIO, inputs: Shapes, outputs: Shapes, mode: str, name: str = "",
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if mode not in ("on", "auto"):
            raise ValueError(f"CUDA graph mode {mode!r}: expected on or auto")
        self._session, self._io, self._mode, self._name, self._clock = session, io, mode, name, clock
        self._inputs, self._outputs = dict(inputs), dict(outputs)
        self._batches: dict[int, GraphBatch] = {}

    @property
    def replayed_sizes(self) -> list[int]:
        return sorted(size for size, batch in self._batches.items() if batch.replay)

    @property
    def prepared_sizes(self) -> list[int]:
        return sorted(self._batches)

    def get(self, batch: int) -> GraphBatch:
        prepared = self._batches.get(batch)
        if prepared is None:
            prepared = self._batches[batch] = self._prepare(batch)
        return prepared

    def _prepare(self, batch: int) -> GraphBatch:
        binding = self._session.io_binding()
        inputs, outputs = {}, {}
        for name, (shape, dtype) in self._inputs.items():
            inputs[name] = self._io.value((batch, *shape), dtype)
            binding.bind_ortvalue_input(name, inputs[name])
        for name, (shape, dtype) in self._outputs.items():
            outputs[name] = self._io.value((batch, *shape), dtype)
            binding.bind_ortvalue_output(name, outputs[name])
        prepared = GraphBatch(binding, inputs, outputs, self._io.run_options(batch), replay=True)
        try:
            for _ in range(CAPTURE_RUNS):
                self._session.run_with_iobinding(binding, prepared.run_options)
        except Exception as exc:  # a kernel that cannot be captured: this size runs without a graph
            log.warning("%s batch %d: CUDA graph capture failed (%s); ordinary runs", self._name, batch,
                        (str(exc).splitlines() or [type(exc).__name__])[0])
            prepared.run_options, prepared.replay = self._io.run_options(NO_GRAPH), False
            return prepared
        if self._mode == "auto":
            ordinary = self._io.run_options(NO_GRAPH)
            replay_s, ordinary_s = self._best(binding, prepared.run_options), self._best(binding, ordinary)
            if ordinary_s < replay_s:
                prepared.run_options, prepared.replay = ordinary, False
            log.info("%s batch %d: CUDA graph replay %.3f ms, ordinary run %.3f ms: %s", self._name, batch,
                     replay_s * 1e3, ordinary_s * 1e3, "replay" if prepared.replay else "ordinary runs")
        return prepared

    def _best(self, binding: Any, options: Any) -> float:
        times = []
        for _ in range(TIMED_RUNS):
            started = self._clock()
            self._session.run_with_iobinding(binding, options)
            times.append(self._clock() - started)
        return min(times)
