"""The one export pipeline every model family goes through.

`export_component`: a PyTorch module -> fp32 ONNX with a dynamic batch that must pass its parity gate against the
module, then an fp16 copy kept only if it passes its own. `write_entry`: builds `<out>/<name>/` in a hidden
folder and renames it into place, with a manifest typed by the contract the service reads (contract/manifest.py),
validated with extra fields forbidden so a misspelt key fails the export instead of vanishing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract import SCHEMA_VERSION, ComponentSpec, Manifest
from export.attention import DEFAULT_ATTENTION, FUSED_KINDS, attention_layers, trace_graph
from export.manifest import staged_entry, tool_versions, write_manifest
from export.onnx_graph import convert_fp16, external_data_file
from export.parity import ParityReport, check_parity
from export.pixels import PixelInput, to_pixels

FP32_GATE = 0.99999
FP16_GATE = 0.999
PROBES = 16
# ImageNet normalisation: the preprocessing of ViT, I-JEPA and V-JEPA 2 checkpoints
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ParityError(RuntimeError):
    """The exported fp32 graph does not reproduce the PyTorch model."""


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    name: str = "demo"
    out: Path = Path("model_repository")
    fp32_gate: float = FP32_GATE
    fp16_gate: float = FP16_GATE
    fp16: bool = True
    # ONNX Runtime's transformer fusions (export/fusion.py) in place of the traced graphs, behind a parity gate
    fuse: bool = False
    # attention as one operator (export/attention.py): mha | onnx | unfused; a fused graph that fails its gate
    # (or will not trace, load or run) is replaced by the unfused one, with the reason in the parity record
    attention: str = DEFAULT_ATTENTION
    # what an encoder's pixel_values are: uint8 pixels normalised inside the graph (export/pixels.py), or the
    # float32 pixels the host normalised
    pixel_dtype: str = "uint8"
    force: bool = False


def image_probes(n: int, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Half white noise, half smooth colour gradients; normalised like served images. (n, 3, size, size)"""
    rng = np.random.default_rng(1234)
    noise = rng.random((n - n // 2, 3, size, size))
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    phases = rng.random((n // 2, 3, 2)) * 2 * np.pi
    smooth = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(phases[..., :1, None]) + yy) + phases[..., 1:, None])
    pixels = np.concatenate([noise, smooth.reshape(n // 2, 3, size, size)])
    m = np.asarray(mean).reshape(1, 3, 1, 1)
    s = np.asarray(std).reshape(1, 3, 1, 1)
    return ((pixels - m) / s).astype(np.float32)


def torch_runner(
    module: torch.nn.Module, output_names: tuple[str, ...]
) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(v) for v in feeds.values()))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.numpy() for name, out in zip(output_names, outputs, strict=True)}

    return run


def export_component(
    module: torch.nn.Module,
    feeds: dict[str, np.ndarray],
    output_names: tuple[str, ...],
    folder: Path,
    stem: str,
    options: ExportOptions,
    log: Callable[[str], None],
) -> ComponentSpec:
    """fp32 graph (must pass its gate), then an fp16 copy kept only if it passes its own; each with the fused
    attention asked for where it passes its gate, else the unfused graph (the manifest's `attention` says which)."""
    fp32_path = folder / f"{stem}.onnx"
    log(f"[{stem}] tracing to ONNX")
    example = tuple(torch.from_numpy(v[:2]) for v in feeds.values())
    reference = torch_runner(module, output_names)
    traced = _Tracer(module, example, tuple(feeds), output_names)
    kind, fp32, fallback = _fp32_graph(traced, fp32_path, feeds, reference, options, stem, log)
    log(f"[{stem}] fp32 parity (attention: {kind}): min cosine {fp32.min_cosine:.7f}, "
        f"max |diff| {fp32.max_abs_diff:.2e}")
    if fp32.min_cosine < options.fp32_gate:
        raise ParityError(f"{stem}: fp32 ONNX min cosine {fp32.min_cosine:.7f} < gate {options.fp32_gate}")
    files = {"fp32": fp32_path.name}
    attention = {"fp32": kind}
    parity: dict[str, Any] = {"fp32": fp32.as_dict(), "fp32_gate": options.fp32_gate, "fp16_gate": options.fp16_gate}
    if options.fp16:
        parity["fp16"] = fp16_copy(fp32_path, feeds, reference, options.fp16_gate, stem, log)
        attention["fp16"] = kind
        if not parity["fp16"].get("kept") and kind in FUSED_KINDS:
            fallback["fp16"] = parity["fp16"].get("error") or (
                f"min cosine {parity['fp16']['min_cosine']:.6f} < gate {options.fp16_gate}")
            log(f"[{stem}] fp16 with fused attention ({kind}) refused: {fallback['fp16']}; trying the unfused graph")
            parity["fp16"], attention["fp16"] = _unfused_fp16(traced, folder, feeds, reference, options, stem, log)
        if parity["fp16"].get("kept"):
            files["fp16"] = f"{stem}.fp16.onnx"
        else:
            del attention["fp16"]
    if fallback:
        parity["attention_fallback"] = fallback
    inputs = {name: [-1, *value.shape[1:]] for name, value in feeds.items()}
    return ComponentSpec(files=files, inputs=inputs, outputs=list(output_names), parity=parity, attention=attention)


@dataclass(frozen=True)
class _Tracer:
    """What tracing one component needs, so it can be traced again with another attention."""

    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @property
    def has_attention(self) -> bool:
        return attention_layers(self.module) > 0

    def trace(self, path: Path, kind: str) -> None:
        trace_graph(self.module, self.example, path, self.input_names, self.output_names, kind)


def _fp32_graph(
    traced: _Tracer, path: Path, feeds: dict[str, np.ndarray],
    reference: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]], options: ExportOptions, stem: str,
    log: Callable[[str], None],
) -> tuple[str, ParityReport, dict[str, str]]:
    """The fp32 graph with the attention asked for if it traces, loads, runs and passes the gate, else the unfused
    one; -> the attention it has (none: a model without attention layers), its parity, why a fused one was refused."""
    if not traced.has_attention:
        traced.trace(path, "unfused")
        return "none", check_parity(path, feeds, reference), {}
    kind = options.attention
    if kind in FUSED_KINDS:
        try:
            traced.trace(path, kind)
            report = check_parity(path, feeds, reference)
        except Exception as exc:  # a graph ONNX Runtime will not build or run is a failed gate, not a failed export
            reason = _first_line(exc)
        else:
            if report.min_cosine >= options.fp32_gate:
                return kind, report, {}
            reason = f"min cosine {report.min_cosine:.7f} < gate {options.fp32_gate}"
        log(f"[{stem}] fp32 with fused attention ({kind}) refused: {reason}; keeping the unfused graph")
        for leftover in (path, external_data_file(path)):
            leftover.unlink(missing_ok=True)
        traced.trace(path, "unfused")
        return "unfused", check_parity(path, feeds, reference), {"fp32": reason}
    traced.trace(path, "unfused")
    return "unfused", check_parity(path, feeds, reference), {}


