"""ONNX Runtime engine (CPU; CUDA and TensorRT execution providers when installed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

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
        order = [PROVIDER_NAMES[requested], "CPUExecutionProvider"]
    chosen = [p for p in dict.fromkeys(order) if p in have]
    if requested != "auto" and PROVIDER_NAMES[requested] not in have:
        log.warning("provider %s requested but not available (have %s); using CPU", requested, sorted(have))
    return chosen


def choose_precision(requested: str, providers: list[str], has_fp16: bool) -> str:
    """fp16 only pays on a GPU (measured: 20-40% slower on CPU, REFERENCE.md §7)."""
    on_gpu = providers[0] != "CPUExecutionProvider"
    if requested == "fp16":
        return "fp16" if has_fp16 else "fp32"
    if requested == "auto" and on_gpu and has_fp16:
        return "fp16"
    return "fp32"


class OrtEngine:
    def __init__(self, name: str, path: Path, providers: list[str], precision: str, intra_op_threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        # One engine call at a time per batcher; parallel ops inside a call only fight for cores.
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.name = name
        self.precision = precision
        self.device = self._session.get_providers()[0]
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        log.info("engine %s: %s on %s (%s)", name, path.name, self.device, precision)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session.run(list(self.output_names), {k: inputs[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs, strict=True))
