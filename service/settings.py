"""Every knob of the service, as a `JEPA_*` environment variable (two, the model repository and the data folder,
are also `jepa-serve` flags: --model-repository, --data-dir).

Each default serves the demo model on one machine with no other service. This flat model only reads and parses
the environment (one field per variable); what the service runs with is `Settings.config`, the frozen groups of
service/config.py, built and cross-checked here once.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.config import ConfigError, ServerConfig, env_name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JEPA_", extra="ignore", frozen=True)
    _config: ServerConfig | None = PrivateAttr(None)

    # Where models and data live.
    model_repository: Path = Field(
        Path("model_repository"), description="folder of model entries (one sub-folder each)"
    )
    data_dir: Path = Field(Path("data"), description="collections: snapshots and write-ahead logs (local backend)")
    default_model: str = Field("demo", description="model used when a request names none")
    fsync: bool = Field(
        True,
        description="fsync the write-ahead log before acknowledging a write; off = faster, may lose the last writes "
        "on power loss",
    )

    # Runtime.
    providers: Literal["auto", "cpu", "cuda", "tensorrt", "tensorrt_native"] = Field(
        "auto",
        description="auto = CUDA if present else CPU; tensorrt = ORT's TensorRT EP; tensorrt_native = TensorRT plans "
        "(gpu extra)",
    )
    precision: Literal["auto", "fp32", "fp16"] = Field(
        "auto", description="auto = fp16 on GPU when the entry has a gated fp16 file, fp32 on CPU"
    )
    intra_op_threads: int = Field(0, ge=0, description="ORT threads inside one op; 0 = one per core")
    intra_op_spinning: bool = Field(
        False,
        description="ORT's pool threads spin between ops instead of sleeping: a little lower latency per op, a core "
        "burnt while they wait (taken from decoding on a CPU host)",
    )
    cuda_graphs: Literal["off", "on", "auto"] = Field(
        "off",
        description="CUDA provider: replay one captured CUDA graph per batch size (captured at warm-up; "
        "service/runtime/cuda_graphs.py); auto keeps a size's graph only where it ran faster than ordinary runs "
        "at warm-up; off until a GPU run shows it pays (docs/bench/gpu.md)",
    )
    engine_instances: int = Field(
        0, ge=0, le=8,
        description="engine sessions per model component, each with its own batch in flight (copies of one overlap "
        "compute of another on a GPU); 0 = auto: 2 on a GPU, 1 on CPU",
    )

    # Dynamic batching: bigger batches raise throughput, the delay adds latency at low load.
    max_batch_size: int = Field(16, ge=1, le=4096, description="items per engine call")
    max_queue_delay_ms: float = Field(
        2.0, ge=0, le=10_000, description="longest wait of the oldest queued item for a fuller batch"
    )
    max_queue_size: int = Field(1024, ge=1, description="queued items per (model, component) before 429")
    batch_wait: Literal["announced", "always"] = Field(
        "announced",
        description="announced = wait for a fuller batch only while more items are decoding (a lone request pays no "
        "timer); always = every non-full batch waits max_queue_delay_ms",
    )
    max_batch_tokens: int = Field(0, ge=0, description="patch-token budget per encoder batch (0 = count items only)")
    preferred_batch_sizes: Annotated[tuple[int, ...], NoDecode] = Field(
        (), description="pad batches up to these sizes (TensorRT profiles), as 4,8,16 or [4,8,16]; empty = no padding")
    request_timeout_ms: float = Field(
        30_000,
        ge=0,
        description="default deadline of a request (0 = none); X-Request-Timeout-Ms or timeout_ms override it",
    )
    warmup: bool = Field(True, description="run every batch size once before /readyz turns ready")
    batch_tune: bool = Field(
        True, description="time each batch size at warm-up and cap batches where the cost per item stops falling"
    )

    # Input limits: bad or huge input is refused before it costs memory.
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="HTTP request body size (413 above)")
    max_request_items: int = Field(64, ge=1, description="media inputs, query vectors or ids in one request")
    # Precomputed vectors cost no decoding: an upsert of vectors is bounded by their count and raw size instead
    # (10,000 x 384-d float32 = 15.4 MB fits; as base64 JSON that is a 20 MB body, under max_body_bytes).
    max_upsert_vectors: int = Field(10_000, ge=1, description="precomputed vectors in one upsert")
    max_upsert_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="raw float32 size (points x dim x 4) of the vectors in one upsert")
    max_metadata_bytes: int = Field(
        16 * 1024,
        ge=64,
        description="JSON size of one point's metadata (413 above): it is stored, logged and replicated",
    )
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1, description="encoded size of one image")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="width x height of one decoded image (decompression bombs)"
    )
    max_video_bytes: int = Field(64 * 1024 * 1024, ge=1, description="encoded size of one video (MP4, WebM, ...)")
    max_video_frames: int = Field(
        3000, ge=1, description="frames decoded from one video to reach its last sampled frame"
    )
    max_video_decode_bytes: int = Field(
        512 * 1024 * 1024, ge=1024 * 1024,
        description="memory a request's video decoding may hold: the decoder's frames (estimated from each stream "
        "header) plus the sampled frames at the model's input size; 413 above, answered before anything is decoded",
    )
    max_concurrent_video_decodes: int = Field(
        2, ge=1, description="videos decoded at once by the whole process (the rest wait their turn): with "
        "max_video_decode_bytes it bounds the memory video decoding can take",
    )
    image_decode_budget_bytes: int = Field(
        768 * 1024 * 1024, ge=16 * 1024 * 1024,
        description="memory the server's image decodes hold at once (every front reserves from one count), "
        "estimated from each image's header (pixels, "
        "mode, format, JPEG draft): a decode waits until its share is free, so large images decode in turn; one "
        "image that alone needs more is refused (413). Must hold one image of max_image_pixels (16 bytes a pixel: "
        "a lossless WebP's decode)",
    )
    max_rollout_steps: int = Field(256, ge=1, description="actions in one /predict_future request")
    max_surprise_steps: int = Field(256, ge=1, description="scored steps in one /surprise request")
    stream_max_connections: int = Field(64, ge=1, description="open /stream/surprise connections; one more is closed "
                                        "at once with 1013 (try again later)")
    stream_max_steps: int = Field(
        100_000, ge=1, description="frames one /stream/surprise connection may send before it is closed (1008)"
    )
    stream_buffer_frames: int = Field(8, ge=1, le=1024, description="frames received but not yet scored per stream; "
                                      "when full the server stops reading, so TCP pushes back on the client")
    stream_max_message_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="size of one stream message (closed with 1009 above)"
    )
    stream_idle_timeout_s: float = Field(
        60.0, gt=0, description="a stream with no message for this long is closed (1001)"
    )
    max_search_k: int = Field(1000, ge=1, description="largest k of /search")

    # Executors by job: a slow disk or an unreachable Redis never stalls decoding, and the reverse.
    decode_threads: int = Field(
        0, ge=0, description="threads that decode and preprocess media (CPU-bound); 0 = auto: one per core this "
        "process may run on (os.sched_getaffinity), at most 32")
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
        "(comma-separated). Only the sha256 of each key is configured, never the key "
        "(`python -m service.security new-key`)",
    )
    api_keys_file: Path | None = Field(
        None, description="file of 'name:sha256hex:scopes' lines (# comments), merged with api_keys"
    )
    health_open: bool = Field(
        True, description="/healthz and /readyz answer without a key; false = they need the 'ops' scope"
    )
    metrics_open: bool = Field(
        True, description="/metrics answers without a key; false = it needs the 'ops' scope (give Prometheus a key)"
    )
    rate_limit_requests: int = Field(
        0, ge=0, description="requests per key (per client address when auth is off) per window; 0 = no limit"
    )
    rate_limit_window_s: float = Field(1.0, gt=0, le=3600, description="length of the fixed rate-limit window")
    rate_limit_redis_url: SecretStr | None = Field(
        None,
        description="Redis holding the rate-limit counters, shared by every replica; unset = JEPA_REDIS_URL if the "
        "service has one, else an in-process limiter (each replica counts alone)",
    )

    # Operations.
    log_format: Literal["json", "text"] = Field(
        "json", description="json = one JSON object per line (for log shippers); text for humans"
    )
    access_log: bool = Field(
        True, description="one log line per request: method, route, status, duration, request id, key name"
    )
    # Connections (service/connections.py): what a directly exposed replica needs; nginx in front adds its own.
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="a request's headers must all arrive within this; else 408 and the connection is closed",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="longest silence while a request body is being received before the connection is closed",
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, le=3600, description="an idle kept-alive connection is closed after this"
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="open connections per process; past it a new one is answered 503 and closed (bounds descriptors)",
    )
    discard_body_bytes: int = Field(
        256 * 1024 * 1024, ge=0,
        description="after an early answer (413, 401, ...) read and throw away up to this much of the rest of the body "
        "before closing, so clients that send the whole body before reading (urllib) see the answer, not a broken pipe",
    )
    # Process layout (jepa-serve): fronts do the per-request host work, one core owns batchers and collections.
    workers: int = Field(
        0, ge=0, le=256,
        description="front processes (HTTP, decoding, responses) sharing the port; 0 = one per usable core (the "
        "cpuset's), at most 32. One core process beside them holds the models and collections",
    )
    shm_arena_mb: int = Field(
        64, ge=0, le=65536,
        description="shared memory per front for decoded items on their way to the core (/dev/shm); a full arena "
        "sends items inside messages instead (slower); 0 = always inside messages",
    )
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="on SIGTERM, how long in-flight requests may take before they are cut (queues are drained first)",
    )
    startup_give_up_s: float = Field(
        300.0, ge=0,
        description="while a backend (Redis) cannot be reached at start-up, retry with backoff (/readyz says why) "
        "for this long, then exit with status 75 so the orchestrator restarts the process; "
        "0 = exit on the first failure",
    )
    startup_retry_max_s: float = Field(
        5.0, gt=0, le=300, description="longest wait between two start-up attempts (backoff doubles from 0.25 s)"
    )

    # Collections storage: local files, Redis shared by every replica, or Milvus (collections past one machine).
    storage: Literal["local", "redis", "milvus"] = Field(
        "local",
        description="local = snapshot + fsynced WAL under data_dir; redis = Redis is the source of truth, each replica "
        "tails it; milvus = a Milvus engine holds and searches the points (the `milvus` extra)",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis for storage=redis and for the embedding cache"
    )
    redis_prefix: str = Field("jepa", description="prefix of every Redis key this service writes")
    redis_stream_maxlen: int = Field(
        1_000_000,
        ge=1000,
        description="approximate length cap of each collection's update stream (ids only, no vectors)",
    )
    embed_cache: Literal["auto", "memory", "redis", "off"] = Field(
        "auto",
        description="content-addressed cache of pooled embeddings; auto = redis when storage=redis, else in-process "
        "LRU",
    )
    embed_cache_entries: int = Field(
        10_000, ge=1, description="in-process cache size (entries; one pooled vector each)"
    )
    embed_cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="lifetime of a Redis cache entry")
    redis_ack_wait_s: float = Field(
        5.0,
        ge=0,
        description="how long a write waits for this replica to apply it (read-your-writes) after Redis stored it",
    )

    # Exact search of flat collections (local, redis) on the GPU: service/index/device_search.py.
    search_device: Literal["auto", "faiss", "cuda", "onnx_cpu"] = Field(
        "auto",
        description="auto = cuda when the server runs on CUDA, else faiss; faiss = FAISS on the CPU; cuda = the "
        "vectors resident on the GPU in fp16, scored there by ONNX Runtime; onnx_cpu = the same path on ONNX "
        "Runtime's CPU provider (tests, dry runs; slower than faiss)",
    )
    search_device_max_bytes: int = Field(
        4 * 1024**3, ge=0,
        description="device memory for resident vectors, all flat collections together: (2 x dim + 2) bytes per "
        "point (770 at 384-d) plus 25 % growth room; a collection past it is searched on the CPU",
    )
    search_device_workspace_bytes: int = Field(
        1024**3, ge=1 << 20,
        description="device memory for the scores of one search call (16 bytes per query and point): larger query "
        "batches are scored in chunks",
    )

    # storage=milvus: an embedded milvus-lite file, or a Milvus server / cluster shared by every replica.
    milvus_uri: str | None = Field(
        None,
        description="a local path = the embedded engine (milvus-lite, one process only; unset = <data_dir>/milvus.db); "
        "http://host:19530 = a Milvus server or cluster (or a `milvus-lite server`)",
    )
    milvus_token: SecretStr = Field(SecretStr(""), description="Milvus credentials: 'user:password' or an API key")
    milvus_db_name: str = Field("", description="Milvus database; empty = the server's default")
    milvus_prefix: str = Field(
        "jepa",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,31}$",
        description="prefix of every Milvus collection this service owns",
    )
    milvus_timeout_s: float = Field(
        10.0, gt=0, description="deadline of one Milvus call; past it the request answers 503"
    )
    milvus_refresh_s: float = Field(
        1.0, gt=0, description="how often a replica re-reads the list of collections (creates and drops made elsewhere)"
    )

    # Planning (/plan): each CEM rollout step sends all samples as one predictor batch.
    predictor_max_batch_size: int = Field(
        1024, ge=1, le=4096, description="items per predictor call (CEM samples go in one batch)"
    )
    max_plan_samples: int | None = Field(
        None, ge=2, description="largest /plan samples; at most (and by default) predictor_max_batch_size, so each "
        "CEM step is one predictor batch"
    )
    max_plan_iterations: int = Field(32, ge=1, description="largest /plan iterations")
    max_plan_horizon: int = Field(64, ge=1, description="largest /plan horizon")

    # The /ui page (service/api/ui.py).
    ui_media_dir: Path | None = Field(
        None,
        description="folder whose images /ui shows as thumbnails of hits whose metadata 'path' is relative to it "
        "(as jepa-serve-client index stores it); nothing outside it is served; unset = no thumbnails",
    )

    @field_validator("preferred_batch_sizes", mode="before")
    @classmethod
    def _int_list(cls, value: Any) -> Any:
        """A list setting from the environment: '4,8,16' or JSON '[4, 8, 16]' (empty string = empty list)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_plan_samples is None:  # frozen: set once, here
            object.__setattr__(self, "max_plan_samples", self.predictor_max_batch_size)
        self._config = ServerConfig.from_settings(self)  # every rule between settings: service/config.py
        return self

    @property
    def config(self) -> ServerConfig:
        """The groups the service runs with, built once from these settings (service/config.py)."""
        assert self._config is not None  # set by the validator of every instance
        return self._config


