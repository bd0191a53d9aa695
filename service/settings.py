"""Every knob of the service, as a `JEPA_*` environment variable (two, the model repository and the data folder,
are also `jepa-serve` flags: --model-repository, --data-dir).

Each default serves the demo model on one machine with no other service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JEPA_", extra="ignore", frozen=True)

    # Where models and data live.
    model_repository: Path = Field(Path("model_repository"), description="folder of model entries (one sub-folder each)")
    data_dir: Path = Field(Path("data"), description="collections: snapshots and write-ahead logs (local backend)")
    default_model: str = Field("demo", description="model used when a request names none")
    fsync: bool = Field(True, description="fsync the write-ahead log before acknowledging a write; off = faster, may lose the last writes on power loss")

    # Runtime.
    providers: Literal["auto", "cpu", "cuda", "tensorrt", "tensorrt_native"] = Field(
        "auto", description="auto = CUDA if present else CPU; tensorrt = ORT's TensorRT EP; tensorrt_native = TensorRT plans (gpu extra)"
    )
    precision: Literal["auto", "fp32", "fp16"] = Field("auto", description="auto = fp16 on GPU when the entry has a gated fp16 file, fp32 on CPU")
    intra_op_threads: int = Field(0, ge=0, description="ORT threads inside one op; 0 = one per core")
    engine_instances: int = Field(
        0, ge=0, le=8,
        description="engine sessions per model component, each with its own batch in flight (copies of one overlap "
        "compute of another on a GPU); 0 = auto: 2 on a GPU, 1 on CPU",
    )

    # Dynamic batching: bigger batches raise throughput, the delay adds latency at low load.
    max_batch_size: int = Field(16, ge=1, le=4096, description="items per engine call")
    max_queue_delay_ms: float = Field(2.0, ge=0, le=10_000, description="longest wait of the oldest queued item for a fuller batch")
    max_queue_size: int = Field(1024, ge=1, description="queued items per (model, component) before 429")
    batch_wait: Literal["announced", "always"] = Field(
        "announced",
        description="announced = wait for a fuller batch only while more items are decoding (a lone request pays no timer); "
        "always = every non-full batch waits max_queue_delay_ms",
    )
    max_batch_tokens: int = Field(0, ge=0, description="patch-token budget per encoder batch (0 = count items only)")
    preferred_batch_sizes: tuple[int, ...] = Field((), description="pad batches up to these sizes (TensorRT profiles); empty = no padding")
    request_timeout_ms: float = Field(30_000, ge=0, description="default deadline of a request (0 = none); X-Request-Timeout-Ms or timeout_ms override it")
    warmup: bool = Field(True, description="run every batch size once before /readyz turns ready")
    batch_tune: bool = Field(
        True, description="time each batch size at warm-up and cap batches where the cost per item stops falling"
    )

    # Input limits: bad or huge input is refused before it costs memory.
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="HTTP request body size (413 above)")
    max_request_items: int = Field(64, ge=1, description="inputs, vectors or queries in one request")
    max_metadata_bytes: int = Field(16 * 1024, ge=64, description="JSON size of one point's metadata (413 above): it is stored, logged and replicated")
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1, description="encoded size of one image")
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height of one decoded image (decompression bombs)")
    max_video_bytes: int = Field(64 * 1024 * 1024, ge=1, description="encoded size of one video (MP4, WebM, ...)")
    max_video_frames: int = Field(3000, ge=1, description="frames decoded from one video to reach its last sampled frame")
    max_rollout_steps: int = Field(256, ge=1, description="actions in one /predict_future request")
    max_search_k: int = Field(1000, ge=1, description="largest k of /search")

    # Executors by job: a slow disk or an unreachable Redis never stalls decoding, and the reverse.
    decode_threads: int = Field(2, ge=1, description="threads that decode and preprocess media (CPU-bound)")
    storage_threads: int = Field(
        4, ge=1, description="threads for index search, write-ahead-log writes, Redis calls and embedding-cache I/O "
        "(mostly waiting: fsync, network, read-your-writes waits of up to redis_ack_wait_s)"
    )
    max_concurrent_requests: int = Field(
        512, ge=0, description="requests handled at once (health and metrics excluded); past it the answer is 429 "
        "with Retry-After before the body is read, instead of work piling up in the executor queues. Higher = "
        "fewer refusals in a burst, more memory and latency under it; 0 = no limit"
    )

    # Security. Auth is off while no key is configured (so `make serve` needs none) and on as soon as one is.
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="API keys as 'name:sha256hex:scopes' entries separated by ';' or newlines; scopes read, write, ops "
        "(comma-separated). Only the sha256 of each key is configured, never the key (`python -m service.security new-key`)",
    )
    api_keys_file: Path | None = Field(None, description="file of 'name:sha256hex:scopes' lines (# comments), merged with api_keys")
    health_open: bool = Field(True, description="/healthz and /readyz answer without a key; false = they need the 'ops' scope")
    metrics_open: bool = Field(True, description="/metrics answers without a key; false = it needs the 'ops' scope (give Prometheus a key)")
    rate_limit_requests: int = Field(0, ge=0, description="requests per key (per client address when auth is off) per window; 0 = no limit")
    rate_limit_window_s: float = Field(1.0, gt=0, le=3600, description="length of the fixed rate-limit window")
    rate_limit_redis_url: SecretStr | None = Field(
        None,
        description="Redis holding the rate-limit counters, shared by every replica; unset = JEPA_REDIS_URL if the "
        "service has one, else an in-process limiter (each replica counts alone)",
    )

    # Operations.
    log_format: Literal["json", "text"] = Field("json", description="json = one JSON object per line (for log shippers); text for humans")
    access_log: bool = Field(True, description="one log line per request: method, route, status, duration, request id, key name")
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="on SIGTERM, how long in-flight requests may take before they are cut (queues are drained first)"
    )
    startup_give_up_s: float = Field(
        300.0, ge=0,
        description="while a backend (Redis) cannot be reached at start-up, retry with backoff (/readyz says why) for this "
        "long, then exit with status 75 so the orchestrator restarts the process; 0 = exit on the first failure",
    )
    startup_retry_max_s: float = Field(5.0, gt=0, le=300, description="longest wait between two start-up attempts (backoff doubles from 0.25 s)")

    # Collections storage: local files, or Redis shared by every replica.
    storage: Literal["local", "redis"] = Field(
        "local", description="local = snapshot + fsynced WAL under data_dir; redis = Redis is the source of truth, each replica tails it"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for storage=redis and for the embedding cache")
    redis_prefix: str = Field("jepa", description="prefix of every Redis key this service writes")
    redis_stream_maxlen: int = Field(
        1_000_000, ge=1000, description="approximate length cap of each collection's update stream (ids only, no vectors)"
    )
    embed_cache: Literal["auto", "memory", "redis", "off"] = Field(
        "auto", description="content-addressed cache of pooled embeddings; auto = redis when storage=redis, else in-process LRU"
    )
    embed_cache_entries: int = Field(10_000, ge=1, description="in-process cache size (entries; one pooled vector each)")
    embed_cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="lifetime of a Redis cache entry")
    redis_ack_wait_s: float = Field(
        5.0, ge=0, description="how long a write waits for this replica to apply it (read-your-writes) after Redis stored it"
    )

    # Planning (/plan): each CEM rollout step sends all samples as one predictor batch.
    predictor_max_batch_size: int = Field(1024, ge=1, le=4096, description="items per predictor call (CEM samples go in one batch)")
    max_plan_samples: int = Field(1024, ge=2, description="largest /plan samples; keep <= predictor_max_batch_size for one batch per step")
    max_plan_iterations: int = Field(32, ge=1, description="largest /plan iterations")
    max_plan_horizon: int = Field(64, ge=1, description="largest /plan horizon")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.model_repository == self.data_dir:
            raise ValueError("model_repository and data_dir must differ")
        return self
