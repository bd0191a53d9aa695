"""ONNX Runtime engine: CPU, CUDA (with IO binding) and TensorRT execution providers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.runtime.cuda_graphs import CudaGraphs, OrtDeviceIO, graph_shapes_missing
from service.runtime.engine import HostBuffers
from service.runtime.gpu import engine_cache_key
from service.runtime.pinned import PageLocker

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def available_providers(requested: str = "auto") -> list[str]:
    """Providers to try, best first; CPU is always last as a fallback."""
    have = set(ort.get_available_providers())
    if requested == "auto":
        # TensorRT EP builds engines at first run (minutes); it is opt-in, not auto.
        order = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        order = [PROVIDER_NAMES[requested], "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in dict.fromkeys(order) if p in have]
    if requested != "auto" and PROVIDER_NAMES[requested] not in have:
        log.warning("provider %s requested but not available (have %s); using %s", requested, sorted(have), chosen[0])
    return chosen


def choose_precision(requested: str, providers: Sequence[str], has_fp16: bool) -> str:
    """fp16 only pays on a GPU (measured: 20-40% slower than fp32 on CPU)."""
    on_gpu = providers[0] != "CPUExecutionProvider"
    if requested == "fp16":
        return "fp16" if has_fp16 else "fp32"
    if requested == "auto" and on_gpu and has_fp16:
        return "fp16"
    return "fp32"


def profile_shapes(inputs: Mapping[str, Sequence[int]], batch: int) -> str:
    """TensorRT EP profile string: 'a:1x3x64x64,b:1x2' with the dynamic batch axis set to `batch`."""
    return ",".join(f"{name}:" + "x".join(str(batch if d < 0 else d) for d in shape) for name, shape in inputs.items())


def tensorrt_options(
    inputs: Mapping[str, Sequence[int]],
    cache_root: Path,
    precision: str,
    max_batch: int,
    opt_batch: int,
    trt_version: str,
) -> dict[str, Any]:
    cache = cache_root / engine_cache_key(trt_version)
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        # Profiles must cover every dynamic input, or ORT rebuilds the engine on a new shape.
        "trt_profile_min_shapes": profile_shapes(inputs, 1),
        "trt_profile_opt_shapes": profile_shapes(inputs, opt_batch),
        "trt_profile_max_shapes": profile_shapes(inputs, max_batch),
    }


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def static_shape(shape: Sequence[Any]) -> tuple[int, ...] | None:
    """The per-item shape (every axis but the batch) if every one is a fixed number, else None."""
    rest = tuple(shape[1:])
    return rest if all(isinstance(d, int) and d > 0 for d in rest) else None


@dataclass
class BoundBatch:
    """One batch size's IO binding: inputs in preallocated device buffers, the requested outputs written
    into host arrays (page-locked on a GPU), every other output left in device memory."""

    binding: Any
    inputs: dict[str, Any]  # name -> OrtValue on the device
    host_outputs: dict[str, np.ndarray]  # requested outputs with a fixed shape: filled by the run
    device_outputs: list[Any] = field(default_factory=list)  # kept alive while bound
    allocated: tuple[str, ...] = ()  # requested outputs ONNX Runtime allocates per run (shape not fixed)


class OrtEngine:
    """One ONNX Runtime session. On a GPU every run is IO-bound: only the requested outputs cross to the host.

    `bind_device` forces the bound path on another device type ("cpu" in tests); None = "cuda" on a GPU
    provider, plain `session.run` on the CPU (where there is no device to keep outputs on). `cuda_graphs` (on,
    auto; off by default) replays one captured CUDA graph per batch size (service/runtime/cuda_graphs.py) on the
    CUDA provider, or with `bind_device` the same fixed per-batch-size bindings elsewhere (tests).
    """

    def __init__(
        self,
        name: str,
        path: Path,
        providers: Sequence[str],
        precision: str,
        intra_op_threads: int = 0,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        bind_device: str | None = None,
        cuda_graphs: str = "off",
        spinning: bool = False,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        # Spinning pool threads answer the next op a few microseconds sooner, and burn a core while they wait:
        # measured here, a near-free engine's pool thread took a quarter of two cores from decoding.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        # One engine call at a time per instance; parallel ops inside a call only fight for cores.
        options.inter_op_num_threads = 1
        extra = {provider: dict(values) for provider, values in (provider_options or {}).items()}
        self.name = name
        graphs = cuda_graphs != "off" and providers[0] == "CUDAExecutionProvider"
        self._session, graphs = self._open_session(path, options, providers, extra, graphs)
        self.precision = precision
        self.device = self._session.get_providers()[0]
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        self._in_shapes = {i.name: static_shape(i.shape) for i in self._session.get_inputs()}
        self.input_dtypes = {i.name: np.dtype(ORT_DTYPES.get(i.type, np.float32)) for i in self._session.get_inputs()}
        self._out_shapes = {o.name: static_shape(o.shape) for o in self._session.get_outputs()}
        self._out_dtypes = {o.name: np.dtype(ORT_DTYPES.get(o.type, np.float32)) for o in self._session.get_outputs()}
        on_gpu = self.device in GPU_PROVIDERS
        self._bind_device = bind_device or ("cuda" if on_gpu else None)
        self._device_id = int(extra.get(self.device, {}).get("device_id", 0)) if on_gpu else 0
        self._locker = PageLocker() if on_gpu else None
        lock = self._locker.lock if self._locker is not None and self._locker.available else None
        fixed = {n: s for n, s in self._in_shapes.items() if s is not None}
        self._host = HostBuffers(fixed, {n: self.input_dtypes[n] for n in fixed}, lock)
        self._lock_pages = lock
        self._bound: dict[tuple[int, tuple[str, ...]], BoundBatch] = {}
        # the fixed bindings run wherever the session has graphs, or on a device the caller chose (tests)
        use_graphs = cuda_graphs != "off" and (graphs or bind_device not in (None, "cuda"))
        self._graphs = self._graph_bookkeeping(cuda_graphs, graphs, path, options, providers, extra) if use_graphs \
            else None
        self.cuda_graphs = cuda_graphs if self._graphs is not None else "off"
        self._guard = threading.Lock()  # one run at a time: the bound buffers belong to one batch
        self.host_bytes = 0  # bytes handed to the host by the last run: only what was asked for
        log.info("engine %s: %s on %s (%s, %s, CUDA graphs %s)", name, path.name, self.device, precision,
                 f"bound to {self._bind_device}" if self._bind_device else "host arrays", self.cuda_graphs)

    def _open_session(self, path: Path, options: Any, providers: Sequence[str], extra: dict[str, dict[str, Any]],
                      graphs: bool) -> tuple[Any, bool]:
        """The session, with CUDA graphs enabled if asked and ONNX Runtime will build it so (else without);
        -> (session, whether it has them)."""
        def open_with(values: dict[str, dict[str, Any]]) -> Any:
            return ort.InferenceSession(str(path), sess_options=options,
                                        providers=[(p, dict(values.get(p, {}))) for p in providers])

        if not graphs:
            return open_with(extra), False
        cuda = {**extra.get("CUDAExecutionProvider", {}), "enable_cuda_graph": "1"}
        try:
            return open_with({**extra, "CUDAExecutionProvider": cuda}), True
        except Exception as exc:  # e.g. a compute node placed on the CPU between device kernels
            log.warning("engine %s: ONNX Runtime will not build %s with CUDA graphs (%s); running without them",
                        self.name, path.name, (str(exc).splitlines() or [type(exc).__name__])[0])
            return open_with(extra), False

    def _graph_bookkeeping(self, mode: str, graphs: bool, path: Path, options: Any, providers: Sequence[str],
                           extra: dict[str, dict[str, Any]]) -> CudaGraphs | None:
        """Fixed per-batch-size bindings with their graph ids; None (and a session without graphs) where an input
        or output has no fixed item shape."""
        missing = graph_shapes_missing(self._in_shapes, self._out_shapes)
        if missing:
            log.warning("engine %s: no CUDA graphs: %s have no fixed item shape", self.name, missing)
            if graphs:
                self._session, _ = self._open_session(path, options, providers, extra, graphs=False)
            return None
        inputs = {n: (self._in_shapes[n], self.input_dtypes[n]) for n in self.input_names}
        outputs = {n: (self._out_shapes[n], self._out_dtypes[n]) for n in self.output_names}
        return CudaGraphs(self._session, OrtDeviceIO(self._bind_device or "cuda", self._device_id), inputs, outputs,
                          mode, self.name)

    def input_buffers(self, batch: int) -> dict[str, np.ndarray]:
        return self._host.get(batch)

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = self.output_names if outputs is None else tuple(n for n in self.output_names if n in set(outputs))
        if not names:
            raise ValueError(
                f"{self.name}: none of the outputs {list(outputs or [])} exists (have {list(self.output_names)})"
            )
        with self._guard:
            if self._graphs is not None:
                result = self._run_graph(inputs, names)
            elif self._bind_device is None:
                values = self._session.run(list(names), {k: inputs[k] for k in self.input_names})
                result = dict(zip(names, values, strict=True))
            else:
                result = self._run_bound(inputs, names)
            self.host_bytes = sum(v.nbytes for v in result.values())
            return result

    def _run_bound(self, inputs: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        batch = int(next(iter(inputs.values())).shape[0])
        bound = self._bound.get((batch, names))
        if bound is None:
            bound = self._bound[(batch, names)] = self._bind(batch, names)
        for name, value in bound.inputs.items():
            # one host -> device copy per input; a DMA transfer when the host array is page-locked
            value.update_inplace(np.ascontiguousarray(inputs[name], self.input_dtypes[name]))
        self._session.run_with_iobinding(bound.binding)
        result = {name: array.copy() for name, array in bound.host_outputs.items()}  # buffers are reused
        if bound.allocated:
            produced = bound.binding.get_outputs()
            for name in bound.allocated:
                result[name] = produced[self.output_names.index(name)].numpy()
        return result

    def _run_graph(self, inputs: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The batch size's fixed buffers: inputs copied in, its graph replayed, the outputs asked for copied out."""
        prepared = self._graphs.get(int(next(iter(inputs.values())).shape[0]))
        for name, value in prepared.inputs.items():
            value.update_inplace(np.ascontiguousarray(inputs[name], self.input_dtypes[name]))
        self._session.run_with_iobinding(prepared.binding, prepared.run_options)
        result = {}
        for name in names:
            array = prepared.outputs[name].numpy()  # from device memory: a new host array; on the CPU: a view
            result[name] = array if array.flags.owndata else array.copy()  # the buffers are reused
        return result

    def _bind(self, batch: int, names: tuple[str, ...]) -> BoundBatch:
        binding = self._session.io_binding()
        device_inputs = {}
        for name in self.input_names:
            shape = self._in_shapes[name]
            if shape is None:
                raise ValueError(f"{self.name}: input {name} has no fixed item shape; IO binding needs one")
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                [batch, *shape], self.input_dtypes[name], self._bind_device, self._device_id
            )
            binding.bind_ortvalue_input(name, value)
            device_inputs[name] = value
        bound = BoundBatch(binding=binding, inputs=device_inputs, host_outputs={})
        allocated = []
        for name in self.output_names:
            shape, dtype = self._out_shapes[name], self._out_dtypes[name]
            if name in names and shape is not None:
                array = np.empty((batch, *shape), dtype)
                if self._lock_pages is not None:
                    self._lock_pages(array)
                binding.bind_output(name, "cpu", 0, dtype, list(array.shape), array.ctypes.data)
                bound.host_outputs[name] = array
            elif name in names:
                binding.bind_output(name, "cpu")
                allocated.append(name)
            elif shape is not None:  # not asked for: written to device memory and never copied
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    [batch, *shape], dtype, self._bind_device, self._device_id
                )
                binding.bind_ortvalue_output(name, value)
                bound.device_outputs.append(value)
            else:
                binding.bind_output(name, self._bind_device, self._device_id)
        bound.allocated = tuple(allocated)
        return bound
