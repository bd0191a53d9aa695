"""Typed request and response bodies. Numbers cross the edge as lists; inside they are numpy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from service.errors import ErrorCode, meanings_by_status
from service.index.collection import Metric
from service.index.kinds import IndexKind
from service.world.planner import CEMConfig

CEM = CEMConfig()  # the defaults the descriptions below name

MAX_TIMEOUT_MS = 3_600_000  # an hour: the bound of every timeout_ms and of the X-Request-Timeout-Ms header

PointId = Annotated[str, Field(min_length=1, max_length=256)]

Vector = list[float]
# The numbers a world model takes (actions, proprio, states): JSON numbers only. Lax parsing would read `true` as
# 1.0 and "1.5" as 1.5; shape and range are checked once for every endpoint (service/world/inputs.py).
Numbers = list[StrictFloat]
Dtype = Literal["float32", "float16"]
TimeoutMs = Annotated[float | None, Field(gt=0, lt=MAX_TIMEOUT_MS, description="deadline; past it the answer is 504")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def exactly_one(body: BaseModel, *fields: str) -> None:
    """The one rule of alternatives: exactly one of `fields` is given (not None)."""
    if sum(getattr(body, f) is not None for f in fields) != 1:
        names = [f"'{f}'" for f in fields]
        raise ValueError(f"give exactly one of {', '.join(names[:-1])} or {names[-1]}")


class ArrayOutput(Body):
    """How arrays come back, and by when: the options shared by /embed and /predict_future."""

    timeout_ms: TimeoutMs = None
    encoding: Literal["float", "base64"] = Field(
        "float", description="'base64': arrays as base64 of raw little-endian bytes (smaller, faster to parse)"
    )
    dtype: Dtype = Field("float32", description="element type of base64 arrays")


class TensorInput(Body):
    data: str = Field(description="base64 of the raw little-endian array bytes")
    dtype: Dtype = "float32"
    shape: list[int] = Field(description="one frame [3, H, W] or a clip [T, 3, H, W]; already normalised")


class MediaInput(Body):
    """Exactly one of: an encoded image (base64 or data: URL), a clip of frames, a video file, or a
    preprocessed tensor.

    Clip models (manifest layout NTCHW or NCTHW) pad an image, or a clip shorter than
    their frames_per_clip, by repeating its first frame. A video is sampled on the
    server (the request's num_frames / stride / fps / start_s) and the sampling is echoed."""

    image: str | None = Field(None, description="PNG/JPEG/WebP/... as base64 or a data: URL")
    tensor: TensorInput | None = None
    frames: list[str] | None = Field(None, min_length=1, description="a clip: encoded frames, oldest first")
    video: str | None = Field(None, description="an MP4/WebM/... file as base64 or a data: URL")

    @model_validator(mode="after")
    def _one(self) -> MediaInput:
        exactly_one(self, "image", "frames", "video", "tensor")
        return self


class VideoSamplingOptions(Body):
    """How frames are taken from video inputs (ignored for images); echoed per video in the response."""

    num_frames: int | None = Field(
        None, ge=1, le=1024, description="frames per clip; default: the model's frames_per_clip"
    )
    stride: int | None = Field(None, ge=1, le=10_000, description="take every stride-th frame")
    fps: float | None = Field(None, gt=0, le=1000, description="take frames at this rate (frames per second)")
    start_s: float = Field(0.0, ge=0, le=86_400, description="first instant sampled (seconds)")

    @model_validator(mode="after")
    def _one_rate(self) -> VideoSamplingOptions:
        if self.stride is not None and self.fps is not None:
            raise ValueError("give 'stride' or 'fps', not both (neither: uniform over the video)")
        return self


class EmbedOptions(ArrayOutput, VideoSamplingOptions):
    """The form fields of a multipart /embed, and the options of a JSON one."""

    model: str | None = Field(None, description="model name; default: the server's default model")
    output: Literal["pooled", "tokens", "frames"] = Field(
        "pooled",
        description="'tokens' adds the patch-token grid; 'frames' adds one vector per time step (video models)",
    )
    normalize: bool = Field(True, description="L2-normalise the pooled embeddings")


class EmbedRequest(EmbedOptions):
    inputs: list[MediaInput] = Field(min_length=1)


class EncodedArray(BaseModel):
    data: str = Field(description="base64 of the raw little-endian array bytes, C order")
    dtype: Dtype
    shape: list[int]


class SampledFrames(BaseModel):
    mode: Literal["stride", "fps", "uniform"]
    num_frames: int
    stride: int | None
    fps: float | None
    start_s: float
    frame_indices: list[int] = Field(description="decoded-frame index of each sampled frame, oldest first")
    timestamps_s: list[float]
    padded: int = Field(description="frames repeated at the end because the video ended first")
    resolution: list[int] = Field(description="[height, width] the frames were resized to for the model")
    source: dict[str, Any] = Field(description="the video: frames, fps, duration_s, width, height, codec")

class EmbedResponse(BaseModel):
    model: str
    space_id: str
    dim: int
    embeddings: list[Vector] | EncodedArray = Field(description="(N, dim): lists of floats, or an EncodedArray")
    tokens: list[list[Vector]] | EncodedArray | None = Field(None, description="(N, tokens, dim) with output='tokens'")
    frames: list[list[Vector]] | EncodedArray | None = Field(
        None, description="(N, time steps, dim) with output='frames': per tubelet step, the mean of its tokens")
    timings_ms: dict[str, float]
    cached: list[bool] | None = Field(
        None, description="per input: answered from the content-addressed embedding cache"
    )
    sampling: list[SampledFrames | None] | None = Field(
        None, description="per input: the frames taken from a video input (null for other inputs)")



class VectorArray(Body):
    """Many vectors as one base64 array: compact and fast to parse (what the Python client sends)."""

    data: str = Field(description="base64 of the raw little-endian array bytes, C order")
    dtype: Dtype = "float32"
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=2, max_length=2, description="[points, dim]")


