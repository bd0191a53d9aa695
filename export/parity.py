"""Parity of an exported graph against the PyTorch reference on a fixed probe set."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort


@dataclass(frozen=True)
class ParityReport:
    min_cosine: float
    max_abs_diff: float
    probes: int

    def as_dict(self) -> dict[str, float | int]:
        return {"min_cosine": self.min_cosine, "max_abs_diff": self.max_abs_diff, "probes": self.probes}


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of a to the same row of b (rows = leading axis, rest flattened)."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(denom, 1e-30)


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> ParityReport:
    """Worst case over every output and every probe row."""
    cosines = [row_cosines(reference[name], candidate[name]).min() for name in reference]
    diffs = [np.abs(reference[name].astype(np.float64) - candidate[name]).max() for name in reference]
    probes = next(iter(reference.values())).shape[0]
    return ParityReport(min_cosine=float(min(cosines)), max_abs_diff=float(max(diffs)), probes=int(probes))


def run_onnx(path: Path, feeds: Mapping[str, np.ndarray], providers: list[str] | None = None) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def check_parity(
    path: Path,
    feeds: Mapping[str, np.ndarray],
    reference_fn: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
) -> ParityReport:
    return compare_outputs(reference_fn(feeds), run_onnx(path, feeds))
