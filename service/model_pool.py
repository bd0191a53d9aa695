"""The models being served: engines, batchers and rollouts built from repository entries."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from contract import Manifest
from service.batching import Batcher, BatchPolicy, DynamicBatcher
from service.config import BatchingConfig, RuntimeConfig
from service.errors import ErrorCode, NotFound
from service.media.clips import ClipSpec
from service.media.images import ImagePreprocess
from service.metrics import Metrics
from service.repository import EntryFailure, RepositoryEntry
from service.runtime import Engine, OrtEngine, available_providers, choose_precision
from service.runtime.onnx import tensorrt_options
from service.world import (
    Encoder,
    EncoderOnly,
    FuturePredictor,
    FutureSurprise,
    FutureWorld,
    LatentRollout,
    PlanningAids,
    PooledWorld,
    ProbeHead,
    SurpriseScorer,
    TokenRollout,
    TokenSurprise,
    TokenWorld,
    WorldLimits,
    WorldModel,
)

log = logging.getLogger(__name__)

GPU_ENGINE_INSTANCES = 2  # the auto default on a GPU (JEPA_ENGINE_INSTANCES=0), chosen by docs/bench/gpu.md


@dataclass
class ServedModel:
    entry: RepositoryEntry
    encoder: Batcher
    preprocess: ImagePreprocess
    # what /predict_future, /plan, /surprise and the stream ask of the model, answered by its family's predictor
    # (EncoderOnly when it has none); it encodes observations through the encoder's batcher too
    world: WorldModel
    batchers: list[Batcher] = field(default_factory=list)
    clip: ClipSpec = field(default_factory=ClipSpec)
    heads: dict[str, ProbeHead] = field(default_factory=dict)  # probe classifiers on the pooled features or tokens

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def manifest(self) -> Manifest:
        return self.entry.manifest

    @property
    def encode(self) -> Callable[..., Awaitable[dict[str, np.ndarray]]]:
        """Preprocessed items -> the encoder outputs asked for, through its batcher (Encoder.encode)."""
        return self.world.encoder.encode


class ModelPool:
    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self.failures: dict[str, str] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def __iter__(self):
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str) -> ServedModel:
        model = self._models.get(name)
        if model is None:
            raise NotFound(
                f"model {name!r} is not served", {"models": sorted(self._models)}, code=ErrorCode.MODEL_NOT_FOUND
            )
        return model

    def resolve_model(self, name: str | None, default: str | None = None) -> ServedModel:
        """The named model; with no name, the default model, else the only one served."""
        if name is not None:
            return self.get(name)
        if default is not None and default in self._models:
            return self._models[default]
        if len(self._models) == 1:
            return next(iter(self._models.values()))
        raise NotFound("no model named in the request and no default model is served", code=ErrorCode.MODEL_NOT_FOUND)

    def add(self, model: ServedModel) -> None:
        self._models[model.name] = model

    def by_space(self, space_id: str) -> ServedModel | None:
        return next((m for m in self._models.values() if m.manifest.space_id == space_id), None)

    def load(self, entries: list[RepositoryEntry], failures: list[EntryFailure], runtime: RuntimeConfig,
             batching: BatchingConfig, world: WorldLimits, metrics: Metrics) -> None:
        for failure in failures:
            self.failures[failure.name] = failure.reason
        native_trt = runtime.providers == "tensorrt_native"
        providers = available_providers("cuda" if native_trt else runtime.providers)
        for entry in entries:
            try:
                batchers = build_batchers(entry, providers, runtime, batching, metrics)
                self._models[entry.name] = served_model(entry, batchers, world)
            except Exception as exc:  # a broken file must not stop the other models
                log.exception("model %s failed to load", entry.name)
                self.failures[entry.name] = f"failed to load: {type(exc).__name__}"
        metrics.models_loaded.set(len(self._models))
        metrics.models_failed.set(len(self.failures))

    def start(self, on_stop: Callable[[], None] | None = None) -> None:
        for model in self._models.values():
            for batcher in model.batchers:
                batcher.start(on_stop)

    def warm_up(self) -> None:
        """Blocking: every batch size of every component once, with zeros of the manifest's input shapes and the
        graph's input dtypes (uint8 pixels for a graph that normalises them)."""
        for model in self._models.values():
            for batcher in model.batchers:
                spec = model.manifest.components[batcher.component]
                dtypes = batcher.engine.input_dtypes
                example = {name: np.zeros(shape[1:], dtypes.get(name, np.float32))
                           for name, shape in spec.inputs.items()}
                sizes = batcher.warm_up(example)
                log.info("warmed %s at batch sizes %s", batcher.engine.name, sizes)

    async def stop(self) -> None:
        for model in self._models.values():
            for batcher in model.batchers:
                await batcher.stop()