class Limits(BaseModel):
    """The server's request limits, so a client can size its batches (the Python client chunks by them)."""

    max_body_bytes: int = Field(description="HTTP request body size (413 above)")
    max_request_items: int = Field(description="media inputs, query vectors or ids in one request")
    max_upsert_vectors: int = Field(description="precomputed vectors in one upsert")
    max_upsert_bytes: int = Field(description="raw float32 size (points x dim x 4) of the vectors in one upsert")
    max_metadata_bytes: int = Field(description="JSON size of one point's metadata")
    max_image_bytes: int
    max_image_pixels: int
    max_video_bytes: int
    max_video_frames: int
    max_search_k: int
    max_rollout_steps: int
    max_surprise_steps: int = Field(description="steps scored in one /surprise request")
    stream_max_message_bytes: int = Field(description="one /stream/surprise message")
    stream_buffer_frames: int = Field(
        description="frames waiting per /stream/surprise connection before it stops reading"
    )
    max_plan_samples: int
    max_plan_iterations: int
    max_plan_horizon: int


class IndexParams(Body):
    """Build-time index parameters (all optional)."""

    M: int | None = Field(None, ge=4, le=128, description="HNSW graph degree")
    ef_construction: int | None = Field(None, ge=8, le=4096, description="HNSW build beam width")
    ef_search: int | None = Field(None, ge=1, le=4096, description="default HNSW search beam width")
    nlist: int | None = Field(None, ge=1, le=262144, description="IVF lists; default about 4 x sqrt(points)")
    nprobe: int | None = Field(None, ge=1, le=262144, description="default IVF lists scanned per query")
    pq_m: int | None = Field(None, ge=1, le=1024, description="PQ sub-quantisers (must divide dim)")
    pq_bits: int | None = Field(None, ge=4, le=8, description="bits per PQ code")
    rerank: int | None = Field(None, ge=1, le=64, description="candidates per result re-scored exactly")
    pca: int | None = Field(
        None, ge=1, le=65536, description="project to this many dimensions before the ANN index; re-ranked exactly"
    )
    min_train_points: int | None = Field(None, ge=1, description="IVF kinds search exactly until this many points")
    auto_hnsw_from: int | None = Field(None, ge=1, description="`auto` switches from flat to hnsw at this size")
    rebuild_dead_ratio: float | None = Field(
        None, gt=0, le=1, description="rebuild when tombstones / indexed exceeds this"
    )


