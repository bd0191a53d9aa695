"""The server's configuration as frozen groups, built and cross-checked once at start-up.

Two layers, each with one job:

- `service.settings.Settings` reads the environment. It stays flat because the environment is flat and
  pydantic-settings maps one field to one `JEPA_*` variable: the field names are the variable names, and a bad
  value is reported against its variable.
- `ServerConfig` (here) is what the service runs with: one frozen, keyword-only dataclass per concern (batching,
  media, limits, stream, collections, cache, security, connections, processes, runtime, models, logging), its
  values resolved ("auto" choices that depend on other settings are decided here, once) and known to agree with
  each other. Each module receives the group it uses: the model pool the batching group's `BatchPolicy` and the
  runtime group, decoding the media group's limits, the guard the security group, the store factory the
  collections group, uvicorn the connections and stream groups, the world models the limits group's
  `WorldLimits`.

`Settings` builds its `ServerConfig` while it validates (`Settings.config`), so every rule between two settings
lives in one list (`CROSS_CHECKS`) and a broken pair is one line from `load_settings` before any process starts.
The supervisor hands that one object to the core and the fronts; no process reads the environment again, and
no request builds a limits object: a process builds its `MediaLimits` once, around its own decode budget
(`Services.media`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from service.batching.batcher import BatchPolicy
from service.media.images import WORST_BYTES_PER_PIXEL, ImageLimits
from service.media.memory import DecodeMemory
from service.media.payload import MediaLimits
from service.media.video import VideoLimits
from service.world.inputs import WorldLimits

if TYPE_CHECKING:
    from service.settings import Settings


class ConfigError(ValueError):
    """Settings that each parse but cannot hold together, said in one line naming their variables."""


def env_name(field: str) -> str:
    return f"JEPA_{field.upper()}"


@dataclass(frozen=True, kw_only=True)
class ModelsConfig:
    repository: Path  # folder of model entries
    default: str  # the model of a request that names none


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """How engines run: ONNX Runtime's providers, precision, threads, sessions per component, CUDA graphs."""

    providers: str
    precision: str
    intra_op_threads: int
    intra_op_spinning: bool
    cuda_graphs: str
    engine_instances: int  # 0 = auto (service/model_pool.py engine_instances)
    warmup: bool  # every batch size once before /readyz turns ready

    @property
    def builds_engines(self) -> bool:
        """TensorRT builds (or reads from its cache) an engine per model while loading."""
        return self.providers in ("tensorrt", "tensorrt_native")


@dataclass(frozen=True, kw_only=True)
class BatchingConfig:
    policy: BatchPolicy  # every component's batcher; the predictor's takes its own batch size
    predictor_max_batch_size: int  # a CEM step is one predictor batch of all its samples


@dataclass(frozen=True, kw_only=True)
class MediaConfig:
    """What decoding one image or video may cost, and what the process's decodes may hold together."""

    image: ImageLimits  # without a memory budget: each process adds its own (`limits`)
    video: VideoLimits
    image_decode_budget_bytes: int  # the server's: fronts split it (service/state.py Executors)
    max_concurrent_video_decodes: int
    ui_media_dir: Path | None  # the folder /ui shows thumbnails from; None = no thumbnails

    @property
    def image_decode_floor(self) -> int:
        """What one image of max_pixels may take to decode (the worst format: a lossless WebP)."""
        return WORST_BYTES_PER_PIXEL * self.image.max_pixels

    def limits(self, memory: DecodeMemory | None) -> MediaLimits:
        """The process's media limits around its image decode budget: made once per process (Services)."""
        return MediaLimits(image=replace(self.image, memory=memory), video=self.video)


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    """A request's bounds, checked before its work is done."""

    max_body_bytes: int
    max_request_items: int  # media inputs, query vectors or ids in one request
    max_upsert_vectors: int
    max_upsert_bytes: int
    max_metadata_bytes: int
    max_search_k: int
    request_timeout_ms: float  # a request's default deadline; 0 = none
    max_concurrent_requests: int  # 0 = no limit
    world: WorldLimits  # steps, horizon, samples and iterations of the world-model endpoints


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """/stream/surprise: connections, their frames and messages."""

    max_connections: int
    max_steps: int  # frames one connection may send
    buffer_frames: int  # received, not yet scored
    max_message_bytes: int
    idle_timeout_s: float
    max_frame_bytes: int  # a frame is one encoded image: the image limit


