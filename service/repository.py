"""Reading model-repository entries: `<repo>/<name>/manifest.json` + ONNX files.

The manifest is the whole contract between export/ and the service; its models live in the `contract` package
(export/ writes manifests through them). The service validates entries here, with the checks across fields and
files the models alone cannot make, so that a bad entry fails at start-up with a clear message, not on the first
request.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from contract import NAME_PATTERN, Manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepositoryEntry:
    name: str
    folder: Path
    manifest: Manifest

    def component_file(self, component: str, precision: str) -> Path:
        return self.folder / self.manifest.components[component].files[precision]  # type: ignore[index]


@dataclass(frozen=True)
class EntryFailure:
    name: str
    reason: str


class ManifestError(ValueError):
    pass


def read_entry(folder: Path) -> RepositoryEntry:
    path = folder / "manifest.json"
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ManifestError(f"{folder.name}: no manifest.json") from exc
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ManifestError(f"{folder.name}: invalid manifest.json: {exc}") from exc
    _check_contracts(folder.name, manifest)
    _check_files(folder, manifest)
    return RepositoryEntry(name=folder.name, folder=folder, manifest=manifest)


def _check_contracts(name: str, manifest: Manifest) -> None:
    """Every component the service would run has the contract that says how to run it."""
    if "encoder" not in manifest.components:
        raise ManifestError(f"{name}: manifest has no encoder component")
    if "predictor" in manifest.components and manifest.predictor is None:
        raise ManifestError(f"{name}: predictor component without a predictor contract")
    if "future" in manifest.components and manifest.future is None:
        raise ManifestError(f"{name}: future component without a future contract")
    if manifest.surprise is not None:
        pooled = manifest.predictor is not None and manifest.predictor.kind == "pooled"
        tokens = manifest.predictor is not None and manifest.predictor.kind == "vjepa2_ac"
        if manifest.surprise.metric == "l1_tokens" and manifest.future is None and not tokens:
            raise ManifestError(f"{name}: an l1_tokens surprise calibration needs the future component or "
                                "V-JEPA 2-AC's predictor")
        if manifest.surprise.metric == "l1_tokens" and manifest.future is not None and tokens:
            raise ManifestError(f"{name}: an l1_tokens surprise calibration is of one token predictor; this "
                                "entry has two (future and a V-JEPA 2-AC predictor)")
        if manifest.surprise.metric != "l1_tokens" and not pooled:
            raise ManifestError(f"{name}: a surprise calibration needs a pooled action-conditioned predictor")
    _check_heads(name, manifest)


def _check_heads(name: str, manifest: Manifest) -> None:
    """Every probe head has its graph and reads an output the encoder has."""
    for head, spec in manifest.heads.items():
        if not NAME_PATTERN.match(head) or spec.component not in manifest.components:
            raise ManifestError(f"{name}: head {head!r} has a bad name or no component {spec.component!r}")
        if spec.features not in manifest.components["encoder"].outputs:
            raise ManifestError(f"{name}: head {head!r} reads the encoder's {spec.features!r} output, which it lacks")


def _check_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is there (and every component has its fp32 graph)."""
    if manifest.planning is not None:
        for aid in (manifest.planning.controllable_projection, manifest.planning.action_readout):
            if aid is not None and not (folder / aid).is_file():
                raise ManifestError(f"{folder.name}: {aid} is listed but missing")
    for name, component in manifest.components.items():
        if "fp32" not in component.files:
            raise ManifestError(f"{folder.name}: component {name} has no fp32 file")
        for file in component.files.values():
            if not (folder / file).is_file():
                raise ManifestError(f"{folder.name}: {file} is listed in the manifest but missing")


def scan_repository(root: Path) -> tuple[list[RepositoryEntry], list[EntryFailure]]:
    """Every sub-folder with a manifest; hidden folders (exports in progress) are skipped."""
    if not root.is_dir():
        return [], [EntryFailure(name=str(root), reason="model repository folder does not exist")]
    entries, failures = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not NAME_PATTERN.match(folder.name):
            failures.append(EntryFailure(folder.name, "folder name is not a valid model name"))
            continue
        try:
            entries.append(read_entry(folder))
        except ManifestError as exc:
            log.error("model %s not loaded: %s", folder.name, exc)
            failures.append(EntryFailure(folder.name, str(exc)))
    return entries, failures