class SearchParams(Body):
    """Per-request search knobs; each applies to the kinds that have it and is ignored by the others."""

    ef: int | None = Field(None, ge=1, le=4096, description="HNSW search beam width")
    nprobe: int | None = Field(None, ge=1, le=262144, description="IVF lists scanned")
    rerank: int | None = Field(
        None, ge=1, le=64, description="candidates per result re-scored exactly (approximate kinds)"
    )


class CreateCollection(Body):
    dim: int | None = Field(None, gt=0, le=65536, description="vector dimension; taken from `model` when omitted")
    metric: Metric = "cosine"
    index: IndexKind = Field(
        "flat", description="flat = exact; hnsw / ivf_flat / ivf_pq = approximate; auto = flat while small, then hnsw"
    )
    model: str | None = Field(None, description="served model whose embedding space this collection holds")
    space_id: str | None = Field(
        None, max_length=128, description="embedding space id; taken from `model` when omitted"
    )
    params: IndexParams | None = Field(None, description="index build parameters; defaults suit most collections")


class CollectionInfo(BaseModel):
    name: str
    dim: int
    metric: Metric
    index: str
    space_id: str | None
    model: str | None
    count: int
    memory_bytes: int
    index_in_use: str | None = Field(
        None, description="kind serving now (auto and untrained IVF serve exactly while small)"
    )
    tombstones: int = Field(0, description="deleted points still hidden inside the index until the next rebuild")
    params: dict[str, Any] = Field(default_factory=dict, description="index parameters given at creation")


class UpsertPoints(Body):
    ids: list[PointId] = Field(min_length=1)
    vectors: list[Vector] | VectorArray | None = Field(
        None, description="precomputed vectors: lists of floats, or one base64 array; up to max_upsert_vectors "
        "and max_upsert_bytes (GET /limits) per request")
    inputs: list[MediaInput] | None = Field(
        None, description="media to embed with the collection's model; up to max_request_items per request")
    metadata: list[dict[str, Any]] | None = None
    space_id: str | None = Field(
        None, description="space of `vectors`; refused (409) if it differs from the collection's"
    )

    @model_validator(mode="after")
    def _shape(self) -> UpsertPoints:
        exactly_one(self, "vectors", "inputs")
        if isinstance(self.vectors, VectorArray):
            n = self.vectors.shape[0]
        else:
            n = len(self.vectors if self.vectors is not None else self.inputs or [])
        if n != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {n} vectors/inputs")
        if self.metadata is not None and len(self.metadata) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.metadata)} metadata entries")
        return self


class UpsertResult(BaseModel):
    upserted: int
    count: int
    status: Literal["completed"] = Field("completed", description="logged durably (fsync) and searchable")


class DeletePoints(Body):
    ids: list[PointId] = Field(min_length=1)


class DeleteResult(BaseModel):
    deleted: int
    count: int


class Point(BaseModel):
    id: str
    vector: Vector
    metadata: dict[str, Any]


class SearchRequest(Body):
    collection: str
    vector: Vector | None = None
    vectors: list[Vector] | VectorArray | None = Field(
        None, description="many queries: lists of floats or one base64 array"
    )
    input: MediaInput | None = None
    id: PointId | None = Field(None, description="search with a stored point's vector (the point itself is left out)")
    k: int = Field(10, ge=1)
    space_id: str | None = Field(None, description="space of the query vectors; refused (409) if it differs")
    timeout_ms: TimeoutMs = None
    filter: dict[str, Any] | None = Field(
        None,
        description='metadata conditions, all must hold: '
        '{"label": "cat", "tag": {"in": ["a", "b"]}, "year": {"gte": 2020}}',
    )
    params: SearchParams | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        exactly_one(self, "vector", "vectors", "input", "id")
        if (
            self.vectors is not None
            and (self.vectors.shape[0] if isinstance(self.vectors, VectorArray) else len(self.vectors)) == 0
        ):
            raise ValueError("'vectors' is empty")
        return self