def _unfused_fp16(
    traced: _Tracer, folder: Path, feeds: dict[str, np.ndarray],
    reference: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]], options: ExportOptions, stem: str,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], str]:
    """The fp16 copy converted from an unfused fp32 graph traced beside the fused one (then deleted)."""
    scratch = folder / f"{stem}.unfused.onnx"
    try:
        traced.trace(scratch, "unfused")
        return fp16_copy(scratch, feeds, reference, options.fp16_gate, stem, log), "unfused"
    finally:
        for leftover in (scratch, external_data_file(scratch)):
            leftover.unlink(missing_ok=True)


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]


def export_pixel_component(
    module: torch.nn.Module,
    probes: np.ndarray,
    output_names: tuple[str, ...],
    folder: Path,
    stem: str,
    options: ExportOptions,
    log: Callable[[str], None],
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    layout: str,
) -> ComponentSpec:
    """A component whose one input is `pixel_values`: with uint8 pixels (the default) the graph normalises them
    itself and is gated against the PyTorch model fed the float normalisation of the same uint8 pixels; `probes`
    are normalised float pixels either way."""
    if options.pixel_dtype == "float32":
        return export_component(module, {"pixel_values": probes}, output_names, folder, stem, options, log)
    wrapped = PixelInput(module, mean, std, layout, probes.ndim).eval()
    pixels = to_pixels(probes, mean, std, layout)
    return export_component(wrapped, {"pixel_values": pixels}, output_names, folder, stem, options, log)