class SettingsError(ValueError):
    """A setting the service cannot start with, said in one line: the variable, its value, what is accepted."""


def _accepted(field: str) -> str:
    """What a field takes, from its annotation and constraints: 'one of cpu, cuda', 'an integer >= 1 and <= 4096'."""
    info = Settings.model_fields[field]
    annotation = info.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    bounds = []
    for item in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{sign} {getattr(item, attr)}")
    kinds = {int: "an integer", float: "a number", bool: "true or false", str: "text", Path: "a path",
             SecretStr: "text"}
    if typing.get_origin(annotation) is tuple:
        kind = "a list of integers: 4,8,16 or [4,8,16]"
    else:
        kind = next((kinds[a] for a in (annotation, *args) if a in kinds), str(annotation))
    return kind + (" " + " and ".join(bounds) if bounds else "")


def load_settings(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Settings from the environment, or one SettingsError line per the first bad variable or broken rule between
    settings (no traceback)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        broken = error.get("ctx", {}).get("error")
        if isinstance(broken, ConfigError):
            raise SettingsError(str(broken)) from None
        field = str(error["loc"][0]) if error.get("loc") else ""
        if field in Settings.model_fields:
            name = env_name(field)
            value = overrides.get(field, environ.get(name, environ.get(name.lower(), "")))
            shown = "<hidden>" if isinstance(Settings.model_fields[field].default, SecretStr) else repr(str(value))
            raise SettingsError(f"{name}={shown} is invalid: {error['msg']}; accepted: {_accepted(field)}") from None
        raise SettingsError(f"invalid settings: {error['msg']}") from None


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """JEPA_* variables that name no setting (a typo would otherwise be silently ignored)."""
    known = {env_name(field) for field in Settings.model_fields}
    return sorted(k for k in environ if k.upper().startswith("JEPA_") and k.upper() not in known)


def did_you_mean(name: str) -> str | None:
    """The setting a misspelt JEPA_* variable most likely meant (JEPA_MAX_BATCH_SIZ -> JEPA_MAX_BATCH_SIZE)."""
    known = sorted(env_name(field) for field in Settings.model_fields)
    close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)
    return close[0] if close else None
