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
from export.normalisation_fold import NotFoldable, fold_normalisation
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
    # uint8 graphs: fold the pixel normalisation into the patch-embedding Conv (export/normalisation_fold.py) where
    # it folds exactly and passes the gates; a graph where it does not keeps its Mul + Add, and the parity record says
    # why
    fold_normalisation: bool = True
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
    *,
    normalises_pixels: bool = False,
) -> ComponentSpec:
    """fp32 graph (must pass its gate), then an fp16 copy kept only if it passes its own; each with the fused
    attention asked for where it passes its gate, else the unfused graph (the manifest's `attention` says which).
    A graph that starts by normalising uint8 pixels (`normalises_pixels`) has that normalisation folded into its
    patch-embedding Conv where it folds exactly and passes the same gates, else kept (`normalisation` says which)."""
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
    gate = _Gate(feeds, reference, options, stem, log)
    sources = [_Source(fp32_path, kind, "unfolded" if normalises_pixels else None)]
    fold_fallback: dict[str, str] = {}
    try:
        if normalises_pixels and options.fold_normalisation:
            sources, fp32, fold_fallback = _fold_fp32(sources[0], fp32, gate)
        parity: dict[str, Any] = {"fp32": fp32.as_dict(), "fp32_gate": options.fp32_gate,
                                  "fp16_gate": options.fp16_gate}
        graphs = {"fp32": sources[0]}
        if options.fp16:
            parity["fp16"], fp16_source = _fp16_graph(traced, sources, gate, fallback, fold_fallback)
            if fp16_source is not None:
                graphs["fp16"] = fp16_source
    finally:
        _remove(*(folder / f"{stem}{scratch}.onnx" for scratch in SCRATCH_GRAPHS))
    if fallback:
        parity["attention_fallback"] = fallback
    if fold_fallback:
        parity["normalisation_fallback"] = fold_fallback
    normalisation = {precision: source.normalisation for precision, source in graphs.items() if source.normalisation}
    return ComponentSpec(
        files={"fp32": fp32_path.name, **({"fp16": f"{stem}.fp16.onnx"} if "fp16" in graphs else {})},
        inputs={name: [-1, *value.shape[1:]] for name, value in feeds.items()}, outputs=list(output_names),
        parity=parity, attention={precision: source.attention for precision, source in graphs.items()},
        **({"normalisation": normalisation} if normalisation else {}))  # absent, not {}, where there is none


# graphs an export writes beside `<stem>.onnx` while it chooses, deleted when it is done
SCRATCH_GRAPHS = (".folded", ".unfolded", ".unfused", ".unfused.folded")


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


@dataclass(frozen=True)
class _Gate:
    """What gating another graph of one component needs."""

    feeds: dict[str, np.ndarray]
    reference: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    options: ExportOptions
    stem: str
    log: Callable[[str], None]


@dataclass(frozen=True)
class _Source:
    """An fp32 graph of a component: the attention it has, and its pixel normalisation (folded into the
    patch-embedding Conv, unfolded, or None: the graph takes no uint8 pixels)."""

    path: Path
    attention: str
    normalisation: str | None


def _remove(*graphs: Path) -> None:
    for graph in graphs:
        for leftover in (graph, external_data_file(graph)):
            leftover.unlink(missing_ok=True)


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
        _remove(path)
        traced.trace(path, "unfused")
        return "unfused", check_parity(path, feeds, reference), {"fp32": reason}
    traced.trace(path, "unfused")
    return "unfused", check_parity(path, feeds, reference), {}


def _folded(src: Path, dst: Path) -> str | None:
    """Write the graph at `src` with its pixel normalisation folded (export/normalisation_fold.py) at `dst`;
    -> None, or why it was not (then nothing is written)."""
    try:
        fold_normalisation(src, dst)
    except Exception as exc:  # a graph that will not fold keeps its normalisation: never a failed export
        _remove(dst)
        return str(exc) if isinstance(exc, NotFoldable) else _first_line(exc)
    return None


