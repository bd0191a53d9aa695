"""Page-locked host memory for GPU batches, through the CUDA runtime that ONNX Runtime already loaded.

Host-to-device copies from pageable memory go through a staging buffer in the driver; from page-locked
(pinned) memory they are one DMA transfer. ONNX Runtime's Python API cannot allocate pinned arrays, so
the batch buffers are ordinary numpy arrays registered with `cudaHostRegister`. Without a CUDA runtime
(a CPU machine) nothing is locked and the arrays work as they are.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SONAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")


def _loaded_cudart() -> str | None:
    """Path of a libcudart this process has mapped (ONNX Runtime's CUDA provider loads one)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.rsplit(" ", 1)[-1]
        if "/libcudart.so" in path:
            return path
    return None


class PageLocker:
    """`lock(array)` registers an array's memory with CUDA; `unlock_all()` releases every registration."""

    def __init__(self) -> None:
        self._cudart = None
        for name in (_loaded_cudart(), *SONAMES):
            if name is None:
                continue
            try:
                self._cudart = ctypes.CDLL(name)
                break
            except OSError:
                continue
        self._locked: list[np.ndarray] = []
        if self._cudart is None:
            log.info("no CUDA runtime library found: batch buffers stay pageable")

    @property
    def available(self) -> bool:
        return self._cudart is not None

    def lock(self, array: np.ndarray) -> bool:
        if self._cudart is None or not array.flags.c_contiguous or array.nbytes == 0:
            return False
        status = self._cudart.cudaHostRegister(ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes), 0)
        if status != 0:
            # A failed runtime call stays the thread's "last error" until read, and ONNX Runtime's next kernel
            # launch would report it as its own failure: read it now.
            self._cudart.cudaGetLastError()
            log.warning("cudaHostRegister failed (%d): batch buffer stays pageable", status)
            return False
        self._locked.append(array)  # keeps the memory alive while it is registered
        return True

    def unlock_all(self) -> None:
        for array in self._locked:
            self._cudart.cudaHostUnregister(ctypes.c_void_p(array.ctypes.data))
        self._locked.clear()

    def __del__(self) -> None:
        # Freed memory that is still registered would make the next registration of that address fail.
        if self._cudart is not None:
            self.unlock_all()