class Hit(BaseModel):
    id: str
    score: float
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    hits: list[Hit] | None = Field(description="the hits of the only query; null when several queries were sent")
    results: list[list[Hit]] = Field(description="one list of hits per query, in query order")
    metric: Metric


class PredictRequest(ArrayOutput, VideoSamplingOptions):
    """Action-conditioned models roll `actions` out from the context (or a state); V-JEPA 2 with its mask
    predictor takes no actions and predicts the tokens of the next tubelet steps from a past clip (images,
    frames or a video: the sampling fields apply to it)."""

    model: str | None = None
    context: list[MediaInput] | None = Field(None, description="observation frames (the model's context length)")
    state: Numbers | None = Field(None, description="a state embedding (raw, not normalised) instead of frames")
    actions: list[Numbers] | None = Field(None, min_length=1, description="required by action-conditioned models")
    proprio: list[Numbers] | None = Field(
        None, description="V-JEPA 2-AC: the end-effector state (x, y, z, roll, pitch, yaw, gripper) at each "
        "observation frame, oldest first")
    output: Literal["pooled", "tokens"] = Field(
        "pooled", description="'tokens' adds the predicted token grids (token-level predictors: V-JEPA 2-AC)")

    @model_validator(mode="after")
    def _start(self) -> PredictRequest:
        exactly_one(self, "context", "state")
        if self.context is not None and not self.context:
            raise ValueError("'context' is empty")
        return self


class PredictResponse(BaseModel):
    model: str
    space_id: str
    initial_state: Vector
    states: list[Vector] = Field(description="predicted state embedding after each action (token-level predictors: "
                                 "the mean of the predicted layer-normed tokens)")
    tokens: list[list[Vector]] | EncodedArray | None = Field(
        None, description="(steps, tokens, dim) predicted token grids, with output='tokens'")
    proprio: list[Vector] | None = Field(None, description="V-JEPA 2-AC: the end-effector state after each action")
    sampling: SampledFrames | None = Field(None, description="the frames taken from a video context")
    timings_ms: dict[str, float]


class SurpriseRequest(VideoSamplingOptions):
    """A sequence of observations and the actions between them -> one surprise score per step.

    Observations are frames, oldest first: images (or frames of a `frames` input, or one video sampled by the
    sampling fields, 16 frames by default), or precomputed `states` (raw pooled embeddings). Action i is the
    action taken between observation i and observation i + 1. V-JEPA 2-AC also needs `proprio`, the end-effector
    pose at each frame; its frames are encoded one by one, as its predictor was trained."""

    model: str | None = None
    observations: list[MediaInput] | None = Field(None, min_length=1, description="frames, oldest first, or one video")
    states: list[Numbers] | None = Field(None, min_length=2, description="raw state embeddings instead of frames")
    actions: list[Numbers] | None = Field(None, min_length=1, description="action-conditioned models: one per step, "
                                         "action i leads from observation i to i + 1; none for V-JEPA 2's mask "
                                         "predictor (it scores one clip of frames_per_clip frames)")
    proprio: list[Numbers] | None = Field(
        None, min_length=2, description="V-JEPA 2-AC: the end-effector state (x, y, z, roll, pitch, yaw, gripper) at "
        "each observation frame, oldest first")
    threshold: float | None = Field(None, ge=-1000, le=1000, description="steps whose score exceeds this are listed "
                                    "in 'surprising'; default: the model's (its manifest's surprise.threshold)")
    timeout_ms: float | None = Field(None, gt=0, lt=3_600_000, description="deadline; past it the answer is 504")

    @model_validator(mode="after")
    def _one_source(self) -> SurpriseRequest:
        if (self.observations is None) == (self.states is None):
            raise ValueError("give exactly one of 'observations' or 'states'")
        return self