def fp16_copy(
    fp32_path: Path,
    feeds: dict[str, np.ndarray],
    reference: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    gate: float,
    stem: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Write `<stem>.fp16.onnx` beside the fp32 graph if it converts, runs and passes its gate; the parity
    record says which (a conversion that fails or writes an invalid graph is a failed gate, not a failed export)."""
    fp16_path = fp32_path.with_name(f"{stem}.fp16.onnx")
    try:
        convert_fp16(fp32_path, fp16_path)
        report = check_parity(fp16_path, feeds, reference)
    except Exception as exc:
        for leftover in (fp16_path, external_data_file(fp16_path)):
            leftover.unlink(missing_ok=True)
        reason = _first_line(exc)
        log(f"[{stem}] fp16 conversion failed ({reason}): REJECTED, not written")
        return {"error": reason, "kept": False}
    kept = report.min_cosine >= gate
    if kept:
        log(f"[{stem}] fp16 parity: min cosine {report.min_cosine:.7f} >= {gate}: kept")
    else:
        fp16_path.unlink()
        log(f"[{stem}] fp16 parity: min cosine {report.min_cosine:.7f} < {gate}: REJECTED, not written")
    return {**report.as_dict(), "kept": kept}


def with_external_data(folder: Path, component: ComponentSpec) -> ComponentSpec:
    """List each kept graph's weight file (models over 2 GiB) in its component; delete those of graphs not kept."""
    kept = {}
    for precision, name in component.files.items():
        data = external_data_file(folder / name)
        if data.is_file():
            data.chmod(0o644)  # onnx.save writes it owner-only; the server may run as another user
            kept[precision] = data.name
    for data in folder.glob("*.onnx.data"):
        if data.name not in kept.values():
            data.unlink()  # e.g. the weights of an fp16 copy that failed its gate
    return component.model_copy(update={"external_data": kept}) if kept else component


def write_entry(
    options: ExportOptions,
    build: Callable[[Path], dict[str, Any]],
    log: Callable[[str], None],
    finish: Callable[[Path], dict[str, Any]] | None = None,
) -> Path:
    """Build `<out>/<name>/` in a hidden temp folder, then rename it into place.

    `build(folder)` writes the graphs and returns the manifest's fields (components as ComponentSpec); name,
    creation time and tool versions are added here, and every component's external-data files recorded.
    `finish(folder)`, if given, runs on the written entry (ONNX Runtime's fusions read its manifest) and returns
    fields to add to the manifest.
    """
    with staged_entry(options.out, options.name, options.force) as folder:
        fields = build(folder)
        fields["components"] = {name: with_external_data(folder, spec) for name, spec in fields["components"].items()}
        manifest = Manifest.model_validate({
            "schema_version": SCHEMA_VERSION,
            "name": options.name,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "tools": tool_versions(),
            **fields,
        }, extra="forbid")
        write_manifest(folder, manifest)
        if finish is not None:
            added = finish(folder)
            manifest = Manifest.model_validate({**manifest.model_dump(exclude_unset=True), **added}, extra="forbid")
            write_manifest(folder, manifest)
    target = options.out / options.name
    log(f"wrote {target}")
    return target


def rewrite_manifest(folder: Path, fields: Mapping[str, Any]) -> Manifest:
    """An existing entry's manifest with `fields` changed (a probe head added, say), validated with the model the
    service reads before it replaces the old one: a field the service would refuse is never written."""
    manifest = Manifest.model_validate(dict(fields))
    write_manifest(folder, manifest)
    return manifest