@dataclass(frozen=True, kw_only=True)
class RedisConfig:
    url: str
    prefix: str
    stream_maxlen: int
    ack_wait_s: float


@dataclass(frozen=True, kw_only=True)
class MilvusConfig:
    uri: str  # resolved: JEPA_MILVUS_URI, or milvus-lite's file under the data folder
    token: SecretStr
    db_name: str
    prefix: str
    timeout_s: float
    refresh_s: float


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Exact search of flat collections: where (service/index/device_search.py) and with how much memory."""

    device: str  # auto, faiss, cuda, onnx_cpu
    max_bytes: int
    workspace_bytes: int
    providers: str  # the runtime's: `auto` searches on CUDA when the models run there


@dataclass(frozen=True, kw_only=True)
class CollectionsConfig:
    storage: str  # local, redis, milvus
    data_dir: Path
    fsync: bool
    redis: RedisConfig
    milvus: MilvusConfig
    search: SearchConfig


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    backend: str  # resolved: memory, redis or off (auto = redis when the collections are in Redis)
    entries: int  # the in-process cache's size
    ttl_s: int  # a Redis entry's lifetime
    redis_url: str
    redis_prefix: str


@dataclass(frozen=True, kw_only=True)
class RateLimitConfig:
    requests: int  # per key (per client address when auth is off) per window; 0 = no limit
    window_s: float
    # resolved: where the counters are shared by every replica; None = counted in the server
    redis_url: SecretStr | None


@dataclass(frozen=True, kw_only=True)
class SecurityConfig:
    api_keys: SecretStr
    api_keys_file: Path | None
    health_open: bool
    metrics_open: bool
    rate_limit: RateLimitConfig

    @property
    def auth_configured(self) -> bool:
        """Keys are configured (a file that holds none is refused when the guard is built)."""
        return bool(self.api_keys.get_secret_value() or self.api_keys_file)


@dataclass(frozen=True, kw_only=True)
class ConnectionsConfig:
    """What uvicorn enforces per connection (service/connections.py), and how long a stop waits for requests."""

    header_timeout_s: float
    body_timeout_s: float
    keep_alive_timeout_s: float
    max_connections: int  # per front process
    discard_body_bytes: int
    shutdown_timeout_s: float


@dataclass(frozen=True, kw_only=True)
class ProcessesConfig:
    """The process layout and each process's threads; start-up's patience with its backends."""

    workers: int  # front processes; 0 = one per usable core (service/supervisor.py front_count)
    arena_bytes: int  # shared memory per front; 0 = items travel inside messages
    decode_threads: int  # 0 = one per usable core (service/state.py decode_thread_count)
    storage_threads: int
    startup_give_up_s: float
    startup_retry_max_s: float


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    format: str  # json or text
    access_log: bool


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    models: ModelsConfig
    runtime: RuntimeConfig
    batching: BatchingConfig
    media: MediaConfig
    limits: LimitsConfig
    stream: StreamConfig
    collections: CollectionsConfig
    cache: CacheConfig
    security: SecurityConfig
    connections: ConnectionsConfig
    processes: ProcessesConfig
    logging: LoggingConfig

    @classmethod
    def from_settings(cls, s: Settings) -> ServerConfig:
        """Checks every rule between settings (ConfigError on the first broken one), then builds the groups."""
        for check in CROSS_CHECKS:
            problem = check(s)
            if problem:
                raise ConfigError(problem)
        return cls(
            models=ModelsConfig(repository=s.model_repository, default=s.default_model),
            runtime=RuntimeConfig(providers=s.providers, precision=s.precision, intra_op_threads=s.intra_op_threads,
                                  intra_op_spinning=s.intra_op_spinning, cuda_graphs=s.cuda_graphs,
                                  engine_instances=s.engine_instances, warmup=s.warmup),
            batching=_batching(s),
            media=_media(s),
            limits=_limits(s),
            stream=StreamConfig(max_connections=s.stream_max_connections, max_steps=s.stream_max_steps,
                                buffer_frames=s.stream_buffer_frames, max_message_bytes=s.stream_max_message_bytes,
                                idle_timeout_s=s.stream_idle_timeout_s, max_frame_bytes=s.max_image_bytes),
            collections=_collections(s),
            cache=CacheConfig(backend=_cache_backend(s), entries=s.embed_cache_entries, ttl_s=s.embed_cache_ttl_s,
                              redis_url=s.redis_url, redis_prefix=s.redis_prefix),
            security=_security(s),
            connections=ConnectionsConfig(
                header_timeout_s=s.header_timeout_s, body_timeout_s=s.body_timeout_s,
                keep_alive_timeout_s=s.keep_alive_timeout_s, max_connections=s.max_connections,
                discard_body_bytes=s.discard_body_bytes, shutdown_timeout_s=s.shutdown_timeout_s),
            processes=ProcessesConfig(workers=s.workers, arena_bytes=s.shm_arena_mb << 20,
                                      decode_threads=s.decode_threads, storage_threads=s.storage_threads,
                                      startup_give_up_s=s.startup_give_up_s,
                                      startup_retry_max_s=s.startup_retry_max_s),
            logging=LoggingConfig(format=s.log_format, access_log=s.access_log),
        )


def _batching(s: Settings) -> BatchingConfig:
    policy = BatchPolicy(max_batch_size=s.max_batch_size, max_queue_delay_ms=s.max_queue_delay_ms,
                         max_queue_size=s.max_queue_size, max_batch_cost=s.max_batch_tokens,
                         preferred_batch_sizes=s.preferred_batch_sizes, wait=s.batch_wait,
                         tune=s.batch_tune and s.warmup)  # tuning times the warm-up's runs
    return BatchingConfig(policy=policy, predictor_max_batch_size=s.predictor_max_batch_size)


def _media(s: Settings) -> MediaConfig:
    return MediaConfig(
        image=ImageLimits(max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels),
        video=VideoLimits(max_bytes=s.max_video_bytes, max_pixels=s.max_image_pixels, max_frames=s.max_video_frames,
                          max_decoded_bytes=s.max_video_decode_bytes),
        image_decode_budget_bytes=s.image_decode_budget_bytes,
        max_concurrent_video_decodes=s.max_concurrent_video_decodes, ui_media_dir=s.ui_media_dir,
    )


def _limits(s: Settings) -> LimitsConfig:
    assert s.max_plan_samples is not None  # Settings sets its default before the config is built
    world = WorldLimits(max_rollout_steps=s.max_rollout_steps, max_surprise_steps=s.max_surprise_steps,
                        max_plan_horizon=s.max_plan_horizon, max_plan_samples=s.max_plan_samples,
                        max_plan_iterations=s.max_plan_iterations)
    return LimitsConfig(max_body_bytes=s.max_body_bytes, max_request_items=s.max_request_items,
                        max_upsert_vectors=s.max_upsert_vectors, max_upsert_bytes=s.max_upsert_bytes,
                        max_metadata_bytes=s.max_metadata_bytes, max_search_k=s.max_search_k,
                        request_timeout_ms=s.request_timeout_ms, max_concurrent_requests=s.max_concurrent_requests,
                        world=world)


def _collections(s: Settings) -> CollectionsConfig:
    return CollectionsConfig(
        storage=s.storage, data_dir=s.data_dir, fsync=s.fsync,
        redis=RedisConfig(url=s.redis_url, prefix=s.redis_prefix, stream_maxlen=s.redis_stream_maxlen,
                          ack_wait_s=s.redis_ack_wait_s),
        milvus=MilvusConfig(uri=s.milvus_uri or str(s.data_dir / "milvus.db"), token=s.milvus_token,
                            db_name=s.milvus_db_name, prefix=s.milvus_prefix, timeout_s=s.milvus_timeout_s,
                            refresh_s=s.milvus_refresh_s),
        search=SearchConfig(device=s.search_device, max_bytes=s.search_device_max_bytes,
                            workspace_bytes=s.search_device_workspace_bytes, providers=s.providers),
    )


def _cache_backend(s: Settings) -> str:
    """`embed_cache`, with auto decided: Redis when the collections are there (replicas share it), else memory."""
    if s.embed_cache == "auto":
        return "redis" if s.storage == "redis" else "memory"
    return s.embed_cache


def _security(s: Settings) -> SecurityConfig:
    rate_limit = RateLimitConfig(requests=s.rate_limit_requests, window_s=s.rate_limit_window_s,
                                 redis_url=_rate_limit_redis_url(s))
    return SecurityConfig(api_keys=s.api_keys, api_keys_file=s.api_keys_file, health_open=s.health_open,
                          metrics_open=s.metrics_open, rate_limit=rate_limit)


def _rate_limit_redis_url(s: Settings) -> SecretStr | None:
    """JEPA_RATE_LIMIT_REDIS_URL (empty = counted in the server); unset: the redis storage backend's Redis, where
    the service has one (storage=local needs no Redis, so its limiter counts in the server)."""
    if s.rate_limit_redis_url is not None:
        return s.rate_limit_redis_url if s.rate_limit_redis_url.get_secret_value() else None
    if s.storage != "redis" or not s.redis_url:
        return None
    return SecretStr(s.redis_url)


# Every rule between settings, checked once (ServerConfig.from_settings): each returns what is wrong, in one line
# naming the variables, or None.

def _folders_apart(s: Settings) -> str | None:
    if s.model_repository != s.data_dir:
        return None
    return (f"{env_name('model_repository')} and {env_name('data_dir')} are both '{s.data_dir}': models and "
            "collections need folders of their own")


def _image_budget_holds_one_image(s: Settings) -> str | None:
    needed = WORST_BYTES_PER_PIXEL * s.max_image_pixels
    if s.image_decode_budget_bytes >= needed:
        return None
    return (f"{env_name('image_decode_budget_bytes')}={s.image_decode_budget_bytes} cannot hold one image of "
            f"{env_name('max_image_pixels')}={s.max_image_pixels} ({needed} bytes: {WORST_BYTES_PER_PIXEL} a "
            "pixel); raise the first or lower the second")


def _plan_samples_fit_a_predictor_batch(s: Settings) -> str | None:
    if s.max_plan_samples is None or s.max_plan_samples <= s.predictor_max_batch_size:
        return None
    return (f"{env_name('max_plan_samples')}={s.max_plan_samples} is above "
            f"{env_name('predictor_max_batch_size')}={s.predictor_max_batch_size}: each CEM step is one predictor "
            "batch; lower the first or raise the second")


def _preferred_sizes_fit_a_batch(s: Settings) -> str | None:
    outside = [n for n in s.preferred_batch_sizes if not 1 <= n <= s.max_batch_size]
    if not outside:
        return None
    sizes = ",".join(str(n) for n in s.preferred_batch_sizes)
    return (f"{env_name('preferred_batch_sizes')}={sizes} has {', '.join(str(n) for n in outside)} outside 1.."
            f"{env_name('max_batch_size')}={s.max_batch_size} (a batch is padded up to one of them); drop it or "
            "raise the second")


def _milvus_uri_is_a_file_or_an_address(s: Settings) -> str | None:
    uri = s.milvus_uri
    if uri is None or "://" in uri or uri.endswith(".db"):
        return None
    return (f"{env_name('milvus_uri')}={uri!r} is neither a local file ending in .db (milvus-lite) nor an "
            "http(s):// address")


CROSS_CHECKS: tuple[Callable[[Settings], str | None], ...] = (
    _folders_apart,
    _image_budget_holds_one_image,
    _plan_samples_fit_a_predictor_batch,
    _preferred_sizes_fit_a_batch,
    _milvus_uri_is_a_file_or_an_address,
)