class SurpriseCalibration(BaseModel):
    metric: Literal["mse", "l2", "cosine", "l1_tokens"] = Field(
        description="distance between predicted and observed state (l1_tokens: mean |predicted - layer_norm(observed)| "
        "over the tokens of a future tubelet step (V-JEPA 2) or of the next frame (V-JEPA 2-AC, whose prediction is "
        "layer-normed too))")
    normalization: Literal["zscore"] = Field(description="score = (distance - mean) / std")
    mean: float = Field(description="mean distance on held-out normal data, measured at export")
    std: float = Field(description="its standard deviation")
    calibration: str = Field(description="the data the mean and std come from")


class SurpriseResponse(BaseModel):
    model: str
    space_id: str
    steps: list[int] = Field(description="the observation index of each score (the first observations only give "
                             "the predictor its context: a clip model needs frames_per_clip frames for a state)")
    scores: list[float] = Field(description="per step: the distance as a z-score against normal data")
    distances: list[float] = Field(description="per step: the raw distance between predicted and observed state")
    threshold: float
    surprising: list[int] = Field(description="observation indices whose score exceeds the threshold")
    calibration: SurpriseCalibration
    sampling: list[SampledFrames | None] | None = Field(
        None, description="per observation: the frames taken from a video (null for other inputs)")
    timings_ms: dict[str, float]


class ClassifyRequest(Body):
    """Two ways to classify: a probe `head` of a model (trained by `jepa-export probe`) on media inputs, or a kNN
    vote over a `collection` whose points carry their label in the metadata field `label_field`."""

    model: str | None = Field(None, description="with 'head': the model the head belongs to")
    head: str | None = Field(None, description="a probe head of the model (its manifest's 'heads')")
    collection: str | None = Field(None, description="kNN: the collection whose points vote")
    inputs: list[MediaInput] | None = Field(None, min_length=1, description="images, clips or tensors to classify")
    vectors: list[Vector] | None = Field(None, min_length=1, description="kNN: query vectors instead of media")
    top_k: int = Field(5, ge=1, le=1000, description="labels returned per input, best first")
    k: int = Field(10, ge=1, description="kNN: neighbours that vote (at most the server's max_search_k)")
    label_field: str = Field(
        "label", min_length=1, max_length=256, description="kNN: the metadata field with the label"
    )
    vote: Literal["majority", "weighted"] = Field(
        "majority", description="kNN: one vote per neighbour, or weighted by similarity (see docs)")
    filter: dict[str, Any] | None = Field(None, description="kNN: only points matching this metadata filter vote")
    space_id: str | None = Field(None, description="kNN: space of `vectors`; refused (409) if it differs")
    timeout_ms: float | None = Field(None, gt=0, lt=3_600_000, description="deadline; past it the answer is 504")

    @model_validator(mode="after")
    def _one_mode(self) -> ClassifyRequest:
        if (self.head is None) == (self.collection is None):
            raise ValueError("give exactly one of 'head' or 'collection'")
        if (self.inputs is None) == (self.vectors is None):
            raise ValueError("give exactly one of 'inputs' or 'vectors'")
        if self.head is not None and self.vectors is not None:
            raise ValueError("a head classifies media 'inputs' (its model embeds them)")
        return self


class LabelScore(BaseModel):
    # kNN labels keep their JSON type (`true` and `"true"` are two labels, as in filters); a head's are strings.
    label: StrictBool | StrictInt | StrictFloat | StrictStr
    score: float = Field(description="head: the probability; kNN: the label's share of the (weighted) votes")
    votes: int | None = Field(None, description="kNN: neighbours with this label")


class ClassifyResponse(BaseModel):
    model: str | None = Field(description="the model that embedded the inputs (null for kNN on vectors)")
    head: str | None
    collection: str | None
    labels: list[list[LabelScore]] = Field(description="per input: up to top_k labels, best first")
    held_out_accuracy: float | None = Field(None, description="head: accuracy on held-out data, measured at training")
    timings_ms: dict[str, float]


