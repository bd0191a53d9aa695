"""What GPU (if any) we are on, for engine-cache keys. No CUDA library is needed to ask."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache


@cache
def gpu_name() -> str | None:
    """Name of GPU 0 from nvidia-smi, or None on a machine without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "--id=0"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def engine_cache_key(trt_version: str, gpu: str | None = None) -> str:
    """Engines are tied to the GPU model and the TensorRT version: one cache folder per pair."""
    return f"{slug(gpu or gpu_name() or 'unknown-gpu')}-trt{slug(trt_version)}"
