"""The one interface the batcher sees: named float arrays in, named arrays out."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Engine(Protocol):
    name: str
    device: str
    precision: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every input and output has the batch on axis 0; thread-safe."""
        ...
