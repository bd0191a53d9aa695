"""manifest.json: identity and I/O contract of one model-repository entry.

The service trusts nothing else in the folder. The manifest's fields and its
schema version are the `contract` package's; this module writes them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract import Manifest


def state_dict_sha256(modules: Iterable[torch.nn.Module]) -> str:
    """Content hash of the weights (names, shapes, dtypes and bytes), independent of file format."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def embedding_space_id(
    family: str, checkpoint_sha256: str, preprocessing: Mapping[str, Any], pooling: str, dim: int
) -> str:
    """Vectors are comparable only if weights, preprocessing, pooling and dim all agree."""
    canonical = json.dumps(
        {"checkpoint": checkpoint_sha256, "preprocessing": preprocessing, "pooling": pooling, "dim": dim},
        sort_keys=True,
    )
    return f"{family}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def tool_versions() -> dict[str, str]:
    versions = {}
    for dist in ("jepa-serve", "torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@contextmanager
def staged_entry(out: Path, name: str, force: bool) -> Iterator[Path]:
    """Build `<out>/<name>/` in a hidden temp folder; when the block ends cleanly it replaces the entry in one
    rename, so the service never sees half an entry (hidden folders are skipped when it scans)."""
    target = out / name
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=out) as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # mkdtemp makes it private; the entry must be readable by the server user
        yield folder
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
        folder.mkdir()  # TemporaryDirectory cleanup must not fail on the moved folder


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """The fields the exporter set (defaults stay implicit, as the reader fills them in)."""
    path = folder / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json", exclude_unset=True), indent=2) + "\n")
    tmp.replace(path)
    return path