def _fold_fp32(
    source: _Source, report: ParityReport, gate: _Gate
) -> tuple[list[_Source], ParityReport, dict[str, str]]:
    """Fold the fp32 graph's normalisation if it folds and the folded graph passes the fp32 gate (the unfolded graph
    stays beside it for the fp16 copy's fallback) -> the fp32 graphs to convert to fp16 from, in the order to try
    them, the kept graph's parity, and why it was not folded."""
    path, stem = source.path, gate.stem
    folded = path.with_name(f"{stem}.folded.onnx")
    reason = _folded(path, folded)
    if reason is None:
        try:
            folded_report = check_parity(folded, gate.feeds, gate.reference)
        except Exception as exc:  # a graph ONNX Runtime will not build or run is a failed gate
            reason = _first_line(exc)
        else:
            if folded_report.min_cosine < gate.options.fp32_gate:
                reason = f"min cosine {folded_report.min_cosine:.7f} < gate {gate.options.fp32_gate}"
    if reason is not None:
        _remove(folded)
        gate.log(f"[{stem}] fp32 pixel normalisation not folded: {reason}")
        return [source], report, {"fp32": reason}
    unfolded = path.with_name(f"{stem}.unfolded.onnx")
    path.replace(unfolded)  # an external-data file is named in the graph, and stays where it is
    folded.replace(path)
    gate.log(f"[{stem}] fp32 pixel normalisation folded into the patch embedding: min cosine "
             f"{folded_report.min_cosine:.7f}, max |diff| {folded_report.max_abs_diff:.2e}")
    return ([_Source(path, source.attention, "folded"), _Source(unfolded, source.attention, "unfolded")],
            folded_report, {})


def _fp16_graph(
    traced: _Tracer, sources: list[_Source], gate: _Gate, attention_fallback: dict[str, str],
    fold_fallback: dict[str, str],
) -> tuple[dict[str, Any], _Source | None]:
    """The fp16 copy converted from the first of `sources` (the fp32 graph, then its unfolded graph) that passes
    its gate, else from an unfused graph traced beside a fused one (folded as the fp32 graph is, if it folds) ->
    its parity record and the graph it was converted from (None: no fp16 copy is kept); the fallbacks say why."""
    record, kept, failures = _first_kept(sources, gate)
    kind, not_folded = sources[0].attention, None
    if kept is None and kind in FUSED_KINDS:
        attention_fallback["fp16"] = failures[-1]  # that of the unfolded graph where there are two
        gate.log(f"[{gate.stem}] fp16 with fused attention ({kind}) refused: {failures[-1]}; trying the unfused "
                 "graph")
        unfused, not_folded = _unfused_sources(traced, sources[0], gate)
        record, kept, failures = _first_kept(unfused, gate)
    if kept is not None and kept.normalisation == "unfolded" and sources[0].normalisation == "folded":
        # the folded graph of the same attention was tried just before, unless it would not fold
        fold_fallback["fp16"] = failures[-1] if failures else str(not_folded)
    return record, kept


def _first_kept(sources: list[_Source], gate: _Gate) -> tuple[dict[str, Any], _Source | None, list[str]]:
    """fp16 copies of `sources` in turn until one passes its gate -> its record (else the last one's), its source,
    and why each one before it was refused."""
    failures: list[str] = []
    for source in sources:
        record = fp16_copy(source.path, gate.feeds, gate.reference, gate.options.fp16_gate, gate.stem, gate.log)
        if record.get("kept"):
            return record, source, failures
        failures.append(record.get("error") or f"min cosine {record['min_cosine']:.6f} < gate "
                                                f"{gate.options.fp16_gate}")
    return record, None, failures


def _unfused_sources(traced: _Tracer, fused: _Source, gate: _Gate) -> tuple[list[_Source], str | None]:
    """An unfused graph traced beside the fused one (deleted when the export is done), and first its folded graph
    where the fused fp32 graph is folded; -> those, and why the unfused graph was not folded where it was not."""
    scratch = fused.path.with_name(f"{gate.stem}.unfused.onnx")
    traced.trace(scratch, "unfused")
    unfused = _Source(scratch, "unfused", "unfolded" if fused.normalisation else None)
    if fused.normalisation != "folded":
        return [unfused], None
    folded = scratch.with_name(f"{gate.stem}.unfused.folded.onnx")
    reason = _folded(scratch, folded)
    if reason is not None:
        gate.log(f"[{gate.stem}] the unfused graph's pixel normalisation not folded: {reason}")
        return [unfused], reason
    return [_Source(folded, "unfused", "folded"), unfused], None


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
    return export_component(wrapped, {"pixel_values": pixels}, output_names, folder, stem, options, log,
                            normalises_pixels=True)


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