def engine_instances(runtime: RuntimeConfig, device: str) -> int:
    """Sessions per component. On a GPU two batches in flight let one's copies overlap the other's compute
    (measured: docs/bench/gpu.md); on a CPU a second session only fights the first for the same cores."""
    if runtime.engine_instances:
        return runtime.engine_instances
    return GPU_ENGINE_INSTANCES if device != "CPUExecutionProvider" else 1


def build_engine(
    entry: RepositoryEntry, component: str, providers: list[str], policy: BatchPolicy, runtime: RuntimeConfig
) -> Engine:
    spec = entry.manifest.components[component]
    precision = choose_precision(runtime.precision, providers, "fp16" in spec.files)
    name, path = f"{entry.name}/{component}", entry.component_file(component, precision)
    opt_batch = max(policy.preferred_batch_sizes or (policy.max_batch_size,))
    cache_root = entry.folder / "engines"
    if runtime.providers == "tensorrt_native":
        from service.runtime.tensorrt import TensorRTEngine  # needs the gpu extra

        return TensorRTEngine(name, path, cache_root, precision, spec.inputs, policy.max_batch_size, opt_batch)
    options = {}
    if providers[0] == "TensorrtExecutionProvider":
        import onnxruntime as ort

        options["TensorrtExecutionProvider"] = tensorrt_options(
            spec.inputs, cache_root, precision, policy.max_batch_size, opt_batch, ort.__version__
        )
    return OrtEngine(name, path, providers, precision, runtime.intra_op_threads, options,
                     cuda_graphs=runtime.cuda_graphs, spinning=runtime.intra_op_spinning)


def build_batchers(entry: RepositoryEntry, providers: list[str], runtime: RuntimeConfig, batching: BatchingConfig,
                   metrics: Metrics) -> dict[str, DynamicBatcher]:
    """A batcher per component of the entry, over its engine instances."""
    batchers: dict[str, DynamicBatcher] = {}
    policy = batching.policy
    for component, spec in entry.manifest.components.items():
        component_policy = policy
        if component == "predictor":
            # a CEM step is one batch of all its samples; the queue must hold at least one such batch
            size = batching.predictor_max_batch_size
            component_policy = replace(policy, max_batch_size=size, max_queue_size=max(policy.max_queue_size, 2 * size))
        engine = build_engine(entry, component, providers, component_policy, runtime)
        instances = [engine] + [
            build_engine(entry, component, providers, component_policy, runtime)
            for _ in range(engine_instances(runtime, engine.device) - 1)
        ]
        precision = engine.precision
        batchers[component] = DynamicBatcher(
            instances, component_policy, metrics, model=entry.name, component=component
        )
        parity = spec.parity.get(precision)
        if isinstance(parity, dict) and "min_cosine" in parity:
            metrics.parity.labels(model=entry.name, component=component, precision=precision).set(parity["min_cosine"])
    return batchers


