"""The models being served: engines, batchers and rollouts built from repository entries."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from service.batching import BatchPolicy, DynamicBatcher
from service.errors import ErrorCode, NotFound
from service.media.clips import ClipSpec
from service.media.images import ImagePreprocess
from service.metrics import Metrics
from service.repository import EntryFailure, Manifest, RepositoryEntry
from service.runtime import Engine, OrtEngine, available_providers, choose_precision
from service.runtime.onnx import tensorrt_options
from service.settings import Settings
from service.world import (
    FuturePredictor,
    FutureSurprise,
    LatentRollout,
    ProbeHead,
    SurpriseScorer,
    TokenRollout,
    TokenSurprise,
)

log = logging.getLogger(__name__)

GPU_ENGINE_INSTANCES = 2  # the auto default on a GPU (JEPA_ENGINE_INSTANCES=0), chosen by docs/bench/gpu.md


@dataclass
class ServedModel:
    entry: RepositoryEntry
    encoder: DynamicBatcher
    preprocess: ImagePreprocess
    rollout: LatentRollout | TokenRollout | None = None
    batchers: list[DynamicBatcher] = field(default_factory=list)
    clip: ClipSpec = field(default_factory=ClipSpec)
    controllable: np.ndarray | None = None  # (k, D) projection onto the action-controllable subspace, if shipped
    future: FuturePredictor | None = None  # V-JEPA 2's mask predictor: future tokens from a past clip
    # (A, D) linear inverse model (planning cost with a global slope), if shipped
    action_readout: np.ndarray | None = None
    # predicted-vs-observed scores, when the manifest has a calibration: pooled states after actions (the demo), or
    # the future tubelet steps of a clip (V-JEPA 2's mask predictor), or the frames of a trajectory (V-JEPA 2-AC)
    surprise: SurpriseScorer | FutureSurprise | TokenSurprise | None = None
    heads: dict[str, ProbeHead] = field(default_factory=dict)  # probe classifiers on the pooled features or tokens

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def manifest(self) -> Manifest:
        return self.entry.manifest

    @property
    def tokens_per_item(self) -> int:
        return int(np.prod(self.manifest.output.token_grid))

    async def encode(
        self,
        pixels: list[np.ndarray],
        deadline: float | None = None,
        announced: bool = False,
        outputs: tuple[str, ...] | None = None,
    ) -> dict[str, np.ndarray]:
        """Preprocessed items ((3, H, W), or a clip for clip models) -> the encoder outputs asked for (None =
        all), stacked: pooled (N, D), tokens (N, T, D) and, for video encoders, frames (N, steps, D)."""
        items = [{"pixel_values": p} for p in pixels]
        results = await self.encoder.infer(
            items, deadline=deadline, cost=self.tokens_per_item, announced=announced, outputs=outputs
        )
        return {name: np.stack([o[name] for o in results]) for name in results[0]}

    async def embed(
        self, pixels: list[np.ndarray], deadline: float | None = None, announced: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """-> pooled (N, D) and tokens (N, T, D)."""
        outputs = await self.encode(pixels, deadline, announced, outputs=("pooled", "tokens"))
        return outputs["pooled"], outputs["tokens"]


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

    def by_space(self, space_id: str) -> ServedModel | None:
        return next((m for m in self._models.values() if m.manifest.space_id == space_id), None)

    def load(
        self, entries: list[RepositoryEntry], failures: list[EntryFailure], settings: Settings, metrics: Metrics
    ) -> None:
        for failure in failures:
            self.failures[failure.name] = failure.reason
        native_trt = settings.providers == "tensorrt_native"
        providers = available_providers("cuda" if native_trt else settings.providers)
        policy = BatchPolicy(
            max_batch_size=settings.max_batch_size,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            max_queue_size=settings.max_queue_size,
            max_batch_cost=settings.max_batch_tokens,
            preferred_batch_sizes=settings.preferred_batch_sizes,
            wait=settings.batch_wait,
            tune=settings.batch_tune and settings.warmup,
        )
        for entry in entries:
            try:
                self._models[entry.name] = build_served_model(entry, providers, policy, settings, metrics)
            except Exception as exc:  # a broken file must not stop the other models
                log.exception("model %s failed to load", entry.name)
                self.failures[entry.name] = f"failed to load: {type(exc).__name__}"
        metrics.models_loaded.set(len(self._models))
        metrics.models_failed.set(len(self.failures))

    def start(self) -> None:
        for model in self._models.values():
            for batcher in model.batchers:
                batcher.start()

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


def engine_instances(settings: Settings, device: str) -> int:
    """Sessions per component. On a GPU two batches in flight let one's copies overlap the other's compute
    (measured: docs/bench/gpu.md); on a CPU a second session only fights the first for the same cores."""
    if settings.engine_instances:
        return settings.engine_instances
    return GPU_ENGINE_INSTANCES if device != "CPUExecutionProvider" else 1


def build_engine(
    entry: RepositoryEntry, component: str, providers: list[str], policy: BatchPolicy, settings: Settings
) -> Engine:
    spec = entry.manifest.components[component]
    precision = choose_precision(settings.precision, providers, "fp16" in spec.files)
    name, path = f"{entry.name}/{component}", entry.component_file(component, precision)
    opt_batch = max(policy.preferred_batch_sizes or (policy.max_batch_size,))
    cache_root = entry.folder / "engines"
    if settings.providers == "tensorrt_native":
        from service.runtime.tensorrt import TensorRTEngine  # needs the gpu extra

        return TensorRTEngine(name, path, cache_root, precision, spec.inputs, policy.max_batch_size, opt_batch)
    options = {}
    if providers[0] == "TensorrtExecutionProvider":
        import onnxruntime as ort

        options["TensorrtExecutionProvider"] = tensorrt_options(
            spec.inputs, cache_root, precision, policy.max_batch_size, opt_batch, ort.__version__
        )
    return OrtEngine(name, path, providers, precision, settings.intra_op_threads, options,
                     cuda_graphs=settings.cuda_graphs)


def build_served_model(
    entry: RepositoryEntry, providers: list[str], policy: BatchPolicy, settings: Settings, metrics: Metrics
) -> ServedModel:
    manifest = entry.manifest
    batchers: dict[str, DynamicBatcher] = {}
    for component, spec in manifest.components.items():
        component_policy = policy
        if component == "predictor":
            # a CEM step is one batch of all its samples; the queue must hold at least one such batch
            size = settings.predictor_max_batch_size
            component_policy = replace(policy, max_batch_size=size, max_queue_size=max(policy.max_queue_size, 2 * size))
        engine = build_engine(entry, component, providers, component_policy, settings)
        instances = [engine] + [
            build_engine(entry, component, providers, component_policy, settings)
            for _ in range(engine_instances(settings, engine.device) - 1)
        ]
        precision = engine.precision
        batchers[component] = DynamicBatcher(
            instances, component_policy, metrics, model=entry.name, component=component
        )
        parity = spec.parity.get(precision)
        if isinstance(parity, dict) and "min_cosine" in parity:
            metrics.parity.labels(model=entry.name, component=component, precision=precision).set(parity["min_cosine"])
    spec_in = manifest.input
    rollout: LatentRollout | TokenRollout | None = None
    if "predictor" in batchers and manifest.predictor is not None:
        kind = TokenRollout if manifest.predictor.kind == "vjepa2_ac" else LatentRollout
        rollout = kind(batchers["predictor"], manifest.predictor)
    future = FuturePredictor(batchers["future"], manifest.future) if manifest.future is not None else None
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
        rollout=rollout,
        batchers=list(batchers.values()),
        clip=ClipSpec(frames_per_clip=spec_in.frames_per_clip, layout=spec_in.layout),
        controllable=load_projection(entry),
        future=future,
        action_readout=load_action_readout(entry),
        surprise=surprise_scorer(manifest, rollout, future),
        heads={name: ProbeHead(name, batchers[spec.component], spec) for name, spec in manifest.heads.items()},
    )


def surprise_scorer(manifest: Manifest, rollout: LatentRollout | TokenRollout | None,
                    future: FuturePredictor | None) -> SurpriseScorer | FutureSurprise | TokenSurprise | None:
    spec = manifest.surprise
    if spec is None:
        return None
    if spec.metric == "l1_tokens":  # token predictors: V-JEPA 2-AC's, or V-JEPA 2's mask predictor (never both)
        if isinstance(rollout, TokenRollout):
            return TokenSurprise(rollout, spec)
        return FutureSurprise(future, spec) if future is not None else None
    return SurpriseScorer(rollout, spec) if isinstance(rollout, LatentRollout) else None


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
