"""Native TensorRT engine: a plan built from the ONNX file on the target GPU, cached per GPU + TensorRT version.

Needs the `gpu` extra (tensorrt-cu12, cuda-python) and an NVIDIA GPU; imported only when
JEPA_PROVIDERS=tensorrt_native. fp16 plans are built from the parity-gated fp16 ONNX as a
strongly typed network, so LayerNorm/softmax stay fp32 exactly as the gate measured them
(a plain FP16 builder flag lets TensorRT choose, and LayerNorm in fp16 overflows in ViTs).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from service.runtime.gpu import engine_cache_key

log = logging.getLogger(__name__)


def _check(result) -> object:
    """cuda-python returns (err, value...) tuples; raise on any error."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTEngine:
    def __init__(
        self,
        name: str,
        onnx_path: Path,
        cache_root: Path,
        precision: str,
        inputs: Mapping[str, Sequence[int]],
        max_batch: int,
        opt_batch: int,
    ) -> None:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        self._trt, self._cudart = trt, cudart
        self.name = name
        self.precision = precision
        self.device = "TensorRT"
        self._logger = trt.Logger(trt.Logger.WARNING)
        cache = cache_root / engine_cache_key(trt.__version__)
        cache.mkdir(parents=True, exist_ok=True)
        plan = cache / f"{onnx_path.stem}.b{max_batch}-o{opt_batch}.plan"
        if not plan.exists():
            log.info("building TensorRT engine for %s (%s); this can take minutes", name, precision)
            plan.write_bytes(self._build(onnx_path, inputs, max_batch, opt_batch))
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan.read_bytes())
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = tuple(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.input_dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self.input_names}
        self._stream = _check(cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._lock = threading.Lock()
        log.info("engine %s: %s on TensorRT %s (%s)", name, plan.name, trt.__version__, precision)

    def _build(self, onnx_path: Path, inputs: Mapping[str, Sequence[int]], max_batch: int, opt_batch: int) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if self.precision == "fp16" else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        # from the file, not its bytes: weights of graphs over 2 GiB live in a `.onnx.data` file beside it
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        for name, shape in inputs.items():
            low, opt, high = (tuple(b if d < 0 else d for d in shape) for b in (1, opt_batch, max_batch))
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build {onnx_path.name}")
        return bytes(serialized)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _check(self._cudart.cudaFree(pointer))
            pointer = _check(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def input_buffers(self, batch: int) -> dict[str, np.ndarray]:
        return {}  # the batcher stacks; inputs are copied from there with cudaMemcpyAsync

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        cudart, trt = self._cudart, self._trt
        wanted = set(self.output_names if outputs is None else outputs)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            for name in self.input_names:
                dtype = trt.nptype(self._engine.get_tensor_dtype(name))
                array = np.ascontiguousarray(inputs[name], dtype=dtype)
                self._context.set_input_shape(name, array.shape)
                pointer = self._device_buffer(name, array.nbytes)
                _check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, h2d, self._stream))
                self._context.set_tensor_address(name, pointer)
            results = {}
            for name in self.output_names:
                dtype = trt.nptype(self._engine.get_tensor_dtype(name))
                array = np.empty(tuple(self._context.get_tensor_shape(name)), dtype=dtype)
                self._context.set_tensor_address(name, self._device_buffer(name, array.nbytes))
                if name in wanted:  # outputs nobody asked for stay in device memory
                    results[name] = array
            if not self._context.execute_async_v3(self._stream):
                raise RuntimeError(f"TensorRT execution failed for {self.name}")
            for name, array in results.items():
                pointer = self._buffers[name][0]
                _check(cudart.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, d2h, self._stream))
            _check(cudart.cudaStreamSynchronize(self._stream))
        return {name: array.astype(np.float32, copy=False) for name, array in results.items()}
