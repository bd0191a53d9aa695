"""Every knob of the service, as `JEPA_*` environment variables (or CLI flags of `jepa-serve`).

Each default serves the demo model on one machine with no other service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JEPA_", extra="ignore", frozen=True)

    # Where models and data live.
    model_repository: Path = Field(Path("model_repository"), description="folder of model entries (one sub-folder each)")
    data_dir: Path = Field(Path("data"), description="collections: snapshots and write-ahead logs (local backend)")
    default_model: str = Field("demo", description="model used when a request names none")
    fsync: bool = Field(True, description="fsync the write-ahead log before acknowledging a write; off = faster, may lose the last writes on power loss")

    # Runtime.
    providers: Literal["auto", "cpu", "cuda", "tensorrt"] = Field("auto", description="ONNX Runtime execution provider; auto = best available")
    precision: Literal["auto", "fp32", "fp16"] = Field("auto", description="auto = fp16 on GPU when the entry has a gated fp16 file, fp32 on CPU")
    intra_op_threads: int = Field(0, ge=0, description="ORT threads inside one op; 0 = one per core")

    # Dynamic batching: bigger batches raise throughput, the delay adds latency at low load.
    max_batch_size: int = Field(16, ge=1, le=4096, description="items per engine call")
    max_queue_delay_ms: float = Field(2.0, ge=0, le=10_000, description="longest wait of the oldest queued item for a fuller batch")
    max_queue_size: int = Field(1024, ge=1, description="queued items per (model, component) before 429")

    # Input limits: bad or huge input is refused before it costs memory.
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="HTTP request body size (413 above)")
    max_request_items: int = Field(64, ge=1, description="inputs, vectors or queries in one request")
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1, description="encoded size of one image")
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height of one decoded image (decompression bombs)")
    max_rollout_steps: int = Field(256, ge=1, description="actions in one /predict_future request")
    max_search_k: int = Field(1000, ge=1, description="largest k of /search")

    decode_threads: int = Field(2, ge=1, description="threads that decode and preprocess media")

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