def served_model(entry: RepositoryEntry, batchers: Mapping[str, Batcher], world: WorldLimits) -> ServedModel:
    """A model around its batchers: the core's own, or a front's handles on the core's (service/ipc/remote.py)."""
    manifest = entry.manifest
    spec_in = manifest.input
    clip = ClipSpec(frames_per_clip=spec_in.frames_per_clip, layout=spec_in.layout)
    encoder = Encoder(batchers["encoder"], clip, tokens_per_item=int(np.prod(manifest.output.token_grid)))
    return ServedModel(
        entry=entry,
        encoder=batchers["encoder"],
        preprocess=ImagePreprocess(
            height=spec_in.image_size[0],
            width=spec_in.image_size[1],
            resize=spec_in.resize,
            mean=spec_in.mean,
            std=spec_in.std,
            dtype=spec_in.dtype,
        ),
        world=world_model(entry, batchers, encoder, world),
        batchers=list(batchers.values()),
        clip=clip,
        heads={name: ProbeHead(name, batchers[spec.component], spec) for name, spec in manifest.heads.items()},
    )


def world_model(entry: RepositoryEntry, batchers: Mapping[str, Batcher], encoder: Encoder,
                limits: WorldLimits) -> WorldModel:
    """The model's family, chosen once: its predictor's kind, else its mask predictor, else none. A surprise
    calibration is served by the predictor whose metric it measured (repository._check_contracts pairs them)."""
    manifest, name = entry.manifest, entry.name
    predictor, calibration = manifest.predictor, manifest.surprise
    tokens = calibration is not None and calibration.metric == "l1_tokens"  # token predictors' calibration
    if "predictor" in batchers and predictor is not None:
        planning = PlanningAids(manifest.planning, load_projection(entry), load_action_readout(entry))
        if predictor.kind == "vjepa2_ac":
            rollout = TokenRollout(batchers["predictor"], predictor)
            scorer = TokenSurprise(rollout, calibration) if calibration is not None and tokens else None
            return TokenWorld(name, encoder, limits, rollout, scorer, planning)
        pooled = LatentRollout(batchers["predictor"], predictor)
        surprise = SurpriseScorer(pooled, calibration) if calibration is not None and not tokens else None
        return PooledWorld(name, encoder, limits, pooled, surprise, planning)
    if "future" in batchers and manifest.future is not None:
        future = FuturePredictor(batchers["future"], manifest.future)
        scored = FutureSurprise(future, calibration) if calibration is not None and tokens else None
        return FutureWorld(name, encoder, limits, future, scored, manifest.input.tubelet)
    return EncoderOnly(name, encoder, limits)


def _planning_matrix(entry: RepositoryEntry, file: str, what: str, rows: int | None = None) -> np.ndarray:
    """A (k, state_dim) float matrix shipped beside the model, checked at start-up."""
    matrix = np.load(entry.folder / file, allow_pickle=False).astype(np.float32)
    state_dim = entry.manifest.predictor.state_dim if entry.manifest.predictor else entry.manifest.output.dim
    if matrix.ndim != 2 or matrix.shape[1] != state_dim or not np.isfinite(matrix).all() or (
        rows is not None and matrix.shape[0] != rows
    ):
        raise ValueError(f"{what} has shape {matrix.shape}; expected ({rows or 'k'}, {state_dim})")
    return matrix


def load_projection(entry: RepositoryEntry) -> np.ndarray | None:
    """The manifest's planning.controllable_projection (.npy, (k, state_dim))."""
    planning = entry.manifest.planning
    if planning is None or planning.controllable_projection is None:
        return None
    return _planning_matrix(entry, planning.controllable_projection, "controllable projection")


def load_action_readout(entry: RepositoryEntry) -> np.ndarray | None:
    """The manifest's planning.action_readout (.npy, (action_dim, state_dim))."""
    planning = entry.manifest.planning
    if planning is None or planning.action_readout is None:
        return None
    action_dim = entry.manifest.predictor.action_dim if entry.manifest.predictor else None
    return _planning_matrix(entry, planning.action_readout, "action readout", action_dim)