class ErrorBody(BaseModel):
    code: ErrorCode = Field(description="one of the codes in docs/errors.md; a code always has the same status")
    message: str
    detail: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer, all with the one error shape."""
    meanings = meanings_by_status()
    return {status: {"model": ErrorResponse, "description": meanings[status]} for status in statuses}


COMMON_ERRORS = (400, 413, 415, 422, 429, 503, 504)


class PlanRequest(Body):
    """Plan actions from the current observation toward a goal, by CEM on the model's latent predictor."""

    model: str | None = None
    observation: list[MediaInput] = Field(
        min_length=1, description="current frames, oldest first (up to the model's context)"
    )
    goal: MediaInput | None = Field(None, description="goal image (or clip)")
    goal_state: Numbers | None = Field(None, description="a goal state embedding instead of a goal image")
    proprio: list[Numbers] | None = Field(
        None, description="V-JEPA 2-AC: the end-effector state (x, y, z, roll, pitch, yaw, gripper) at each "
        "observation frame, oldest first")
    horizon: int | None = Field(None, ge=1, description=f"actions in the plan; default {CEM.horizon} or the model's "
                                "(V-JEPA 2-AC: 2); bounded by the server's max_plan_horizon")
    samples: int | None = Field(None, ge=2, description="action sequences per CEM iteration: one predictor batch per "
                                f"step; default {CEM.samples} or the model's (V-JEPA 2-AC: 400)")
    iterations: int | None = Field(None, ge=1, description=f"CEM iterations; default {CEM.iterations} or the model's "
                                   "(V-JEPA 2-AC: 10)")
    elites: int | None = Field(None, ge=1, description="samples refit per iteration; default samples // 8 or the "
                               "model's (V-JEPA 2-AC: 10)")
    cost: Literal["final", "all_steps"] = Field(
        "final", description="distance at the last step, or mean over all steps"
    )
    distance: Literal["auto", "l2", "l1"] = Field(
        "auto", description="l2 = mean squared difference, l1 = mean absolute (V-JEPA 2-AC's energy on tokens); "
        "auto = what the model's manifest says (l2 when it says nothing)")
    action_repeat: int = Field(
        1, ge=1, description="hold each searched action for this many steps: CEM searches ceil(horizon / "
        "action_repeat) actions, so long horizons (a way round an obstacle) stay searchable with few samples; "
        "the predictor still runs every step")
    subspace: Literal["auto", "full", "controllable", "action_readout", "readout_and_controllable"] = Field(
        "auto", description="where the cost compares states: 'full' space; 'controllable': only the subspace actions "
        "can move (the manifest's projection; ignores distractors, but its distances are local); 'action_readout': "
        "through the manifest's linear inverse model W (W (next - still) ~ action), so the distance counts action "
        "steps to the goal and keeps a slope far from it; 'readout_and_controllable': the sum of both (slope from "
        "afar, precision near the goal); auto: the first of readout_and_controllable, action_readout, controllable "
        "that the model ships, else full")
    seed: int = Field(0, description="sampling seed: the same request gives the same plan")
    timeout_ms: TimeoutMs = None

    @model_validator(mode="after")
    def _goal(self) -> PlanRequest:
        exactly_one(self, "goal", "goal_state")
        if self.elites is not None and self.samples is not None and self.elites > self.samples:
            raise ValueError("elites must not exceed samples")
        return self


class PlanResponse(BaseModel):
    model: str
    space_id: str
    actions: list[Vector] = Field(
        description="the planned action sequence (horizon x action_dim), inside the action box"
    )
    cost: float = Field(description="predicted cost of the plan (lower is closer to the goal)")
    zero_action_cost: float = Field(description="predicted cost of doing nothing, for comparison")
    predicted_states: list[Vector] = Field(description="predicted state embedding after each planned action")
    iteration_costs: list[float]
    subspace: Literal["full", "controllable", "action_readout", "readout_and_controllable"]
    distance: Literal["l2", "l1"]
    settings: dict[str, int] = Field(description="horizon, samples, elites and iterations used")
    predicted_proprio: list[Vector] | None = Field(
        None, description="V-JEPA 2-AC: end-effector state after each action"
    )
    timings_ms: dict[str, float]
