"""ONNX Runtime engine: CPU, CUDA (with IO binding) and TensorRT execution providers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.runtime.gpu import engine_cache_key

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
    """fp16 only pays on a GPU (measured: 20-40% slower on CPU, REFERENCE.md §7)."""
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
    inputs: Mapping[str, Sequence[int]], cache_root: Path, precision: str, max_batch: int, opt_batch: int, trt_version: str
) -> dict[str, Any]:
    cache = cache_root / engine_cache_key(trt_version)
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        # Profiles must cover every dynamic input, or ORT rebuilds on a new shape (REFERENCE.md §2).
        "trt_profile_min_shapes": profile_shapes(inputs, 1),
        "trt_profile_opt_shapes": profile_shapes(inputs, opt_batch),
        "trt_profile_max_shapes": profile_shapes(inputs, max_batch),
    }


class OrtEngine:
    def __init__(
        self,
        name: str,
        path: Path,
        providers: Sequence[str],
        precision: str,
        intra_op_threads: int = 0,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        # One engine call at a time per batcher; parallel ops inside a call only fight for cores.
        options.inter_op_num_threads = 1
        extra = provider_options or {}
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=[(p, dict(extra.get(p, {}))) for p in providers]
        )
        self.name = name
        self.precision = precision
        self.device = self._session.get_providers()[0]
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        # On a GPU, IO binding avoids ORT's extra staging copies of every input and output.
        self._io_binding = self.device in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        log.info("engine %s: %s on %s (%s)", name, path.name, self.device, precision)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._io_binding:
            return self._run_bound(inputs)
        outputs = self._session.run(list(self.output_names), {k: inputs[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs, strict=True))

    def _run_bound(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        binding = self._session.io_binding()
        for name in self.input_names:
            binding.bind_cpu_input(name, np.ascontiguousarray(inputs[name]))
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))
